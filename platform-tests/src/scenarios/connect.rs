//! Non-blocking connects: refused (ERROR, or WRITABLE and SO_ERROR) and
//! pending until the listener makes room.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Capabilities, Events, Interest, Poller, Ready, Trigger};

use super::checks::{ensure, fd_of, ms, show_all, wait_checked, wait_for, Ctx, SOON, T1};
use crate::net::{self, ConnectStart};
use crate::{Stop, Subject};

fn v4(addr: SocketAddr) -> Result<SocketAddrV4, Stop> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(Stop::Fail(format!("expected an IPv4 address, got {a}"))),
    }
}

/// A non-blocking connect to a port with nothing listening, still in
/// progress. A few tries, since a host may refuse inside connect() itself.
fn refused_connect() -> Result<std::net::TcpStream, Stop> {
    for _ in 0..3 {
        let addr = net::closed_port().ctx("finding a closed port")?;
        let (sock, start) = net::connect_nonblocking(addr).ctx("socket")?;
        match start {
            ConnectStart::InProgress => return Ok(sock),
            ConnectStart::Immediate(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            ConnectStart::Immediate(r) => {
                return Err(Stop::Fail(format!("connect to closed port {addr} gave {r:?}, expected EINPROGRESS")))
            }
        }
    }
    Err(Stop::Skip("the host refuses a loopback connect inside connect() itself: nothing is left to poll for".into()))
}

fn expect_refused(sock: &std::net::TcpStream) -> Result<(), Stop> {
    match sock.take_error().ctx("getsockopt(SO_ERROR)")? {
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        other => Err(Stop::Fail(format!("SO_ERROR after a refused connect: {other:?}, expected ECONNREFUSED"))),
    }
}

pub(super) fn needs_errhup_connect(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::ERRHUP) {
        Ok(())
    } else {
        Err(format!("{} has no ERRHUP; connect must be confirmed with SO_ERROR (see refused_connect_so_error)", s.name))
    }
}

pub(super) fn refused_connect_error(p: &mut AnyPoller) -> Result<(), Stop> {
    let sock = refused_connect()?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&sock), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&sock), SOON)?;
    ensure!(r.contains(Ready::ERROR), "a refused connect: expected ERROR, got {r:?}");
    ensure!(!r.intersects(Ready::READABLE | Ready::WRITABLE), "ERROR must come without READABLE/WRITABLE, got {r:?}");
    expect_refused(&sock)?;
    p.delete(fd_of(&sock)).ctx("delete")?;
    Ok(())
}

pub(super) fn refused_connect_so_error(p: &mut AnyPoller) -> Result<(), Stop> {
    let sock = refused_connect()?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&sock), T1, Interest::WRITE, Trigger::Level).ctx("add")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&sock), SOON)?;
    ensure!(
        r.intersects(Ready::WRITABLE | Ready::ERROR),
        "a refused connect must wake a writer (WRITABLE or ERROR), got {r:?}"
    );
    expect_refused(&sock)?;
    p.delete(fd_of(&sock)).ctx("delete")?;
    Ok(())
}

pub(super) fn pending_connect(p: &mut AnyPoller) -> Result<(), Stop> {
    // Backlog 0: the accept queue is full after one connection, so the
    // next SYN is dropped and that connect stays pending until we accept
    // the first one and the SYN is sent again (about 1 s later).
    let listener = net::listener_with_backlog(0).ctx("listener")?;
    let addr = v4(listener.local_addr().ctx("local_addr")?)?;
    let first = std::net::TcpStream::connect(addr).ctx("first connect")?;
    let (sock, start) = net::connect_nonblocking(addr).ctx("socket")?;
    match start {
        ConnectStart::InProgress => {}
        ConnectStart::Immediate(Ok(())) => {
            return Err(Stop::Skip("the host completed the connect inside connect(): it cannot be pending".into()))
        }
        ConnectStart::Immediate(Err(e)) => return Err(Stop::Fail(format!("connect to the listener failed: {e}"))),
    }
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&sock), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    let evs = wait_checked(p, &mut ev, Some(Duration::from_millis(150)))?;
    if !evs.is_empty() {
        if sock.peer_addr().is_ok() {
            return Err(Stop::Skip(
                "the host completed a connect to a full accept queue, so it cannot be held pending".into(),
            ));
        }
        return Err(Stop::Fail(format!("an event while the connect is still pending: {}", show_all(&evs))));
    }
    ensure!(sock.peer_addr().is_err(), "the connect completed, but no event was reported");
    // Make room in the queue; the retransmitted SYN then completes the connect.
    let (accepted, _) = listener.accept().ctx("accept")?;
    let t = Instant::now();
    let r = wait_for(p, &mut ev, T1, fd_of(&sock), Duration::from_secs(5))?;
    ensure!(
        r == Ready::WRITABLE,
        "a connect that completed: expected exactly WRITABLE, got {r:?} after {}",
        ms(t.elapsed())
    );
    match sock.take_error().ctx("getsockopt(SO_ERROR)")? {
        None => {}
        Some(e) => return Err(Stop::Fail(format!("SO_ERROR after a completed connect: {e}"))),
    }
    sock.peer_addr().ctx("getpeername after WRITABLE")?;
    p.delete(fd_of(&sock)).ctx("delete")?;
    drop((accepted, first));
    Ok(())
}
