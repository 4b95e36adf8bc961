//! Platform personality: splice → EAGAIN after a hang-up report
//! (`docs/transport.md`). Linux 2.6.25–2.6.27.12 return EAGAIN from splice
//! at a real shutdown, and a hang-up report may itself be spurious, so
//! splice's EAGAIN is no answer there: the fd stays READY and one plain recv
//! decides. A recv of 0 is the end; bytes go through the buffer (the pipe
//! is empty, so nothing is reordered) and splice goes on; an EAGAIN means
//! the report was spurious, and the loop forgets it and polls again.
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
use anypoll::backends::Ready;
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
fn personality_splice_eagain_after_hangup_recv_decides() {
    let b = registry::backends()
        .iter()
        .find(|b| matches!(b.test(), Probe::Ok(c) if c.contains(Capabilities::RDHUP)))
        .expect("a backend that reports RDHUP (epoll or poll on Linux)");
    println!("backend: {}", b.name);

    // 1. The client only shuts down; this "old kernel" says EAGAIN instead
    // of 0. One plain recv finds the end.
    let mut p = phase(b, &[], |ops, ffd| {
        ops.script_splice_from(ffd, [Step::Err(libc::EAGAIN)]);
    });
    let spent = run(&mut p, &[], "1");
    let recvs = front_calls(&p.rig, p.ffd, Op::Recv);
    assert_eq!(recvs.iter().map(|c| (c.flags, c.result)).collect::<Vec<_>>(), [(0, Ok(0))], "1: one recv");
    assert_eq!(front_calls(&p.rig, p.ffd, Op::Splice).len(), 1, "1");
    assert_eq!(spent.splice_fallbacks, 0, "1: {spent}");
    assert!(spent.iterations <= 3, "1: {spent}");

    // 2. The same EAGAIN with bytes in the socket: the recv takes them, in
    // order, and splice is not given up (it was the report, not splice).
    let up = pattern(31, 50_000);
    let mut p = phase(b, &up, |ops, ffd| {
        ops.script_splice_from(ffd, [Step::Err(libc::EAGAIN)]);
    });
    let spent = run(&mut p, &up, "2");
    let recvs = front_calls(&p.rig, p.ffd, Op::Recv);
    assert!(matches!(recvs.first(), Some(c) if c.flags == 0 && c.result.is_ok_and(|n| n > 0)), "2: {recvs:?}");
    assert_eq!(spent.splice_fallbacks, 0, "2: {spent}");
    assert!(!p.rig.final_flags.unwrap().0.contains(ConnFlags::NO_SPLICE), "2");
    assert!(spent.iterations <= 10, "2: {spent}");

    // 3. A spurious read hang-up on a live, idle connection: splice and
    // recv both say EAGAIN, so the report is forgotten and the fd polled
    // again; the bytes the client sends later all arrive.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (front, _) = l.accept().unwrap();
    front.set_nonblocking(true).unwrap();
    let ffd = front.as_raw_fd();
    let (back, server) = UnixStream::pair().unwrap();
    back.set_nonblocking(true).unwrap();
    let up = pattern(33, 40_000);
    let mut sp = Peer::new(Vec::new(), PeerEnd::Close);
    sp.read_first = up.len();
    let server = sp.spawn(server);
    let mut el = new_loop(b);
    let mut rig = StreamRig::new(
        el.cx(),
        Connection::from_connected(OwnedFd::from(front)),
        Connection::from_connected(OwnedFd::from(back)),
        SpliceMode::Always,
        Scripted::new(),
    );
    el.run_once(&mut rig, Some(Duration::ZERO)).unwrap();
    el.cx().inject_event(ffd, Ready::READABLE | Ready::READ_CLOSED);
    el.run_once(&mut rig, Some(Duration::ZERO)).unwrap();
    let st = el.cx().state(ffd).unwrap();
    assert!(!st.intersects(FdState::SEEN_RDHUP | FdState::RECV_READY), "3: forgotten and polled: {st:?}");
    let calls: Vec<_> = rig.ops.log().iter().filter(|c| c.fd == ffd).map(|c| (c.op, c.result)).collect();
    assert!(calls.contains(&(Op::Recv, Err(libc::EAGAIN))), "3: recv decided: {calls:?}");
    assert!(!rig.ended(), "3: the stream goes on");
    client.write_all(&up).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let spent = drive(&mut el, &mut rig, SECS, |r| r.ended());
    assert_eq!(rig.stream.outcome(), Outcome::Finished, "3");
    assert_bytes("3", &server.join().unwrap(), &up);
    assert!(spent.iterations <= 40, "3: {spent}");
}
