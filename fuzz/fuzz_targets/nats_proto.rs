//! The NATS protocol reader of herald's own NATS client (src/transport/nats/proto.rs), fed
//! through arbitrary read sizes: whatever a server sends never panics it, and every payload
//! it hands out lies inside what it read; a well-formed stream of messages and control lines,
//! however the socket cuts it, comes back message for message with nothing left over.
#![no_main]

use arbitrary::Arbitrary;
use herald::transport::fuzzing::read_stream;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Msg {
        sid: u8,
        reply: bool,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
    Ok,
    Err(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Raw bytes from a server.
    raw: Vec<u8>,
    /// Operations for a well-formed stream.
    ops: Vec<Op>,
    /// Read sizes, in turn (0: the socket would block).
    reads: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let reads: Vec<usize> = input.reads.iter().map(|&r| usize::from(r)).collect();
    let _ = read_stream(&input.raw, &reads, 1 << 16);

    let mut stream = Vec::new();
    let mut payloads = Vec::new();
    let mut controls = 0;
    for op in &input.ops {
        match op {
            Op::Msg {
                sid,
                reply,
                payload,
            } => {
                let reply = if *reply { " _INBOX.x" } else { "" };
                stream.extend_from_slice(
                    format!("MSG herald.c.frames {sid}{reply} {}\r\n", payload.len()).as_bytes(),
                );
                stream.extend_from_slice(payload);
                stream.extend_from_slice(b"\r\n");
                payloads.push(payload.clone());
            }
            Op::Ping => stream.extend_from_slice(b"PING\r\n"),
            Op::Pong => stream.extend_from_slice(b"PONG\r\n"),
            Op::Ok => stream.extend_from_slice(b"+OK\r\n"),
            Op::Err(text) => {
                let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
                stream.extend_from_slice(format!("-ERR '{text}'\r\n").as_bytes());
            }
        }
        if !matches!(op, Op::Msg { .. }) {
            controls += 1;
        }
    }
    let got = read_stream(&stream, &reads, 1 << 20);
    assert!(!got.refused, "a well-formed stream is read");
    assert_eq!(got.leftover, 0);
    assert_eq!(got.controls, controls);
    assert_eq!(got.payloads, payloads, "message for message");
});
