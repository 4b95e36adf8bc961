//! The event ports backend's pure functions, on every host.

use std::io;
use std::time::Duration;

use super::bits::{PortEvent, EBADF, EINTR, ETIME, ILLUMOS_RDHUP};
use super::{desired_mask, getn_filled, mask, translate, wait_timeout, MAX_WAIT};
use crate::poll::bits::{ERR, HUP, IN, NVAL, OUT, PRI};
use crate::slots::Slots;
use crate::{Interest, Ready, Token, Trigger};

/// Poll's bits as `portev_events` carries them (an int).
fn ev(bits: i16) -> i32 {
    i32::from(bits)
}

#[test]
fn plain_bits() {
    assert_eq!(translate(ev(IN), ILLUMOS_RDHUP), Ready::READABLE);
    assert_eq!(translate(ev(OUT), ILLUMOS_RDHUP), Ready::WRITABLE);
    assert_eq!(translate(ev(IN | OUT), ILLUMOS_RDHUP), Ready::READABLE | Ready::WRITABLE);
    assert_eq!(translate(ev(IN | PRI), ILLUMOS_RDHUP), Ready::READABLE | Ready::PRIORITY);
    assert_eq!(translate(0, ILLUMOS_RDHUP), Ready::empty());
}

#[test]
fn hup_and_read_hangup() {
    // Data and EOF together: readable, and both directions are closed.
    assert_eq!(translate(ev(IN | HUP), 0), Ready::READABLE | Ready::HUP | Ready::READ_CLOSED);
    assert_eq!(translate(ev(HUP), 0), Ready::HUP | Ready::READ_CLOSED);
    // illumos's POLLRDHUP: a half-close without a recv.
    assert_eq!(translate(ev(IN | ILLUMOS_RDHUP), ILLUMOS_RDHUP), Ready::READABLE | Ready::READ_CLOSED);
    // On Solaris (no POLLRDHUP) 0x4000 means nothing to us.
    assert_eq!(translate(ev(IN | ILLUMOS_RDHUP), 0), Ready::READABLE);
}

#[test]
fn refused_connect_is_error_without_readable() {
    assert_eq!(translate(ev(ERR | HUP | OUT), ILLUMOS_RDHUP), Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
    assert_eq!(
        translate(ev(IN | OUT | ERR | HUP | ILLUMOS_RDHUP), ILLUMOS_RDHUP),
        Ready::ERROR | Ready::HUP | Ready::READ_CLOSED
    );
    assert_eq!(translate(ev(ERR), 0), Ready::ERROR);
}

#[test]
fn nval_is_an_error() {
    assert_eq!(translate(ev(NVAL), 0), Ready::ERROR);
    assert_eq!(translate(ev(NVAL | IN), 0), Ready::ERROR);
}

#[test]
fn association_masks() {
    assert_eq!(mask(Interest::READ, ILLUMOS_RDHUP), ev(IN | ILLUMOS_RDHUP));
    assert_eq!(mask(Interest::WRITE, ILLUMOS_RDHUP), ev(OUT));
    assert_eq!(mask(Interest::BOTH, ILLUMOS_RDHUP), ev(IN | OUT | ILLUMOS_RDHUP));
    assert_eq!(mask(Interest::READ, 0), ev(IN));
    assert_eq!(mask(Interest::empty(), ILLUMOS_RDHUP), 0);
}

#[test]
fn desired_mask_by_trigger() {
    let r = ILLUMOS_RDHUP;
    assert_eq!(desired_mask(Trigger::Level, Interest::READ, r), Some(ev(IN | r)));
    assert_eq!(desired_mask(Trigger::Level, Interest::BOTH, 0), Some(ev(IN | OUT)));
    assert_eq!(desired_mask(Trigger::Oneshot, Interest::WRITE, r), Some(ev(OUT)));
    // Silent registrations and edge are never associated.
    assert_eq!(desired_mask(Trigger::Level, Interest::empty(), r), None);
    assert_eq!(desired_mask(Trigger::Oneshot, Interest::empty(), r), None);
    assert_eq!(desired_mask(Trigger::Edge, Interest::READ, r), None);
}

/// The decision the wait makes after each fd event, on the real slot table.
fn after_event(slots: &mut Slots, fd: i32, gen: u32, ready: Ready) -> (Option<(Token, Ready)>, Option<i32>) {
    let delivered = slots.accept(fd, Some(gen), ready);
    let rearm = slots.get(fd).and_then(|s| desired_mask(s.trigger, s.watched(), ILLUMOS_RDHUP));
    (delivered, rearm)
}

#[test]
fn level_is_reassociated_after_every_event() {
    let mut s = Slots::new();
    let (slot, _) = s.insert(7, Token(1), Interest::READ, Trigger::Level).unwrap();
    for _ in 0..3 {
        let (delivered, rearm) = after_event(&mut s, 7, slot.gen, Ready::READABLE);
        assert_eq!(delivered, Some((Token(1), Ready::READABLE)));
        assert_eq!(rearm, Some(ev(IN | ILLUMOS_RDHUP)));
    }
}

#[test]
fn oneshot_waits_for_modify() {
    let mut s = Slots::new();
    let (slot, _) = s.insert(7, Token(1), Interest::BOTH, Trigger::Oneshot).unwrap();
    let (delivered, rearm) = after_event(&mut s, 7, slot.gen, Ready::WRITABLE);
    assert_eq!(delivered, Some((Token(1), Ready::WRITABLE)));
    assert_eq!(rearm, None);
    s.update("evports", 7, Token(1), Interest::READ, Trigger::Oneshot).unwrap();
    let s7 = *s.get(7).unwrap();
    assert_eq!(desired_mask(s7.trigger, s7.watched(), ILLUMOS_RDHUP), Some(ev(IN | ILLUMOS_RDHUP)));
}

#[test]
fn undelivered_oneshot_event_keeps_the_registration_alive() {
    // A oneshot read registration whose event carried only POLLOUT-ish
    // readiness: nothing reaches the caller, so the association is renewed.
    let mut s = Slots::new();
    let (slot, _) = s.insert(7, Token(1), Interest::READ, Trigger::Oneshot).unwrap();
    let (delivered, rearm) = after_event(&mut s, 7, slot.gen, Ready::WRITABLE);
    assert_eq!(delivered, None);
    assert_eq!(rearm, Some(ev(IN | ILLUMOS_RDHUP)));
}

#[test]
fn stale_or_silent_events_are_not_delivered() {
    let mut s = Slots::new();
    let (old, _) = s.insert(7, Token(1), Interest::READ, Trigger::Level).unwrap();
    let (new, _) = s.insert(7, Token(2), Interest::READ, Trigger::Level).unwrap();
    let (delivered, rearm) = after_event(&mut s, 7, old.gen, Ready::READABLE);
    assert_eq!(delivered, None);
    // The current registration still wants events under its own generation.
    assert_eq!(rearm, Some(ev(IN | ILLUMOS_RDHUP)));
    assert_eq!(after_event(&mut s, 7, new.gen, Ready::READABLE).0, Some((Token(2), Ready::READABLE)));

    s.update("evports", 7, Token(2), Interest::empty(), Trigger::Level).unwrap();
    assert_eq!(after_event(&mut s, 7, new.gen, Ready::ERROR | Ready::HUP), (None, None));
    // A deleted fd is never re-associated.
    s.remove("evports", 7).unwrap();
    assert_eq!(after_event(&mut s, 7, new.gen, Ready::READABLE), (None, None));
}

/// A buffer of `len` cleared entries whose first `written` ones hold fd events.
fn list(len: usize, written: usize) -> Vec<PortEvent> {
    let mut l = vec![PortEvent::CLEARED; len];
    for (i, e) in l.iter_mut().take(written).enumerate() {
        *e = PortEvent { portev_events: 1, portev_source: 4, portev_pad: 0, portev_object: i, portev_user: 1 };
    }
    l
}

fn os(errno: i32) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(errno))
}

fn filled(result: io::Result<()>, nget: u32, list: &[PortEvent]) -> Result<usize, Option<i32>> {
    getn_filled(result, nget, list).map_err(|e| e.raw_os_error())
}

#[test]
fn getn_honours_nget_on_success_and_etime() {
    assert_eq!(filled(Ok(()), 3, &list(64, 3)), Ok(3));
    // ETIME can come with events; they must not be lost.
    assert_eq!(filled(os(ETIME), 2, &list(64, 2)), Ok(2));
    assert_eq!(filled(os(ETIME), 0, &list(64, 0)), Ok(0));
    // Never past the buffer.
    assert_eq!(filled(Ok(()), 1000, &list(64, 64)), Ok(64));
    assert_eq!(filled(os(EBADF), 1, &list(64, 0)), Err(Some(EBADF)));
}

#[test]
fn getn_counts_the_written_entries_on_eintr() {
    // illumos: EINTR with nothing written, nget left at the 1 passed in.
    assert_eq!(filled(os(EINTR), 1, &list(64, 0)), Ok(0));
    // A kernel that copies events out with EINTR, nget still 1: all of
    // them count, or the ones past the first are collected and lost.
    assert_eq!(filled(os(EINTR), 1, &list(64, 3)), Ok(3));
    assert_eq!(filled(os(EINTR), 1, &list(4, 4)), Ok(4));
}

#[test]
fn timeouts() {
    assert!(wait_timeout(None).is_none());
    let zero = wait_timeout(Some(Duration::ZERO)).unwrap();
    assert_eq!((zero.tv_sec, zero.tv_nsec), (0, 0));
    let t = wait_timeout(Some(Duration::from_millis(1500))).unwrap();
    assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_000));
    let long = wait_timeout(Some(Duration::MAX)).unwrap();
    assert_eq!(long.tv_sec as u64, MAX_WAIT.as_secs());
}
