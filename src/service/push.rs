//! Pushes as clients receive them: an event's push encoded once and copied to every client
//! that shares its channel name, and the JSON of a `herald:missed` notice.

use super::resp::Writer;
use crate::event::Missed;

/// The last push encoded for one event, with what it was encoded for (pattern or channel
/// push, the channel name, the protocol), so a fan-out to many clients encodes once and
/// copies.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pattern: bool,
    key: Vec<u8>,
    resp3: bool,
    valid: bool,
    pub(crate) bytes: Vec<u8>,
}

impl Scratch {
    pub(crate) fn clear(&mut self) {
        self.valid = false;
    }

    pub(crate) fn holds(&self, pattern: bool, key: &[u8], resp3: bool) -> bool {
        self.valid && self.pattern == pattern && self.resp3 == resp3 && self.key == key
    }

    pub(crate) fn encode(
        &mut self,
        pattern: bool,
        key: &[u8],
        resp3: bool,
        f: impl FnOnce(&mut Writer<'_>),
    ) {
        self.pattern = pattern;
        self.key.clear();
        self.key.extend_from_slice(key);
        self.resp3 = resp3;
        self.valid = true;
        self.bytes.clear();
        f(&mut Writer {
            out: &mut self.bytes,
            resp3,
        });
    }
}

/// A Missed notice as the JSON object `herald:missed` subscribers get.
pub(crate) fn missed_json(m: &Missed) -> String {
    let range = m
        .range
        .map_or_else(|| "null".to_owned(), |(a, b)| format!("[{a},{b}]"));
    let events = m.events.as_ref().map_or_else(
        || "null".to_owned(),
        |ids| {
            let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
            format!("[{}]", quoted.join(","))
        },
    );
    format!(
        "{{\"node\":{},\"incarnation\":{},\"reason\":\"{}\",\"range\":{range},\"events\":{events}}}",
        m.node,
        m.incarnation,
        m.reason.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MissedReason;

    #[test]
    fn missed_notices_are_json_objects() {
        let m = Missed {
            node: 2,
            incarnation: 9,
            reason: MissedReason::Gap,
            range: Some((41, 43)),
            events: None,
        };
        assert_eq!(
            missed_json(&m),
            r#"{"node":2,"incarnation":9,"reason":"gap","range":[41,43],"events":null}"#
        );
        let m = Missed {
            range: None,
            events: Some(vec![crate::EventId::from_bytes([0xab; 16])]),
            ..m
        };
        assert!(
            missed_json(&m)
                .ends_with(r#""range":null,"events":["abababab-abab-abab-abab-abababababab"]}"#)
        );
    }

    #[test]
    fn scratch_is_reused_only_for_the_same_push() {
        let mut s = Scratch::default();
        assert!(!s.holds(false, b"a", false));
        s.encode(false, b"a", false, |w| w.bulk(b"a"));
        assert!(s.holds(false, b"a", false));
        assert!(!s.holds(true, b"a", false));
        assert!(!s.holds(false, b"a", true));
        assert!(!s.holds(false, b"b", false));
        s.clear();
        assert!(!s.holds(false, b"a", false));
    }
}
