use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn err(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

fn keys(e: &ConfigErrors) -> Vec<&str> {
    e.iter().map(|e| e.key.as_str()).collect()
}

#[test]
fn defaults_fill_in() {
    let c = Config::from_toml("cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    assert_eq!(c.secret_file, PathBuf::from("herald.secret"));
    assert_eq!(c.max_frame_len, 1472);
    assert_eq!(c.ring.capacity, 1 << 20);
    assert_eq!(c.timing, TimingSection::default());
    assert_eq!(c.log.format, LogFormat::Text);
    // What `check` prints parses back to the same config.
    assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
}

#[test]
fn the_defaults_are_the_builders() {
    assert_eq!(
        Duration::from_millis(TimingSection::default().heartbeat_ms),
        settings::HEARTBEAT
    );
    assert_eq!(
        Duration::from_millis(TimingSection::default().reorder_ms),
        settings::REORDER
    );
    assert_eq!(RingSection::default().capacity, settings::RING_CAPACITY);
}

#[test]
fn the_commented_example_is_valid() {
    let c = Config::from_toml(include_str!("../../examples/herald.toml")).unwrap();
    assert_eq!(c.cluster, "shop");
    assert_eq!(c.timing, TimingSection::default());
    assert_eq!(c.ring, RingSection::default());
    assert_eq!(c.latency, LatencySection::default());
    c.router_builder().unwrap();
}

#[test]
fn errors_name_the_key() {
    let base = "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:1\"\n";
    assert!(err("[udp]\nbind = \"127.0.0.1:1\"\n").starts_with("cluster:"));
    assert!(err(&format!("{base}colour = 1\n")).starts_with("udp.colour:"));
    assert!(err(&format!("{base}peers = [\"nope\"]\n")).starts_with("udp.peers[0]:"));
    assert!(err(&format!("{base}[ring]\ncapacity = 1000\n")).starts_with("ring.capacity:"));
    assert!(
        err(&format!("{base}[latency]\nbusy_poll_us = -5\n")).starts_with("latency.busy_poll_us:")
    );
    assert!(
        err(&format!("{base}[timing]\ndead_peer_ms = 50\n")).starts_with("timing.dead_peer_ms:")
    );
    assert!(err(&format!("{base}[log]\nformat = \"xml\"\n")).starts_with("log.format:"));
    assert!(err("cluster = \"c\"\n").starts_with("udp:"));
    assert!(err("cluster = \"c\"\n[udp]\npeers = []\n").starts_with("udp.bind:"));
    assert!(err("cluster = \"c\"\n[tcp]\n").starts_with("tcp:"));
    assert!(err(&format!("max_frame_len = 10\n{base}")).starts_with("max_frame_len:"));
    assert!(err(&format!("{base}max_frame_len = 10\n")).starts_with("udp.max_frame_len:"));
    let svc = "[service]\nlisten = \"127.0.0.1:6380\"\n";
    assert!(err(&format!("{base}[service]\n")).starts_with("service.listen:"));
    assert!(err(&format!("{base}{svc}colour = 1\n")).starts_with("service.colour:"));
    for (line, key) in [
        ("idle_timeout_ms = 0", "service.idle_timeout_ms:"),
        ("output_buffer_limit = 100", "service.output_buffer_limit:"),
        ("max_connections = 0", "service.max_connections:"),
        (
            "max_subscriptions_per_client = 0",
            "service.max_subscriptions_per_client:",
        ),
        ("password = \"\"", "service.password:"),
        (
            "password = \"a\"\npassword_file = \"p\"",
            "service.password_file:",
        ),
    ] {
        assert!(
            err(&format!("{base}{svc}{line}\n")).starts_with(key),
            "{line}"
        );
    }
}

/// The ring capacity the builder refuses is refused by the config too (they drifted once:
/// 2048 passed `check` and failed `node`).
#[test]
fn the_config_applies_the_builders_ring_rule() {
    let text = "cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:1\"\n[ring]\ncapacity = 2048\n";
    let e = Config::from_toml(text).unwrap_err();
    assert_eq!(keys(&e), ["ring.capacity"]);
    assert!(e.to_string().contains("at least 4096"), "{e}");
}

#[test]
fn one_read_reports_every_kind_of_problem() {
    let text = r#"
cluster = ""
max_frame_len = "big"
colour = "blue"

[udp]
bind = "127.0.0.1:7700"
peers = ["127.0.0.1:7701", 7702]

[udp.multicast]
group = "10.1.2.3:7700"
interface = "127.0.0.1"

[tcp]

[ring]
capacity = 2048

[timing]
heartbeat_ms = 100
dead_peer_ms = 150

[service]
listen = "127.0.0.1:6380"
password = "a"
password_file = "pw"
"#;
    let e = Config::from_toml(text).unwrap_err();
    assert_eq!(
        keys(&e),
        [
            "colour",
            "max_frame_len",
            "udp.peers[1]",
            "cluster",
            "ring.capacity",
            "timing.dead_peer_ms",
            "udp.multicast.group",
            "tcp",
            "service.password_file",
        ],
        "{e}"
    );
    assert_eq!(e.to_string().lines().count(), e.len());
}

#[test]
fn a_missing_cluster_does_not_hide_the_rest() {
    let e = Config::from_toml("colour = 1\n[ring]\ncapacity = 2048\n").unwrap_err();
    assert_eq!(
        keys(&e),
        ["colour", "cluster", "ring.capacity", "udp"],
        "{e}"
    );
    assert!(e.to_string().contains("cluster: missing"), "{e}");
}

#[test]
fn syntax_errors_name_the_line_and_column() {
    let text = "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:1\"\npeers = [\"a\" \"b\"]\n";
    let e = Config::from_toml(text).unwrap_err();
    assert_eq!(keys(&e), ["config"]);
    assert!(e.to_string().contains("line 4, column"), "{e}");
    let e = Config::from_toml("cluster = \"c\"\n\n[udp\n").unwrap_err();
    assert!(e.to_string().contains("line 3, column"), "{e}");
}

#[test]
fn host_names_are_accepted_and_resolved_at_start() {
    let text = "cluster = \"c\"\n[udp]\nbind = \"localhost:7700\"\npeers = [\"127.0.0.1:7701\"]\n";
    let c = Config::from_toml(text).unwrap();
    assert_eq!(
        c.udp.as_ref().unwrap().bind.as_ref().unwrap().host(),
        "localhost"
    );
    c.router_builder().unwrap();

    let text = "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:7700\"\npeers = [\"127.0.0.1:7701\", \"no-such-host.invalid:7700\"]\n";
    let e = Config::from_toml(text)
        .unwrap()
        .router_builder()
        .unwrap_err();
    assert_eq!(keys(&e), ["udp.peers[1]"]);
    assert!(
        e.to_string()
            .contains("cannot resolve no-such-host.invalid"),
        "{e}"
    );
}

#[test]
fn own_address_and_duplicate_peers_are_refused_after_lookup() {
    let text = "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:7700\"\npeers = [\"127.0.0.1:7701\", \"localhost:7700\", \"localhost:7701\"]\n[tcp]\nlisten = \"0.0.0.0:7800\"\npeers = [\"127.0.0.1:7800\"]\n";
    let e = Config::from_toml(text)
        .unwrap()
        .router_builder()
        .unwrap_err();
    assert_eq!(
        keys(&e),
        ["udp.peers[1]", "udp.peers[2]", "tcp.peers[0]"],
        "{e}"
    );
    assert!(e.to_string().contains("own address"), "{e}");
    assert!(e.to_string().contains("listed twice"), "{e}");
}

#[test]
fn listeners_cannot_share_an_address() {
    let text = "cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:7800\"\n[service]\nlisten = \"127.0.0.1:7800\"\n[metrics]\nlisten = \"127.0.0.1:7800\"\n";
    let e = Config::from_toml(text).unwrap_err();
    assert_eq!(keys(&e), ["service.listen", "metrics.listen"]);
}

#[test]
fn a_frame_too_large_for_udp_is_refused() {
    let text = "cluster = \"c\"\nmax_frame_len = 65536\n[udp]\nbind = \"127.0.0.1:7700\"\n";
    let e = Config::from_toml(text)
        .unwrap()
        .router_builder()
        .unwrap_err();
    assert_eq!(keys(&e), ["max_frame_len"]);
}

#[test]
fn the_service_section_fills_in_defaults_and_never_prints_the_password() {
    let text = "cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:1\"\n[service]\nlisten = \"127.0.0.1:6380\"\npassword = \"s3cret\"\n";
    let c = Config::from_toml(text).unwrap();
    let svc = c.service_config(Path::new(".")).unwrap().unwrap();
    assert_eq!(svc.password.as_deref(), Some("s3cret"));
    assert_eq!(svc.idle_timeout, Some(Duration::from_secs(120)));
    assert_eq!(svc.output_buffer_limit, 8 << 20);
    assert!(!c.to_toml().contains("s3cret"), "{}", c.to_toml());
    assert!(!format!("{c:?}").contains("s3cret"));

    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-file\n").unwrap();
    let text = text.replace("password = \"s3cret\"", "password_file = \"pw\"");
    let c = Config::from_toml(&text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = c.service_config(dir.path()).unwrap_err();
        assert_eq!(err.key, "service.password_file");
        assert!(err.problem.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let svc = c.service_config(dir.path()).unwrap().unwrap();
    assert_eq!(svc.password.as_deref(), Some("from-file"));
    let err = c.service_config(Path::new("/nonexistent")).unwrap_err();
    assert_eq!(err.key, "service.password_file");
}

#[test]
fn membership_over_a_multicast_group_needs_no_bind_and_no_seed() {
    let text = "cluster = \"c\"\n[udp.multicast]\ngroup = \"239.255.42.1:7700\"\ninterface = \"127.0.0.1\"\n[membership]\n";
    assert!(
        Config::from_toml(text).is_ok(),
        "{:?}",
        Config::from_toml(text).err()
    );
    let text = "cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:1\"\n[membership]\n";
    let e = err(text);
    assert!(
        e.contains("membership: needs UDP: set udp.bind or a udp.multicast group"),
        "{e}"
    );
}
