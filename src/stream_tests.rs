use super::*;

fn remote(event: EventId, sequence: u64) -> Message {
    Message {
        event,
        node: 7,
        frame: (9, sequence),
        local: false,
        payload: Bytes::from(sequence.to_le_bytes().to_vec()),
        lost_before: 0,
    }
}

fn state(capacity: usize) -> State {
    State {
        queue: VecDeque::new(),
        capacity,
        overflowing: false,
        lost: Vec::new(),
        waker: None,
        closed: false,
    }
}

fn sequence(item: &Item) -> Option<u64> {
    match item {
        Item::Event(m) => Some(m.frame.1),
        Item::Missed(_) => None,
    }
}

/// Events that do not fit are dropped; the consumer hears of them, in their place, before
/// the next event that fits, and only once the buffer is half empty again.
#[test]
fn overflow_becomes_one_missed_in_order() {
    let (a, b) = (EventId::from_name("a"), EventId::from_name("b"));
    let mut s = state(4);
    for seq in 1..=10 {
        s.push_event(remote(if seq % 2 == 0 { a } else { b }, seq));
    }
    assert_eq!(s.queue.len(), 4, "bounded");
    // Taking one leaves it 3/4 full: still dropping.
    let first = s.queue.pop_front().unwrap();
    assert_eq!(sequence(&first), Some(1));
    s.push_event(remote(a, 11));
    assert_eq!(s.queue.len(), 3);
    // Half empty: the next event gets in, after the notice of the losses.
    s.queue.pop_front();
    s.push_event(remote(b, 12));
    let items: Vec<_> = s.queue.drain(..).collect();
    assert_eq!(sequence(&items[0]), Some(3));
    assert_eq!(sequence(&items[1]), Some(4));
    let Item::Missed(missed) = &items[2] else {
        panic!("expected the notice, got {:?}", items[2]);
    };
    assert_eq!(missed.reason, MissedReason::LocalOverflow);
    assert_eq!((missed.node, missed.incarnation), (7, 9));
    assert_eq!(missed.range, Some((5, 11)));
    assert_eq!(missed.events.as_deref(), Some(&[b, a][..]));
    assert_eq!(sequence(&items[3]), Some(12));
    assert_eq!(items.len(), 4);
}

/// Past [`MAX_NAMED_EVENTS`] distinct ids the notice names none: everything is suspect.
#[test]
fn too_many_lost_ids_name_none() {
    let mut s = state(1);
    s.push_event(remote(EventId::from_name("kept"), 0));
    for i in 0..=MAX_NAMED_EVENTS as u64 {
        s.push_event(remote(EventId::from_bytes([i as u8; 16]), i + 1));
    }
    s.queue.clear();
    s.flush_lost();
    let Some(Item::Missed(missed)) = s.queue.pop_front() else {
        panic!("expected a notice");
    };
    assert_eq!(missed.events, None);
    assert_eq!(missed.range, Some((1, MAX_NAMED_EVENTS as u64 + 1)));
}

/// The library's notices are never dropped; on a full buffer, one continuing the last
/// notice widens it instead of growing the queue.
#[test]
fn library_notices_are_kept_and_merged_when_full() {
    let gap = |first, last| Missed {
        node: 3,
        incarnation: 4,
        reason: MissedReason::Gap,
        range: Some((first, last)),
        events: Some(vec![EventId::from_name("x")]),
    };
    let mut s = state(2);
    s.push_event(remote(EventId::from_name("x"), 1));
    s.push_missed(gap(2, 2));
    s.push_missed(gap(5, 6));
    assert_eq!(s.queue.len(), 2);
    assert_eq!(s.queue.back(), Some(&Item::Missed(gap(2, 6))));
    let other = Missed {
        node: 8,
        ..gap(1, 1)
    };
    s.push_missed(other.clone());
    assert_eq!(
        s.queue.back(),
        Some(&Item::Missed(other)),
        "another sender: kept"
    );
}

#[test]
fn a_filter_skips_notices_that_name_only_other_events() {
    let (a, b) = (EventId::from_name("a"), EventId::from_name("b"));
    let missed = |events| Missed {
        node: 1,
        incarnation: 1,
        reason: MissedReason::Gap,
        range: None,
        events,
    };
    let only_a = Filter::only([a, a]);
    assert!(!only_a.concerns(&missed(Some(vec![b]))));
    assert!(only_a.concerns(&missed(Some(vec![b, a]))));
    assert!(only_a.concerns(&missed(None)), "unknown events may be ours");
    assert!(Filter::all().concerns(&missed(Some(vec![b]))));
}
