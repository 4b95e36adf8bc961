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
use std::time::Duration;

use super::bits::{self, Kevent};
use super::{native_kevent, KqSys, NativeKevent};

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

impl NativeKevent for libc::kevent {
    fn zeroed() -> Self {
        // SAFETY: `struct kevent` holds only integers, integer arrays and a
        // raw pointer, for all of which all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }

    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_seam(e: &Kevent) -> Self {
        let mut k = Self::zeroed();
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
    fn to_seam(&self) -> Kevent {
        let f = self.filter; // a copy: the struct is packed on macOS
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
            ident: self.ident as usize,
            filter,
            // NetBSD's flags are 32 bits wide; every flag lives in the low 16.
            flags: self.flags as u16,
            fflags: self.fflags,
            data: self.data as i64,
            udata: self.udata.word(),
        }
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
        NATIVE.with(|cell| {
            native_kevent(&mut cell.borrow_mut(), changes, events, timeout, |ch, nch, out, nout, ts| {
                // SAFETY: native_kevent passes `nch` initialized kevents at
                // `ch`, room for `nout` at `out`, and a null or valid `ts`
                // that outlives the call.
                unsafe { libc::kevent(kq, ch, nch as _, out, nout as _, ts) }
            })
        })
    }
}
