//! The driver's side of subscribers: endpoint output handed to the dispatcher thread through a
//! bounded queue (what does not fit becomes Missed, never a stall), or to the subscribers
//! directly with `dispatch_on_driver`; and the call into subscribers, panics contained.

use std::collections::VecDeque;

use crossbeam_channel::Sender;

use super::Output;
use crate::endpoint::{Endpoint, Received};
use crate::event::{EventId, Missed, MissedReason};
use crate::metrics::Shared;
use crate::subscription::{Delivery, Registry};
use crate::sync::plain::Ordering;

impl Output {
    /// Hands what the endpoint has ready to its destination; never blocks on the dispatcher.
    pub(super) fn forward(&mut self, endpoint: &mut Endpoint, metrics: &Shared) {
        match self {
            Self::Dispatcher(to) => to.forward(endpoint, metrics),
            Self::Inline(registry) => {
                while let Some(out) = endpoint.poll_output() {
                    dispatch(out, registry, metrics);
                }
            }
            Self::Closed => while endpoint.poll_output().is_some() {},
        }
    }

    /// Whether outputs wait for room in the dispatcher's queue.
    pub(super) fn has_backlog(&self) -> bool {
        matches!(self, Self::Dispatcher(to) if !to.overflow.is_empty())
    }
}

/// The driver's end of the dispatcher's queue, and what did not fit in it.
pub(crate) struct ToDispatcher {
    queue: Sender<Received>,
    /// Outputs that did not fit the queue, frames folded into Missed ranges.
    overflow: VecDeque<Received>,
}

impl ToDispatcher {
    pub(crate) fn new(queue: Sender<Received>) -> Self {
        Self {
            queue,
            overflow: VecDeque::new(),
        }
    }

    /// Hands the endpoint's output to the dispatcher without ever blocking: when its queue
    /// is full (subscribers behind), frames are dropped and remembered as ranges per sender,
    /// and each range reaches subscribers as one `LocalOverflow` Missed, ahead of anything
    /// later from that sender, as soon as the queue has room.
    fn forward(&mut self, endpoint: &mut Endpoint, metrics: &Shared) {
        self.flush_overflow();
        while let Some(out) = endpoint.poll_output() {
            if !self.overflow.is_empty() {
                self.overflow_push(out, metrics);
                continue;
            }
            match self.queue.try_send(out) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(out)) => {
                    self.overflow_push(out, metrics);
                }
                // The dispatcher lives as long as the router; if it is gone, so is everyone
                // who could have been told.
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Remembers an output that did not fit the dispatcher's queue.
    fn overflow_push(&mut self, out: Received, metrics: &Shared) {
        match out {
            Received::Frame(frame) => {
                let h = frame.header_fields();
                metrics.dispatch_dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(Received::Missed(last)) = self.overflow.back_mut()
                    && last.reason == MissedReason::LocalOverflow
                    && last.node == h.node
                    && last.incarnation == h.incarnation
                    && let Some((first, end)) = last.range
                    && end + 1 == h.sequence
                {
                    last.range = Some((first, h.sequence));
                    return;
                }
                metrics.count_missed(MissedReason::LocalOverflow);
                self.overflow.push_back(Received::Missed(Missed {
                    node: h.node,
                    incarnation: h.incarnation,
                    reason: MissedReason::LocalOverflow,
                    range: Some((h.sequence, h.sequence)),
                    events: None,
                }));
            }
            other => self.overflow.push_back(other),
        }
    }

    /// Sends what overflowed, in order, as far as the queue takes it.
    fn flush_overflow(&mut self) {
        while let Some(out) = self.overflow.pop_front() {
            match self.queue.try_send(out) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(out)) => {
                    self.overflow.push_front(out);
                    return;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    self.overflow.clear();
                    return;
                }
            }
        }
    }
}

/// Hands one output of the endpoint to the subscribers: on the dispatcher thread, or on the
/// driver's with `dispatch_on_driver`. A subscriber that panics is counted and logged, and
/// misses that delivery; the other subscribers still get it, and the thread (with
/// `dispatch_on_driver`, the whole node) goes on.
pub(crate) fn dispatch(received: Received, registry: &Registry, metrics: &Shared) {
    match received {
        Received::Frame(frame) => {
            let h = frame.header_fields();
            let origin = (h.node, h.incarnation, h.sequence);
            let mut n = 0;
            let mut subscribers = registry.snapshot();
            for record in frame.borrowed_records() {
                let payload = (record.payload_offset(), record.payload());
                let delivery = Delivery::remote(record.event(), origin, frame.as_bytes(), payload);
                subscribers.dispatch_isolated(&delivery, &mut |panic| {
                    subscriber_panicked(metrics, &*panic, Some(record.event()));
                });
                n += 1;
            }
            metrics.events_delivered.fetch_add(n, Ordering::Relaxed);
        }
        Received::Missed(missed) => {
            tracing::warn!(
                node = missed.node,
                reason = missed.reason.name(),
                range = ?missed.range,
                "missed events"
            );
            registry.dispatch_missed(&missed, &mut |panic| {
                subscriber_panicked(metrics, &*panic, None);
            });
        }
    }
}

/// Counts and logs a subscriber's panic (`event` is `None` for a Missed subscriber).
fn subscriber_panicked(
    metrics: &Shared,
    panic: &(dyn std::any::Any + Send),
    event: Option<EventId>,
) {
    metrics.subscriber_panics.fetch_add(1, Ordering::Relaxed);
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(
        event = ?event,
        panic = message,
        "a subscriber panicked: it missed this delivery, and later ones still reach it"
    );
}
