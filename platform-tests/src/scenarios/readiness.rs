//! Basic readiness: READABLE after a write, WRITABLE at start, a zero
//! timeout.

use std::io::Write;
use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Events, Interest, Poller, Ready, Trigger};

use super::checks::{ensure, fd_of, ms, one_for, quiet, show_all, wait_checked, Ctx, SOON, T1};
use crate::{net, Stop};

pub(super) fn readable_after_write(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    quiet(p, &mut ev, "before the write (the fd is writable, but only READ is asked)")?;
    a.write_all(b"ping").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    let r = one_for(&evs, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "after a write, expected exactly READABLE, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn writable_at_start(p: &mut AnyPoller) -> Result<(), Stop> {
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    let r = one_for(&evs, T1, fd_of(&b))?;
    ensure!(r == Ready::WRITABLE, "a fresh socket with nothing to read: expected exactly WRITABLE, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn zero_timeout(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let t = Instant::now();
    let evs = wait_checked(p, &mut ev, Some(Duration::ZERO))?;
    let took = t.elapsed();
    ensure!(evs.is_empty(), "a zero-timeout wait with nothing ready reported {}", show_all(&evs));
    ensure!(took < Duration::from_millis(100), "a zero-timeout wait took {}", ms(took));
    a.write_all(b"x").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(Duration::ZERO))?;
    let r = one_for(&evs, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "expected READABLE from a zero-timeout wait, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}
