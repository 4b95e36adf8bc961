//! The production [`KqSys`]: the platform's `kqueue()` and `kevent()`.
//!
//! The seam's [`Kevent`] is converted to and from the platform's
//! `struct kevent` here (they differ per platform, see the
//! [module docs](super)): structs are built zeroed and filled field by
//! field, and udata goes through a small trait that accepts either of its
//! types. The conversion is a copy of a few words per entry into buffers
//! kept per thread (no allocation once they have grown), next to a syscall.

use std::cell::RefCell;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use super::bits::{self, Kevent};
use super::KqSys;
use crate::sys::{cvt, timespec};

const _: () = assert!(
    bits::EV_ADD as u32 == libc::EV_ADD as u32
        && bits::EV_DELETE as u32 == libc::EV_DELETE as u32
        && bits::EV_ENABLE as u32 == libc::EV_ENABLE as u32
        && bits::EV_DISABLE as u32 == libc::EV_DISABLE as u32
        && bits::EV_ONESHOT as u32 == libc::EV_ONESHOT as u32
        && bits::EV_CLEAR as u32 == libc::EV_CLEAR as u32
        && bits::EV_RECEIPT as u32 == libc::EV_RECEIPT as u32
        && bits::EV_DISPATCH as u32 == libc::EV_DISPATCH as u32
        && bits::EV_ERROR as u32 == libc::EV_ERROR as u32
        && bits::EV_EOF as u32 == libc::EV_EOF as u32
);
#[cfg(not(target_os = "netbsd"))]
const _: () = assert!(bits::EVFILT_READ == libc::EVFILT_READ && bits::EVFILT_WRITE == libc::EVFILT_WRITE);
#[cfg(target_os = "netbsd")]
const _: () = assert!(bits::NETBSD_EVFILT_READ == libc::EVFILT_READ && bits::NETBSD_EVFILT_WRITE == libc::EVFILT_WRITE);
#[cfg(not(target_os = "openbsd"))]
const _: () = assert!(bits::NOTE_TRIGGER == libc::NOTE_TRIGGER);

/// The real `kqueue()` and `kevent()`. Zero-sized.
#[derive(Debug, Clone, Copy, Default)]
pub struct Libc;

/// `udata` is `void *` on most platforms and `intptr_t` on NetBSD before
/// 10 (and in older `libc` crates): this converts either from and to the
/// integer this backend stores in it. It is never dereferenced.
trait Word: Copy {
    fn from_word(w: usize) -> Self;
    fn word(self) -> usize;
}

impl Word for *mut libc::c_void {
    fn from_word(w: usize) -> Self {
        w as *mut libc::c_void
    }
    fn word(self) -> usize {
        self as usize
    }
}

impl Word for isize {
    fn from_word(w: usize) -> Self {
        w as isize
    }
    fn word(self) -> usize {
        self as usize
    }
}

fn zeroed() -> libc::kevent {
    // SAFETY: `struct kevent` holds only integers, integer arrays and a
    // raw pointer, for all of which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn to_native(e: &Kevent) -> libc::kevent {
    let mut k = zeroed();
    k.ident = e.ident as libc::uintptr_t;
    k.filter = match e.filter {
        bits::EVFILT_READ => libc::EVFILT_READ,
        bits::EVFILT_WRITE => libc::EVFILT_WRITE,
        #[cfg(not(target_os = "openbsd"))]
        bits::EVFILT_USER => libc::EVFILT_USER,
        other => other as _,
    };
    k.flags = e.flags.into();
    k.fflags = e.fflags;
    k.data = e.data as _;
    k.udata = Word::from_word(e.udata);
    k
}

#[allow(clippy::unnecessary_cast)]
fn from_native(k: &libc::kevent) -> Kevent {
    let f = k.filter; // a copy: the struct is packed on macOS
    #[cfg(not(target_os = "openbsd"))]
    let user = f == libc::EVFILT_USER;
    #[cfg(target_os = "openbsd")]
    let user = false;
    let filter = if f == libc::EVFILT_READ {
        bits::EVFILT_READ
    } else if f == libc::EVFILT_WRITE {
        bits::EVFILT_WRITE
    } else if user {
        bits::EVFILT_USER
    } else {
        bits::EVFILT_OTHER
    };
    Kevent {
        ident: k.ident as usize,
        filter,
        // NetBSD's flags are 32 bits wide; every flag lives in the low 16.
        flags: k.flags as u16,
        fflags: k.fflags,
        data: k.data as i64,
        udata: k.udata.word(),
    }
}

thread_local! {
    /// The native changelist and event list of this thread's calls.
    static NATIVE: RefCell<(Vec<libc::kevent>, Vec<libc::kevent>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl KqSys for Libc {
    const NAME: &'static str = "kqueue";
    const USER_FILTER: bool = cfg!(not(target_os = "openbsd"));

    fn kqueue(&self) -> io::Result<OwnedFd> {
        // SAFETY: kqueue() takes no argument; own_kqueue checks the result.
        super::own_kqueue(unsafe { libc::kqueue() })
    }

    fn kevent(
        &self,
        kq: RawFd,
        changes: &[Kevent],
        events: &mut [Kevent],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ts = timespec(timeout);
        let ts_ptr = ts.as_ref().map_or(ptr::null(), |t| t as *const libc::timespec);
        let nchanges = changes.len().min(libc::c_int::MAX as usize);
        let nevents = events.len().min(libc::c_int::MAX as usize);
        NATIVE.with(|cell| {
            let mut bufs = cell.borrow_mut();
            let (ch, out) = &mut *bufs;
            ch.clear();
            ch.extend(changes[..nchanges].iter().map(to_native));
            if out.len() < nevents {
                out.resize(nevents, zeroed());
            }
            // SAFETY: `ch` holds `nchanges` initialized kevents and `out`
            // room for `nevents`; `ts_ptr` is null or points at `ts`, which
            // outlives the call.
            let n = unsafe { libc::kevent(kq, ch.as_ptr(), nchanges as _, out.as_mut_ptr(), nevents as _, ts_ptr) };
            let n = (cvt(n)? as usize).min(nevents);
            for (e, k) in events.iter_mut().zip(&out[..n]) {
                *e = from_native(k);
            }
            Ok(n)
        })
    }
}
