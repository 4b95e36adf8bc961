//! Triggers: level repeats, edge once per edge, oneshot and edge-oneshot
//! once per arm, and the loud refusal of a trigger a backend cannot do.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use anypoll_backends::{AnyPoller, Capabilities, Events, Interest, Poller, Ready, Trigger};

use super::checks::{ensure, fd_of, one_for, quiet, wait_checked, wait_for, Ctx, SOON, T1, T2};
use crate::{net, Stop, Subject};

pub(super) fn level_repeats(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    for i in 1..=3 {
        let evs = wait_checked(p, &mut ev, Some(SOON))?;
        let r = one_for(&evs, T1, fd_of(&b)).map_err(|e| match e {
            Stop::Fail(m) => Stop::Fail(format!("level wait {i} of 3 (nothing read yet): {m}")),
            s => s,
        })?;
        ensure!(r == Ready::READABLE, "level wait {i}: expected READABLE, got {r:?}");
    }
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 1, "read {n} bytes, expected 1");
    quiet(p, &mut ev, "after draining a level registration")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn needs_edge(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE) {
        Ok(())
    } else {
        Err(format!("{} cannot do edge-triggered registrations (see edge_refused)", s.name))
    }
}

pub(super) fn edge_once_per_edge(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Edge).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "first edge: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge: a second wait without reading")?;
    a.write_all(b"y").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)).map_err(|e| match e {
        Stop::Fail(m) => Stop::Fail(format!("edge: a new write must give a new event: {m}")),
        s => s,
    })?;
    ensure!(r == Ready::READABLE, "second edge: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge: after the second event")?;
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 2, "read {n} bytes, expected 2");
    quiet(p, &mut ev, "edge: after draining")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn lacks_edge(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE) {
        Err(format!("{} can do edge-triggered registrations (see edge_once_per_edge)", s.name))
    } else {
        Ok(())
    }
}

/// `r` must be the loud refusal of a trigger spelled `t`: `Unsupported`,
/// naming the backend and the trigger.
fn check_unsupported(name: &str, what: &str, t: &str, r: io::Result<()>) -> Result<(), Stop> {
    let e = match r {
        Ok(()) => {
            return Err(Stop::Fail(format!("{what} with the {t} trigger succeeded on {name}, which cannot do it")))
        }
        Err(e) => e,
    };
    ensure!(e.kind() == io::ErrorKind::Unsupported, "{what} with the {t} trigger: expected Unsupported, got {e:?}");
    let msg = e.to_string();
    ensure!(
        msg.contains(name) && msg.contains(t),
        "{what} with the {t} trigger: the error must name the backend and {t:?}: {msg:?}"
    );
    Ok(())
}

/// A refused `trigger` (spelled `t` in the error) leaves nothing behind on
/// add, and keeps the level registration on modify.
fn trigger_refused(p: &mut AnyPoller, trigger: Trigger, t: &str) -> Result<(), Stop> {
    let name = p.name();
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    check_unsupported(name, "add", t, p.add(fd_of(&b), T1, Interest::READ, trigger))?;
    match p.delete(fd_of(&b)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return Err(Stop::Fail(format!("a refused add must leave nothing registered; delete gave {other:?}"))),
    }
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add (level)")?;
    check_unsupported(name, "modify", t, p.modify(fd_of(&b), T2, Interest::READ, trigger))?;
    // The level registration is untouched: same token, still level.
    a.write_all(b"x").ctx("write")?;
    for _ in 0..2 {
        let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)).map_err(|e| match e {
            Stop::Fail(m) => Stop::Fail(format!("after a refused modify, the level registration must be kept: {m}")),
            s => s,
        })?;
        ensure!(r == Ready::READABLE, "expected READABLE, got {r:?}");
    }
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn edge_refused(p: &mut AnyPoller) -> Result<(), Stop> {
    trigger_refused(p, Trigger::Edge, "edge")
}

pub(super) fn needs_edge_oneshot(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE_ONESHOT) {
        Ok(())
    } else {
        Err(format!("{} cannot do edge-oneshot registrations (see edge_oneshot_refused)", s.name))
    }
}

pub(super) fn lacks_edge_oneshot(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE_ONESHOT) {
        Err(format!("{} can do edge-oneshot registrations (see edge_oneshot_once_per_arm)", s.name))
    } else {
        Ok(())
    }
}

/// Adds context to a failure of an edge-oneshot step.
fn step<T>(what: &str, r: Result<T, Stop>) -> Result<T, Stop> {
    r.map_err(|e| match e {
        Stop::Fail(m) => Stop::Fail(format!("edge-oneshot, {what}: {m}")),
        s => s,
    })
}

pub(super) fn edge_oneshot_once_per_arm(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::EdgeOneshot).ctx("add")?;
    quiet(p, &mut ev, "edge-oneshot: armed, nothing to read yet")?;
    a.write_all(b"x").ctx("write")?;
    let r = step("the first write", one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)))?;
    ensure!(r == Ready::READABLE, "edge-oneshot: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge-oneshot: after it fired (data unread)")?;
    // A new edge while disarmed: still nothing.
    a.write_all(b"y").ctx("write")?;
    quiet(p, &mut ev, "edge-oneshot: new data while disarmed, before modify")?;
    // Drained, then re-armed: no data, so no event until the next write.
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 2, "read {n} bytes, expected 2");
    p.modify(fd_of(&b), T1, Interest::READ, Trigger::EdgeOneshot).ctx("modify (re-arm, drained)")?;
    quiet(p, &mut ev, "edge-oneshot: re-armed with nothing to read")?;
    a.write_all(b"z").ctx("write")?;
    let r = step("a write after the re-arm", one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)))?;
    ensure!(r == Ready::READABLE, "edge-oneshot re-armed: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge-oneshot: after the second arm fired")?;
    net::drain(&mut b).ctx("recv")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

/// What epoll does (`EPOLL_CTL_MOD` polls the fd): re-arming while data is
/// still unread fires at once, although no new data came; kqueue's
/// `EV_ENABLE` re-checks the filter the same way.
pub(super) fn edge_oneshot_rearm_pending(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::EdgeOneshot).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    step("the write", one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)))?;
    quiet(p, &mut ev, "edge-oneshot: after it fired (data unread)")?;
    p.modify(fd_of(&b), T2, Interest::READ, Trigger::EdgeOneshot).ctx("modify (re-arm, data pending)")?;
    let r = step(
        "re-armed with data unread, it must fire (as epoll does)",
        one_for(&wait_checked(p, &mut ev, Some(SOON))?, T2, fd_of(&b)),
    )?;
    ensure!(r == Ready::READABLE, "edge-oneshot re-armed over pending data: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge-oneshot: after the re-arm fired (data still unread)")?;
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 1, "read {n} bytes, expected 1");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn edge_oneshot_refused(p: &mut AnyPoller) -> Result<(), Stop> {
    trigger_refused(p, Trigger::EdgeOneshot, "edge-oneshot")
}

pub(super) fn oneshot_until_rearmed(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Oneshot).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "oneshot: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "oneshot: after it fired (data still unread)")?;
    p.modify(fd_of(&b), T1, Interest::READ, Trigger::Oneshot).ctx("modify (re-arm)")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)).map_err(|e| match e {
        Stop::Fail(m) => Stop::Fail(format!("oneshot: re-armed with modify, it must fire again: {m}")),
        s => s,
    })?;
    ensure!(r == Ready::READABLE, "oneshot re-armed: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "oneshot: after it fired the second time")?;
    net::drain(&mut b).ctx("recv")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn oneshot_silent_on_reset(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Oneshot).ctx("add")?;
    c.write_all(b"x").ctx("write")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(r == Ready::READABLE, "oneshot: expected READABLE, got {r:?}");
    net::reset(c).ctx("reset")?;
    thread::sleep(Duration::from_millis(10));
    quiet(p, &mut ev, "a fired oneshot whose peer then reset (not even ERROR/HUP may come)")?;
    p.modify(fd_of(&s), T1, Interest::READ, Trigger::Oneshot).ctx("modify (re-arm)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(!r.is_empty(), "re-armed after the reset: expected an event");
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

pub(super) fn needs_level(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::LEVEL) {
        Ok(())
    } else {
        Err(format!("{} cannot do level-triggered registrations", s.name))
    }
}
