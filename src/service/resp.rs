//! The RESP codec: commands in (arrays of bulk strings, or inline lines), replies and pushes
//! out (RESP2, or RESP3 after `HELLO 3`).
//!
//! [`parse_command`] is the one entry point for a client's bytes. It is incremental over the
//! connection's input buffer: it either finds one whole command at the start of the buffer,
//! says it needs more bytes, or names what is malformed. It never allocates a declared length
//! (arguments come back as ranges of the caller's buffer, in a `Vec` the caller reuses), caps
//! every length before trusting it, and does no unchecked arithmetic on the client's numbers.
//!
//! Writing in herald's own code rather than a crate: the crates.io RESP codecs are built for
//! clients (they parse every RESP type into owned frames); a server needs only arrays of bulk
//! strings and inline commands, with caps, parsed in place.

use std::ops::Range;

/// The most arguments one command may have (`SUBSCRIBE` with many channels).
pub(crate) const MAX_ARGS: usize = 4096;
/// The longest bulk string (a `PUBLISH` payload, a channel name).
pub(crate) const MAX_BULK: usize = 1 << 20;
/// The longest command, all its arguments and framing together.
pub(crate) const MAX_COMMAND: usize = 2 * MAX_BULK;
/// The longest inline command line, and the longest `*`/`$` header line.
pub(crate) const MAX_INLINE: usize = 64 << 10;
/// The longest decimal a header may carry (more digits than any allowed count needs).
const MAX_DIGITS: usize = 10;

/// What is wrong with a client's bytes. The connection is answered with
/// `-ERR Protocol error: <reason>` and closed: after malformed input nothing later in the
/// stream can be trusted to start at a command boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) &'static str);

/// Looks for one command at the start of `buf`.
///
/// On `Ok(Some(n))`, `args` holds the ranges of `buf` that are the command's arguments (the
/// name first) and the command took the first `n` bytes. An empty `args` with `n > 0` is an
/// empty command (a blank line, `*0`), to be skipped. `Ok(None)`: the command is not complete
/// yet; `args` is unspecified.
///
/// # Errors
///
/// [`ProtocolError`] naming what is malformed or over a cap.
pub(crate) fn parse_command(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ProtocolError> {
    args.clear();
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, args),
        Some(_) => parse_inline(buf, args),
    }
}

/// Finds the `\r\n` ending the line that starts at `start`; the line must be at most
/// [`MAX_INLINE`] bytes. `Ok(None)`: not there yet.
fn line_end(buf: &[u8], start: usize) -> Result<Option<usize>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_INLINE + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && window[i - 1] == b'\r' => Ok(Some(start + i - 1)),
        Some(_) => Err(ProtocolError("line not ended by CRLF")),
        None if rest.len() > MAX_INLINE + 1 => Err(ProtocolError("line too long")),
        None => Ok(None),
    }
}

/// A non-negative decimal of at most [`MAX_DIGITS`] digits, no sign, no spaces.
fn decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))
            .flatten()
    })
}

fn parse_multibulk(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ProtocolError> {
    let Some(end) = line_end(buf, 1)? else {
        return Ok(None);
    };
    let header = &buf[1..end];
    let mut pos = end + 2;
    // `*-1` and `*0` are empty commands: Redis skips them, and so do we.
    if header == b"-1" {
        return Ok(Some(pos));
    }
    let count = decimal(header).ok_or(ProtocolError("invalid multibulk length"))?;
    if count > MAX_ARGS {
        return Err(ProtocolError("too many arguments"));
    }
    for _ in 0..count {
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        if marker != b'$' {
            return Err(ProtocolError("expected '$' before an argument"));
        }
        let Some(end) = line_end(buf, pos + 1)? else {
            return Ok(None);
        };
        let len = decimal(&buf[pos + 1..end]).ok_or(ProtocolError("invalid bulk length"))?;
        if len > MAX_BULK {
            return Err(ProtocolError("argument too long"));
        }
        let start = end + 2;
        // `len <= MAX_BULK` and `start <= buf.len()`, so neither sum can overflow.
        let stop = start + len;
        if stop + 2 > MAX_COMMAND {
            return Err(ProtocolError("command too long"));
        }
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ProtocolError("argument not followed by CRLF"));
        }
        args.push(start..stop);
        pos = stop + 2;
    }
    Ok(Some(pos))
}

fn parse_inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, ProtocolError> {
    // Inline commands (what a person types into `nc`) end with `\n`, optionally `\r\n`.
    let window = &buf[..buf.len().min(MAX_INLINE + 1)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("inline command too long"))
        } else {
            Ok(None)
        };
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let mut i = 0;
    while i < line_end {
        if buf[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < line_end && !buf[i].is_ascii_whitespace() {
            i += 1;
        }
        if args.len() == MAX_ARGS {
            return Err(ProtocolError("too many arguments"));
        }
        args.push(start..i);
    }
    Ok(Some(nl + 1))
}

/// Writes RESP values into a connection's output buffer, in the protocol version the client
/// chose.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) resp3: bool,
}

impl Writer<'_> {
    fn line(&mut self, marker: u8, text: &[u8]) {
        self.out.push(marker);
        self.out.extend_from_slice(text);
        self.out.extend_from_slice(b"\r\n");
    }

    fn number(&mut self, marker: u8, n: i64) {
        // Digits from the right into a stack buffer: no allocation per header.
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.out.push(marker);
        if n < 0 {
            self.out.push(b'-');
        }
        self.out.extend_from_slice(&digits[i..]);
        self.out.extend_from_slice(b"\r\n");
    }

    /// `+text`. `text` must hold no CR or LF (callers pass constants).
    pub(crate) fn simple(&mut self, text: &str) {
        self.line(b'+', text.as_bytes());
    }

    /// `-message`, with CR and LF (which could come from a client's input) replaced.
    pub(crate) fn error(&mut self, message: &str) {
        let clean: Vec<u8> = message
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        self.line(b'-', &clean);
    }

    /// `:n`
    pub(crate) fn integer(&mut self, n: i64) {
        self.number(b':', n);
    }

    /// `$len` and the bytes.
    pub(crate) fn bulk(&mut self, bytes: &[u8]) {
        self.number(b'$', bytes.len() as i64);
        self.out.extend_from_slice(bytes);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The null value: `$-1` in RESP2, `_` in RESP3.
    pub(crate) fn null(&mut self) {
        if self.resp3 {
            self.out.extend_from_slice(b"_\r\n");
        } else {
            self.out.extend_from_slice(b"$-1\r\n");
        }
    }

    /// An array of `n` values.
    pub(crate) fn array(&mut self, n: usize) {
        self.number(b'*', n as i64);
    }

    /// A push of `n` values (`>` in RESP3; an array in RESP2, where pubsub messages are arrays).
    pub(crate) fn push(&mut self, n: usize) {
        self.number(if self.resp3 { b'>' } else { b'*' }, n as i64);
    }

    /// A set of `n` values (`~` in RESP3; an array in RESP2).
    pub(crate) fn set(&mut self, n: usize) {
        self.number(if self.resp3 { b'~' } else { b'*' }, n as i64);
    }

    /// A map of `n` pairs (`%` in RESP3; a flat array of `2n` values in RESP2).
    pub(crate) fn map(&mut self, n: usize) {
        if self.resp3 {
            self.number(b'%', n as i64);
        } else {
            self.array(2 * n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed<'a> = Option<(Vec<&'a [u8]>, usize)>;

    fn parse(buf: &[u8]) -> Result<Parsed<'_>, ProtocolError> {
        let mut args = Vec::new();
        Ok(parse_command(buf, &mut args)?
            .map(|n| (args.iter().map(|r| &buf[r.clone()]).collect(), n)))
    }

    #[test]
    fn multibulk_commands_parse_and_say_how_much_they_took() {
        let buf = b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n*1\r\n";
        let (args, n) = parse(buf).unwrap().unwrap();
        assert_eq!(args, [&b"PING"[..], b"hi"]);
        assert_eq!(n, buf.len() - 4);
        assert_eq!(parse(b"*0\r\n").unwrap().unwrap(), (vec![], 4));
        assert_eq!(parse(b"*-1\r\n").unwrap().unwrap(), (vec![], 5));
        assert_eq!(parse(b"*1\r\n$0\r\n\r\n").unwrap().unwrap().0, [&b""[..]]);
    }

    #[test]
    fn every_prefix_of_a_command_asks_for_more() {
        let buf = b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$13\r\nbinary\r\n\0data\r\n";
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        let (args, n) = parse(buf).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(args[2], b"binary\r\n\0data");
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_any_allocation() {
        assert_eq!(
            parse(b"*2147483648\r\n"),
            Err(ProtocolError("too many arguments"))
        );
        assert_eq!(
            parse(b"*99999999999999999999\r\n"),
            Err(ProtocolError("invalid multibulk length"))
        );
        assert_eq!(
            parse(b"*1\r\n$4294967296\r\n"),
            Err(ProtocolError("argument too long"))
        );
        assert_eq!(
            parse(b"*1\r\n$2000000\r\n"),
            Err(ProtocolError("argument too long"))
        );
        // Many arguments each under the cap, too long together: refused as soon as the
        // declared lengths say so, before the bytes arrive.
        let mut buf = b"*3\r\n".to_vec();
        for _ in 0..2 {
            buf.extend_from_slice(format!("${MAX_BULK}\r\n").as_bytes());
            buf.extend(std::iter::repeat_n(b'x', MAX_BULK));
            buf.extend_from_slice(b"\r\n");
        }
        assert_eq!(parse(&buf), Err(ProtocolError("command too long")));
    }

    #[test]
    fn malformed_input_is_named() {
        for (input, reason) in [
            (&b"*x\r\n"[..], "invalid multibulk length"),
            (b"*-2\r\n", "invalid multibulk length"),
            (b"*1\r\n:5\r\n", "expected '$' before an argument"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$+3\r\n", "invalid bulk length"),
            (b"*1\r\n$3\r\nabcde\r\n", "argument not followed by CRLF"),
            (b"*1\n", "line not ended by CRLF"),
        ] {
            assert_eq!(parse(input), Err(ProtocolError(reason)), "{input:?}");
        }
        let long = vec![b'a'; MAX_INLINE + 2];
        assert_eq!(parse(&long), Err(ProtocolError("inline command too long")));
        let mut header = b"*".to_vec();
        header.extend(std::iter::repeat_n(b'1', MAX_INLINE + 2));
        assert_eq!(parse(&header), Err(ProtocolError("line too long")));
    }

    #[test]
    fn inline_commands_split_on_whitespace() {
        let (args, n) = parse(b"  subscribe a  b\r\nPING\n").unwrap().unwrap();
        assert_eq!(args, [&b"subscribe"[..], b"a", b"b"]);
        assert_eq!(n, 18);
        assert_eq!(parse(b"\r\n").unwrap().unwrap(), (vec![], 2));
        assert_eq!(parse(b"PING"), Ok(None));
    }

    #[test]
    fn writer_speaks_both_versions() {
        let mut out = Vec::new();
        let mut w = Writer {
            out: &mut out,
            resp3: false,
        };
        w.push(3);
        w.bulk(b"message");
        w.null();
        w.map(1);
        w.error("bad\r\ninput");
        assert_eq!(out, b"*3\r\n$7\r\nmessage\r\n$-1\r\n*2\r\n-bad  input\r\n");
        let mut out = Vec::new();
        let mut w = Writer {
            out: &mut out,
            resp3: true,
        };
        w.push(3);
        w.null();
        w.map(2);
        w.integer(-7);
        w.integer(0);
        w.integer(i64::MIN);
        assert_eq!(
            out,
            b">3\r\n_\r\n%2\r\n:-7\r\n:0\r\n:-9223372036854775808\r\n"
        );
    }
}
