//! The part of the NATS client protocol that herald's own client speaks: the server's
//! operations read from a byte buffer (`INFO`, `MSG`, `PING`, `PONG`, `+OK`, `-ERR`), and
//! the client's written into one (`CONNECT`, `PING`, `PONG`, `SUB`, `PUB`).
//!
//! Pure functions over byte slices, with no I/O, so the parser can be fuzzed and tested on
//! its own. A server is trusted no more than a peer: whatever it sends, [`parse`] returns an
//! operation, asks for more bytes, or says what is wrong; it never panics and never reads
//! past the buffer.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// The longest control line accepted, other than `INFO` (a `MSG` line is under 300 bytes
/// for herald's subjects).
const MAX_LINE: usize = 4096;

/// The longest `INFO` line accepted (a large cluster announces many URLs).
const MAX_INFO: usize = 256 * 1024;

/// What a server sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerOp {
    /// Server information, at the start and when the cluster changes.
    Info(Info),
    /// A message on subscription `sid`; `payload` is where its bytes are in the buffer.
    Msg {
        /// The subscription's id, as the client gave it in `SUB`.
        sid: u64,
        /// The payload's place in the buffer handed to [`parse`].
        payload: Range<usize>,
    },
    /// The server asks whether the client is alive: answer `PONG`.
    Ping,
    /// The answer to the client's `PING`.
    Pong,
    /// An acknowledgement (verbose mode only; herald does not ask for it).
    Ok,
    /// An error, with the server's text (quotes removed).
    Err(String),
}

/// The fields of a server's `INFO` that the client uses.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct Info {
    /// The server's id (for logs).
    pub(crate) server_id: String,
    /// A nonce to sign with an NKey.
    pub(crate) nonce: Option<String>,
    /// Other servers of the cluster, as `host:port`.
    pub(crate) connect_urls: Vec<String>,
    /// The server speaks only TLS.
    pub(crate) tls_required: bool,
    /// The server speaks TLS to clients that ask for it.
    pub(crate) tls_available: bool,
    /// The largest payload it accepts.
    pub(crate) max_payload: usize,
    /// The server is in lame duck mode: it will close its connections soon.
    pub(crate) ldm: bool,
}

/// Bytes that are not the NATS protocol.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProtoError(pub(crate) String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> ProtoError {
    ProtoError(what.into())
}

/// Reads the first operation of `buf`: the operation and how many bytes it took, `None` when
/// `buf` holds only part of it, or what is wrong. `max_payload` bounds a message's size.
///
/// # Errors
///
/// Unknown operations, malformed lines, lines or payloads over their limits, a payload not
/// followed by CRLF.
pub(crate) fn parse(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(ServerOp, usize)>, ProtoError> {
    let limit = if starts_with_ignore_case(buf, b"INFO") {
        MAX_INFO
    } else {
        MAX_LINE
    };
    let Some(eol) = find_crlf(&buf[..buf.len().min(limit + 2)]) else {
        if buf.len() >= limit + 2 {
            return Err(bad(format!("a protocol line longer than {limit} bytes")));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let (op, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], trim(&line[i + 1..])),
        None => (line, &line[line.len()..]),
    };
    let op = op.to_ascii_uppercase();
    let parsed = match op.as_slice() {
        b"MSG" => return parse_msg(buf, rest, after, max_payload),
        b"PING" => ServerOp::Ping,
        b"PONG" => ServerOp::Pong,
        b"+OK" => ServerOp::Ok,
        b"-ERR" => {
            let text = String::from_utf8_lossy(rest);
            ServerOp::Err(text.trim_matches('\'').to_owned())
        }
        b"INFO" => {
            let info: Info = serde_json::from_slice(rest)
                .map_err(|e| bad(format!("an INFO that is not JSON: {e}")))?;
            ServerOp::Info(info)
        }
        _ => {
            let shown = String::from_utf8_lossy(&op[..op.len().min(16)]).into_owned();
            return Err(bad(format!("an unknown operation {shown:?}")));
        }
    };
    Ok(Some((parsed, after)))
}

/// `MSG <subject> <sid> [reply-to] <#bytes>`, then the payload and CRLF.
fn parse_msg(
    buf: &[u8],
    args: &[u8],
    after: usize,
    max_payload: usize,
) -> Result<Option<(ServerOp, usize)>, ProtoError> {
    let fields: Vec<&[u8]> = args
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
        .collect();
    let (sid, len) = match fields.as_slice() {
        [_subject, sid, len] | [_subject, sid, _, len] => (number(sid)?, number(len)?),
        _ => return Err(bad("a MSG line without subject, sid and size")),
    };
    let len = usize::try_from(len).map_err(|_| bad("a MSG size out of range"))?;
    if len > max_payload {
        return Err(bad(format!(
            "a MSG of {len} bytes, over the {max_payload}-byte limit"
        )));
    }
    let end = after + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(bad("a MSG payload not followed by CRLF"));
    }
    Ok(Some((
        ServerOp::Msg {
            sid,
            payload: after..end,
        },
        end + 2,
    )))
}

fn number(field: &[u8]) -> Result<u64, ProtoError> {
    if field.is_empty() || field.len() > 19 || !field.iter().all(u8::is_ascii_digit) {
        return Err(bad("a number field that is not a number"));
    }
    Ok(field.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn starts_with_ignore_case(buf: &[u8], word: &[u8]) -> bool {
    buf.len() >= word.len() && buf[..word.len()].eq_ignore_ascii_case(word)
}

/// What the client says in `CONNECT`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Connect<'a> {
    pub(crate) verbose: bool,
    pub(crate) pedantic: bool,
    pub(crate) tls_required: bool,
    pub(crate) name: &'a str,
    pub(crate) lang: &'a str,
    pub(crate) version: &'a str,
    pub(crate) protocol: u8,
    pub(crate) echo: bool,
    pub(crate) headers: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nkey: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sig: Option<&'a str>,
}

/// Appends `CONNECT {...}` and CRLF.
pub(crate) fn write_connect(out: &mut Vec<u8>, connect: &Connect<'_>) {
    out.extend_from_slice(b"CONNECT ");
    // Serializing a struct of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, connect);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SUB <subject> <sid>`.
pub(crate) fn write_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    write_number(out, sid as usize);
    out.extend_from_slice(b"\r\n");
}

/// Appends `PUB <subject> <#bytes>`, the payload and CRLF.
pub(crate) fn write_pub(out: &mut Vec<u8>, subject: &[u8], payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    write_number(out, payload.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

fn write_number(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// What [`read_stream`] found.
#[cfg(fuzzing)]
#[derive(Debug, Default)]
pub struct StreamRead {
    /// The payloads of the messages, in order.
    pub payloads: Vec<Vec<u8>>,
    /// Control operations (everything but messages) read.
    pub controls: usize,
    /// The parser refused the stream (the client drops the connection there).
    pub refused: bool,
    /// Bytes of an unfinished operation left at the end.
    pub leftover: usize,
}

/// Reads `stream` as the driver's client does, the socket handing over `reads` bytes at a
/// time (0: it would block), taking every whole operation after each read.
#[cfg(fuzzing)]
pub fn read_stream(stream: &[u8], reads: &[usize], max_payload: usize) -> StreamRead {
    let mut out = StreamRead::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut sizes = reads.iter().copied().chain(std::iter::repeat(usize::MAX));
    while at < stream.len() {
        let n = sizes.next().unwrap_or(usize::MAX).min(stream.len() - at);
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        loop {
            match parse(&buf, max_payload) {
                Ok(Some((op, used))) => {
                    assert!(used > 0 && used <= buf.len(), "takes what it read");
                    match op {
                        ServerOp::Msg { payload, .. } => {
                            assert!(payload.end <= used, "a payload inside what it took");
                            out.payloads.push(buf[payload].to_vec());
                        }
                        _ => out.controls += 1,
                    }
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(_) => {
                    out.refused = true;
                    return out;
                }
            }
        }
    }
    out.leftover = buf.len();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> (ServerOp, usize) {
        parse(buf, 1 << 20).expect("parses").expect("complete")
    }

    #[test]
    fn control_lines_parse_in_any_case() {
        assert_eq!(one(b"PING\r\n"), (ServerOp::Ping, 6));
        assert_eq!(one(b"pong\r\nPING\r\n"), (ServerOp::Pong, 6));
        assert_eq!(one(b"+OK\r\n"), (ServerOp::Ok, 5));
        assert_eq!(
            one(b"-ERR 'Authorization Violation'\r\n").0,
            ServerOp::Err("Authorization Violation".into())
        );
    }

    #[test]
    fn info_keeps_what_the_client_needs() {
        let line = br#"INFO {"server_id":"S1","nonce":"abc","connect_urls":["10.0.0.2:4222"],"max_payload":1048576,"tls_required":false,"extra":1}"#;
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"\r\n");
        let (ServerOp::Info(info), used) = one(&buf) else {
            panic!("not an INFO")
        };
        assert_eq!(used, buf.len());
        assert_eq!(info.server_id, "S1");
        assert_eq!(info.nonce.as_deref(), Some("abc"));
        assert_eq!(info.connect_urls, ["10.0.0.2:4222"]);
        assert_eq!(info.max_payload, 1_048_576);
        assert!(!info.tls_required && !info.ldm);
    }

    #[test]
    fn a_message_waits_for_its_whole_payload() {
        let buf = b"MSG herald.c.frames 1 5\r\nhello\r\nPING\r\n";
        let (op, used) = one(buf);
        assert_eq!(
            op,
            ServerOp::Msg {
                sid: 1,
                payload: 25..30
            }
        );
        assert_eq!(&buf[25..30], b"hello");
        assert_eq!(used, 32);
        for cut in 0..32 {
            assert_eq!(parse(&buf[..cut], 1 << 20), Ok(None), "cut at {cut}");
        }
        let with_reply = b"MSG a.b 2 inbox.1 3\r\nxyz\r\n";
        assert_eq!(
            one(with_reply).0,
            ServerOp::Msg {
                sid: 2,
                payload: 21..24
            }
        );
    }

    #[test]
    fn what_is_not_the_protocol_is_refused() {
        for buf in [
            &b"HELLO\r\n"[..],
            b"MSG a 1\r\n",
            b"MSG a x 3\r\nabc\r\n",
            b"MSG a 1 3\r\nabcd\r\n",
            b"MSG a 1 99999999999999999999\r\n",
            b"INFO {not json\r\n",
        ] {
            assert!(
                parse(buf, 1 << 20).is_err(),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        assert!(
            parse(b"MSG a 1 2000000\r\n", 1 << 20).is_err(),
            "over max_payload"
        );
        let long = vec![b'A'; MAX_LINE + 10];
        assert!(parse(&long, 1 << 20).is_err(), "a line with no end");
        assert_eq!(parse(&long[..MAX_LINE], 1 << 20), Ok(None));
    }

    #[test]
    fn the_client_writes_what_the_server_reads() {
        let mut out = Vec::new();
        write_pub(&mut out, b"herald.c.frames", b"abc");
        write_sub(&mut out, "herald.c.node.7", 2);
        write_connect(
            &mut out,
            &Connect {
                name: "n",
                lang: "rust",
                version: "1",
                protocol: 1,
                user: Some("u"),
                pass: Some("p"),
                ..Connect::default()
            },
        );
        let text = String::from_utf8(out).expect("text");
        assert!(text.starts_with("PUB herald.c.frames 3\r\nabc\r\nSUB herald.c.node.7 2\r\n"));
        assert!(text.contains("CONNECT {\"verbose\":false"), "{text}");
        assert!(text.contains("\"user\":\"u\",\"pass\":\"p\""), "{text}");
        assert!(!text.contains("auth_token"), "{text}");
        assert!(text.ends_with("}\r\n"));
        let mut n = Vec::new();
        write_number(&mut n, 0);
        write_number(&mut n, 1_234_567);
        assert_eq!(n, b"01234567");
    }
}
