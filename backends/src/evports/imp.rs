//! The event ports backend's logic, over any [`PortOps`]: see the
//! [module docs](super).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::bits::{self, PortEvent};
use super::{desired_mask, getn_filled, translate, wait_timeout, PortOps};
use crate::slots::Slots;
use crate::sys::{context, cvt};
use crate::waker::Wake;
use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

// getn_filled matches errnos by their illumos values: they must be the host's.
const _: () = assert!(bits::ETIME == libc::ETIME && bits::EINTR == libc::EINTR);

/// [`EvPorts::fds`] bit: the kernel may hold an association for the fd
/// (armed, or fired with its event not collected yet).
const ASSOCIATED: u8 = 1;
/// [`EvPorts::fds`] bit: the fd is in [`EvPorts::pending`].
const PENDING: u8 = 2;

/// The `portev_user` of the waker's user event. No registration has this
/// generation: generations are `u32`s carried in a pointer-sized word.
const WAKE_USER: usize = usize::MAX;

/// The port, shared by the poller and its wakers.
#[derive(Debug)]
struct Port<P> {
    fd: OwnedFd,
    ops: P,
    /// A wake-up is queued in the port and no wait has collected it yet.
    wake_pending: AtomicBool,
}

impl<P: PortOps> Wake for Port<P> {
    fn wake(&self) -> io::Result<()> {
        if self.wake_pending.swap(true, Ordering::AcqRel) {
            // One user event is already queued: this wake rides on it.
            return Ok(());
        }
        if let Err(e) = self.ops.port_send(self.fd.as_raw_fd(), 0, WAKE_USER) {
            // Nothing is queued, so the next wake must try again.
            self.wake_pending.store(false, Ordering::Release);
            return Err(context(P::NAME, "port_send", Some(self.fd.as_raw_fd()), e));
        }
        Ok(())
    }
}

/// The event ports backend over the syscalls `P`: `Sys`
/// on illumos and Solaris. See the [module docs](super).
#[derive(Debug)]
pub struct EvPorts<P> {
    port: Arc<Port<P>>,
    slots: Slots,
    /// fd number → [`ASSOCIATED`] | [`PENDING`].
    fds: Vec<u8>,
    /// The fds to (re-)associate at the start of the next wait, each
    /// once (its [`PENDING`] bit).
    pending: Vec<RawFd>,
    /// `port_getn`'s buffer. Every entry is cleared (`portev_source` 0)
    /// between waits, so that on `EINTR` the written ones are known.
    native: Vec<PortEvent>,
}

impl<P: PortOps + Default> EvPorts<P> {
    /// A new event port.
    pub fn new() -> io::Result<EvPorts<P>> {
        EvPorts::with_ops(P::default())
    }
}

impl<P: PortOps> EvPorts<P> {
    /// A new event port made and used through `ops`.
    pub fn with_ops(ops: P) -> io::Result<EvPorts<P>> {
        let fd = ops.port_create().map_err(|e| context(P::NAME, "port_create", None, e))?;
        // SAFETY: fcntl on an fd we own, with integer arguments only.
        let cloexec = unsafe {
            cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFD))
                .and_then(|fl| cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, fl | libc::FD_CLOEXEC)))
        };
        cloexec.map_err(|e| context(P::NAME, "fcntl(FD_CLOEXEC)", Some(fd.as_raw_fd()), e))?;
        Ok(EvPorts {
            port: Arc::new(Port { fd, ops, wake_pending: AtomicBool::new(false) }),
            slots: Slots::new(),
            fds: Vec::new(),
            pending: Vec::new(),
            native: Vec::new(),
        })
    }

    fn caps() -> Capabilities {
        let rdhup = if P::RDHUP != 0 { Capabilities::RDHUP } else { Capabilities::empty() };
        Capabilities::LEVEL | Capabilities::ONESHOT | Capabilities::O1 | rdhup
    }

    fn port_fd(&self) -> RawFd {
        self.port.fd.as_raw_fd()
    }

    fn flags(&self, fd: RawFd) -> u8 {
        usize::try_from(fd).ok().and_then(|i| self.fds.get(i)).copied().unwrap_or(0)
    }

    fn is_associated(&self, fd: RawFd) -> bool {
        self.flags(fd) & ASSOCIATED != 0
    }

    fn set_flag(&mut self, fd: RawFd, flag: u8, on: bool) {
        let Ok(i) = usize::try_from(fd) else { return };
        if i >= self.fds.len() {
            if !on {
                return;
            }
            self.fds.resize(i + 1, 0);
        }
        if on {
            self.fds[i] |= flag;
        } else {
            self.fds[i] &= !flag;
        }
    }

    /// Queues `fd` for association at the start of the next wait.
    fn defer(&mut self, fd: RawFd) {
        if self.flags(fd) & PENDING == 0 {
            self.set_flag(fd, PENDING, true);
            self.pending.push(fd);
        }
    }

    /// `port_associate(PORT_SOURCE_FD)`, with the generation as user value.
    fn associate(&mut self, fd: RawFd, mask: i32, gen: u32) -> io::Result<()> {
        let object = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        self.port.ops.port_associate(self.port_fd(), bits::PORT_SOURCE_FD, object, mask, gen as usize)?;
        self.set_flag(fd, ASSOCIATED, true);
        Ok(())
    }

    /// `port_dissociate(PORT_SOURCE_FD)` if the kernel may hold an
    /// association; one that is already gone is not an error.
    fn dissociate(&mut self, fd: RawFd) -> io::Result<()> {
        if !self.is_associated(fd) {
            return Ok(());
        }
        self.set_flag(fd, ASSOCIATED, false);
        let Ok(object) = usize::try_from(fd) else { return Ok(()) };
        match self.port.ops.port_dissociate(self.port_fd(), bits::PORT_SOURCE_FD, object) {
            Ok(()) => Ok(()),
            // ENOENT: it fired and was not re-armed (or the kernel dropped
            // it when the fd was closed). EBADF(D): the fd is closed, which
            // dissociated it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF) | Some(libc::EBADFD)) => Ok(()),
            Err(e) => Err(context(P::NAME, "port_dissociate", Some(fd), e)),
        }
    }

    /// The mask and generation `fd` must be associated with now, if any.
    fn wanted(&self, fd: RawFd) -> Option<(i32, u32)> {
        self.slots.get(fd).and_then(|s| Some((desired_mask(s.trigger, s.watched(), P::RDHUP)?, s.gen)))
    }

    /// After `add`/`modify`: an fd that must be silent is dissociated now;
    /// one that wants events is associated at the start of the next wait
    /// (see the module docs), and by `add` also now (`now`), so that its
    /// errors (`EBADFD`, the port's limit on associations) come back
    /// from `add`.
    fn sync(&mut self, fd: RawFd, now: bool) -> io::Result<()> {
        match self.wanted(fd) {
            Some((mask, gen)) => {
                if now {
                    self.associate(fd, mask, gen).map_err(|e| context(P::NAME, "port_associate", Some(fd), e))?;
                }
                self.defer(fd);
                Ok(())
            }
            None => self.dissociate(fd),
        }
    }

    /// Associates the pending fds that still want events, with their
    /// current mask and generation; this discards an event their old
    /// association queued, so that every event a wait collects was seen
    /// during that wait. On an error other than a closed fd, that fd is
    /// dropped from the list and the error names it; the rest wait for
    /// the next call.
    fn associate_pending(&mut self) -> io::Result<()> {
        while let Some(fd) = self.pending.pop() {
            self.set_flag(fd, PENDING, false);
            let Some((mask, gen)) = self.wanted(fd) else { continue };
            match self.associate(fd, mask, gen) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF) | Some(libc::EBADFD)) => {
                    self.set_flag(fd, ASSOCIATED, false);
                    log::debug!("{}: fd {fd} was closed without delete; its registration is gone ({e})", P::NAME);
                }
                Err(e) => return Err(context(P::NAME, "port_associate", Some(fd), e)),
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, ev: PortEvent, events: &mut Events) {
        match i32::from(ev.portev_source) {
            bits::PORT_SOURCE_FD => self.fd_event(ev, events),
            bits::PORT_SOURCE_USER if ev.portev_user == WAKE_USER => {
                self.port.wake_pending.store(false, Ordering::Release);
                events.set_woken();
            }
            // A cleared entry that a kernel counted without writing it.
            0 => {}
            source => {
                log::debug!("{}: ignoring an event from source {source} (user {:#x})", P::NAME, ev.portev_user)
            }
        }
    }

    fn fd_event(&mut self, ev: PortEvent, events: &mut Events) {
        let Ok(fd) = RawFd::try_from(ev.portev_object) else {
            log::debug!("{}: ignoring an fd event for object {:#x}", P::NAME, ev.portev_object);
            return;
        };
        // Delivering the event ended the association (always oneshot).
        self.set_flag(fd, ASSOCIATED, false);
        // A user value that is no u32 matches no generation (0 is never one).
        let gen = u32::try_from(ev.portev_user).unwrap_or(0);
        if let Some((token, ready)) = self.slots.accept(fd, Some(gen), translate(ev.portev_events, P::RDHUP)) {
            events.push(Event { token, fd, ready });
        }
        if self.wanted(fd).is_some() {
            self.defer(fd);
        }
    }
}

impl<P: PortOps> Poller for EvPorts<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn capabilities(&self) -> Capabilities {
        Self::caps()
    }

    fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
        check_trigger(P::NAME, Self::caps(), trigger)?;
        let (_, old) = self.slots.insert(fd, token, interest, trigger)?;
        if let Err(e) = self.sync(fd, true) {
            self.slots.restore(fd, old);
            return Err(e);
        }
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
        check_trigger(P::NAME, Self::caps(), trigger)?;
        let (old, _) = self.slots.update(P::NAME, fd, token, interest, trigger)?;
        if let Err(e) = self.sync(fd, false) {
            self.slots.restore(fd, Some(old));
            return Err(e);
        }
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        self.slots.remove(P::NAME, fd)?;
        // A pending association of it is skipped: it has no slot now.
        self.dissociate(fd)
    }

    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.clear();
        self.associate_pending()?;
        let max = events.capacity().clamp(1, u32::MAX as usize);
        if self.native.len() < max {
            self.native.resize(max, PortEvent::CLEARED);
        }
        // Wait for one event, take up to `max` (see the module docs).
        let mut nget: u32 = 1;
        let ts = wait_timeout(timeout);
        let list = &mut self.native[..max];
        let r = self.port.ops.port_getn(self.port.fd.as_raw_fd(), list, &mut nget, ts.as_ref());
        let n = getn_filled(r, nget, list).map_err(|e| context(P::NAME, "port_getn", Some(self.port_fd()), e))?;
        for i in 0..n {
            // Cleared as it is read: the buffer is all cleared again after the loop.
            let ev = std::mem::replace(&mut self.native[i], PortEvent::CLEARED);
            self.dispatch(ev, events);
        }
        Ok(events.len())
    }

    fn waker(&self) -> Waker {
        Waker::new(self.port.clone())
    }
}
