//! The node's small HTTP side (`/metrics`, `/healthz`, `/readyz`): hyper's HTTP/1 server on
//! a one-thread tokio runtime of its own, so that no client, idle or slow, holds up another
//! and the node's own threads never wait on HTTP.
//!
//! Each connection is a task. Bounds, so that a client cannot take the listener away from
//! Prometheus or a probe:
//! - a request's head must arrive within [`HEADER_TIMEOUT`] of the connection opening (or of
//!   the previous response on a kept-alive connection), else the connection is closed;
//! - a request head larger than [`MAX_REQUEST_HEAD`] is refused;
//! - a connection lives at most [`CONNECTION_LIFETIME`], then finishes the request in hand
//!   and closes;
//! - at most [`MAX_CONNECTIONS`] are open at once; more are closed as soon as accepted.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, oneshot};

/// How long a client may take to send a request's head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head taken (hyper's smallest allowed buffer is 8 KiB).
pub(crate) const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long one connection may stay open.
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The most connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// How long a connection past its lifetime may take to finish the request in hand.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// What the server answers to one request.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Reply {
    /// A plain-text reply.
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Answers a `GET` for a path. Called on the server's thread: it must not block for long.
pub(crate) type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A running server; [`stop`](Self::stop) (or dropping it) closes the listener and every
/// connection.
#[derive(Debug)]
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` (here, so that an error reaches the caller) and serves from a new thread.
    pub(crate) fn start(addr: SocketAddr, handler: Handler) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("herald-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(accept_loop(listener, handler));
                    // A dropped sender also ends the server.
                    let _ = stopped.await;
                });
                // Dropping the runtime cancels the accept loop and every connection task.
                drop(runtime);
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the server listens on (the bound port when asked for port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and all connections, and waits for the server's thread.
    pub(crate) fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shut();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, handler: Handler) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a little rather than spin, then go on.
                tracing::debug!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Full: closing at once keeps the connections already open answering.
            drop(stream);
            continue;
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let _slot = slot;
            serve_connection(stream, handler).await;
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, handler: Handler) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = respond(&handler, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    if tokio::time::timeout(CONNECTION_LIFETIME, connection.as_mut())
        .await
        .is_err()
    {
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(FINISH_GRACE, connection).await;
    }
}

fn respond(handler: &Handler, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let head = request.method() == Method::HEAD;
    let reply = if request.method() == Method::GET || head {
        handler(request.uri().path())
    } else {
        Reply::text(405, "only GET and HEAD\n")
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(reply.body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn server() -> HttpServer {
        let handler: Handler = Arc::new(|path: &str| match path {
            "/hello" => Reply::text(200, "hi\n"),
            _ => Reply::text(404, "no\n"),
        });
        HttpServer::start("127.0.0.1:0".parse().unwrap(), handler).unwrap()
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out);
        out
    }

    #[test]
    fn answers_by_path_and_method() {
        let server = server();
        let addr = server.local_addr();
        let ok = get(
            addr,
            "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("hi\n"), "{ok}");
        let missing = get(
            addr,
            "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(
            addr,
            "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        server.stop();
    }

    #[test]
    fn a_request_head_past_the_limit_is_refused() {
        let server = server();
        let big = "a".repeat(MAX_REQUEST_HEAD * 2);
        let reply = get(
            server.local_addr(),
            &format!("GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
        assert!(!reply.contains("hi\n"), "{reply}");
    }

    #[test]
    fn stopping_closes_the_listener() {
        let server = server();
        let addr = server.local_addr();
        server.stop();
        assert!(TcpStream::connect(addr).is_err());
    }
}
