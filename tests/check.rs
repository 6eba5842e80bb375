//! `herald check` runs exactly what `herald node` runs before it starts: every config one
//! refuses, the other refuses too, and `check` reports every problem at once.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .expect("run herald")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory with `herald.toml` holding `body` and a private secret file.
fn setup(body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("herald.secret");
    assert!(
        herald(&["keygen", secret.to_str().unwrap()])
            .status
            .success()
    );
    let cfg = dir.path().join("herald.toml");
    fs::write(&cfg, body).unwrap();
    (dir, cfg.to_str().unwrap().to_owned())
}

/// Runs `herald node` on `cfg`: `Err(stderr)` if it refuses to start, `Ok` if it was still
/// running after two seconds (it is stopped then).
fn node(cfg: &str) -> Result<(), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["node", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert_eq!(status.code(), Some(2), "{}", stderr(&out));
            return Err(stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    Ok(())
}

/// A config's text, the key both commands must name, and what to spoil beside it.
type Case = (String, &'static str, fn(&Path));

/// Each bad config. The base is valid; each case breaks one thing.
fn bad_configs(port: u16) -> Vec<Case> {
    let udp = format!("cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:{port}\"\n");
    let none: fn(&Path) = |_| {};
    vec![
        // The builder's ring rule, which `check` once passed and `node` refused.
        (
            format!("{udp}[ring]\ncapacity = 2048\n"),
            "ring.capacity",
            none,
        ),
        (
            format!("{udp}[ring]\ncapacity = 1000\n"),
            "ring.capacity",
            none,
        ),
        (format!("{udp}bindd = 1\n"), "udp.bindd", none),
        (
            format!("{udp}peers = [\"127.0.0.1:{port}\"]\n"),
            "udp.peers[0]",
            none,
        ),
        (
            format!("{udp}peers = [\"127.0.0.1:1\", \"localhost:1\"]\n"),
            "udp.peers[1]",
            none,
        ),
        (
            format!("{udp}peers = [\"no-such-host.invalid:7700\"]\n"),
            "udp.peers[0]",
            none,
        ),
        (
            format!("{udp}[udp.multicast]\ngroup = \"10.1.1.1:7700\"\ninterface = \"127.0.0.1\"\n"),
            "udp.multicast.group",
            none,
        ),
        (
            format!("max_frame_len = 65536\n{udp}"),
            "max_frame_len",
            none,
        ),
        (format!("{udp}[tcp]\n"), "tcp", none),
        (
            format!("{udp}[timing]\nheartbeat_ms = 100\ndead_peer_ms = 150\n"),
            "timing.dead_peer_ms",
            none,
        ),
        (
            format!("{udp}[timing]\nreorder_ms = 0\n"),
            "timing.reorder_ms",
            none,
        ),
        (
            format!("{udp}peers = [\"127.0.0.1:1\" \"127.0.0.1:2\"]\n"),
            "line 4, column",
            none,
        ),
        (
            format!(
                "cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:{port}\"\n[service]\nlisten = \"127.0.0.1:{port}\"\n"
            ),
            "service.listen",
            none,
        ),
        (
            format!(
                "{udp}[service]\nlisten = \"127.0.0.1:0\"\npassword = \"a\"\npassword_file = \"pw\"\n"
            ),
            "service.password_file",
            none,
        ),
        (
            format!("{udp}[service]\nlisten = \"127.0.0.1:0\"\npassword_file = \"missing\"\n"),
            "service.password_file",
            none,
        ),
        (
            format!("secret_file = \"no/such/dir/s\"\n{udp}"),
            "secret_file",
            none,
        ),
        (udp.clone(), "secret_file", |dir| {
            let secret = dir.join("herald.secret");
            fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        }),
        (udp.clone(), "secret_file", |dir| {
            fs::write(dir.join("herald.secret"), "signing_key = 1\n").unwrap();
            let secret = dir.join("herald.secret");
            fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        }),
    ]
}

#[test]
fn check_refuses_every_config_node_refuses() {
    let port = free_port();
    // The harness can tell a refusal from a start: the valid base starts.
    let (_dir, good) = setup(&format!(
        "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:{port}\"\n"
    ));
    assert!(herald(&["check", "--config", &good]).status.success());
    assert_eq!(node(&good), Ok(()), "a valid config starts");

    for (body, key, spoil) in bad_configs(port) {
        let (dir, cfg) = setup(&body);
        spoil(dir.path());
        let check = herald(&["check", "--config", &cfg]);
        assert_eq!(check.status.code(), Some(2), "check accepted:\n{body}");
        assert!(
            stderr(&check).contains(key),
            "check does not name {key}: {}",
            stderr(&check)
        );
        let refused = node(&cfg).expect_err(&format!("node started with:\n{body}"));
        assert!(refused.contains(key), "node does not name {key}: {refused}");
    }
}

#[test]
fn check_reports_every_problem_in_one_run() {
    let (_dir, cfg) = setup(
        "cluster = \"c\"\ncolour = 1\n\
         [udp]\nbind = \"127.0.0.1:7700\"\npeers = [\"127.0.0.1:7700\", \"127.0.0.1:7701\", \"127.0.0.1:7701\"]\n\
         [ring]\ncapacity = 2048\n\
         [timing]\ndead_peer_ms = 10\n\
         [tcp]\n\
         [service]\nlisten = \"127.0.0.1:6380\"\nidle_timeout_ms = 0\n",
    );
    let out = herald(&["check", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    // The schema, the builder's and the service's rules, the config's own: one run.
    for key in [
        "colour:",
        "ring.capacity:",
        "timing.dead_peer_ms:",
        "tcp:",
        "service.idle_timeout_ms:",
    ] {
        assert!(err.contains(key), "{key} missing:\n{err}");
    }
    assert!(err.contains("5 problems"), "{err}");
    // The addresses are looked up once the rest is right, and all reported too.
    let (_dir, cfg) = setup(
        "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:7700\"\npeers = [\"127.0.0.1:7700\", \"localhost:7701\", \"127.0.0.1:7701\", \"no-such-host.invalid:1\"]\n",
    );
    let err = stderr(&herald(&["check", "--config", &cfg]));
    assert!(err.contains("udp.peers[3]: cannot resolve"), "{err}");
    let (_dir, cfg) = setup(
        "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:7700\"\npeers = [\"127.0.0.1:7700\", \"localhost:7701\", \"127.0.0.1:7701\"]\n",
    );
    let err = stderr(&herald(&["check", "--config", &cfg]));
    assert!(
        err.contains("udp.peers[0]: 127.0.0.1:7700 is this node's own address"),
        "{err}"
    );
    assert!(
        err.contains("udp.peers[2]: 127.0.0.1:7701 is listed twice"),
        "{err}"
    );
}

#[test]
fn syntax_errors_name_their_line_and_column() {
    let (_dir, cfg) = setup("cluster = \"c\"\n[udp]\nbind = 127.0.0.1:7700\n");
    let out = herald(&["check", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("TOML syntax error at line 3, column"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn host_names_work_where_addresses_do() {
    let port = free_port();
    let (_dir, cfg) = setup(&format!(
        "cluster = \"c\"\n[udp]\nbind = \"localhost:{port}\"\npeers = [\"localhost:1\"]\n"
    ));
    let out = herald(&["check", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("bind = \"localhost:{port}\"")));
    assert_eq!(node(&cfg), Ok(()));
}

#[test]
fn check_json_lists_problems_by_key() {
    let (_dir, cfg) =
        setup("cluster = \"\"\n[udp]\nbind = \"127.0.0.1:7700\"\n[ring]\ncapacity = 3\n");
    let out = herald(&["check", "--json", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let keys: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["cluster", "ring.capacity"]);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("herald.toml");
    fs::write(&cfg, "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:7700\"\n").unwrap();
    let out = herald(&["check", "--json", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["secret_file"]["state"], "missing");
    assert!(
        !dir.path().join("herald.secret").exists(),
        "check creates nothing"
    );
}

#[test]
fn a_service_address_that_does_not_resolve_is_named_once() {
    let (_dir, cfg) = setup(
        "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:7700\"\n[service]\nlisten = \"no-such-host.invalid:6380\"\n",
    );
    let out = herald(&["check", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(
        err.matches("service.listen: cannot resolve").count(),
        1,
        "{err}"
    );
}
