//! Half-close and reset: what a peer's shutdown(SHUT_WR) and RST look like.

use std::io::{self, Read, Write};

use anypoll_backends::{AnyPoller, Capabilities, Events, Interest, Poller, Ready, Trigger};

use super::checks::{ensure, fd_of, quiet, wait_for, Ctx, SOON, T1};
use crate::{net, Stop, Subject};

/// A recv after a reset: ECONNRESET or 0 (EOF).
fn recv_after_reset(mut s: impl Read) -> Result<String, Stop> {
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => Ok("recv returned 0".into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok("recv failed with ECONNRESET".into()),
        Ok(n) => Err(Stop::Fail(format!("recv after the reset returned {n} bytes, expected ECONNRESET or 0"))),
        Err(e) => Err(Stop::Fail(format!("recv after the reset failed with {e}, expected ECONNRESET or 0"))),
    }
}

pub(super) fn half_close_readable(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, mut s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    net::shutdown_write(&c).ctx("shutdown(SHUT_WR)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(r.contains(Ready::READABLE), "after the peer's shutdown(SHUT_WR), expected READABLE, got {r:?}");
    ensure!(!r.intersects(Ready::HUP | Ready::ERROR), "a half-close is neither HUP nor ERROR, got {r:?}");
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf).ctx("recv after the half-close")?;
    ensure!(n == 0, "recv after the peer's half-close returned {n} bytes, expected 0");
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

pub(super) fn needs_rdhup(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::RDHUP) {
        Ok(())
    } else {
        Err(format!(
            "{} has no RDHUP: a half-close shows only as READABLE, then recv returns 0 (see half_close_readable)",
            s.name
        ))
    }
}

pub(super) fn half_close_read_closed(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut c, mut s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    // Plain data first: READ_CLOSED must not show up before the shutdown.
    c.write_all(b"x").ctx("write")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(r == Ready::READABLE, "data without a shutdown: expected exactly READABLE, got {r:?}");
    let got = net::drain(&mut s).ctx("recv")?;
    ensure!(got == 1, "read {got} bytes, expected 1");
    net::shutdown_write(&c).ctx("shutdown(SHUT_WR)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(
        r.contains(Ready::READ_CLOSED | Ready::READABLE),
        "after the peer's shutdown(SHUT_WR), expected READABLE | READ_CLOSED before any recv, got {r:?}"
    );
    ensure!(!r.intersects(Ready::HUP | Ready::ERROR), "a half-close is neither HUP nor ERROR, got {r:?}");
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf).ctx("recv after the half-close")?;
    ensure!(n == 0, "recv after READ_CLOSED returned {n} bytes, expected 0");
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

pub(super) fn needs_errhup_reset(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::ERRHUP) {
        Ok(())
    } else {
        Err(format!(
            "{} has no ERRHUP, so it cannot report ERROR or HUP: a reset shows as READABLE (see peer_reset_wakes_reader)",
            s.name
        ))
    }
}

pub(super) fn peer_reset_error(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    net::reset(c).ctx("reset (SO_LINGER {1, 0} + close)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(
        r.contains(Ready::ERROR) || r.contains(Ready::READ_CLOSED | Ready::HUP),
        "after the peer's reset, expected ERROR or READ_CLOSED | HUP, got {r:?}"
    );
    recv_after_reset(&s)?;
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

pub(super) fn peer_reset_wakes_reader(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    quiet(p, &mut ev, "before the reset")?;
    net::reset(c).ctx("reset (SO_LINGER {1, 0} + close)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(
        r.intersects(Ready::READABLE | Ready::ERROR | Ready::READ_CLOSED | Ready::HUP),
        "after the peer's reset, expected something that makes a reader recv, got {r:?}"
    );
    recv_after_reset(&s)?;
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}
