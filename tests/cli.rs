//! Drives the built `herald` binary the way a person would.
//!
//! Unix only: it checks file modes and stops processes with signals.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .expect("run herald")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The child pids (from "node N is pid P") and the temporary directory the demo printed.
fn demo_leftovers(text: &str) -> (Vec<u32>, std::path::PathBuf) {
    let pids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split_once(" is pid ")?.1.split(',').next()?.parse().ok())
        .collect();
    let dir = text
        .lines()
        .find_map(|l| {
            l.split_once(" have stopped and ")?
                .1
                .strip_suffix(" is removed.")
        })
        .unwrap_or_else(|| panic!("no removed directory in:\n{text}"));
    (pids, std::path::PathBuf::from(dir))
}

/// Neither a child process of the demo nor its directory is left.
fn assert_nothing_left(text: &str) {
    let (pids, dir) = demo_leftovers(text);
    assert_eq!(pids.len(), 3, "three child pids in:\n{text}");
    for pid in pids {
        // The demo waited for its children, so their pids are gone (or, if reused within
        // seconds, belong to something that is not a herald child).
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains("child"),
            "child {pid} still running: {cmdline}"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn demo_invalidates_caches_across_processes_and_leaves_nothing_behind() {
    let out = herald(&["demo"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "stdout:\n{text}\nstderr:\n{}",
        stderr(&out)
    );
    assert!(text.contains("(mode 0600)"), "{text}");
    for line in [
        "node 1 changes the price of sku-42: $4.20 -> $4.50",
        "-> node 2 drops sku-42 ($4.20) from its cache",
        "-> node 3 drops sku-42 ($4.20) from its cache",
        "-> node 1 drops sku-1 ($9.99) from its cache",
        "-> node 2 drops sku-2 ($19.99) from its cache",
        "node 1: sku-42 $4.50",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    for reason in [
        "bad_tag 1",
        "unknown_key 1",
        "foreign_cluster 1",
        "length_mismatch 1",
        "bad_magic 1",
    ] {
        assert!(
            text.contains(reason),
            "node 3 did not refuse ({reason}):\n{text}"
        );
    }
    assert!(
        text.contains("-> node 3 still caches: sku-2 $20.99"),
        "{text}"
    );
    for column in [
        "events/s",
        "p50 µs",
        "p99 µs",
        "delivered",
        "drops",
        "Missed",
    ] {
        assert!(text.contains(column), "summary has no {column}:\n{text}");
    }
    assert!(
        text.contains("  node 2 ") && text.contains("  node 3 "),
        "{text}"
    );
    assert_nothing_left(&text);
}

#[test]
fn demo_interrupted_with_sigint_stops_its_nodes_and_exits_0() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::CommandExt as _;

    // Its own process group, like a command started from a terminal, so the SIGINT goes to
    // the demo and its children at once, as a Ctrl-C does.
    let mut demo = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["demo", "--seconds", "30"])
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(demo.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the demo ended early:\n{text}"
        );
        text.push_str(&line);
        if line.starts_with("Throughput:") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", demo.id())])
        .status()
        .unwrap();
    assert!(status.success());
    reader.read_to_string(&mut text).unwrap();
    let exit = demo.wait().unwrap();
    let mut err = String::new();
    demo.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        exit.success(),
        "exit 0 after Ctrl-C: {exit:?}\n{text}\n{err}"
    );
    assert!(text.contains("Interrupted"), "{text}");
    assert_nothing_left(&text);
}

#[test]
fn demo_rejects_bad_flags_with_exit_2() {
    for (flags, named) in [
        (&["demo", "--producers", "0"][..], "--producers"),
        (&["demo", "--seconds", "999"][..], "--seconds"),
        (&["demo", "--colour"][..], "--colour"),
    ] {
        let out = herald(flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let err = stderr(&out);
        assert!(err.contains(named), "{named} not named: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn keygen_creates_a_private_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.secret");
    let p = path.to_str().unwrap();

    let out = herald(&["keygen", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&path), 0o600);
    let first = fs::read_to_string(&path).unwrap();

    let out = herald(&["keygen", p]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), first, "not overwritten");

    let out = herald(&["keygen", "--force", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        fs::read_to_string(&path).unwrap(),
        first,
        "--force replaces the key"
    );
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn keygen_rotation_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.secret");
    let p = path.to_str().unwrap();
    assert!(herald(&["keygen", p]).status.success());

    // Step 1: a new key that verifies everywhere before it signs.
    let out = herald(&["keygen", "--add-key", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("keys 1, 2, signing with 1"),
        "{}",
        stdout(&out)
    );
    // Step 2: it signs.
    let out = herald(&["keygen", "--sign", "2", p]);
    assert!(stdout(&out).contains("signing with 2"), "{}", stdout(&out));
    // Step 3: the old key is retired.
    let out = herald(&["keygen", "--retire", "1", p]);
    assert!(
        stdout(&out).contains("keys 2, signing with 2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(mode(&path), 0o600);

    // The signing key cannot be retired, and an unknown key cannot sign.
    let out = herald(&["keygen", "--retire", "2", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--retire 2"), "{}", stderr(&out));
    let out = herald(&["keygen", "--sign", "7", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--sign 7"), "{}", stderr(&out));

    // --rotate adds a key and makes it sign at once.
    let out = herald(&["keygen", "--rotate", p]);
    assert!(
        stdout(&out).contains("keys 2, 3, signing with 3"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn keygen_refuses_a_secret_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.secret");
    let p = path.to_str().unwrap();
    assert!(herald(&["keygen", p]).status.success());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let out = herald(&["keygen", "--add-key", p]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("chmod 600 {p}")), "{err}");
}

#[test]
fn keygen_on_a_missing_file_names_it() {
    let out = herald(&["keygen", "--add-key", "/nonexistent/dir/secret"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/dir/secret"),
        "{}",
        stderr(&out)
    );
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("herald.toml");
    fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn check_prints_the_effective_config_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "cluster = \"shop\"\n[udp]\nbind = \"127.0.0.1:7700\"\n",
    );
    assert!(
        herald(&["keygen", dir.path().join("herald.secret").to_str().unwrap()])
            .status
            .success()
    );
    let out = herald(&["check", "--config", &cfg]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("heartbeat_ms = 100"),
        "defaults shown:\n{text}"
    );
    assert!(text.contains("signing with key id 1"), "{text}");
    let secret = fs::read_to_string(dir.path().join("herald.secret")).unwrap();
    let hex = secret
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap()
        .trim_matches('"');
    assert!(!text.contains(hex), "the secret is never printed");
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (body, key) in [
        (
            "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:1\"\nbindd = 3\n",
            "udp.bindd",
        ),
        ("cluster = \"c\"\n[udp]\nbind = \"nowhere\"\n", "udp.bind"),
        ("cluster = \"c\"\n", "udp"),
        ("[udp]\nbind = \"127.0.0.1:1\"\n", "cluster"),
    ] {
        let cfg = write_config(dir.path(), body);
        let out = herald(&["check", "--config", &cfg]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{key}:")),
            "{key} not named in: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let out = herald(&["check", "--config", "/nonexistent/herald.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such config file"));
}

#[test]
fn node_creates_its_secret_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:{port}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
    );
    let node = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["node", "--log-format", "json", "--config", &cfg])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(mode(&dir.path().join("herald.secret")), 0o600);
    // Metrics are served, herald_* counters with reasons.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut conn, &mut body).unwrap();
    // hyper answers an HTTP/1.0 request in HTTP/1.0.
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(body.contains("herald_frames_dropped_total{reason=\"bad_tag\"} 0"));
    // A second node with the same config is refused (its control socket answers), and
    // one with another config on the same port is refused with the fix.
    let out = herald(&["node", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("another node already runs"),
        "{}",
        stderr(&out)
    );
    let other = dir.path().join("other.toml");
    fs::copy(&cfg, &other).unwrap();
    let out = herald(&["node", "--config", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("address in use"), "{}", stderr(&out));
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success(), "exit 0 after SIGTERM");
    let logs = stderr(&out);
    assert!(
        logs.lines().all(|l| l.starts_with('{')),
        "json logs: {logs}"
    );
    assert!(logs.contains("node running"));
}

#[test]
fn raise_refuses_bad_payload_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    );
    herald(&["keygen", dir.path().join("herald.secret").to_str().unwrap()]);
    let out = herald(&[
        "raise",
        "--config",
        &cfg,
        "--event",
        "e",
        "--payload-hex",
        "abc",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--payload-hex"));
    let out = herald(&[
        "raise",
        "--config",
        &cfg,
        "--event",
        "e",
        "--payload",
        "x",
        "--payload-hex",
        "00",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let big = "x".repeat(2000);
    let out = herald(&["raise", "--config", &cfg, "--event", "e", "--payload", &big]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("max_frame_len"), "{}", stderr(&out));
    let out = herald(&["raise", "--config", &cfg, "--event", "e", "--payload", "ok"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("raised 1"));
}

#[test]
fn bench_reports_json_with_every_key() {
    let out = herald(&["bench", "--seconds", "0.5", "--rate", "5000", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for key in [
        "events_per_sec",
        "mb_per_sec",
        "p50_us",
        "p99_us",
        "p999_us",
        "sent",
        "delivered",
        "missed",
        "dropped",
    ] {
        assert!(
            text.contains(&format!("\"{key}\":")),
            "{key} missing: {text}"
        );
    }
    let field = |k: &str| -> u64 {
        let start = text.find(&format!("\"{k}\":")).unwrap() + k.len() + 3;
        text[start..]
            .split([',', '}'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("sent") > 1000, "{text}");
    assert_eq!(
        field("delivered"),
        field("sent"),
        "paced load on loopback: nothing lost"
    );
    let out = herald(&["bench", "--payload", "4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--payload"));
}

/// A numeric field of a flat JSON object.
fn json_field(text: &str, key: &str) -> f64 {
    let start = text
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} missing: {text}"))
        + key.len()
        + 3;
    text[start..]
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number: {text}"))
}

#[test]
fn bench_two_process_reports_json_with_every_key() {
    // The latency settings reach the child (its config would refuse a key it did not know).
    let latency = [
        "--send-on-raise",
        "--dispatch-on-driver",
        "--busy-poll-us",
        "200",
    ];
    for (transport, extra) in [("udp", &[][..]), ("tcp", &[][..]), ("udp", &latency[..])] {
        let mut args = vec![
            "bench",
            "--mode",
            "two-process",
            "--transport",
            transport,
            "--seconds",
            "1",
            "--rate",
            "5000",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = herald(&args);
        let text = stdout(&out);
        assert!(out.status.success(), "{text}\n{}", stderr(&out));
        assert!(text.contains("\"mode\":\"two-process\""), "{text}");
        for key in [
            "events_per_sec",
            "mb_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "sent",
            "delivered",
            "missed",
            "dropped",
        ] {
            json_field(&text, key);
        }
        assert!(json_field(&text, "delivered") > 0.0, "{text}");
        assert!(
            json_field(&text, "delivered") <= json_field(&text, "sent"),
            "{text}"
        );
    }
}

#[test]
fn bench_rejects_bad_flags_with_one_line_and_exit_2() {
    for (flags, named) in [
        (&["bench", "--mode", "three-process"][..], "--mode"),
        (
            &["bench", "--mode", "two-process", "--payload", "4"][..],
            "--payload",
        ),
        (
            &["bench", "--mode", "two-process", "--seconds", "0"][..],
            "--seconds",
        ),
        (&["bench", "--producers", "0"][..], "--producers"),
        (&["bench", "--busy-poll-on", "sender"][..], "--busy-poll-on"),
        (&["bench", "--busy-poll-us", "soon"][..], "--busy-poll-us"),
        (
            &["bench", "--mode", "two-process", "--payload", "2000"][..],
            "--payload 2000",
        ),
    ] {
        let out = herald(flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let err = stderr(&out);
        assert!(err.contains(named), "{named} not named: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn tail_json_writes_large_ids_as_strings() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("herald.secret");
    assert!(
        herald(&["keygen", secret.to_str().unwrap()])
            .status
            .success()
    );
    let (tail_port, raise_port) = (free_port(), free_port());
    let tail_cfg = dir.path().join("tail.toml");
    fs::write(
        &tail_cfg,
        format!("cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:{tail_port}\"\n"),
    )
    .unwrap();
    let raise_cfg = dir.path().join("raise.toml");
    fs::write(
        &raise_cfg,
        format!(
            "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:{raise_port}\"\npeers = [\"localhost:{tail_port}\"]\n"
        ),
    )
    .unwrap();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["tail", "--json", "--event", "product.changed", "--config"])
        .arg(&tail_cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Past 2^53: a JSON number would come back rounded.
    let node = (1u64 << 60) + 1;
    let mut line = None;
    for _ in 0..20 {
        let raise = herald(&[
            "raise",
            "--config",
            raise_cfg.to_str().unwrap(),
            "--event",
            "product.changed",
            "--payload",
            "42 \"quoted\"",
            "--node-id",
            &node.to_string(),
        ]);
        assert!(raise.status.success(), "{}", stderr(&raise));
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            line = Some(l);
            break;
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let line = line.expect("tail printed the event");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "event", "{line}");
    assert_eq!(v["node"], node.to_string(), "{line}");
    assert!(v["incarnation"].is_string(), "{line}");
    assert_eq!(v["event"], "product.changed", "{line}");
    assert_eq!(v["payload"], "42 \"quoted\"", "{line}");
}
