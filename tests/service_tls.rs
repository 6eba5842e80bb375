//! The service over TLS: `redis-cli --tls` and a rustls client subscribe and get events on
//! the TLS listener while the plain one runs beside it; a plain-text client on the TLS port is
//! closed at once; with mutual TLS a client without a certificate is refused. Every
//! certificate and key is made here, by rcgen, in a temporary directory.
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use herald::EventId;
use herald::service::{Service, ServiceConfig, ServiceError, ServiceTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use util::pki::Pki;
use util::service::{Raw, eventually, lone_router, redis_cli};

fn tls_service(router: &herald::Router, tls: ServiceTls) -> Service {
    let mut config = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
    config.tls = Some(tls);
    Service::start(router, config).expect("service starts with TLS")
}

/// A rustls client trusting the test CA, with the client certificate if `with_cert`.
fn rustls_client(
    pki: &Pki,
    addr: SocketAddr,
    with_cert: bool,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if with_cert {
        builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(pki.path("client.pem")).unwrap()],
                PrivateKeyDer::from_pem_file(pki.path("client.key")).unwrap(),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads until the stream ends or fails; panics if it only times out (a hang).
fn read_to_close(stream: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("no close within the read timeout: the server hangs")
            }
            Err(_) => return got,
        }
    }
}

fn cli(pki: &Pki, port: u16, client_cert: bool) -> Option<Command> {
    let cli = redis_cli()?;
    let mut cmd = Command::new(cli);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--tls",
        "--sni",
        "localhost",
    ])
    .arg("--cacert")
    .arg(pki.path("ca.pem"));
    if client_cert {
        cmd.arg("--cert")
            .arg(pki.path("client.pem"))
            .arg("--key")
            .arg(pki.path("client.key"));
    }
    Some(cmd)
}

#[test]
fn tls_clients_subscribe_and_receive_beside_the_plain_listener() {
    let pki = Pki::new();
    let router = lone_router();
    let svc = tls_service(&router, pki.settings(false));
    let tls_addr = svc.tls_addr().expect("a TLS listener");
    assert_ne!(tls_addr, svc.local_addr());

    // A rustls client: subscribes, gets an event.
    let mut client = rustls_client(&pki, tls_addr, false);
    client
        .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$15\r\nproduct.changed\r\n")
        .unwrap();
    let mut reader = BufReader::new(client);
    let mut line = || {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    };
    for expected in ["*3", "$9", "subscribe", "$15", "product.changed", ":1"] {
        assert_eq!(line(), expected);
    }
    // The plain listener runs beside it, and a PUBLISH there reaches the TLS subscriber.
    let mut plain = Raw::connect(svc.local_addr());
    plain.command(&[b"PUBLISH", b"product.changed", b"over tls"]);
    assert_eq!(plain.line(), ":1");
    for expected in [
        "*3",
        "$7",
        "message",
        "$15",
        "product.changed",
        "$8",
        "over tls",
    ] {
        assert_eq!(line(), expected);
    }

    // redis-cli --tls, with the CA only.
    let Some(mut cmd) = cli(&pki, tls_addr.port(), false) else {
        return;
    };
    let mut sub = cmd
        .args(["SUBSCRIBE", "product.changed"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start redis-cli");
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    for expected in ["subscribe", "product.changed", "1"] {
        assert_eq!(lines.next().unwrap().unwrap(), expected);
    }
    router
        .event(EventId::from_name("product.changed"))
        .raise(b"42")
        .unwrap();
    for expected in ["message", "product.changed", "42"] {
        assert_eq!(lines.next().unwrap().unwrap(), expected);
    }
    let _ = sub.kill();
    let _ = sub.wait();
    let out = cli(&pki, tls_addr.port(), false)
        .unwrap()
        .args(["PING"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}

#[test]
fn a_plain_text_client_on_the_tls_port_is_closed_not_left_hanging() {
    let pki = Pki::new();
    let router = lone_router();
    let svc = tls_service(&router, pki.settings(false));
    let mut raw = TcpStream::connect(svc.tls_addr().unwrap()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let got = read_to_close(&mut raw);
    // At most a TLS alert record (content type 21), never a Redis reply.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    assert!(!got.windows(5).any(|w| w == b"+PONG"));
    eventually("the TLS failure counted", || {
        svc.metrics().disconnects_for("tls_error") == 1
    });
    // The plain-text port answers plain text, of course.
    let mut plain = Raw::connect(svc.local_addr());
    plain.command(&[b"PING"]);
    assert_eq!(plain.line(), "+PONG");
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let router = lone_router();
    let svc = tls_service(&router, pki.settings(true));
    let addr = svc.tls_addr().unwrap();

    let mut anonymous = rustls_client(&pki, addr, false);
    // TLS 1.3: the client may finish its side before the server refuses; the refusal then
    // arrives as an alert instead of a reply.
    let _ = anonymous.write_all(b"*1\r\n$4\r\nPING\r\n");
    let got = read_to_close(&mut anonymous);
    assert!(!got.windows(5).any(|w| w == b"+PONG"), "{got:?}");
    eventually("the refusal counted", || {
        svc.metrics().disconnects_for("tls_error") == 1
    });

    let mut known = rustls_client(&pki, addr, true);
    known.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = [0u8; 7];
    known.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");

    let Some(mut cmd) = cli(&pki, addr.port(), false) else {
        return;
    };
    let out = cmd.arg("PING").output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    let out = cli(&pki, addr.port(), true)
        .unwrap()
        .arg("PING")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}

#[test]
fn bad_tls_files_name_the_setting() {
    let pki = Pki::new();
    let router = lone_router();
    let start = |tls: ServiceTls| {
        let mut config = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
        config.tls = Some(tls);
        let checked = config.validate().map_err(|e| e.to_string());
        match Service::start(&router, config) {
            Err(ServiceError::Invalid(errors)) => {
                assert_eq!(checked, Err(errors.to_string()), "validate agrees");
                let first = errors.iter().next().expect("one error").clone();
                (first.key, first.problem)
            }
            other => panic!("expected a settings error, got {other:?}"),
        }
    };
    let mut tls = pki.settings(false);
    tls.cert = pki.path("missing.pem");
    let (field, problem) = start(tls);
    assert_eq!(field, "service.tls_cert");
    assert!(problem.contains("missing.pem"), "{problem}");

    let mut tls = pki.settings(false);
    tls.key = pki.path("client.key");
    assert_eq!(start(tls).0, "service.tls_key");

    let mut tls = pki.settings(false);
    tls.key = pki.path("ca.pem");
    assert_eq!(start(tls).0, "service.tls_key");

    let mut tls = pki.settings(true);
    tls.client_ca = Some(pki.path("server.key"));
    assert_eq!(start(tls).0, "service.tls_client_ca");
}

#[test]
fn the_config_file_sets_up_tls_relative_to_its_directory() {
    let base = "cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:1\"\n[service]\nlisten = \"127.0.0.1:6380\"\n";
    let dir = std::path::Path::new("/etc/herald");
    let service = |extra: &str| {
        herald::Config::from_toml(&format!("{base}{extra}"))
            .unwrap()
            .service_config(dir)
    };
    let tls = service(
        "tls_listen = \"127.0.0.1:6381\"\ntls_cert = \"svc.pem\"\ntls_key = \"/keys/svc.key\"\ntls_client_ca = \"ca.pem\"\n",
    )
    .unwrap()
    .unwrap()
    .tls
    .unwrap();
    assert_eq!(tls.listen, "127.0.0.1:6381".parse().unwrap());
    assert_eq!(tls.cert, dir.join("svc.pem"));
    assert_eq!(tls.key, PathBuf::from("/keys/svc.key"));
    assert_eq!(tls.client_ca, Some(dir.join("ca.pem")));
    assert!(service("").unwrap().unwrap().tls.is_none());

    let err = service("tls_listen = \"127.0.0.1:6381\"\ntls_key = \"k\"\n").unwrap_err();
    assert_eq!(err.key, "service.tls_cert");
    let err = service("tls_listen = \"127.0.0.1:6381\"\ntls_cert = \"c\"\n").unwrap_err();
    assert_eq!(err.key, "service.tls_key");
    let err = service("tls_cert = \"c\"\ntls_key = \"k\"\n").unwrap_err();
    assert_eq!(err.key, "service.tls_cert");
    assert!(err.problem.contains("service.tls_listen"), "{err}");
}
