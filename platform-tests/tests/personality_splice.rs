//! Platform personalities: the splice rows of the normalization table
//! (`docs/transport.md`), relayed through a real [`Stream`](anypoll::stream::Stream)
//! over real sockets, with splice failures scripted through the seam where
//! this kernel splices fine.
//!
//! Each test checks the bytes both ways (exact, in order, no duplicates),
//! the connections' flags, the splice/recv/read calls made, the
//! `splice_fallbacks` counter, and that the loop does not spin.
//!
//! The "EAGAIN on an incoming shutdown" row depends on a process-wide
//! "splice is known to work" flag, so it has its own test binary
//! (`personality_splice_probe.rs`).

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use anypoll::backends::registry::{self, Probe};
use anypoll::backends::Capabilities;
use anypoll::connection::{ConnFlags, Connection};
use anypoll::stream::{Outcome, SpliceMode};
use anypoll::{EventLoop, FdState, Strategy};
use platform_tests::scripted::{
    assert_bytes, assert_quiet, drive, pattern, rdhup_loop, setsockopt_int, wait_pending, Op, Peer, PeerEnd, Scripted,
    Step, StreamRig,
};

const SECS: Duration = Duration::from_secs(10);

/// client ↔ front (ours) and back (ours) ↔ server, Unix pairs.
struct Pairs {
    client: UnixStream,
    front: UnixStream,
    back: UnixStream,
    server: UnixStream,
}

fn pairs() -> Pairs {
    let (client, front) = UnixStream::pair().unwrap();
    let (back, server) = UnixStream::pair().unwrap();
    front.set_nonblocking(true).unwrap();
    back.set_nonblocking(true).unwrap();
    Pairs { client, front, back, server }
}

fn conn(s: impl Into<OwnedFd>) -> Connection {
    Connection::from_connected(s.into())
}

/// The client sends `up` and shuts down, then reads; the server reads all
/// of `up` (after `server_delay`), then sends `down` and closes.
struct Run {
    up: Vec<u8>,
    down: Vec<u8>,
    client: JoinHandle<Vec<u8>>,
    server: JoinHandle<Vec<u8>>,
}

fn start(
    client: impl Into<OwnedFd>,
    server: impl Into<OwnedFd>,
    up: usize,
    down: usize,
    server_delay: Duration,
) -> Run {
    let up = pattern(up as u64 ^ 0x55, up);
    let down = pattern(down as u64 ^ 0xAA, down);
    let c = Peer::new(up.clone(), PeerEnd::Shutdown).spawn(client);
    let mut sp = Peer::new(down.clone(), PeerEnd::Close);
    sp.read_first = up.len();
    sp.read_delay = server_delay;
    let s = sp.spawn(server);
    Run { up, down, client: c, server: s }
}

impl Run {
    fn check(self, what: &str) {
        let (c, s) = (self.client.join().unwrap(), self.server.join().unwrap());
        assert_bytes(&format!("{what}: up"), &s, &self.up);
        assert_bytes(&format!("{what}: down"), &c, &self.down);
    }
}

fn rig_calls(r: &StreamRig) -> u64 {
    r.calls
}

/// Index of the first call in the log matching `f`.
fn first(ops: &Scripted, f: impl Fn(&platform_tests::scripted::Call) -> bool) -> Option<usize> {
    ops.log().iter().position(f)
}

fn splices_from(ops: &Scripted, fd: RawFd) -> usize {
    ops.log().iter().filter(|c| c.op == Op::Splice && c.fd == fd).count()
}

fn splices_to(ops: &Scripted, fd: RawFd) -> usize {
    ops.log().iter().filter(|c| c.op == Op::Splice && c.to == fd).count()
}

fn finished(rig: &StreamRig) -> (ConnFlags, ConnFlags) {
    assert_eq!(rig.stream.outcome(), Outcome::Finished);
    let (f, b) = rig.final_flags.unwrap();
    for (n, x) in [("front", f), ("back", b)] {
        assert!(x.contains(ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH), "{n}: {x:?}");
        assert!(!x.contains(ConnFlags::ERROR), "{n}: {x:?}");
    }
    (f, b)
}

// ---------------------------------------------------------------------------
// splice → EBADF in the middle of a transfer (patched kernels): splice off
// for that connection, recv/send from then on, nothing lost.

#[test]
fn personality_splice_ebadf_mid_transfer_in() {
    let p = pairs();
    let (ffd, bfd) = (p.front.as_raw_fd(), p.back.as_raw_fd());
    let mut el = EventLoop::from_env().unwrap();
    let mut ops = Scripted::new();
    // The fourth splice out of the front socket fails; bytes are in the pipe.
    ops.script_splice_from(ffd, [Step::Pass, Step::Pass, Step::Pass, Step::Err(libc::EBADF)]);
    let mut rig = StreamRig::new(el.cx(), conn(p.front), conn(p.back), SpliceMode::Always, ops);
    let run = start(p.client, p.server, 3 << 20, 1 << 20, Duration::ZERO);
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    run.check("ebadf in");
    let (f, b) = finished(&rig);
    assert!(f.contains(ConnFlags::NO_SPLICE) && !b.contains(ConnFlags::NO_SPLICE), "{f:?} / {b:?}");
    assert_eq!(spent.splice_fallbacks, 1, "{spent}");
    let ops = &rig.ops;
    let at = first(ops, |c| c.result == Err(libc::EBADF)).expect("the EBADF was met");
    assert!(ops.since(at + 1).iter().all(|c| !(c.op == Op::Splice && c.fd == ffd)), "no splice from front after EBADF");
    assert!(ops.since(at + 1).iter().any(|c| c.op == Op::Recv && c.fd == ffd), "recv took over");
    // The other direction never splices again either: its consumer is the
    // front, which has NO_SPLICE.
    assert!(ops.since(at + 1).iter().all(|c| !(c.op == Op::Splice && c.to == ffd)));
    assert!(splices_from(ops, bfd) <= 1, "{}", splices_from(ops, bfd));
    assert!(spent.iterations <= 600, "{spent}");
    println!("{spent}");
}

#[test]
fn personality_splice_ebadf_mid_transfer_out() {
    let p = pairs();
    let (ffd, bfd) = (p.front.as_raw_fd(), p.back.as_raw_fd());
    let mut el = EventLoop::from_env().unwrap();
    let mut ops = Scripted::new();
    // The fourth splice into the back socket fails with the pipe full of
    // bytes; they are drained with read(2) (through an EINTR storm).
    ops.script_splice_to(bfd, [Step::Pass, Step::Pass, Step::Pass, Step::Err(libc::EBADF)]);
    ops.script(Op::Read, std::iter::repeat_n(Step::Err(libc::EINTR), 50).chain([Step::Short(1000)]));
    let mut rig = StreamRig::new(el.cx(), conn(p.front), conn(p.back), SpliceMode::Always, ops);
    let run = start(p.client, p.server, 3 << 20, 1 << 20, Duration::ZERO);
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    run.check("ebadf out");
    let (f, b) = finished(&rig);
    assert!(b.contains(ConnFlags::NO_SPLICE), "{f:?} / {b:?}");
    assert_eq!(spent.splice_fallbacks, 1, "{spent}");
    let ops = &rig.ops;
    let at = first(ops, |c| c.result == Err(libc::EBADF)).expect("the EBADF was met");
    assert!(ops.since(at + 1).iter().all(|c| !(c.op == Op::Splice && c.to == bfd)), "no splice to back after EBADF");
    assert!(
        ops.since(at + 1).iter().any(|c| c.op == Op::Read && c.result.is_ok_and(|n| n > 0)),
        "the pipe was drained"
    );
    assert_eq!(ops.unused(Op::Read), 0);
    assert!(splices_from(ops, ffd) >= 1);
    assert!(spent.iterations <= 600, "{spent}");
    println!("{spent}");
}

// ---------------------------------------------------------------------------
// splice → ENOSYS (old kernels, seccomp): the same, from the first call.

#[test]
fn personality_splice_enosys() {
    let p = pairs();
    let mut el = EventLoop::from_env().unwrap();
    let mut ops = Scripted::new();
    ops.always(Op::Splice, Step::Err(libc::ENOSYS));
    let mut rig = StreamRig::new(el.cx(), conn(p.front), conn(p.back), SpliceMode::Always, ops);
    let run = start(p.client, p.server, 2 << 20, 1 << 20, Duration::ZERO);
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    run.check("enosys");
    let (f, b) = finished(&rig);
    // Each connection that tried splice tried it once and fell back; one
    // that never had the chance (its peer already fell back) never tries.
    let tried = rig.ops.calls(Op::Splice) as u64;
    assert!((1..=2).contains(&tried), "{tried} splices");
    assert_eq!(spent.splice_fallbacks, tried, "{spent}");
    assert!(f.contains(ConnFlags::NO_SPLICE), "{f:?}");
    assert_eq!(rig.ops.calls(Op::Read), 0, "the pipes were empty: nothing to drain");
    assert!(rig.ops.calls(Op::Recv) > 0);
    assert_eq!(rig.pools.pipes.in_use(), 0);
    assert!(spent.iterations <= 600, "{spent}");
    println!("{} / {}: {spent}", f.bits(), b.bits());
}

// ---------------------------------------------------------------------------
// EINTR on splice and read: retried in place.

#[test]
fn personality_splice_eintr_storm() {
    let p = pairs();
    let (ffd, bfd) = (p.front.as_raw_fd(), p.back.as_raw_fd());
    let mut el = EventLoop::from_env().unwrap();
    let mut ops = Scripted::new();
    let storm = || std::iter::repeat_n(Step::Err(libc::EINTR), 200).chain([Step::Pass]);
    for _ in 0..6 {
        for fd in [ffd, bfd] {
            ops.script_splice_from(fd, storm());
            ops.script_splice_to(fd, storm());
        }
    }
    let mut rig = StreamRig::new(el.cx(), conn(p.front), conn(p.back), SpliceMode::Always, ops);
    let run = start(p.client, p.server, 2 << 20, 2 << 20, Duration::ZERO);
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    run.check("eintr");
    let (f, b) = finished(&rig);
    assert!(!f.contains(ConnFlags::NO_SPLICE) && !b.contains(ConnFlags::NO_SPLICE));
    assert_eq!(rig.ops.unused(Op::Splice), 0, "every scripted EINTR was met");
    assert_eq!(spent.splice_fallbacks, 0);
    assert!(spent.iterations <= 600, "{spent}");
    println!("{spent}");
}

// ---------------------------------------------------------------------------
// splice → EAGAIN while the pipe holds data (Linux): WAIT_ROOM, and the
// producer is not polled for read until room is made.

fn wait_room(chunk: usize) {
    let what = format!("{chunk}-byte writes");
    let p = pairs();
    let ffd = p.front.as_raw_fd();
    let mut el = EventLoop::from_env().unwrap();
    let mut rig = StreamRig::new(el.cx(), conn(p.front), conn(p.back), SpliceMode::Always, Scripted::new());
    // The client writes in `chunk`s; the server sleeps before reading, so
    // the back socket and then the pipe fill. With small writes the pipe's
    // slots (one page each) fill before its capacity in bytes, and splice
    // says EAGAIN with data in it.
    let up = pattern(chunk as u64, 2 << 20);
    let mut cp = Peer::new(up.clone(), PeerEnd::Shutdown);
    cp.pace = Some((chunk, Duration::ZERO));
    let client = cp.spawn(p.client);
    let mut sp = Peer::new(Vec::new(), PeerEnd::Close);
    sp.read_first = up.len();
    sp.read_delay = Duration::from_millis(600);
    let server = sp.spawn(p.server);
    // Until the stall is real: no room, with the client's bytes queued in
    // the front socket.
    drive(&mut el, &mut rig, SECS, |r| {
        let (pipe, cap) = r.stream.req.pipe.as_ref().map_or((0, 0), |pp| (pp.data, pp.capacity));
        r.calls > 0 && pipe > 0 && platform_tests::scripted::pending_bytes(ffd) > 0 && {
            r.stream.front.flags.contains(ConnFlags::WAIT_ROOM) || pipe >= cap
        }
    });
    let st = el.cx().state(ffd).unwrap();
    let pipe = rig.stream.req.pipe.as_ref().map_or(0, |pp| pp.data);
    let eagain = rig.ops.log().iter().any(|c| c.op == Op::Splice && c.fd == ffd && c.result == Err(libc::EAGAIN));
    println!("{what}: stalled with {pipe} bytes in the pipe, front {st:?}, {:?}", rig.stream.front.flags);
    assert!(rig.stream.front.flags.contains(ConnFlags::WAIT_ROOM), "{what}: no WAIT_ROOM with a full pipe");
    assert!(!st.contains(FdState::RECV_ACTIVE), "{what}: recv still wanted: {st:?}");
    // Stalled: the front socket is readable, but it is not polled, and
    // nothing is tried until the server makes room.
    let mark = rig.ops.mark();
    assert_quiet(&what, &mut el, &mut rig, Duration::from_millis(200), 0, rig_calls);
    assert!(rig.ops.since(mark).is_empty(), "{what}: I/O while waiting for room: {:?}", rig.ops.since(mark));
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    assert_bytes(&what, &server.join().unwrap(), &up);
    assert!(client.join().unwrap().is_empty());
    finished(&rig);
    assert_eq!(rig.wait_room_polled, 0, "{what}: WAIT_ROOM with recv still ACTIVE");
    assert!(spent.iterations <= 3000, "{what}: {spent}");
    println!("{what}: eagain with data: {eagain}; {} calls in WAIT_ROOM; {spent}", rig.wait_room_seen);
    if chunk < 4096 {
        assert!(eagain, "{what}: the pipe's slots filled before its capacity: splice said EAGAIN");
    }
}

#[test]
fn personality_splice_eagain_pipe_full_wait_room() {
    wait_room(1000);
}

/// The same stall when the pipe holds exactly its capacity (64 KiB writes
/// fill whole pages): no EAGAIN, but no room either.
#[test]
fn personality_splice_pipe_at_limit_wait_room() {
    wait_room(64 * 1024);
}

// ---------------------------------------------------------------------------
// splice returns less than asked, with RDHUP (Linux), while the pipe is
// full: not proof that the input is empty.

#[test]
fn personality_splice_short_with_rdhup() {
    let p = pairs();
    let (ffd, bfd) = (p.front.as_raw_fd(), p.back.as_raw_fd());
    // All of the client's bytes and its shutdown are queued before the loop
    // starts, so the first report is IN|RDHUP.
    // (Small enough to sit in the socket's send budget as 500-byte skbs.)
    let up = pattern(21, 60_000);
    let mut client = p.client;
    // In 500-byte writes, one pipe slot each: 120 skbs, more than the slots
    // of a 256 KiB pipe (64), so real splices come back short too, and
    // then say EAGAIN with data in the pipe.
    for c in up.chunks(500) {
        client.write_all(c).unwrap();
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    wait_pending(ffd, up.len(), SECS);
    // A small send buffer on the back: the pipe fills while the server sleeps.
    setsockopt_int(bfd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4096).unwrap();
    let mut el = rdhup_loop();
    let mut ops = Scripted::new();
    ops.script_splice_from(ffd, [Step::Short(1000), Step::Short(5000), Step::Short(3000), Step::Short(7)]);
    let mut rig = StreamRig::new(el.cx(), conn(p.front), conn(p.back), SpliceMode::Always, ops);
    let mut sp = Peer::new(Vec::new(), PeerEnd::Close);
    sp.read_first = up.len();
    sp.read_delay = Duration::from_millis(200);
    let server = sp.spawn(p.server);
    el.run_once(&mut rig, Some(Duration::from_millis(100))).unwrap();
    let st = el.cx().state(ffd).unwrap();
    assert!(st.contains(FdState::SEEN_RDHUP), "RDHUP was reported: {st:?}");
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    assert_bytes("up", &server.join().unwrap(), &up);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
    assert!(rest.is_empty());
    finished(&rig);
    let from: Vec<_> = rig.ops.log().iter().filter(|c| c.op == Op::Splice && c.fd == ffd).collect();
    let shorts: Vec<_> = from.iter().filter(|c| matches!(c.step, Step::Short(_))).collect();
    assert_eq!(shorts.len(), 4);
    for c in &shorts {
        assert!(matches!((c.step, c.result), (Step::Short(n), Ok(m)) if n == m), "{c:?}");
    }
    // The end is a splice of 0 (the real EOF), after everything else, and
    // a recv of 0 confirms it (splice also says 0 at a TCP urgent mark).
    assert_eq!(from.last().unwrap().result, Ok(0), "{:?}", from.last());
    let first_zero = from.iter().position(|c| c.result == Ok(0)).unwrap();
    assert!(from[first_zero..].iter().all(|c| c.result == Ok(0)), "data after a splice of 0");
    let last_front = rig.ops.log().iter().rev().find(|c| c.fd == ffd && c.op != Op::Shutdown).unwrap();
    assert_eq!((last_front.op, last_front.result), (Op::Recv, Ok(0)), "{last_front:?}");
    assert!(from.iter().any(|c| c.result == Err(libc::EAGAIN)), "the pipe filled (EAGAIN with data)");
    assert!(rig.wait_room_seen > 0);
    assert!(splices_to(&rig.ops, bfd) > 0);
    assert!(spent.iterations <= 200, "{spent}");
    println!("{} splices from the front; {spent}", from.len());
}

// ---------------------------------------------------------------------------
// A splice that stops because the pipe's slots are full is short, yet the
// socket still holds bytes. On an edge-triggered registration (a STREAM fd
// under the level strategy, on epoll or kqueue) nothing will report them
// again: had the short splice cleared READY, the transfer would stall here,
// since the client sends nothing more until it has its answer.

#[test]
fn personality_splice_short_at_full_pipe_slots_is_not_drained() {
    let p = pairs();
    let (ffd, bfd) = (p.front.as_raw_fd(), p.back.as_raw_fd());
    // 1000-byte skbs, one pipe slot each: a pipe of N pages takes N × 1000
    // bytes, so the first splice is short with bytes still queued, and no
    // FIN. 80 skbs are more than the slots of a 256 KiB pipe (64).
    let up = pattern(33, 80_000);
    let down = pattern(34, 100);
    let mut client = p.client;
    for c in up.chunks(1000) {
        client.write_all(c).unwrap();
    }
    wait_pending(ffd, up.len(), SECS);
    let mut el = rdhup_loop();
    let caps = el.cx().capabilities();
    let edge = caps.contains(Capabilities::EDGE | Capabilities::RDHUP);
    let mut rig = StreamRig::new(el.cx(), conn(p.front), conn(p.back), SpliceMode::Always, Scripted::new());
    let mut sp = Peer::new(down.clone(), PeerEnd::Close);
    sp.read_first = up.len();
    let server = sp.spawn(p.server);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut got).unwrap();
        got
    });
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    assert_bytes("up", &server.join().unwrap(), &up);
    assert_bytes("down", &reader.join().unwrap(), &down);
    finished(&rig);
    let from: Vec<_> = rig.ops.log().iter().filter(|c| c.op == Op::Splice && c.fd == ffd).cloned().collect();
    let first = from.first().expect("spliced from the front");
    assert!(matches!(first.result, Ok(n) if n < up.len()), "the first splice is short: {first:?}");
    assert!(splices_to(&rig.ops, bfd) > 0);
    println!(
        "{} on {}: {} splices from the front, first {:?}; {spent}",
        if edge { "edge-registered" } else { "level-registered" },
        el.cx().backend(),
        from.len(),
        first.result
    );
}

// ---------------------------------------------------------------------------
// An event that splice does not consume (all): recv must consume it.
//
// Real case: TCP urgent data. splice (tcp_read_sock) stops at the urgent
// mark and returns EAGAIN with bytes queued behind it, so the socket stays
// readable while splice moves nothing: a level-triggered loop would spin,
// an edge-triggered one would stall. recv reads past the mark.

#[test]
fn personality_splice_unconsumed_event_urgent() {
    let epoll = registry::backends().iter().find(|b| b.name == "epoll").expect("epoll on Linux");
    let Probe::Ok(caps) = epoll.test() else { panic!("epoll does not work here") };
    urgent(EventLoop::new(epoll.create().unwrap(), Some(Strategy::Level)).unwrap());
    if caps.contains(Capabilities::EDGE) {
        urgent(EventLoop::new(epoll.create().unwrap(), Some(Strategy::Edge)).unwrap());
    }
}

fn urgent(mut el: EventLoop) {
    let strategy = el.cx().strategy();
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (front, _) = l.accept().unwrap();
    front.set_nonblocking(true).unwrap();
    // The urgent byte stays in the stream, so the bytes are exact end to end.
    setsockopt_int(front.as_raw_fd(), libc::SOL_SOCKET, libc::SO_OOBINLINE, 1).unwrap();
    let ffd = front.as_raw_fd();
    let (back, server) = UnixStream::pair().unwrap();
    back.set_nonblocking(true).unwrap();
    let a = pattern(22, 100_000);
    let b = pattern(23, 100_000);
    let mut up = a.clone();
    up.push(b'!');
    up.extend_from_slice(&b);
    let ct = std::thread::spawn(move || {
        let mut client = client;
        client.write_all(&a).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: send of one live byte on our own socket.
        let r = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(r, 1, "send MSG_OOB");
        client.write_all(&b).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
        rest
    });
    let mut sp = Peer::new(Vec::new(), PeerEnd::Close);
    sp.read_first = up.len();
    let st = sp.spawn(server);
    let mut rig = StreamRig::new(el.cx(), conn(front), conn(back), SpliceMode::Always, Scripted::new());
    let spent = drive(&mut el, &mut rig, Duration::from_secs(5), |r| r.ended());
    assert_bytes("up", &st.join().unwrap(), &up);
    assert!(ct.join().unwrap().is_empty());
    let (f, _) = finished(&rig);
    let ops = &rig.ops;
    // splice was stuck at the mark at least once, and a recv moved on.
    assert!(ops.log().iter().any(|c| c.op == Op::Splice && c.fd == ffd && c.result == Err(libc::EAGAIN)));
    assert!(
        ops.log().iter().any(|c| c.op == Op::Recv && c.fd == ffd && c.result.is_ok_and(|n| n > 0)),
        "recv consumed it"
    );
    assert!(!f.contains(ConnFlags::NO_SPLICE), "splice stays on: {f:?}");
    // Before the client's FIN: splice stuck at the mark twice (EAGAIN),
    // then a recv took the bytes.
    let front: Vec<_> = ops.log().iter().filter(|c| c.fd == ffd && c.op != Op::Shutdown).collect();
    let took = front.iter().position(|c| c.op == Op::Recv && c.result.is_ok_and(|n| n > 0)).unwrap();
    assert!(front[..took].iter().all(|c| c.result != Ok(0)), "{front:?}");
    assert!(
        front[..took].iter().rev().take(2).all(|c| c.op == Op::Splice && c.result == Err(libc::EAGAIN)),
        "{front:?}"
    );
    assert!(spent.iterations <= 300, "{spent}");
    println!("{}: {spent}", strategy.name());
}
