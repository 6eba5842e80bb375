//! The two NATS clients (`nats.client`): herald's own on the driver's poll and async-nats on
//! a thread of its own carry the same frames, side by side on one cluster; each
//! authenticates with a token and with an NKey, and is refused clearly with the wrong one;
//! each reaches a server that requires TLS, given the CA file (a certificate the client does
//! not trust is refused, saying what to set). Against real `nats-server` processes on
//! 127.0.0.1.
#![cfg(feature = "nats")]
#![allow(clippy::disallowed_types)]

mod util;

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::transport::{NatsAuth, NatsClient, NatsConfig, NatsTransport};
use herald::{BuildError, EventId, Router};
use util::nats::{NatsServer, nats_server_available};
use util::pki::Pki;
use util::{counting_node, exchange_and_check, wait_connected};

fn config(url: &str, client: NatsClient) -> NatsConfig {
    let mut c = NatsConfig::new([url]);
    c.client = client;
    c
}

fn node(cluster: &str, id: u64, config: NatsConfig) -> Result<Router, BuildError> {
    counting_node(cluster, id).nats(config).build()
}

fn kind(e: &BuildError) -> Option<ErrorKind> {
    match e {
        BuildError::Io { source, .. } => Some(source.kind()),
        _ => None,
    }
}

#[test]
fn both_clients_carry_the_same_cluster_and_auto_picks_the_driver() {
    if !nats_server_available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let url = server.url();
    let auto =
        NatsTransport::connect(&config(&url, NatsClient::Auto), "natsmix", 9).expect("connects");
    assert_eq!(
        auto.client(),
        NatsClient::Driver,
        "no TLS: herald's own client"
    );
    drop(auto);
    let routers = vec![
        node("natsmix", 1, config(&url, NatsClient::Driver)).expect("driver client"),
        node("natsmix", 2, config(&url, NatsClient::AsyncNats)).expect("async-nats client"),
        node("natsmix", 3, config(&url, NatsClient::Auto)).expect("auto"),
    ];
    wait_connected(&routers);
    exchange_and_check(&routers, 10_000);
    for r in &routers {
        assert_eq!(r.metrics().drops_total(), 0, "{:?}", r.metrics());
    }
}

#[test]
fn tokens_are_taken_or_refused_by_name_with_either_client() {
    if !nats_server_available() {
        return;
    }
    let server = NatsServer::start(&["--auth", "s3cret-token"]);
    for client in [NatsClient::Driver, NatsClient::AsyncNats] {
        let mut c = config(&server.url(), client);
        c.auth = NatsAuth::Token("wrong".into());
        let err = node("natstoken", 1, c).expect_err("a wrong token is refused");
        assert_eq!(
            kind(&err),
            Some(ErrorKind::PermissionDenied),
            "{client:?}: {err}"
        );
        assert!(err.to_string().contains("nats.token"), "{client:?}: {err}");
        let mut c = config(&server.url(), client);
        c.auth = NatsAuth::Token("s3cret-token".into());
        node("natstoken", 1, c)
            .unwrap_or_else(|e| panic!("{client:?}: the right token connects: {e}"))
            .shutdown();
    }
}

#[test]
fn nkeys_sign_the_servers_nonce_with_either_client() {
    if !nats_server_available() {
        return;
    }
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().expect("temporary directory");
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .expect("write the server config");
    let server = NatsServer::start(&["-c", conf.to_str().expect("utf-8 path")]);
    let seed_file = dir.path().join("herald.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().expect("seed"))).expect("write seed");
    for client in [NatsClient::Driver, NatsClient::AsyncNats] {
        let mut c = config(&server.url(), client);
        c.auth = NatsAuth::NkeySeed(stranger.seed().expect("seed"));
        let err = node("natsnkey", 1, c).expect_err("a key the server does not know");
        assert_eq!(
            kind(&err),
            Some(ErrorKind::PermissionDenied),
            "{client:?}: {err}"
        );
        let mut a = config(&server.url(), client);
        a.auth = NatsAuth::NkeySeedFile(seed_file.clone());
        let mut b = config(&server.url(), client);
        b.auth = NatsAuth::NkeySeed(user.seed().expect("seed"));
        let routers = vec![
            node("natsnkey", 1, a).unwrap_or_else(|e| panic!("{client:?}: seed file: {e}")),
            node("natsnkey", 2, b).unwrap_or_else(|e| panic!("{client:?}: seed: {e}")),
        ];
        wait_connected(&routers);
        exchange_and_check(&routers, 1000);
    }
}

#[test]
fn tls_servers_are_reached_by_both_clients_with_the_ca_file() {
    if !nats_server_available() {
        return;
    }
    let pki = Pki::new();
    let path = |name: &str| pki.path(name).to_str().expect("utf-8 path").to_owned();
    let server = NatsServer::start(&[
        "--tls",
        "--tlscert",
        &path("server.pem"),
        "--tlskey",
        &path("server.key"),
    ]);
    // Without the CA file the system's authorities are trusted, and they did not sign the
    // test's certificate (unless SSL_CERT_FILE says otherwise: see `tests/nats_node.rs`).
    let mut untrusted = config(&server.url(), NatsClient::Driver);
    untrusted.connect_timeout = Duration::from_secs(1);
    let err = node("natstls", 1, untrusted).expect_err("the system does not trust the test CA");
    let text = err.to_string();
    assert!(
        text.contains("TLS") && text.contains("nats.tls_ca_file"),
        "says why and what to set: {text}"
    );
    let with_ca = |client| {
        let mut c = config(&server.url(), client);
        c.tls_ca_file = Some(pki.path("ca.pem"));
        c
    };
    let auto = NatsTransport::connect(&with_ca(NatsClient::Auto), "natstls", 9)
        .expect("auto with a CA file connects");
    assert_eq!(
        auto.client(),
        NatsClient::Driver,
        "over TLS, herald's own client"
    );
    drop(auto);
    let mut wrong = with_ca(NatsClient::Driver);
    wrong.tls_ca_file = Some(pki.path("client.pem"));
    wrong.connect_timeout = Duration::from_secs(1);
    let err =
        node("natstls", 1, wrong).expect_err("a CA that did not sign the server's certificate");
    assert!(err.to_string().contains("TLS"), "{err}");
    let routers = vec![
        node("natstls", 1, with_ca(NatsClient::Driver)).expect("driver over TLS"),
        node("natstls", 2, with_ca(NatsClient::AsyncNats)).expect("async-nats over TLS"),
    ];
    wait_connected(&routers);
    exchange_and_check(&routers, 2000);
}

/// A NATS user without the right to publish to the cluster's subject: the server answers
/// each frame with an error, which either client counts without losing its connection
/// (nothing reaches the peer, and herald does not pretend otherwise).
#[test]
fn a_user_without_publish_rights_is_counted_not_disconnected() {
    if !nats_server_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        "authorization { users = [\n\
           { user: \"mute\", password: \"m\", permissions: { publish: { deny: [\"herald.natsperm.frames\"] } } },\n\
           { user: \"full\", password: \"f\" }\n\
         ] }\n",
    )
    .expect("write the server config");
    let server = NatsServer::start(&["-c", conf.to_str().expect("utf-8 path")]);
    for client in [NatsClient::Driver, NatsClient::AsyncNats] {
        let with = |user: &str, password: &str| {
            let mut c = config(&server.url(), client);
            c.auth = NatsAuth::UserPassword {
                user: user.into(),
                password: password.into(),
            };
            c
        };
        let mute = with("mute", "m");
        let stats = mute.stats();
        let sender = node("natsperm", 1, mute).expect("the mute user connects");
        let receiver = node("natsperm", 2, with("full", "f")).expect("the full user connects");
        let heard = Arc::new(AtomicU64::new(0));
        let h = Arc::clone(&heard);
        let _sub = receiver
            .event(EventId::from_name("perm.x"))
            .subscribe(move |_| {
                h.fetch_add(1, Ordering::Relaxed);
            });
        let event = sender.event(EventId::from_name("perm.x"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.server_errors() == 0 {
            assert!(
                Instant::now() < deadline,
                "{client:?}: no error counted: {stats:?}"
            );
            let _ = event.raise(b"42");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(stats.connected(), "{client:?}: still connected: {stats:?}");
        assert_eq!(stats.disconnects(), 0, "{client:?}: {stats:?}");
        assert_eq!(
            heard.load(Ordering::Relaxed),
            0,
            "{client:?}: nothing got through"
        );
        sender.shutdown();
        receiver.shutdown();
    }
}
