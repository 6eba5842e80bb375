//! The fan-out: queued events and Missed notices into their subscribers' output buffers.

use super::{Inbound, Server, check_limit, mark_dirty};
use crate::event::EventId;
use crate::service::MISSED_CHANNEL;
use crate::service::glob;
use crate::service::metrics::Counters;
use crate::service::push::missed_json;
use crate::service::resp::Writer;
use crate::sync::plain::Ordering;

/// The most queued events one turn hands out before it looks at the sockets again.
const DELIVERY_BUDGET: usize = 4096;

impl Server {
    /// Hands queued events and Missed notices to their subscribers' output buffers.
    pub(super) fn deliver(&mut self) {
        for _ in 0..DELIVERY_BUDGET {
            match self.rx.try_recv() {
                Ok(Inbound::Event(event, payload)) => self.deliver_event(event, &payload),
                Ok(Inbound::Missed(m)) => self.deliver_missed(&missed_json(&m)),
                Err(_) => break,
            }
        }
        let dropped = self.shared.unreported.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let json = format!(
                "{{\"node\":{},\"incarnation\":0,\"reason\":\"local_overflow\",\"range\":null}}",
                self.node
            );
            self.deliver_missed(&json);
        }
    }

    fn deliver_event(&mut self, event: EventId, payload: &[u8]) {
        self.scratch.clear();
        let limit = self.config.output_buffer_limit;
        let mut pushes = 0;
        for &t in self.index.event_listeners(&event) {
            let Some(conn) = self.conns.get_mut(&t) else {
                continue;
            };
            if conn.closing.is_some() {
                continue;
            }
            let Some(names) = conn.session.by_event.get(&event) else {
                continue;
            };
            for name in names {
                // Clients usually share a channel name: encode once, copy to each.
                if !self.scratch.holds(false, name, conn.session.resp3) {
                    self.scratch.encode(false, name, conn.session.resp3, |w| {
                        w.push(3);
                        w.bulk(b"message");
                        w.bulk(name);
                        w.bulk(payload);
                    });
                }
                conn.out.extend_from_slice(&self.scratch.bytes);
                pushes += 1;
            }
            check_limit(&mut self.doomed, t, conn, limit);
            mark_dirty(&mut self.dirty, t, conn);
        }
        if self.index.has_patterns() {
            let name = self.index.name_of(&event);
            for (t, patterns) in self.index.all_patterns() {
                let Some(conn) = self.conns.get_mut(&t) else {
                    continue;
                };
                if conn.closing.is_some() {
                    continue;
                }
                let mut matched = false;
                // One push per matching pattern, as Redis does.
                for pattern in patterns.iter().filter(|p| glob::matches(p, &name)) {
                    if !self.scratch.holds(true, pattern, conn.session.resp3) {
                        self.scratch.encode(true, pattern, conn.session.resp3, |w| {
                            w.push(4);
                            w.bulk(b"pmessage");
                            w.bulk(pattern);
                            w.bulk(&name);
                            w.bulk(payload);
                        });
                    }
                    conn.out.extend_from_slice(&self.scratch.bytes);
                    pushes += 1;
                    matched = true;
                }
                if matched {
                    check_limit(&mut self.doomed, t, conn, limit);
                    mark_dirty(&mut self.dirty, t, conn);
                }
            }
        }
        Counters::add(&self.shared.metrics.pushes, pushes);
    }

    fn deliver_missed(&mut self, json: &str) {
        let mut pushes = 0;
        for &t in self.index.missed_listeners() {
            let Some(conn) = self.conns.get_mut(&t) else {
                continue;
            };
            if conn.closing.is_some() {
                continue;
            }
            let mut w = Writer {
                out: &mut conn.out,
                resp3: conn.session.resp3,
            };
            w.push(3);
            w.bulk(b"message");
            w.bulk(MISSED_CHANNEL.as_bytes());
            w.bulk(json.as_bytes());
            pushes += 1;
            check_limit(&mut self.doomed, t, conn, self.config.output_buffer_limit);
            mark_dirty(&mut self.dirty, t, conn);
        }
        Counters::add(&self.shared.metrics.pushes, pushes);
    }
}
