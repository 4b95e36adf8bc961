//! [`KqSys`] over libkqueue on Linux (feature `libkqueue`): the real kqueue
//! backend, run against an independent user-space kqueue built over epoll.
//!
//! It is neither FreeBSD nor a model: libkqueue differs from the BSD
//! kernels in ways the conformance matrix names as skips on
//! `kqueue-libkqueue` (it consumes `SO_ERROR` when it reports an error,
//! caps one event list at 512 entries, fails `EV_ADD` on some existing
//! knotes, keeps one epoll registration per fd so RDHUP and `EV_CLEAR` can
//! be lost when a second filter is added or one is deleted, and waits after
//! per-change errors instead of returning).
//!
//! libkqueue's `struct kevent` is the FreeBSD 11 layout: 32 bytes, no `ext`
//! array (its `<kqueue/sys/event.h>`). The `libc` crate has no kevent on
//! Linux, so the struct and the two functions are declared here; build.rs
//! links `-lkqueue` through pkg-config.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use super::bits::{self, Kevent};
use super::{native_kevent, KqSys};

/// libkqueue's `struct kevent`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct NativeKevent {
    ident: libc::uintptr_t,
    filter: libc::c_short,
    flags: libc::c_ushort,
    fflags: libc::c_uint,
    data: libc::intptr_t,
    udata: *mut libc::c_void,
}

const _: () = assert!(std::mem::size_of::<NativeKevent>() == 32);

extern "C" {
    fn kqueue() -> libc::c_int;
    fn kevent(
        kq: libc::c_int,
        changelist: *const NativeKevent,
        nchanges: libc::c_int,
        eventlist: *mut NativeKevent,
        nevents: libc::c_int,
        timeout: *const libc::timespec,
    ) -> libc::c_int;
}

/// libkqueue's `kqueue()` and `kevent()`. Zero-sized.
#[derive(Debug, Clone, Copy, Default)]
pub struct LibKqueue;

impl super::NativeKevent for NativeKevent {
    fn zeroed() -> Self {
        NativeKevent { ident: 0, filter: 0, flags: 0, fflags: 0, data: 0, udata: ptr::null_mut() }
    }

    fn from_seam(e: &Kevent) -> Self {
        NativeKevent {
            ident: e.ident,
            // The FreeBSD numbers (-1, -2, -11), which libkqueue uses too.
            filter: e.filter,
            flags: e.flags,
            fflags: e.fflags,
            data: e.data as libc::intptr_t,
            udata: e.udata as *mut libc::c_void,
        }
    }

    fn to_seam(&self) -> Kevent {
        let filter = match self.filter {
            bits::EVFILT_READ | bits::EVFILT_WRITE | bits::EVFILT_USER => self.filter,
            _ => bits::EVFILT_OTHER,
        };
        Kevent {
            ident: self.ident,
            filter,
            flags: self.flags,
            fflags: self.fflags,
            data: self.data as i64,
            udata: self.udata as usize,
        }
    }
}

impl KqSys for LibKqueue {
    const NAME: &'static str = "kqueue-libkqueue";
    const USER_FILTER: bool = true;

    fn kqueue(&self) -> io::Result<OwnedFd> {
        // SAFETY: kqueue() takes no argument; own_kqueue checks the result.
        super::own_kqueue(unsafe { kqueue() })
    }

    fn kevent(
        &self,
        kq: RawFd,
        changes: &[Kevent],
        events: &mut [Kevent],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        // A test backend: fresh buffers per call are fine.
        native_kevent(&mut (Vec::new(), Vec::new()), changes, events, timeout, |ch, nch, out, nout, ts| {
            // SAFETY: native_kevent passes `nch` initialized kevents at `ch`
            // and room for `nout` at `out`, both in libkqueue's layout
            // (asserted 32 bytes), and a null or valid `ts` that outlives
            // the call.
            unsafe { kevent(kq, ch, nch, out, nout, ts) }
        })
    }
}
