//! A stream forwards both ways with half-close, with and without splice.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anypoll::connection::Connection;
use anypoll::sockops::Real;
use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent};

struct H {
    stream: Stream,
    pools: Pools,
}

impl Handler for H {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        let o = self.stream.process(&mut Real, cx, &mut self.pools);
        if o != Outcome::Running {
            self.stream.close(cx, &mut self.pools);
            cx.stop();
        }
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed).wrapping_add((i >> 10) as u8)).collect()
}

fn run(mode: SpliceMode) {
    let (mut client, front) = UnixStream::pair().unwrap();
    let (back, mut server) = UnixStream::pair().unwrap();
    front.set_nonblocking(true).unwrap();
    back.set_nonblocking(true).unwrap();
    let mut el = EventLoop::from_env().unwrap();
    let mut fc = Connection::from_connected(OwnedFd::from(front));
    let mut bc = Connection::from_connected(OwnedFd::from(back));
    fc.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE).unwrap();
    bc.ctrl_init(el.cx(), 1, FdState::RECV_ACTIVE).unwrap();
    let mut h = H { stream: Stream::new(fc, bc, mode), pools: Pools::new(16 * 1024) };
    let up = pattern(3 << 20, 1);
    let down = pattern(5 << 20, 2);
    let up2 = up.clone();
    let down2 = down.clone();
    let tc = std::thread::spawn(move || {
        client.write_all(&up2).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        got
    });
    let ts = std::thread::spawn(move || {
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        server.write_all(&down2).unwrap();
        drop(server);
        got
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !el.cx().is_stopping() {
        assert!(Instant::now() < deadline, "stream stalled");
        el.run_once(&mut h, Some(Duration::from_millis(100))).unwrap();
    }
    assert_eq!(h.stream.outcome(), Outcome::Finished);
    let server_got = ts.join().unwrap();
    let client_got = tc.join().unwrap();
    assert!(server_got == up, "request corrupted ({} of {} bytes)", server_got.len(), up.len());
    assert!(client_got == down, "response corrupted ({} of {} bytes)", client_got.len(), down.len());
    assert_eq!(h.pools.bufs.in_use(), 0);
    assert_eq!(h.pools.pipes.in_use(), 0);
    eprintln!("{mode:?}: {}", el.cx().counters());
}

#[test]
fn forwards_both_ways_with_buffers() {
    run(SpliceMode::Never);
}

#[test]
fn forwards_both_ways_with_splice() {
    run(SpliceMode::Auto);
}
