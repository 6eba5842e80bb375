//! One client: its socket and buffers ([`Conn`]) and what it has asked for ([`Session`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use rustls::ServerConnection;

use crate::event::EventId;

use super::metrics::Disconnect;
use super::resp::MAX_COMMAND;
use super::tls::{self, TlsRead};

/// The most input bytes buffered before commands are parsed out of them: one longest
/// command plus a read's worth. A full buffer therefore always starts with a whole command
/// (or a protocol error), so reading can always go on after parsing.
const MAX_INPUT: usize = MAX_COMMAND + READ_CHUNK;
/// Bytes read from the socket per call.
const READ_CHUNK: usize = 16 << 10;
/// The most bytes one [`Conn::fill`] reads, so one busy client cannot hold up the others.
const READ_BUDGET: usize = 256 << 10;
/// Buffers that grew past this for a burst are given back once empty.
const KEEP_CAPACITY: usize = 64 << 10;

/// What a client has asked for: protocol version, authentication, subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// Whether the client may run commands (always, when the service has no password).
    pub(crate) authed: bool,
    /// RESP3 (after `HELLO 3`), else RESP2.
    pub(crate) resp3: bool,
    /// From `CLIENT SETNAME`.
    pub(crate) name: Option<Vec<u8>>,
    /// Channel (as the client wrote it) to event.
    pub(crate) channels: HashMap<Vec<u8>, EventId>,
    /// Event to the channels the client used for it (usually one).
    pub(crate) by_event: HashMap<EventId, Vec<Vec<u8>>>,
    /// How many patterns (`PSUBSCRIBE`) it has; the patterns are in the [`Index`].
    ///
    /// [`Index`]: super::index::Index
    pub(crate) patterns: usize,
    /// Subscribed to `herald:missed`.
    pub(crate) missed: bool,
}

impl Session {
    /// Channels and patterns subscribed to (the count Redis replies with).
    pub(crate) fn count(&self) -> usize {
        self.channels.len() + usize::from(self.missed) + self.patterns
    }

    /// Bytes of channel names this session holds (each is kept twice: as a key of
    /// `channels` and in `by_event`).
    pub(crate) fn name_bytes(&self) -> usize {
        2 * self.channels.keys().map(Vec::len).sum::<usize>()
    }
}

/// How a read turn ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filled {
    /// The socket has nothing more for now.
    Drained,
    /// The input buffer is full: parse, then read again.
    More,
    /// The client closed its side.
    Eof,
    /// The socket failed.
    Failed,
    /// The TLS handshake or records were bad (the error is in [`Conn::tls_error`]).
    TlsFailed,
}

/// A client's connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// The TLS session, for a client of the TLS listener.
    tls: Option<Box<ServerConnection>>,
    /// Why the TLS session failed, once it has.
    pub(crate) tls_error: Option<rustls::Error>,
    pub(crate) peer: SocketAddr,
    pub(crate) id: u64,
    pub(crate) session: Session,
    /// Bytes read and not yet parsed into commands.
    pub(crate) input: Vec<u8>,
    /// Replies and pushes not yet written; `out[out_pos..]` is pending.
    pub(crate) out: Vec<u8>,
    out_pos: usize,
    /// When the client last sent anything.
    pub(crate) last_input: Instant,
    /// Set when the connection is to close once its output is written (`QUIT`, a protocol
    /// error) or at once (output limit, socket error).
    pub(crate) closing: Option<Disconnect>,
    /// Whether the poller also watches for writability (output is waiting).
    pub(crate) write_interest: bool,
    /// Whether the connection is on the server's list of connections with output to write.
    pub(crate) dirty: bool,
}

impl Conn {
    pub(crate) fn new(
        stream: TcpStream,
        tls: Option<ServerConnection>,
        peer: SocketAddr,
        id: u64,
        authed: bool,
        now: Instant,
    ) -> Self {
        Self {
            stream,
            tls: tls.map(Box::new),
            tls_error: None,
            peer,
            id,
            session: Session {
                authed,
                ..Session::default()
            },
            input: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            last_input: now,
            closing: None,
            write_interest: false,
            dirty: false,
        }
    }

    /// Reads until the socket would block, the client closes, the input buffer is full, or
    /// [`READ_BUDGET`] bytes were read.
    pub(crate) fn fill(&mut self, now: Instant) -> Filled {
        if self.tls.is_some() {
            return self.fill_tls(now);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut read = 0;
        loop {
            if self.input.len() >= MAX_INPUT || read >= READ_BUDGET {
                return Filled::More;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Filled::Eof,
                Ok(n) => {
                    read += n;
                    self.last_input = now;
                    self.input.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Filled::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Filled::Failed,
            }
        }
    }

    /// [`fill`](Self::fill) through the TLS session: plaintext first, then more records.
    fn fill_tls(&mut self, now: Instant) -> Filled {
        let mut chunk = [0u8; READ_CHUNK];
        let mut read = 0;
        let mut closed = false;
        let Some(session) = self.tls.as_deref_mut() else {
            return Filled::Failed;
        };
        loop {
            if self.input.len() >= MAX_INPUT || read >= READ_BUDGET {
                return Filled::More;
            }
            match tls::read_plaintext(session, &mut chunk) {
                Ok(0) => {}
                Ok(n) => {
                    read += n;
                    self.last_input = now;
                    self.input.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(_) => return Filled::Failed,
            }
            if closed {
                return Filled::Eof;
            }
            match tls::read_records(session, &mut self.stream) {
                TlsRead::Plaintext => {}
                TlsRead::Blocked => return Filled::Drained,
                TlsRead::Closed => closed = true,
                TlsRead::Failed(e) => {
                    self.tls_error = Some(e);
                    return Filled::TlsFailed;
                }
                TlsRead::Io => return Filled::Failed,
            }
        }
    }

    /// Says goodbye to a TLS client (`close_notify`), as far as the socket takes it.
    pub(crate) fn close_tls(&mut self) {
        if let Some(session) = self.tls.as_deref_mut() {
            session.send_close_notify();
            let _ = tls::write(session, &mut self.stream, &[]);
        }
    }

    /// Drops the first `n` input bytes (commands that were run).
    pub(crate) fn consume(&mut self, n: usize) {
        self.input.drain(..n.min(self.input.len()));
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input.shrink_to(KEEP_CAPACITY);
        }
    }

    /// Bytes of output waiting.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes what it can. `Ok(true)`: everything is written.
    ///
    /// # Errors
    ///
    /// The socket's error (the client is gone).
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        if let Some(session) = self.tls.as_deref_mut() {
            self.out_pos += tls::write(session, &mut self.stream, &self.out[self.out_pos..])?;
            let records_left = session.wants_write();
            let done = self.compact();
            return Ok(done && !records_left);
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.compact())
    }

    /// Forgets what was written; true if nothing is left.
    fn compact(&mut self) -> bool {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > KEEP_CAPACITY {
                self.out.shrink_to(KEEP_CAPACITY);
            }
            return true;
        }
        // Keep the buffer from growing by what was already written.
        if self.out_pos >= self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        false
    }
}
