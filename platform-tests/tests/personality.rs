//! Platform personalities: the socket and connect rows of the
//! normalization table (`docs/transport.md`), on a Linux host.
//!
//! Each test runs over real sockets (Unix pairs, TCP on 127.0.0.1) and
//! scripts only what this kernel cannot produce, through the `SockOps` seam
//! ([`Scripted`]) or with [`Ctx::inject_event`] for poll flags. Each checks
//! the bytes (exact, in order, no duplicates), the connection's flags, the
//! syscalls made, and that the loop does not spin. The connect rows run on
//! every backend available here (select reports no ERR/HUP, so
//! `confirm_connect` reads `SO_ERROR` there).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anypoll::backends::{Capabilities, Ready};
use anypoll::connection::{ConnError, ConnFlags, ConnectStatus, Connection};
use anypoll::stream::{Outcome, SpliceMode};
use anypoll::{EventLoop, FdState};
use platform_tests::scripted::{
    assert_bytes, assert_quiet, backends, drive, new_loop, pattern, wait_pending, wait_poll, Endpoint, Op, Peer,
    PeerEnd, Scripted, Step, StreamRig,
};

/// The poll bit that says the peer's FIN arrived: POLLRDHUP where it
/// exists (Linux, Android), else POLLIN (data or EOF to read).
const PEER_SHUT: i16 =
    if anypoll::backends::poll::RDHUP_HERE != 0 { anypoll::backends::poll::RDHUP_HERE } else { libc::POLLIN };

const SECS: Duration = Duration::from_secs(10);

/// A Unix pair: (the peer, blocking; our connection, non-blocking).
fn unix_conn() -> (UnixStream, Connection) {
    let (peer, ours) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    (peer, Connection::from_connected(OwnedFd::from(ours)))
}

/// A TCP pair on loopback: (the peer, blocking; our connection, non-blocking).
fn tcp_conn() -> (TcpStream, Connection) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    ours.set_nodelay(true).unwrap();
    (peer, Connection::from_connected(OwnedFd::from(ours)))
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A non-blocking connect that anypoll still sees as pending
/// (`WAIT_L4_CONN`), even if loopback finished it inside connect().
fn connecting(addr: SocketAddr) -> Connection {
    let mut c = Connection::connect(addr).expect("connect");
    if !c.flags.contains(ConnFlags::WAIT_L4_CONN) {
        c.flags.remove(ConnFlags::L4_CONN);
        c.flags |= ConnFlags::WAIT_L4_CONN;
    }
    c
}

fn flags_are(what: &str, f: ConnFlags, have: ConnFlags, lack: ConnFlags) {
    assert!(f.contains(have) && !f.intersects(lack), "{what}: flags {f:?}, want {have:?} and none of {lack:?}");
}

fn calls(h: &Endpoint) -> u64 {
    h.calls
}

// ---------------------------------------------------------------------------
// recv → EAGAIN (all): recv not ready; the fd is polled.

#[test]
fn personality_recv_eagain_subscribes() {
    for (b, _) in backends() {
        let (peer, mut conn) = unix_conn();
        let mut el = new_loop(b);
        // The owner reads at once (speculative), before anything arrived.
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::RECV_READY).unwrap();
        let fd = conn.fd();
        let mut h = Endpoint::new(conn, Scripted::new());
        el.run_once(&mut h, Some(Duration::ZERO)).unwrap();
        assert_eq!(h.ops.log().len(), 1, "{}: one speculative recv", b.name);
        assert_eq!(h.ops.log()[0].result, Err(libc::EAGAIN), "{}: real EAGAIN", b.name);
        assert_eq!(el.cx().counters().eagain, 1, "{}", b.name);
        let st = el.cx().state(fd).unwrap();
        assert!(st.contains(FdState::RECV_ACTIVE) && !st.contains(FdState::RECV_READY), "{}: {st:?}", b.name);
        flags_are(b.name, h.conn.flags, ConnFlags::L4_CONN, ConnFlags::SOCK_RD_SH | ConnFlags::ERROR);
        // Now it waits in the poller: no recv, no call, no spin.
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(100), 0, calls);
        assert_eq!(h.ops.calls(Op::Recv), 1, "{}: a recv while nothing arrived", b.name);
        // Data in paced chunks: each burst ends in EAGAIN (or a short read
        // that proves the fd drained, under level), then the poll wakes it.
        let want = pattern(1, 160_000);
        let mut p = Peer::new(want.clone(), PeerEnd::Close);
        p.pace = Some((40_000, Duration::from_millis(15)));
        let t = p.spawn(peer);
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        t.join().unwrap();
        assert_bytes(b.name, &h.got, &want);
        flags_are(b.name, h.conn.flags, ConnFlags::SOCK_RD_SH, ConnFlags::ERROR | ConnFlags::SOCK_WR_SH);
        assert!(spent.iterations <= 60, "{}: {spent}", b.name);
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(75), 1, calls);
        println!("{}: {spent}", b.name);
    }
}

// ---------------------------------------------------------------------------
// recv → ENOTCONN before the connect completes (illumos/SmartOS): as EAGAIN.

#[test]
fn personality_enotconn_recv_while_connecting_illumos() {
    for (b, _) in backends() {
        let (l, addr) = listener();
        let want = pattern(2, 100_000);
        let server = Peer::new(want.clone(), PeerEnd::Close);
        let mut conn = connecting(addr);
        let mut el = new_loop(b);
        // The application reads at once, while the connect is pending (and
        // before it asks the poller about the connect).
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::RECV_READY).unwrap();
        let fd = conn.fd();
        let mut ops = Scripted::new();
        ops.script_fd(Op::Recv, fd, [Step::Err(libc::ENOTCONN)]);
        let mut h = Endpoint::new(conn, ops);
        h.io_before_confirm = true;
        el.run_once(&mut h, Some(Duration::ZERO)).unwrap();
        assert_eq!(h.ops.errors_fd(Op::Recv, fd, libc::ENOTCONN), 1, "{}", b.name);
        flags_are(b.name, h.conn.flags, ConnFlags::WAIT_L4_CONN, ConnFlags::ERROR | ConnFlags::SOCK_RD_SH);
        assert_eq!(el.cx().counters().eagain, 1, "{}: ENOTCONN counted as EAGAIN", b.name);
        assert!(!el.cx().state(fd).unwrap().contains(FdState::RECV_READY), "{}: recv is polled now", b.name);
        assert_eq!(h.connect, Some(ConnectStatus::Pending), "{}", b.name);
        let s = server.serve(l);
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        s.handle.join().unwrap();
        assert_bytes(b.name, &h.got, &want);
        flags_are(
            b.name,
            h.conn.flags,
            ConnFlags::L4_CONN | ConnFlags::SOCK_RD_SH,
            ConnFlags::WAIT_L4_CONN | ConnFlags::ERROR,
        );
        assert_eq!(h.conn.error(), ConnError::None);
        assert!(spent.iterations <= 40, "{}: {spent}", b.name);
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(75), 1, calls);
    }
}

/// The control: the same ENOTCONN once the connect is known to be done is
/// a hard error, not an EAGAIN.
#[test]
fn personality_enotconn_recv_when_connected_is_hard_error() {
    let (_peer, mut conn) = unix_conn();
    let mut el = EventLoop::from_env().unwrap();
    conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::RECV_READY).unwrap();
    let fd = conn.fd();
    let mut ops = Scripted::new();
    ops.script_fd(Op::Recv, fd, [Step::Err(libc::ENOTCONN)]);
    let mut h = Endpoint::new(conn, ops);
    drive(&mut el, &mut h, SECS, |h| h.done());
    flags_are(
        "connected",
        h.conn.flags,
        ConnFlags::ERROR | ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH,
        ConnFlags::empty(),
    );
    assert_eq!(h.conn.error(), ConnError::Os(libc::ENOTCONN));
    assert_eq!(h.ops.calls(Op::Recv), 1);
    assert_eq!(el.cx().counters().eagain, 0);
    assert_quiet("connected", &mut el, &mut h, Duration::from_millis(100), 1, calls);
}

// ---------------------------------------------------------------------------
// send → ENOTCONN before the connect completes (OpenBSD, FreeBSD), and
// send → EINPROGRESS (Linux TCP fast open): as EAGAIN, subscribe write.

fn send_while_connecting(errno: i32, seed: u64) {
    for (b, _) in backends() {
        let (l, addr) = listener();
        let mut conn = connecting(addr);
        let mut el = new_loop(b);
        conn.ctrl_init(el.cx(), 0, FdState::SEND_ACTIVE).unwrap();
        let fd = conn.fd();
        // The application sends at once (speculatively), before the
        // connect is known to be done.
        el.cx().may_send(fd);
        let mut ops = Scripted::new();
        ops.script_fd(Op::Send, fd, [Step::Err(errno)]);
        let mut h = Endpoint::new(conn, ops);
        h.out = pattern(seed, 300_000);
        h.shut_after_send = true;
        h.want_read = 0;
        h.io_before_confirm = true;
        el.run_once(&mut h, Some(Duration::ZERO)).unwrap();
        let what = format!("{} errno {errno}", b.name);
        assert_eq!(h.ops.errors_fd(Op::Send, fd, errno), 1, "{what}");
        assert_eq!(h.sent, 0, "{what}");
        flags_are(&what, h.conn.flags, ConnFlags::WAIT_L4_CONN, ConnFlags::ERROR | ConnFlags::SOCK_WR_SH);
        assert_eq!(el.cx().counters().eagain, 1, "{what}: counted as EAGAIN");
        let st = el.cx().state(fd).unwrap();
        assert!(st.contains(FdState::SEND_ACTIVE) && !st.contains(FdState::SEND_READY), "{what}: {st:?}");
        let s = Peer::new(Vec::new(), PeerEnd::Shutdown).serve(l);
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        let got = s.handle.join().unwrap();
        assert_bytes(&what, &got, &h.out);
        flags_are(
            &what,
            h.conn.flags,
            ConnFlags::L4_CONN | ConnFlags::SOCK_WR_SH,
            ConnFlags::WAIT_L4_CONN | ConnFlags::ERROR,
        );
        assert!(spent.iterations <= 200, "{what}: {spent}");
        assert_quiet(&what, &mut el, &mut h, Duration::from_millis(75), 1, calls);
    }
}

#[test]
fn personality_enotconn_send_while_connecting_bsd() {
    send_while_connecting(libc::ENOTCONN, 3);
}

/// Linux returns EINPROGRESS from a send on a TCP-fast-open socket whose
/// SYN could not carry the data; this host cannot be made to do it without
/// changing `net.ipv4.tcp_fastopen`, so the errno is scripted.
#[test]
fn personality_einprogress_send_fast_open() {
    send_while_connecting(libc::EINPROGRESS, 4);
    // The control: EINPROGRESS on a connected socket is a hard error.
    let (_peer, mut conn) = unix_conn();
    let mut el = EventLoop::from_env().unwrap();
    conn.ctrl_init(el.cx(), 0, FdState::SEND_ACTIVE).unwrap();
    let fd = conn.fd();
    let mut ops = Scripted::new();
    ops.script_fd(Op::Send, fd, [Step::Err(libc::EINPROGRESS)]);
    let mut h = Endpoint::new(conn, ops);
    h.out = pattern(5, 1000);
    h.want_read = 0;
    drive(&mut el, &mut h, SECS, |h| h.done());
    flags_are(
        "connected",
        h.conn.flags,
        ConnFlags::ERROR | ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH,
        ConnFlags::empty(),
    );
    assert_eq!(h.conn.error(), ConnError::Os(libc::EINPROGRESS));
}

// ---------------------------------------------------------------------------
// EINTR (all): retried, inside the same call.

#[test]
fn personality_eintr_storm() {
    let (client, front) = UnixStream::pair().unwrap();
    let (back, server) = UnixStream::pair().unwrap();
    front.set_nonblocking(true).unwrap();
    back.set_nonblocking(true).unwrap();
    let (ffd, bfd) = (front.as_raw_fd(), back.as_raw_fd());
    let mut el = EventLoop::from_env().unwrap();
    let mut ops = Scripted::new();
    // Storms on every read and every write of both sides.
    let storm = |n: usize, then: Step| std::iter::repeat_n(Step::Err(libc::EINTR), n).chain([then]);
    for fd in [ffd, bfd] {
        for _ in 0..8 {
            ops.script_fd(Op::Recv, fd, storm(300, Step::Pass));
            ops.script_fd(Op::Send, fd, storm(300, Step::Short(777)));
        }
    }
    let storms = 2 * 8 * 300 * 2;
    let fc = Connection::from_connected(OwnedFd::from(front));
    let bc = Connection::from_connected(OwnedFd::from(back));
    let mut rig = StreamRig::new(el.cx(), fc, bc, SpliceMode::Never, ops);
    let up = pattern(6, 1 << 20);
    let down = pattern(7, 1 << 20);
    let tc = Peer::new(up.clone(), PeerEnd::Shutdown).spawn(client);
    let mut sp = Peer::new(down.clone(), PeerEnd::Close);
    sp.read_first = up.len();
    let ts = sp.spawn(server);
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    let (client_got, server_got) = (tc.join().unwrap(), ts.join().unwrap());
    assert_bytes("up", &server_got, &up);
    assert_bytes("down", &client_got, &down);
    assert_eq!(rig.stream.outcome(), Outcome::Finished);
    let (f, b) = rig.final_flags.unwrap();
    flags_are("front", f, ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH, ConnFlags::ERROR);
    flags_are("back", b, ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH, ConnFlags::ERROR);
    assert_eq!(rig.ops.unused(Op::Recv) + rig.ops.unused(Op::Send), 0, "every scripted EINTR was met");
    let eintr = rig.ops.log().iter().filter(|c| c.result == Err(libc::EINTR)).count();
    assert_eq!(eintr, storms);
    // Retried in place: the storm costs syscalls, not iterations.
    assert!(spent.reads + spent.writes >= storms as u64, "{spent}");
    assert!(spent.iterations <= 400, "a storm must not cost iterations: {spent}");
    assert_eq!(spent.eagain, rig.ops.log().iter().filter(|c| c.result == Err(libc::EAGAIN)).count() as u64);
    println!("{spent}");
}

// ---------------------------------------------------------------------------
// recv → 0 (all): SOCK_RD_SH, no error.

#[test]
fn personality_recv_zero_is_read_shutdown() {
    for (b, _) in backends() {
        for tcp in [false, true] {
            let what = format!("{} {}", b.name, if tcp { "tcp" } else { "unix" });
            let (peer, conn): (OwnedFd, Connection) = if tcp {
                let (p, c) = tcp_conn();
                (p.into(), c)
            } else {
                let (p, c) = unix_conn();
                (p.into(), c)
            };
            let want = pattern(8, 64 * 1024);
            Peer::new(want.clone(), PeerEnd::Shutdown).spawn(peer);
            let mut el = new_loop(b);
            let mut conn = conn;
            let fd = conn.fd();
            wait_pending(fd, want.len(), SECS);
            // Every recv gets a full 16 KiB, so no short read proves the end:
            // the EOF shows as a recv that returns 0.
            wait_poll(fd, PEER_SHUT, SECS);
            conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::RECV_READY).unwrap();
            let mut h = Endpoint::new(conn, Scripted::new());
            let spent = drive(&mut el, &mut h, SECS, |h| h.done());
            assert_bytes(&what, &h.got, &want);
            let recvs: Vec<_> = h.ops.log().iter().filter(|c| c.op == Op::Recv).map(|c| c.result).collect();
            assert_eq!(recvs.last(), Some(&Ok(0)), "{what}: the end is a recv of 0: {recvs:?}");
            assert_eq!(recvs.len(), 5, "{what}: 4 full reads and the 0: {recvs:?}");
            flags_are(&what, h.conn.flags, ConnFlags::SOCK_RD_SH, ConnFlags::ERROR | ConnFlags::SOCK_WR_SH);
            assert_eq!(h.conn.error(), ConnError::None, "{what}");
            assert!(el.cx().state(fd).unwrap().contains(FdState::RECV_SHUT), "{what}");
            assert!(spent.iterations <= 4, "{what}: {spent}");
            assert_quiet(&what, &mut el, &mut h, Duration::from_millis(75), 1, calls);
        }
    }
}

// ---------------------------------------------------------------------------
// A short read after HUP/RDHUP was reported (all): read shutdown without
// another recv.

#[test]
fn personality_short_read_after_hup_no_extra_recv() {
    for (b, caps) in backends() {
        for tcp in [false, true] {
            let what = format!("{} {}", b.name, if tcp { "tcp" } else { "unix" });
            let (peer, conn): (OwnedFd, Connection) = if tcp {
                let (p, c) = tcp_conn();
                (p.into(), c)
            } else {
                let (p, c) = unix_conn();
                (p.into(), c)
            };
            let want = pattern(9, 10_000);
            Peer::new(want.clone(), PeerEnd::Close).spawn(peer).join().unwrap();
            let mut conn = conn;
            let fd = conn.fd();
            // The data and the hang-up are both there before the first wait.
            wait_poll(fd, PEER_SHUT, SECS);
            let mut el = new_loop(b);
            conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE).unwrap();
            let mut h = Endpoint::new(conn, Scripted::new());
            let spent = drive(&mut el, &mut h, SECS, |h| h.done());
            assert_bytes(&what, &h.got, &want);
            flags_are(&what, h.conn.flags, ConnFlags::SOCK_RD_SH, ConnFlags::ERROR);
            let last = el.cx().last_ready(fd).unwrap();
            let reported = last.intersects(Ready::READ_CLOSED | Ready::HUP);
            let recvs = h.ops.calls(Op::Recv);
            if reported {
                // The backend said so: one recv (short), and nothing more.
                assert_eq!(recvs, 1, "{what}: reported {last:?}, yet {recvs} recvs");
                assert_eq!(h.ops.log()[0].result, Ok(want.len()), "{what}");
            } else {
                // select (no RDHUP): the short read proves the fd drained;
                // the end is then seen by a recv of 0.
                assert!(!caps.contains(Capabilities::RDHUP), "{what}: RDHUP backend reported {last:?}");
                assert_eq!(recvs, 2, "{what}: {:?}", h.ops.log());
                assert_eq!(h.ops.log()[1].result, Ok(0), "{what}");
            }
            assert!(spent.iterations <= 3, "{what}: {spent}");
            assert_quiet(&what, &mut el, &mut h, Duration::from_millis(75), 1, calls);
            println!("{what}: reported {last:?}, {recvs} recv(s)");
        }
    }
}

// ---------------------------------------------------------------------------
// A short read while ERR is reported (ERR+HUP after a short read): the data
// is kept, the error is final; ERR is checked together with HUP.

#[test]
fn personality_err_hup_after_short_read() {
    for (b, caps) in backends() {
        let (peer, mut conn) = tcp_conn();
        let fd = conn.fd();
        let want = pattern(10, 10_000);
        let mut peer = peer;
        peer.write_all(&want).unwrap();
        wait_pending(fd, want.len(), SECS);
        platform_tests::net::reset(peer).unwrap();
        // The RST is there (ERR|HUP), with the 10,000 bytes still queued.
        wait_poll(fd, libc::POLLERR, SECS);
        let mut el = new_loop(b);
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE).unwrap();
        let mut h = Endpoint::new(conn, Scripted::new());
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        assert_bytes(b.name, &h.got, &want);
        flags_are(
            b.name,
            h.conn.flags,
            ConnFlags::ERROR | ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH,
            ConnFlags::empty(),
        );
        assert_eq!(h.conn.error(), ConnError::Reset, "{}", b.name);
        if caps.contains(Capabilities::ERRHUP) {
            assert_eq!(h.ops.calls(Op::Recv), 1, "{}: the short read, nothing more: {:?}", b.name, h.ops.log());
            assert_eq!(h.ops.calls(Op::SoError), 1, "{}: SO_ERROR names the error", b.name);
        } else {
            // select: no ERR report; the second recv returns ECONNRESET.
            assert_eq!(h.ops.calls(Op::Recv), 2, "{}: {:?}", b.name, h.ops.log());
            assert_eq!(h.ops.log()[1].result, Err(libc::ECONNRESET), "{}", b.name);
        }
        assert!(spent.iterations <= 3, "{}: {spent}", b.name);
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(75), 1, calls);
    }
}

// ---------------------------------------------------------------------------
// HUP without ERR and without IN (all; Linux always adds IN, so the flags
// are injected): the read-shutdown path, no recv.

#[test]
fn personality_hup_without_err_or_in() {
    for (b, _) in backends() {
        let (peer, mut conn) = tcp_conn();
        let fd = conn.fd();
        let want = pattern(11, 20_000);
        let t = Peer::new(want.clone(), PeerEnd::Open).spawn(peer);
        let mut el = new_loop(b);
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE).unwrap();
        let mut h = Endpoint::new(conn, Scripted::new());
        // Receive what the peer sent (real), then wait in the poller.
        drive(&mut el, &mut h, SECS, |h| h.got.len() == want.len());
        assert!(!h.read_done());
        let mark = h.ops.mark();
        el.cx().inject_event(fd, Ready::HUP);
        let spent = drive(&mut el, &mut h, SECS, |h| h.read_done());
        assert!(
            h.ops.since(mark).iter().all(|c| c.op != Op::Recv),
            "{}: a recv after HUP-only: {:?}",
            b.name,
            h.ops.since(mark)
        );
        assert_bytes(b.name, &h.got, &want);
        flags_are(b.name, h.conn.flags, ConnFlags::SOCK_RD_SH, ConnFlags::ERROR);
        assert_eq!(h.conn.error(), ConnError::None);
        assert!(el.cx().state(fd).unwrap().contains(FdState::RECV_SHUT), "{}", b.name);
        assert!(spent.iterations <= 2, "{}: {spent}", b.name);
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(75), 1, calls);
        // Our write side still works: the peer gets EOF when we close.
        h.conn.force_close(el.cx());
        t.join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// ERR without IN while the connect is pending (all): connect failed, no
// recv, SO_ERROR read once.

#[test]
fn personality_err_without_in_pending_connect() {
    for (b, _) in backends() {
        // A real refused connect; the poller's report is scripted as ERR
        // alone (Linux adds HUP|IN|OUT), before any wait, so the kernel's
        // own report never reaches the loop.
        let addr = SocketAddr::V4(platform_tests::net::closed_port().unwrap());
        let mut conn = connecting(addr);
        let mut el = new_loop(b);
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).unwrap();
        let fd = conn.fd();
        el.cx().inject_event(fd, Ready::ERROR);
        let mut h = Endpoint::new(conn, Scripted::new());
        h.out = pattern(12, 100);
        // Even an owner that reads and writes before asking gets no recv.
        h.io_before_confirm = true;
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        assert_eq!(el.cx().last_ready(fd), Some(Ready::ERROR), "{}", b.name);
        assert_eq!(h.ops.calls(Op::Recv), 0, "{}: {:?}", b.name, h.ops.log());
        assert_eq!(h.ops.calls(Op::Send), 0, "{}: {:?}", b.name, h.ops.log());
        assert_eq!(h.ops.calls(Op::SoError), 1, "{}: {:?}", b.name, h.ops.log());
        assert_eq!(h.conn.error(), ConnError::Refused, "{}", b.name);
        flags_are(
            b.name,
            h.conn.flags,
            ConnFlags::ERROR | ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH,
            ConnFlags::WAIT_L4_CONN | ConnFlags::L4_CONN,
        );
        assert!(spent.iterations <= 2, "{}: {spent}", b.name);
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(75), 1, calls);
        h.conn.force_close(el.cx());

        // ERR reported, but SO_ERROR holds nothing: said so explicitly.
        let (l, addr) = listener();
        let mut conn = connecting(addr);
        let _s = Peer::new(Vec::new(), PeerEnd::Close).serve(l);
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).unwrap();
        let fd = conn.fd();
        el.cx().inject_event(fd, Ready::ERROR);
        let mut h = Endpoint::new(conn, Scripted::new());
        drive(&mut el, &mut h, SECS, |h| h.done());
        assert_eq!(h.conn.error(), ConnError::PollErrNoErrno, "{}", b.name);
        assert_eq!(h.ops.calls(Op::Recv), 0, "{}", b.name);
        assert_eq!(h.ops.calls(Op::SoError), 1, "{}", b.name);
    }
}

/// The same row with the kernel's own report (Linux: ERR|HUP|IN|OUT; select:
/// readable and writable): still no recv, and `SO_ERROR` names the errno.
#[test]
fn personality_refused_connect_real_report() {
    for (b, _) in backends() {
        let addr = SocketAddr::V4(platform_tests::net::closed_port().unwrap());
        let mut conn = connecting(addr);
        let mut el = new_loop(b);
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).unwrap();
        let fd = conn.fd();
        let mut h = Endpoint::new(conn, Scripted::new());
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        assert_eq!(h.ops.calls(Op::Recv), 0, "{}: {:?}", b.name, h.ops.log());
        assert_eq!(h.ops.calls(Op::SoError), 1, "{}: {:?}", b.name, h.ops.log());
        assert_eq!(h.conn.error(), ConnError::Refused, "{}", b.name);
        assert_eq!(h.connect, Some(ConnectStatus::Failed), "{}", b.name);
        flags_are(
            b.name,
            h.conn.flags,
            ConnFlags::ERROR | ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH,
            ConnFlags::WAIT_L4_CONN,
        );
        assert!(spent.iterations <= 3, "{}: {spent}", b.name);
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(75), 1, calls);
        println!("{}: reported {:?}", b.name, el.cx().last_ready(fd));
    }
}

// ---------------------------------------------------------------------------
// HUP without ERR on a connect that succeeded (some Ubuntu 5.4/5.15
// kernels; injected): not a failure, and the connection works.

#[test]
fn personality_hup_without_err_good_connect_ubuntu() {
    for (b, _) in backends() {
        for report in [Ready::HUP, Ready::HUP | Ready::WRITABLE] {
            let what = format!("{} {report:?}", b.name);
            let (client, front) = UnixStream::pair().unwrap();
            front.set_nonblocking(true).unwrap();
            let (l, addr) = listener();
            let up = pattern(13, 200_000);
            let down = pattern(14, 300_000);
            let mut sp = Peer::new(down.clone(), PeerEnd::Close);
            sp.read_first = up.len();
            let served = sp.serve(l);
            let back = connecting(addr);
            // The connect is really done (the server accepted it)...
            served.accepted.recv().unwrap();
            let mut el = new_loop(b);
            let bfd = back.fd();
            let mut rig = StreamRig::new(
                el.cx(),
                Connection::from_connected(OwnedFd::from(front)),
                back,
                SpliceMode::Never,
                Scripted::new(),
            );
            // ...and the poller says HUP without ERR.
            el.cx().inject_event(bfd, report);
            let tc = Peer::new(up.clone(), PeerEnd::Shutdown).spawn(client);
            let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
            let (client_got, server_got) = (tc.join().unwrap(), served.handle.join().unwrap());
            assert_eq!(rig.stream.outcome(), Outcome::Finished, "{what}");
            assert_bytes(&what, &server_got, &up);
            assert_bytes(&what, &client_got, &down);
            let (_, bflags) = rig.final_flags.unwrap();
            flags_are(&what, bflags, ConnFlags::L4_CONN, ConnFlags::ERROR | ConnFlags::WAIT_L4_CONN);
            assert_eq!(rig.ops.calls_fd(Op::SoError, bfd), 1, "{what}: SO_ERROR decides");
            assert!(spent.iterations <= 200, "{what}: {spent}");
        }
    }
}

// ---------------------------------------------------------------------------
// A hard error (ECONNRESET, EPIPE…): ERROR + SOCK_RD_SH + SOCK_WR_SH.

#[test]
fn personality_hard_econnreset() {
    for (b, _) in backends() {
        let (peer, mut conn) = tcp_conn();
        let fd = conn.fd();
        // The peer reads 100,000 bytes, then resets with more unread.
        let mut p = Peer::new(Vec::new(), PeerEnd::Reset);
        p.read_first = 100_000;
        let t = p.spawn(peer);
        let mut el = new_loop(b);
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).unwrap();
        let mut h = Endpoint::new(conn, Scripted::new());
        h.out = pattern(15, 8 << 20);
        let spent = drive(&mut el, &mut h, SECS, |h| h.conn.flags.contains(ConnFlags::ERROR));
        let got = t.join().unwrap();
        assert_bytes(b.name, &got, &h.out[..100_000]);
        flags_are(
            b.name,
            h.conn.flags,
            ConnFlags::ERROR | ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH,
            ConnFlags::empty(),
        );
        assert_eq!(h.conn.error(), ConnError::Reset, "{}: {:?}", b.name, h.ops.log().last());
        assert!(el.cx().state(fd).unwrap().contains(FdState::ERROR), "{}", b.name);
        assert!(h.sent < h.out.len(), "{}", b.name);
        assert!(spent.iterations <= 300, "{}: {spent}", b.name);
        let before = h.ops.mark();
        assert_quiet(b.name, &mut el, &mut h, Duration::from_millis(75), 1, calls);
        assert!(h.ops.since(before).is_empty(), "{}: I/O after the error: {:?}", b.name, h.ops.since(before));
    }
}

// ---------------------------------------------------------------------------
// Any activity on a connecting socket (all): the transport clears
// WAIT_L4_CONN, without SO_ERROR.

#[test]
fn personality_activity_clears_wait_l4_conn() {
    for (b, _) in backends() {
        // Data in.
        let (l, addr) = listener();
        let want = pattern(16, 50_000);
        let s = Peer::new(want.clone(), PeerEnd::Close).serve(l);
        let mut conn = connecting(addr);
        let fd = conn.fd();
        s.handle.join().unwrap();
        wait_pending(fd, want.len(), SECS);
        let mut el = new_loop(b);
        conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE).unwrap();
        let mut h = Endpoint::new(conn, Scripted::new());
        h.io_before_confirm = true;
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        assert!(spent.iterations <= 3, "{}: {spent}", b.name);
        assert_bytes(b.name, &h.got, &want);
        assert_eq!(h.connect, None, "{}: the recv settled it", b.name);
        assert_eq!(h.ops.calls(Op::SoError), 0, "{}", b.name);
        flags_are(
            b.name,
            h.conn.flags,
            ConnFlags::L4_CONN | ConnFlags::SOCK_RD_SH,
            ConnFlags::WAIT_L4_CONN | ConnFlags::ERROR,
        );

        // Data out.
        let (l, addr) = listener();
        let s = Peer::new(Vec::new(), PeerEnd::Shutdown).serve(l);
        let mut conn = connecting(addr);
        s.accepted.recv().unwrap();
        let fd = conn.fd();
        conn.ctrl_init(el.cx(), 0, FdState::SEND_ACTIVE).unwrap();
        el.cx().may_send(fd);
        let mut h = Endpoint::new(conn, Scripted::new());
        h.io_before_confirm = true;
        h.out = pattern(17, 50_000);
        h.shut_after_send = true;
        h.want_read = 0;
        let spent = drive(&mut el, &mut h, SECS, |h| h.done());
        assert!(spent.iterations <= 10, "{}: {spent}", b.name);
        let got = s.handle.join().unwrap();
        assert_bytes(b.name, &got, &h.out);
        assert_eq!(h.connect, None, "{}: the send settled it", b.name);
        assert_eq!(h.ops.calls(Op::SoError), 0, "{}", b.name);
        flags_are(
            b.name,
            h.conn.flags,
            ConnFlags::L4_CONN | ConnFlags::SOCK_WR_SH,
            ConnFlags::WAIT_L4_CONN | ConnFlags::ERROR,
        );
    }
}
