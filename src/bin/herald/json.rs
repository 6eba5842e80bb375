//! JSON output: every `--json` line is a typed `Serialize` struct written by serde_json,
//! never text formatted by hand.

use serde::{Serialize, Serializer};

/// Writes `value` as one line of JSON on standard output.
pub(crate) fn print(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => say!("{line}"),
        // Only a failing `Serialize` impl gets here; ours are all derived from plain data.
        Err(e) => eprintln!("herald: cannot write JSON: {e}"),
    }
}

/// A u64 written as a JSON string: node ids, incarnations and sequence numbers go above
/// 2^53, where JavaScript (and jq) would round a number.
pub(crate) fn u64_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// `value` as one line of JSON.
pub(crate) fn line(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// `herald tail --json`: an event.
#[derive(Debug, Serialize)]
pub(crate) struct TailEvent<'a> {
    /// UTC, RFC 3339 with milliseconds.
    pub(crate) time: &'a str,
    /// Always `"event"`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The sending node's id (a string: ids go above 2^53).
    #[serde(serialize_with = "u64_string")]
    pub(crate) node: u64,
    /// The sending node's incarnation (a string, as `node`).
    #[serde(serialize_with = "u64_string")]
    pub(crate) incarnation: u64,
    /// The event's name when given with `--event`, else its id in hex.
    pub(crate) event: &'a str,
    /// The frame's sequence number in its sender's incarnation.
    pub(crate) sequence: u64,
    /// The payload as text, when it is printable UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<&'a str>,
    /// The payload in hex, when it is not printable text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_hex: Option<String>,
}

/// `herald tail --json`: a membership change.
#[derive(Debug, Serialize)]
pub(crate) struct TailMember<'a> {
    pub(crate) time: &'a str,
    /// Always `"member"`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// `joined`, `left`, `failed`, `suspect`, `refuted`, or `present` (there already when
    /// the tail started).
    pub(crate) change: &'a str,
    #[serde(serialize_with = "u64_string")]
    pub(crate) node: u64,
    #[serde(serialize_with = "u64_string")]
    pub(crate) incarnation: u64,
    /// Where it listens, if known.
    pub(crate) addr: Option<String>,
}

/// `herald tail --json`: a Missed notice.
#[derive(Debug, Serialize)]
pub(crate) struct TailMissed<'a> {
    pub(crate) time: &'a str,
    /// Always `"missed"`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    #[serde(serialize_with = "u64_string")]
    pub(crate) node: u64,
    #[serde(serialize_with = "u64_string")]
    pub(crate) incarnation: u64,
    /// Why, such as `gap` or `sender_overflowed`.
    pub(crate) reason: &'a str,
    /// The frames missed, first and last, when known; else `null`.
    pub(crate) range: Option<[u64; 2]>,
    /// The events those frames carried (names where the tail was given them, else ids), when
    /// the sender still knew them; else `null`: then drop whatever came from that node.
    pub(crate) events: Option<Vec<String>>,
}

/// `herald tail --json`: lost frames this node asked for and got again.
#[derive(Debug, Serialize)]
pub(crate) struct TailRecovered<'a> {
    pub(crate) time: &'a str,
    /// Always `"recovered"`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// Requests for lost frames sent since the last such line.
    pub(crate) requests: u64,
}

/// `herald tail --json`: events this tail dropped itself, printing too slowly.
#[derive(Debug, Serialize)]
pub(crate) struct TailLost<'a> {
    pub(crate) time: &'a str,
    /// Always `"lost"`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) count: u64,
    /// Always `"tail_too_slow"`.
    pub(crate) reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_above_2_pow_53_are_strings_and_text_is_escaped() {
        let line = line(&TailEvent {
            time: "t",
            kind: "event",
            node: u64::MAX,
            incarnation: (1 << 53) + 1,
            event: "a\"b\n",
            sequence: 7,
            payload: Some("\u{1}"),
            payload_hex: None,
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["node"], "18446744073709551615");
        assert_eq!(v["incarnation"], "9007199254740993");
        assert_eq!(v["event"], "a\"b\n");
        assert_eq!(v["sequence"], 7);
        assert_eq!(v["payload"], "\u{1}");
        assert!(v.get("payload_hex").is_none());
    }
}
