//! `herald bench --receivers N`, driven as a person would run it.
#![cfg(unix)]

use std::process::{Command, Output};

use serde_json::Value;

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .expect("run herald")
}

/// The run's JSON object, after checking the run succeeded.
fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every receiver got every event the sender took, once, and no Missed notice.
fn assert_every_receiver_got_everything(v: &Value, receivers: usize) {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let (raised, refused) = (n(v, "raised"), n(v, "refused"));
    assert!(raised - refused > 0, "{v}");
    let per = v["per_receiver"].as_array().expect("per_receiver");
    assert_eq!(per.len(), receivers, "{v}");
    for r in per {
        assert_eq!(n(r, "delivered"), raised - refused, "{r}");
        assert_eq!(n(r, "missed"), 0, "{r}");
    }
    let total = v["events_per_sec_total"].as_f64().expect("a total");
    assert!(total > 0.0, "{v}");
    let cpu = v["sender_cpu_ns_per_event"].as_f64();
    assert!(cpu.is_some_and(|ns| ns > 0.0), "CPU from /proc: {v}");
}

#[test]
fn fan_out_over_udp_unicast_delivers_everything_to_every_receiver() {
    let out = herald(&["bench", "--receivers", "2", "--seconds", "1", "--json"]);
    let v = json(&out);
    assert_eq!(v["transport"], "udp");
    assert_eq!(v["receivers"], 2);
    assert_every_receiver_got_everything(&v, 2);
}

#[test]
fn fan_out_over_tcp_delivers_everything_to_every_receiver() {
    let args = [
        "bench",
        "--receivers",
        "2",
        "--transport",
        "tcp",
        "--seconds",
        "1",
    ];
    let out = herald(&[&args[..], &["--rate", "20000", "--json"]].concat());
    let v = json(&out);
    assert_eq!(v["transport"], "tcp");
    assert_every_receiver_got_everything(&v, 2);
}

/// Multicast inside a network namespace of the test's own (as tests/multicast.rs), where the
/// group is routed to loopback and nothing can leave the machine. Needs root; else skipped.
#[test]
fn fan_out_over_multicast_delivers_everything_to_every_receiver() {
    let uid = Command::new("id").arg("-u").output().map(|o| o.stdout);
    if uid.ok().as_deref() != Some(b"0\n".as_slice()) {
        eprintln!("SKIPPED: needs root for a network namespace (CI runs it as root)");
        return;
    }
    let script = format!(
        "ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec {} bench --receivers 3 \
         --multicast --seconds 1 --rate 20000 --json",
        env!("CARGO_BIN_EXE_herald")
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let v = json(&out);
    assert_eq!(v["transport"], "multicast");
    assert_every_receiver_got_everything(&v, 3);
}

#[test]
fn fan_out_refuses_bad_flags_with_one_line_and_exit_2() {
    for (flags, named) in [
        (&["--receivers", "0"][..], "--receivers"),
        (
            &["--receivers", "2", "--transport", "tcp", "--multicast"][..],
            "--multicast",
        ),
        (&["--receivers", "2", "--mode", "two-process"][..], "--mode"),
        (
            &["--receivers", "2", "--transport", "nats"][..],
            "--receivers",
        ),
        (&["--receivers", "2", "--loss", "5"][..], "--loss"),
    ] {
        let out = herald(&[&["bench"][..], flags].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(named), "{named} not named: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}
