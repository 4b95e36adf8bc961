//! Stale events: an fd closed without delete and its number reused, with
//! and without the old file alive in a dup.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use anypoll_backends::{AnyPoller, Events, Interest, Poller, Ready, Trigger};

use super::checks::{ensure, fd_of, one_for, quiet, quiet_with, show_all, wait_checked, Ctx, QUIET, SOON, T1, T2};
use crate::{net, Stop};

/// A Unix pair whose reading end has the fd number `n` (which must be free):
/// (writer, reader).
fn pair_numbered(n: RawFd) -> Result<(UnixStream, UnixStream), Stop> {
    let (x, y) = net::unix_pair().ctx("socketpair")?;
    if fd_of(&y) == n {
        return Ok((x, y));
    }
    if fd_of(&x) == n {
        return Ok((y, x));
    }
    let y = OwnedFd::from(y);
    // SAFETY: `n` was closed just before this call and nothing else in the
    // process opens fds meanwhile (the matrix runs on one thread), so the
    // number is free and becomes ours.
    let moved = unsafe { net::dup2_onto(y.as_raw_fd(), n) }.ctx("dup2 onto the old number")?;
    drop(y);
    ensure!(moved.as_raw_fd() == n, "could not give the new socket fd number {n}");
    Ok((x, UnixStream::from(moved)))
}

/// Registers a readable socket with T1 and closes it without delete
/// (keeping a dup of it open if `keep`); returns its number and the dup.
fn register_then_close(
    p: &mut AnyPoller,
    ev: &mut Events,
    keep: bool,
) -> Result<(RawFd, Option<UnixStream>, UnixStream), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let n = fd_of(&b);
    p.add(n, T1, Interest::READ, Trigger::Level).ctx("add")?;
    a.write_all(b"old").ctx("write")?;
    one_for(&wait_checked(p, ev, Some(SOON))?, T1, n)?;
    let dup = if keep { Some(b.try_clone().ctx("dup")?) } else { None };
    drop(b);
    Ok((n, dup, a))
}

pub(super) fn stale_reused_fd(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut ev = Events::with_capacity(16);
    let (n, _, _old_writer) = register_then_close(p, &mut ev, false)?;
    let (mut c, d) = pair_numbered(n)?;
    p.add(n, T2, Interest::READ, Trigger::Level).ctx("add of a reused fd number (closed without delete)")?;
    quiet(p, &mut ev, "the new socket on the reused number is not readable")?;
    c.write_all(b"new").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T2, n)?;
    ensure!(r == Ready::READABLE, "the new registration: expected READABLE, got {r:?}");
    p.delete(n).ctx("delete")?;
    drop(d);
    Ok(())
}

pub(super) fn stale_reused_fd_dup(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut ev = Events::with_capacity(16);
    let (n, dup, _old_writer) = register_then_close(p, &mut ev, true)?;
    let (mut c, d) = pair_numbered(n)?;
    p.add(n, T2, Interest::READ, Trigger::Level).ctx("add of a reused fd number (old file alive in a dup)")?;
    // epoll keeps the old (number, file) pair in its set while the dup
    // lives; its events carry the old generation and must be dropped. The
    // wait may then return early with nothing: that is allowed here (the
    // contract asks for delete before close), an event is not.
    quiet_with(p, &mut ev, QUIET, usize::MAX, "the new socket on the reused number is not readable")?;
    c.write_all(b"new").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T2, n)?;
    ensure!(r == Ready::READABLE, "the new registration: expected READABLE, got {r:?}");
    p.delete(n).ctx("delete")?;
    drop((d, dup));
    Ok(())
}

pub(super) fn stale_in_batch(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut ev = Events::with_capacity(16);
    let (n, dup, _old_writer) = register_then_close(p, &mut ev, true)?;
    let (mut c, d) = pair_numbered(n)?;
    // Both the old file (through the dup) and the new one are readable, so
    // a kernel that still holds the old pair reports both in one batch.
    c.write_all(b"new").ctx("write")?;
    p.add(n, T2, Interest::READ, Trigger::Level).ctx("add of a reused fd number (old file alive in a dup)")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    ensure!(!evs.iter().any(|e| e.token() == T1), "the old registration's token came: {}", show_all(&evs));
    ensure!(evs.len() == 1, "expected exactly one event (the new file's), got {}", show_all(&evs));
    let r = one_for(&evs, T2, n)?;
    ensure!(r == Ready::READABLE, "expected READABLE, got {r:?}");
    p.delete(n).ctx("delete")?;
    drop((d, dup));
    Ok(())
}
