//! Platform personality: splice → EAGAIN on an incoming shutdown (Linux
//! 2.6.25–2.6.27.12): one `recv(MSG_PEEK)` finds out, unless splice is
//! known to work (`docs/transport.md`).
//!
//! "Known to work" is a process-wide flag of `raw_sock`, set by the first
//! splice that moves bytes. So this file is its own test binary with a
//! single test that runs the phases in order: first with no splice ever
//! done in the process (the probe must happen), then after a real splice
//! moved bytes (the probe must not happen). Each phase asserts which
//! behaviour applied.
//!
//! splice exists on Linux and Android only.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anypoll::backends::registry::{self, Backend, Probe};
use anypoll::backends::Capabilities;
use anypoll::connection::{ConnFlags, Connection};
use anypoll::stream::{Outcome, SpliceMode};
use anypoll::{EventLoop, FdState};
use platform_tests::scripted::{
    assert_bytes, drive, new_loop, pattern, wait_pending, wait_poll, Call, Op, Peer, PeerEnd, Scripted, Step, StreamRig,
};

const SECS: Duration = Duration::from_secs(10);

/// One relayed connection: the client (TCP, so the poller reports its
/// shutdown as RDHUP) sends `up` and shuts down before the loop starts; the
/// server reads it all and sends nothing back (a splice of the response
/// would tell the process that splice works).
struct Phase {
    client: TcpStream,
    ffd: RawFd,
    rig: StreamRig,
    server: std::thread::JoinHandle<Vec<u8>>,
    el: EventLoop,
}

fn phase(b: &Backend, up: &[u8], script: impl FnOnce(&mut Scripted, RawFd)) -> Phase {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (front, _) = l.accept().unwrap();
    front.set_nonblocking(true).unwrap();
    let ffd = front.as_raw_fd();
    client.write_all(up).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    wait_pending(ffd, up.len(), SECS);
    wait_poll(ffd, libc::POLLRDHUP, SECS);
    let (back, server) = UnixStream::pair().unwrap();
    back.set_nonblocking(true).unwrap();
    let mut sp = Peer::new(Vec::new(), PeerEnd::Close);
    sp.read_first = up.len();
    let server = sp.spawn(server);
    let mut ops = Scripted::new();
    script(&mut ops, ffd);
    let mut el = new_loop(b);
    let rig = StreamRig::new(
        el.cx(),
        Connection::from_connected(OwnedFd::from(front)),
        Connection::from_connected(OwnedFd::from(back)),
        SpliceMode::Always,
        ops,
    );
    Phase { client, ffd, rig, server, el }
}

fn front_calls(rig: &StreamRig, ffd: RawFd, op: Op) -> Vec<Call> {
    rig.ops.log().iter().filter(|c| c.op == op && c.fd == ffd).copied().collect()
}

fn peeks(rig: &StreamRig, ffd: RawFd) -> usize {
    front_calls(rig, ffd, Op::Recv).iter().filter(|c| c.flags & libc::MSG_PEEK != 0).count()
}

fn run(p: &mut Phase, up: &[u8], what: &str) -> anypoll::Counters {
    let spent = drive(&mut p.el, &mut p.rig, SECS, |r| r.ended());
    assert_eq!(p.rig.stream.outcome(), Outcome::Finished, "{what}");
    assert_bytes(what, &p.server_take(), up);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut p.client, &mut rest).unwrap();
    assert!(rest.is_empty(), "{what}: the server sent nothing");
    let (f, _) = p.rig.final_flags.unwrap();
    assert!(f.contains(ConnFlags::SOCK_RD_SH) && !f.contains(ConnFlags::ERROR), "{what}: {f:?}");
    spent
}

impl Phase {
    fn server_take(&mut self) -> Vec<u8> {
        let h = std::mem::replace(&mut self.server, std::thread::spawn(Vec::new));
        h.join().unwrap()
    }
}

#[test]
fn personality_splice_eagain_on_shutdown_probe() {
    let b = registry::backends()
        .iter()
        .find(|b| matches!(b.test(), Probe::Ok(c) if c.contains(Capabilities::RDHUP)))
        .expect("a backend that reports RDHUP (epoll or poll on Linux)");
    println!("backend: {}", b.name);

    // 1a. No splice has worked yet in this process. The client only shuts
    // down; this "old kernel" says EAGAIN instead of 0. One recv(MSG_PEEK)
    // finds the end.
    let mut p = phase(b, &[], |ops, ffd| {
        ops.script_splice_from(ffd, [Step::Err(libc::EAGAIN)]);
    });
    let spent = run(&mut p, &[], "1a");
    let recvs = front_calls(&p.rig, p.ffd, Op::Recv);
    assert_eq!(recvs.len(), 1, "1a: one recv, the probe: {recvs:?}");
    assert!(recvs[0].flags & libc::MSG_PEEK != 0 && recvs[0].result == Ok(0), "1a: {recvs:?}");
    assert_eq!(front_calls(&p.rig, p.ffd, Op::Splice).len(), 1, "1a");
    assert_eq!(spent.splice_fallbacks, 0, "1a: {spent}");
    assert!(spent.iterations <= 3, "1a: {spent}");

    // 1b. The same EAGAIN with bytes in the socket: the probe sees them, so
    // splice is broken here; the connection falls back to recv, nothing lost.
    let up = pattern(31, 50_000);
    let mut p = phase(b, &up, |ops, ffd| {
        ops.script_splice_from(ffd, [Step::Err(libc::EAGAIN)]);
    });
    let spent = run(&mut p, &up, "1b");
    assert_eq!(peeks(&p.rig, p.ffd), 1, "1b");
    assert_eq!(front_calls(&p.rig, p.ffd, Op::Splice).len(), 1, "1b");
    assert_eq!(spent.splice_fallbacks, 1, "1b: {spent}");
    assert!(p.rig.final_flags.unwrap().0.contains(ConnFlags::NO_SPLICE), "1b");
    assert!(spent.iterations <= 10, "1b: {spent}");

    // 2. A real splice moves bytes: from now on splice is known to work.
    let up = pattern(32, 60_000);
    let mut p = phase(b, &up, |_, _| {});
    let spent = run(&mut p, &up, "2");
    assert!(front_calls(&p.rig, p.ffd, Op::Splice).iter().any(|c| c.result.is_ok_and(|n| n > 0)), "2");
    assert_eq!(peeks(&p.rig, p.ffd), 0, "2");
    assert_eq!(spent.splice_fallbacks, 0, "2: {spent}");
    assert!(spent.iterations <= 10, "2: {spent}");

    // 3. The same EAGAIN as in 1a, now trusted: no probe. The fd is polled
    // again, the kernel reports the shutdown again, splice says 0, and a
    // plain recv confirms it.
    let mut p = phase(b, &[], |ops, ffd| {
        ops.script_splice_from(ffd, [Step::Err(libc::EAGAIN)]);
    });
    p.el.run_once(&mut p.rig, Some(Duration::ZERO)).unwrap();
    let st = p.el.cx().state(p.ffd).unwrap_or_default();
    assert!(st.contains(FdState::SEEN_RDHUP), "3: the shutdown was reported: {st:?}");
    let spent = run(&mut p, &[], "3");
    assert_eq!(peeks(&p.rig, p.ffd), 0, "3: no probe once splice is known to work");
    let splices = front_calls(&p.rig, p.ffd, Op::Splice);
    assert_eq!(splices.iter().map(|c| c.result).collect::<Vec<_>>(), [Err(libc::EAGAIN), Ok(0)], "3");
    let recvs = front_calls(&p.rig, p.ffd, Op::Recv);
    assert_eq!(recvs.iter().map(|c| (c.flags, c.result)).collect::<Vec<_>>(), [(0, Ok(0))], "3");
    assert_eq!(spent.splice_fallbacks, 0, "3: {spent}");
    assert!(spent.iterations <= 4, "3: {spent}");
}
