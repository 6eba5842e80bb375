//! A NATS server for `bench` and `demo`: the one `--nats-url` names, or a `nats-server` child
//! process on a free port of 127.0.0.1, stopped when this is dropped.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::CliError;
use crate::children::free_port;

/// What to tell a user who has no `nats-server`.
pub(crate) const INSTALL_HINT: &str = "nats-server is not installed: install it \
    (`apt-get install nats-server` on Debian or Ubuntu, or see https://docs.nats.io), or give \
    --nats-url nats://HOST:4222 for a server that runs elsewhere";

/// A server to use, and the child process if this started it.
#[derive(Debug)]
pub(crate) struct LocalNats {
    /// The client URL.
    pub(crate) url: String,
    child: Option<Child>,
}

impl LocalNats {
    /// `url` if given, or a new `nats-server` on 127.0.0.1.
    pub(crate) fn use_or_start(url: Option<&str>) -> Result<Self, CliError> {
        if let Some(url) = url {
            return Ok(Self {
                url: url.to_owned(),
                child: None,
            });
        }
        let port = free_port(true)?.port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => CliError::usage(INSTALL_HINT),
                _ => CliError::usage(format!("cannot start nats-server: {e}")),
            })?;
        let mut server = Self {
            url: format!("nats://127.0.0.1:{port}"),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(CliError::usage(format!(
                    "nats-server did not start listening on 127.0.0.1:{port}; try it by hand: \
                     nats-server -a 127.0.0.1 -p {port}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
