//! Which client listens to what, across the service, and the event names the node knows.

use std::collections::HashMap;

use crate::event::EventId;

/// The most event names remembered for `PSUBSCRIBE *` pushes. Past it, events whose name is
/// not yet known are pushed under their UUID.
const MAX_NAMES: usize = 100_000;

/// The service-wide view of subscriptions: per event the clients subscribed to it, the
/// clients subscribed to everything, and those on `herald:missed`. Each client's own
/// [`Session`](super::conn::Session) holds the channel names it used.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_event: HashMap<EventId, Vec<usize>>,
    all: Vec<usize>,
    missed: Vec<usize>,
    names: HashMap<EventId, Box<[u8]>>,
}

fn remove(list: &mut Vec<usize>, token: usize) {
    if let Some(i) = list.iter().position(|&t| t == token) {
        list.swap_remove(i);
    }
}

impl Index {
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
            }
        }
    }

    /// `token` listens to every event (`PSUBSCRIBE *`), or no longer does.
    pub(crate) fn set_all(&mut self, token: usize, on: bool) {
        remove(&mut self.all, token);
        if on {
            self.all.push(token);
        }
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

    /// The clients subscribed to every event.
    pub(crate) fn all_listeners(&self) -> &[usize] {
        &self.all
    }

    /// The clients subscribed to `herald:missed`.
    pub(crate) fn missed_listeners(&self) -> &[usize] {
        &self.missed
    }

    /// Whether any client listens to anything (the router's callback skips work otherwise).
    pub(crate) fn is_empty(&self) -> bool {
        self.by_event.is_empty() && self.all.is_empty() && self.missed.is_empty()
    }

    /// How many clients a raise of `event` reaches.
    pub(crate) fn receivers(&self, event: &EventId) -> usize {
        self.event_listeners(event).len() + self.all.len()
    }

    /// Remembers the name a client used for an event (a channel it subscribed to or
    /// published on), so `PSUBSCRIBE *` pushes can carry names. UUID channels are not names.
    pub(crate) fn learn_name(&mut self, event: EventId, channel: &[u8]) {
        if self.names.len() < MAX_NAMES
            && !self.names.contains_key(&event)
            && event == EventId::from_name(std::str::from_utf8(channel).unwrap_or_default())
        {
            self.names.insert(event, channel.into());
        }
    }

    /// The name to push `event` under to pattern subscribers: its name if known, else its
    /// UUID.
    pub(crate) fn name_of(&self, event: &EventId) -> Vec<u8> {
        self.names
            .get(event)
            .map_or_else(|| event.to_string().into_bytes(), |n| n.to_vec())
    }

    /// Forgets every subscription of `token`.
    pub(crate) fn remove_client(&mut self, token: usize, events: impl Iterator<Item = EventId>) {
        for e in events {
            self.remove_event(e, token);
        }
        self.set_all(token, false);
        self.set_missed(token, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_learned_once_and_uuids_are_not_names() {
        let mut index = Index::default();
        let id = EventId::from_name("a.b");
        assert_eq!(index.name_of(&id), id.to_string().into_bytes());
        index.learn_name(id, id.to_string().as_bytes());
        assert_eq!(index.name_of(&id), id.to_string().into_bytes());
        index.learn_name(id, b"a.b");
        assert_eq!(index.name_of(&id), b"a.b");
    }

    #[test]
    fn clients_come_and_go() {
        let mut index = Index::default();
        let id = EventId::from_name("e");
        index.add_event(id, 7);
        index.add_event(id, 8);
        index.set_all(9, true);
        assert_eq!(index.receivers(&id), 3);
        index.remove_client(7, [id].into_iter());
        assert_eq!(index.event_listeners(&id), &[8]);
        index.remove_client(8, [id].into_iter());
        index.set_all(9, false);
        assert!(index.is_empty());
    }
}
