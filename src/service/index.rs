//! Which client listens to what, across the service, and the event names the node knows.
//!
//! Every table here is bounded and gives memory back. Names come from clients, so they are
//! counted in bytes: the names of channels subscribed to live exactly as long as a
//! subscription uses them (a count per name), and names learned from `PUBLISH` (so that
//! pattern subscribers get an event under its name) are kept only while some client has a
//! pattern, oldest first out past [`MAX_PUBLISHED_NAME_BYTES`]. Maps shrink once they are
//! mostly empty.

use std::collections::{HashMap, VecDeque};

use crate::event::EventId;

/// The most bytes of names learned from `PUBLISH` kept for pattern pushes; past it the oldest
/// are forgotten (their events are then pushed under their UUID until named again).
pub(crate) const MAX_PUBLISHED_NAME_BYTES: usize = 1 << 20;

/// A name the service knows for an event.
#[derive(Debug)]
struct Name {
    bytes: Box<[u8]>,
    /// Subscriptions that use this name as their channel.
    subscriptions: usize,
    /// Whether it is on the list of names learned from `PUBLISH`.
    published: bool,
}

/// The service-wide view of subscriptions: per event the clients subscribed to it, the
/// clients with patterns, and those on `herald:missed`. Each client's own
/// [`Session`](super::conn::Session) holds the channel names and patterns it used.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_event: HashMap<EventId, Vec<usize>>,
    /// Each client's patterns (clients without any are not keys).
    patterns: HashMap<usize, Vec<Box<[u8]>>>,
    pattern_bytes: usize,
    missed: Vec<usize>,
    names: HashMap<EventId, Name>,
    /// Names learned from `PUBLISH`, oldest first, and their bytes.
    published: VecDeque<EventId>,
    published_bytes: usize,
    /// Bytes of all names in `names`.
    name_bytes: usize,
    /// Bytes of channel names and patterns held by clients' sessions.
    session_bytes: usize,
    /// Names from the configuration (`service.event_names`), for the service's life.
    configured: HashMap<EventId, Box<[u8]>>,
}

/// The sizes of the service's tables (for metrics and `INFO`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Events at least one client subscribed to by channel.
    pub(crate) events: usize,
    /// Patterns, over all clients.
    pub(crate) patterns: usize,
    /// Names known for pattern pushes.
    pub(crate) names: usize,
    /// Bytes of names held: the known names plus the clients' channel names and patterns.
    pub(crate) name_bytes: usize,
}

fn remove(list: &mut Vec<usize>, token: usize) {
    if let Some(i) = list.iter().position(|&t| t == token) {
        list.swap_remove(i);
    }
    shrink_vec(list);
}

/// Gives memory back once a vector is mostly empty.
pub(crate) fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() > 16 && v.capacity() > 4 * v.len() {
        v.shrink_to(2 * v.len());
    }
}

/// Gives memory back once a map is mostly empty.
pub(crate) fn shrink_map<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 16 && m.capacity() > 4 * m.len() {
        m.shrink_to(2 * m.len());
    }
}

/// Whether `channel` is the name of `event` (not its UUID, not another name).
fn is_name_of(event: EventId, channel: &[u8]) -> bool {
    std::str::from_utf8(channel).is_ok_and(|s| EventId::from_name(s) == event)
}

impl Index {
    /// An empty index that knows `names` from the start.
    pub(crate) fn with_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            configured: names
                .into_iter()
                .map(|n| (EventId::from_name(n), n.as_bytes().into()))
                .collect(),
            ..Self::default()
        }
    }

    /// `token` listens to `event` (call once per client and event).
    pub(crate) fn add_event(&mut self, event: EventId, token: usize) {
        self.by_event.entry(event).or_default().push(token);
    }

    /// `token` no longer listens to `event`.
    pub(crate) fn remove_event(&mut self, event: EventId, token: usize) {
        if let Some(list) = self.by_event.get_mut(&event) {
            remove(list, token);
            if list.is_empty() {
                self.by_event.remove(&event);
                shrink_map(&mut self.by_event);
            }
        }
    }

    /// Adds a pattern of `token`'s; false if it had it already.
    pub(crate) fn add_pattern(&mut self, token: usize, pattern: &[u8]) -> bool {
        let list = self.patterns.entry(token).or_default();
        if list.iter().any(|p| **p == *pattern) {
            return false;
        }
        list.push(pattern.into());
        self.pattern_bytes += pattern.len();
        true
    }

    /// Removes a pattern of `token`'s; false if it did not have it.
    pub(crate) fn remove_pattern(&mut self, token: usize, pattern: &[u8]) -> bool {
        let Some(list) = self.patterns.get_mut(&token) else {
            return false;
        };
        let Some(i) = list.iter().position(|p| **p == *pattern) else {
            return false;
        };
        list.remove(i);
        self.pattern_bytes = self.pattern_bytes.saturating_sub(pattern.len());
        shrink_vec(list);
        if list.is_empty() {
            self.patterns.remove(&token);
            shrink_map(&mut self.patterns);
            if self.patterns.is_empty() {
                // Names learned from PUBLISH serve pattern pushes only.
                self.forget_published(0);
            }
        }
        true
    }

    /// `token`'s patterns, in the order it gave them.
    pub(crate) fn patterns_of(&self, token: usize) -> &[Box<[u8]>] {
        self.patterns.get(&token).map_or(&[], Vec::as_slice)
    }

    /// Every client's patterns.
    pub(crate) fn all_patterns(&self) -> impl Iterator<Item = (usize, &[Box<[u8]>])> + '_ {
        self.patterns.iter().map(|(&t, list)| (t, list.as_slice()))
    }

    /// Whether any client has a pattern.
    pub(crate) fn has_patterns(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// `token` listens to `herald:missed`, or no longer does.
    pub(crate) fn set_missed(&mut self, token: usize, on: bool) {
        remove(&mut self.missed, token);
        if on {
            self.missed.push(token);
        }
    }

    /// The clients subscribed to `event` by a channel.
    pub(crate) fn event_listeners(&self, event: &EventId) -> &[usize] {
        self.by_event.get(event).map_or(&[], Vec::as_slice)
    }

    /// The clients subscribed to `herald:missed`.
    pub(crate) fn missed_listeners(&self) -> &[usize] {
        &self.missed
    }

    /// Whether any client listens to anything (the router's callback skips work otherwise).
    pub(crate) fn is_empty(&self) -> bool {
        self.by_event.is_empty() && self.patterns.is_empty() && self.missed.is_empty()
    }

    /// A subscription uses `channel` for `event`: keeps its name while it does. UUID
    /// channels are not names.
    pub(crate) fn hold_name(&mut self, event: EventId, channel: &[u8]) {
        if !is_name_of(event, channel) {
            return;
        }
        self.names
            .entry(event)
            .or_insert_with(|| {
                self.name_bytes += channel.len();
                Name {
                    bytes: channel.into(),
                    subscriptions: 0,
                    published: false,
                }
            })
            .subscriptions += 1;
    }

    /// A subscription no longer uses `channel` for `event`.
    pub(crate) fn release_name(&mut self, event: EventId, channel: &[u8]) {
        if !is_name_of(event, channel) {
            return;
        }
        if let Some(name) = self.names.get_mut(&event) {
            name.subscriptions = name.subscriptions.saturating_sub(1);
            if name.subscriptions == 0 && !name.published {
                self.drop_name(event);
            }
        }
    }

    /// A client published on `channel`: remembers the name for pattern pushes while any
    /// client has a pattern, within [`MAX_PUBLISHED_NAME_BYTES`].
    pub(crate) fn learn_published(&mut self, event: EventId, channel: &[u8]) {
        if self.patterns.is_empty()
            || channel.len() > MAX_PUBLISHED_NAME_BYTES
            || !is_name_of(event, channel)
        {
            return;
        }
        let name = self.names.entry(event).or_insert_with(|| {
            self.name_bytes += channel.len();
            Name {
                bytes: channel.into(),
                subscriptions: 0,
                published: false,
            }
        });
        if name.published {
            return;
        }
        name.published = true;
        self.published.push_back(event);
        self.published_bytes += channel.len();
        self.forget_published(MAX_PUBLISHED_NAME_BYTES);
    }

    /// Forgets learned names, oldest first, until at most `keep` bytes of them are left.
    fn forget_published(&mut self, keep: usize) {
        while self.published_bytes > keep {
            let Some(event) = self.published.pop_front() else {
                self.published_bytes = 0;
                break;
            };
            if let Some(name) = self.names.get_mut(&event) {
                name.published = false;
                self.published_bytes = self.published_bytes.saturating_sub(name.bytes.len());
                if name.subscriptions == 0 {
                    self.drop_name(event);
                }
            }
        }
        if self.published.is_empty() && self.published.capacity() > 16 {
            self.published.shrink_to(0);
        }
    }

    fn drop_name(&mut self, event: EventId) {
        if let Some(name) = self.names.remove(&event) {
            self.name_bytes = self.name_bytes.saturating_sub(name.bytes.len());
            shrink_map(&mut self.names);
        }
    }

    /// The name to push `event` under to pattern subscribers: its name if known (from
    /// clients or the configuration), else its UUID.
    pub(crate) fn name_of(&self, event: &EventId) -> Vec<u8> {
        match (self.names.get(event), self.configured.get(event)) {
            (Some(n), _) => n.bytes.to_vec(),
            (None, Some(n)) => n.to_vec(),
            (None, None) => event.to_string().into_bytes(),
        }
    }

    /// How many subscriptions a raise of `event` named `name` reaches: the clients subscribed
    /// by channel, and each matching pattern (as Redis counts for `PUBLISH`).
    pub(crate) fn receivers(&self, event: &EventId, name: &[u8]) -> usize {
        let by_pattern: usize = self
            .patterns
            .values()
            .map(|list| {
                list.iter()
                    .filter(|p| super::glob::matches(p, name))
                    .count()
            })
            .sum();
        self.event_listeners(event).len() + by_pattern
    }

    /// Clients' sessions took (`added`) or gave back (`removed`) bytes of channel names.
    pub(crate) fn session_bytes_changed(&mut self, added: usize, removed: usize) {
        self.session_bytes = (self.session_bytes + added).saturating_sub(removed);
    }

    /// Bytes of names held now, by the index and by every session.
    pub(crate) fn held_bytes(&self) -> usize {
        self.name_bytes + self.session_bytes + self.pattern_bytes
    }

    /// The sizes of the tables.
    pub(crate) fn sizes(&self) -> Sizes {
        Sizes {
            events: self.by_event.len(),
            patterns: self.patterns.values().map(Vec::len).sum(),
            names: self.names.len(),
            name_bytes: self.held_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribed_names_live_as_long_as_their_subscriptions() {
        let mut index = Index::default();
        let id = EventId::from_name("a.b");
        assert_eq!(index.name_of(&id), id.to_string().into_bytes());
        index.hold_name(id, id.to_string().as_bytes());
        assert_eq!(index.name_of(&id), id.to_string().into_bytes());
        index.hold_name(id, b"a.b");
        index.hold_name(id, b"a.b");
        assert_eq!(index.name_of(&id), b"a.b");
        assert_eq!(index.sizes().name_bytes, 3);
        index.release_name(id, b"a.b");
        assert_eq!(index.name_of(&id), b"a.b");
        index.release_name(id, b"a.b");
        index.release_name(id, id.to_string().as_bytes());
        assert_eq!(index.sizes(), Sizes::default());
    }

    #[test]
    fn published_names_are_kept_only_for_patterns_and_within_a_budget() {
        let mut index = Index::default();
        let id = EventId::from_name("p.q");
        index.learn_published(id, b"p.q");
        assert_eq!(index.sizes().names, 0, "nobody has a pattern");
        assert!(index.add_pattern(9, b"p.*"));
        assert!(!index.add_pattern(9, b"p.*"));
        index.learn_published(id, b"p.q");
        assert_eq!(index.name_of(&id), b"p.q");
        // A flood of big names stays within the budget, oldest out first.
        let big = |i: usize| format!("{i:08}{}", "x".repeat(1000));
        for i in 0..3000 {
            let name = big(i);
            index.learn_published(EventId::from_name(&name), name.as_bytes());
        }
        assert!(index.sizes().name_bytes <= MAX_PUBLISHED_NAME_BYTES + 3);
        assert_eq!(index.name_of(&id), id.to_string().into_bytes());
        let last = big(2999);
        assert_eq!(index.name_of(&EventId::from_name(&last)), last.as_bytes());
        assert!(index.remove_pattern(9, b"p.*"));
        assert!(!index.remove_pattern(9, b"p.*"));
        assert_eq!(index.sizes(), Sizes::default());
        assert!(index.names.capacity() <= 16, "{}", index.names.capacity());
    }

    #[test]
    fn configured_names_are_known_without_any_client() {
        let index = Index::with_names(["product.changed"]);
        let id = EventId::from_name("product.changed");
        assert_eq!(index.name_of(&id), b"product.changed");
        assert_eq!(index.sizes(), Sizes::default(), "not a client's table");
    }

    #[test]
    fn clients_come_and_go() {
        let mut index = Index::default();
        let id = EventId::from_name("e");
        index.add_event(id, 7);
        index.add_event(id, 8);
        index.add_pattern(9, b"?");
        index.add_pattern(9, b"*");
        index.add_pattern(10, b"x*");
        assert_eq!(index.receivers(&id, b"e"), 4);
        index.remove_event(id, 7);
        assert_eq!(index.event_listeners(&id), &[8]);
        index.remove_event(id, 8);
        index.remove_pattern(9, b"?");
        index.remove_pattern(9, b"*");
        index.remove_pattern(10, b"x*");
        assert!(index.is_empty());
        assert_eq!(index.sizes(), Sizes::default());
    }
}
