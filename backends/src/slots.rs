//! The registration table every native backend shares.
//!
//! One slot per registered fd number, indexed by the number:
//!
//! ```text
//!            add                    event (oneshot)
//!   (none) -------> armed --------------------------> disarmed
//!     ^               |  ^            modify              |
//!     |    delete     |  +--------------------------------+
//!     +---------------+-----------------------------------+
//! ```
//!
//! Rules:
//! * `add` always takes a fresh generation, even over an existing slot: the
//!   old fd was closed without `delete` and the number was reused.
//! * `modify` keeps the generation (same owner) and re-arms.
//! * The generation travels in the kernel's user data. [`Slots::accept`] is
//!   the one gate every native event passes: it drops an event whose
//!   generation is not the slot's (a stale event for a reused number), an
//!   event for a silent slot (empty interest, or a oneshot that fired), and
//!   disarms oneshot slots. Backends never hand events to the caller any
//!   other way.

use std::io;
use std::os::fd::RawFd;

use crate::{Interest, Ready, Token, Trigger};

/// One registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub token: Token,
    pub gen: u32,
    pub interest: Interest,
    pub trigger: Trigger,
    /// False after a oneshot registration fired, until `modify`.
    pub armed: bool,
}

impl Slot {
    /// The directions the kernel should watch right now.
    pub fn watched(&self) -> Interest {
        if self.armed {
            self.interest
        } else {
            Interest::empty()
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Slots {
    slots: Vec<Option<Slot>>,
    next_gen: u32,
    count: usize,
}

impl Slots {
    pub fn new() -> Slots {
        Slots { slots: Vec::new(), next_gen: 1, count: 0 }
    }

    fn index(fd: RawFd) -> io::Result<usize> {
        usize::try_from(fd).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid fd {fd}")))
    }

    /// Registers `fd` with a fresh generation. Returns the new slot and the
    /// one it replaced, if any.
    pub fn insert(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<(Slot, Option<Slot>)> {
        let i = Self::index(fd)?;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        let gen = self.next_gen;
        // 0 is never handed out, so a zeroed user-data word never matches.
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let slot = Slot { token, gen, interest, trigger, armed: true };
        let old = self.slots[i].replace(slot);
        if old.is_none() {
            self.count += 1;
        }
        Ok((slot, old))
    }

    /// Changes a registration and re-arms it. Returns (old, new).
    pub fn update(
        &mut self,
        backend: &str,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<(Slot, Slot)> {
        let slot = self.get_mut(fd).ok_or_else(|| not_registered(backend, fd))?;
        let old = *slot;
        *slot = Slot { token, gen: old.gen, interest, trigger, armed: true };
        Ok((old, *slot))
    }

    /// Puts back a slot after a failed kernel call.
    pub fn restore(&mut self, fd: RawFd, slot: Option<Slot>) {
        if let Ok(i) = Self::index(fd) {
            if i < self.slots.len() {
                let was = std::mem::replace(&mut self.slots[i], slot);
                match (was.is_some(), slot.is_some()) {
                    (true, false) => self.count -= 1,
                    (false, true) => self.count += 1,
                    _ => {}
                }
            }
        }
    }

    pub fn remove(&mut self, backend: &str, fd: RawFd) -> io::Result<Slot> {
        let i = Self::index(fd)?;
        let slot = self.slots.get_mut(i).and_then(Option::take).ok_or_else(|| not_registered(backend, fd))?;
        self.count -= 1;
        Ok(slot)
    }

    pub fn get(&self, fd: RawFd) -> Option<&Slot> {
        self.slots.get(usize::try_from(fd).ok()?)?.as_ref()
    }

    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut Slot> {
        self.slots.get_mut(usize::try_from(fd).ok()?)?.as_mut()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Every registered fd, in fd order.
    pub fn iter(&self) -> impl Iterator<Item = (RawFd, &Slot)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| Some((i as RawFd, s.as_ref()?)))
    }

    /// The gate for every native event: see the module docs. `gen` is `None`
    /// for backends that watch by number and learn nothing from the kernel
    /// but the fd (poll, select): their set is rebuilt from the slots, so the
    /// number is the registration.
    pub fn accept(&mut self, fd: RawFd, gen: Option<u32>, ready: Ready) -> Option<(Token, Ready)> {
        let slot = self.get_mut(fd)?;
        if gen.is_some_and(|g| g != slot.gen) {
            log::trace!("dropping a stale event for fd {fd} (generation {gen:?}, now {})", slot.gen);
            return None;
        }
        let watched = slot.watched();
        if watched.is_empty() {
            return None;
        }
        let mut ready = ready.normalize();
        if !watched.contains(Interest::READ) {
            ready.remove(Ready::READABLE | Ready::PRIORITY);
        }
        if !watched.contains(Interest::WRITE) {
            ready.remove(Ready::WRITABLE);
        }
        if ready.is_empty() {
            return None;
        }
        if slot.trigger.is_oneshot() {
            slot.armed = false;
        }
        Some((slot.token, ready))
    }
}

/// Packs an fd and its generation into a kernel user-data word.
pub(crate) fn pack(fd: RawFd, gen: u32) -> u64 {
    (u64::from(gen) << 32) | u64::from(fd as u32)
}

/// The inverse of [`pack`].
pub(crate) fn unpack(data: u64) -> (RawFd, u32) {
    (data as u32 as RawFd, (data >> 32) as u32)
}

pub(crate) fn not_registered(backend: &str, fd: RawFd) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{backend}: fd {fd} is not registered"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip() {
        assert_eq!(unpack(pack(12345, 0xdead_beef)), (12345, 0xdead_beef));
    }

    #[test]
    fn stale_generation_is_dropped() {
        let mut s = Slots::new();
        let (old, _) = s.insert(5, Token(1), Interest::READ, Trigger::Level).unwrap();
        let (new, replaced) = s.insert(5, Token(2), Interest::READ, Trigger::Level).unwrap();
        assert_eq!(replaced, Some(old));
        assert_ne!(old.gen, new.gen);
        assert_eq!(s.accept(5, Some(old.gen), Ready::READABLE), None);
        assert_eq!(s.accept(5, Some(new.gen), Ready::READABLE), Some((Token(2), Ready::READABLE)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn oneshot_disarms_until_update() {
        let mut s = Slots::new();
        let (slot, _) = s.insert(3, Token(9), Interest::READ, Trigger::Oneshot).unwrap();
        assert!(s.accept(3, Some(slot.gen), Ready::READABLE).is_some());
        assert!(s.accept(3, Some(slot.gen), Ready::READABLE).is_none());
        s.update("t", 3, Token(9), Interest::READ, Trigger::Oneshot).unwrap();
        assert!(s.accept(3, Some(slot.gen), Ready::READABLE).is_some());
        // Edge-oneshot disarms the same way.
        s.update("t", 3, Token(9), Interest::READ, Trigger::EdgeOneshot).unwrap();
        assert!(s.accept(3, Some(slot.gen), Ready::READABLE).is_some());
        assert!(s.accept(3, Some(slot.gen), Ready::READABLE).is_none());
        s.update("t", 3, Token(9), Interest::READ, Trigger::EdgeOneshot).unwrap();
        assert!(s.accept(3, Some(slot.gen), Ready::READABLE).is_some());
    }

    #[test]
    fn empty_interest_is_silent_even_for_errors() {
        let mut s = Slots::new();
        s.insert(3, Token(9), Interest::empty(), Trigger::Level).unwrap();
        assert!(s.accept(3, None, Ready::ERROR | Ready::HUP).is_none());
    }

    #[test]
    fn unwatched_direction_is_masked() {
        let mut s = Slots::new();
        s.insert(3, Token(9), Interest::READ, Trigger::Level).unwrap();
        assert_eq!(s.accept(3, None, Ready::WRITABLE), None);
        assert_eq!(s.accept(3, None, Ready::WRITABLE | Ready::HUP), Some((Token(9), Ready::HUP | Ready::READ_CLOSED)));
    }

    #[test]
    fn remove_unknown_names_fd_and_backend() {
        let mut s = Slots::new();
        let e = s.remove("poll", 42).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("poll") && e.to_string().contains("42"));
    }
}
