//! Modify and delete: an empty interest silences, delete silences, modify
//! and a second add change the token, and an unregistered fd is NotFound.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::thread;
use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Events, Interest, Poller, Ready, Trigger};

use super::checks::{ensure, fd_of, one_for, quiet, show_all, wait_checked, wait_for, Ctx, SOON, T1, T2};
use crate::{net, Stop};

pub(super) fn modify_empty_silent(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE | Ready::WRITABLE, "expected READABLE | WRITABLE, got {r:?}");
    p.modify(fd_of(&b), T1, Interest::empty(), Trigger::Level).ctx("modify to an empty interest")?;
    quiet(p, &mut ev, "after modify to an empty interest (readable and writable fd)")?;
    p.modify(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("modify back to READ")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "modified back to READ: expected READABLE, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn modify_empty_silent_after_reset(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    net::reset(c).ctx("reset")?;
    // Wait until the reset is seen (anything but plain WRITABLE).
    let deadline = Instant::now() + SOON;
    loop {
        let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
        if r != Ready::WRITABLE {
            break;
        }
        ensure!(Instant::now() < deadline, "the reset was never reported (only WRITABLE)");
        thread::sleep(Duration::from_millis(5));
    }
    p.modify(fd_of(&s), T1, Interest::empty(), Trigger::Level).ctx("modify to an empty interest")?;
    quiet(p, &mut ev, "a reset socket with an empty interest (not even ERROR/HUP may come)")?;
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

pub(super) fn delete_silent(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    let dup = b.try_clone().ctx("dup")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    quiet(p, &mut ev, "after delete (the fd, and a dup of it, are still open and readable)")?;
    match p.delete(fd_of(&b)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return Err(Stop::Fail(format!("a second delete: expected NotFound, got {other:?}"))),
    }
    drop(dup);
    Ok(())
}

pub(super) fn modify_changes_token(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    p.modify(fd_of(&b), T2, Interest::READ, Trigger::Level).ctx("modify")?;
    a.write_all(b"x").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    ensure!(!evs.iter().any(|e| e.token() == T1), "the old token still comes: {}", show_all(&evs));
    one_for(&evs, T2, fd_of(&b))?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

pub(super) fn add_again_replaces(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    p.add(fd_of(&b), T2, Interest::READ, Trigger::Level).ctx("a second add of the same open fd")?;
    a.write_all(b"x").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    ensure!(!evs.iter().any(|e| e.token() == T1), "the replaced token still comes: {}", show_all(&evs));
    one_for(&evs, T2, fd_of(&b))?;
    p.delete(fd_of(&b)).ctx("delete")?;
    match p.delete(fd_of(&b)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return Err(Stop::Fail(format!("one delete must remove the fd; a second gave {other:?}"))),
    }
    Ok(())
}

fn names_fd(msg: &str, fd: RawFd) -> bool {
    let want = fd.to_string();
    msg.split(|c: char| !c.is_ascii_digit()).any(|w| w == want)
}

pub(super) fn not_registered_errors(p: &mut AnyPoller) -> Result<(), Stop> {
    let name = p.name();
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    let fd = fd_of(&b);
    let check = |what: &str, r: io::Result<()>| -> Result<(), Stop> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let msg = e.to_string();
                ensure!(names_fd(&msg, fd), "{what}: the NotFound error must name fd {fd}: {msg:?}");
                ensure!(msg.contains(name), "{what}: the NotFound error must name the backend {name}: {msg:?}");
                Ok(())
            }
            other => Err(Stop::Fail(format!("{what} of an unregistered fd: expected NotFound, got {other:?}"))),
        }
    };
    check("delete", p.delete(fd))?;
    check("modify", p.modify(fd, T1, Interest::READ, Trigger::Level))?;
    p.add(fd, T1, Interest::READ, Trigger::Level).ctx("add")?;
    p.delete(fd).ctx("delete")?;
    check("delete after delete", p.delete(fd))?;
    Ok(())
}
