//! `BufConn` over the real TLS transport, on every backend and strategy
//! built here: a server `BufConn<Tls>` accepted from a loopback listener,
//! and a rustls client over a non-blocking socket that the test pumps
//! between loop iterations (it never blocks, so both share the test's
//! thread and each step's order is the test's). Lines split over
//! records, 4 MiB each way under the output watermarks, flush-then-close
//! with close_notify, the idle timeout, and a truncation.

// rcgen (the test certificates) is a dev-dependency on Linux only.
#![cfg(target_os = "linux")]

mod common;
mod tlsend;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anypoll::bufconn::{Config, Events, Timeout, WriteError};
use anypoll::connection::ConnError;
use anypoll::tls::{rustls, Tls};
use anypoll::EventLoop;
use common::bufconn::{accepted_over, fill, matrix, spin, H};
use tlsend::{cert, configs, NAME};

/// Generous: a debug build of rustls on a loaded machine.
const LIMIT: Duration = Duration::from_secs(60);

/// The client: a rustls session over a non-blocking loopback socket.
struct Peer {
    tls: rustls::ClientConnection,
    sock: TcpStream,
    /// Plaintext received, in order.
    got: Vec<u8>,
    /// The server's close_notify came: its input ended cleanly.
    clean_end: bool,
    /// The socket's EOF came.
    sock_eof: bool,
    /// rustls saw the socket's EOF without close_notify.
    truncated: bool,
}

impl Peer {
    fn new(sock: TcpStream, cfg: Arc<rustls::ClientConfig>) -> Peer {
        sock.set_nonblocking(true).unwrap();
        sock.set_nodelay(true).unwrap();
        let tls = rustls::ClientConnection::new(cfg, NAME.try_into().unwrap()).expect("rustls client");
        Peer { tls, sock, got: Vec::new(), clean_end: false, sock_eof: false, truncated: false }
    }

    /// Moves what moves without blocking: records out, records in,
    /// plaintext up. Bounded in rounds.
    fn pump(&mut self) {
        self.flush();
        for _ in 0..64 {
            self.take_plaintext();
            if self.sock_eof {
                break;
            }
            if !self.tls.wants_read() {
                if self.clean_end {
                    self.after_close_notify();
                }
                break;
            }
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => self.sock_eof = true,
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        panic!("peer fd {}: tls: {e}", self.sock.as_raw_fd());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("peer fd {}: read: {e}", self.sock.as_raw_fd()),
            }
        }
        self.take_plaintext();
        self.flush();
    }

    /// After the server's close_notify rustls reads no more: the socket
    /// itself must say EOF, with nothing after the close_notify.
    fn after_close_notify(&mut self) {
        let mut b = [0u8; 64];
        match self.sock.read(&mut b) {
            Ok(0) => self.sock_eof = true,
            Ok(n) => panic!("peer fd {}: {n} bytes after close_notify", self.sock.as_raw_fd()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("peer fd {}: read after close_notify: {e}", self.sock.as_raw_fd()),
        }
    }

    fn flush(&mut self) {
        for _ in 0..1024 {
            if !self.tls.wants_write() {
                return;
            }
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("peer fd {}: write: {e}", self.sock.as_raw_fd()),
            }
        }
    }

    fn take_plaintext(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..1024 {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => {
                    self.clean_end = true;
                    return;
                }
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.truncated = true;
                    return;
                }
                Err(e) => panic!("peer fd {}: plaintext: {e}", self.sock.as_raw_fd()),
            }
        }
    }

    /// Hands rustls as much of `data` as it takes (its buffer is bounded):
    /// one record per call (up to 16 KiB). Returns how much it took.
    fn offer(&mut self, data: &[u8]) -> usize {
        let n = self.tls.writer().write(data).expect("peer: rustls writer");
        self.pump();
        n
    }

    /// Whether every record handed to rustls is on the socket.
    fn all_out(&self) -> bool {
        !self.tls.wants_write()
    }
}

/// A server `BufConn<Tls>` with `cfg` and its client, both done with the
/// handshake.
fn tls_pair(el: &mut EventLoop, cfg: Config) -> (H<Tls>, Peer) {
    let k = cert(NAME, false);
    let (scfg, ccfg) = configs(&k, &k);
    let (mut h, sock) = accepted_over(el, cfg, Tls::server(scfg).expect("tls server"));
    let mut peer = Peer::new(sock, ccfg);
    spin(el, &mut h, LIMIT, |_, h| {
        peer.pump();
        !peer.tls.is_handshaking() && !h.bc.transport().is_handshaking()
    });
    assert_eq!(h.bc.error(), ConnError::None);
    (h, peer)
}

/// Sends `data` as one record and waits until it is on the socket.
fn send_record(el: &mut EventLoop, h: &mut H<Tls>, peer: &mut Peer, data: &[u8]) {
    assert_eq!(peer.offer(data), data.len(), "rustls took part of a small record");
    spin(el, h, LIMIT, |_, _| {
        peer.pump();
        peer.all_out()
    });
}

#[test]
fn tls_a_line_split_across_records_and_a_delimiter_at_the_wrap() {
    matrix("bufconn_tls_lines", |c| {
        let mut el = c.new_loop();
        let cfg = Config { input_capacity: 8, ..Config::default() };
        let (mut h, mut peer) = tls_pair(&mut el, cfg);
        let mut out = Vec::new();
        // One record each, the first read before the second is sent.
        send_record(&mut el, &mut h, &mut peer, b"hel");
        spin(&mut el, &mut h, LIMIT, |_, h| h.bc.input_len() == 3);
        assert_eq!(h.bc.read_line(el.cx(), &mut out), None, "no newline yet");
        send_record(&mut el, &mut h, &mut peer, b"lo\nab");
        spin(&mut el, &mut h, LIMIT, |el, h| h.bc.read_line(el.cx(), &mut out).is_some());
        assert_eq!(out, b"hello\n");
        // "ab" sits at 6..8 of the 8-byte buffer: the next bytes wrap to 0.
        send_record(&mut el, &mut h, &mut peer, b"c;d");
        spin(&mut el, &mut h, LIMIT, |_, h| h.bc.input_len() == 5);
        out.clear();
        assert_eq!(h.bc.read_until(el.cx(), b';', &mut out), Some(4));
        assert_eq!(out, b"abc;");
        out.clear();
        assert!(h.bc.read_exact(el.cx(), 1, &mut out));
        assert_eq!(out, b"d");
        // One record of three lines, more than the input buffer holds: the
        // rest waits inside the transport, and the peer sends nothing more.
        let three = b"0123456\n89abcd\nxyz\n";
        send_record(&mut el, &mut h, &mut peer, three);
        out.clear();
        let mut lines = 0;
        spin(&mut el, &mut h, LIMIT, |el, h| {
            while h.bc.read_line(el.cx(), &mut out).is_some() {
                lines += 1;
            }
            out.len() == three.len()
        });
        assert_eq!(out, three);
        assert_eq!(lines, 3);
        assert!(h.count(Events::INPUT_FULL) >= 1, "the record never filled the input: {:?}", h.events);
        assert_eq!(h.bc.counters().bytes_in, 3 + 5 + 3 + three.len() as u64);
        h.bc.close(el.cx());
        "split line, wrapped delimiter, a record larger than the input".into()
    });
}

/// The server sends pattern stream 2 and the peer pattern stream 1.
const DOWN: usize = 2;
const UP: usize = 1;
const BIG: usize = 4 << 20;

/// 4 MiB server → peer through a 64 KiB output queue (low mark 16 KiB)
/// over small socket buffers, so writes are refused and resumed on
/// DRAINED many times; then 4 MiB peer → server through a 16 KiB input.
/// Byte-exact both ways (the pattern of `common::fill`).
#[test]
fn tls_four_mib_each_way_under_the_output_watermarks() {
    matrix("bufconn_tls_large", |c| {
        let mut el = c.new_loop();
        let (high, low) = (64 * 1024, 16 * 1024);
        let cfg = Config { output_high: high, output_low: low, ..Config::default() };
        let (mut h, mut peer) = tls_pair(&mut el, cfg);
        // Small socket buffers, so the queue does reach its high mark.
        common::set_sockopt(h.bc.connection().fd(), libc::SO_SNDBUF, 32 * 1024);
        common::set_sockopt(peer.sock.as_raw_fd(), libc::SO_RCVBUF, 32 * 1024);
        let start = Instant::now();
        let (mut sent, mut got, mut bad) = (0usize, 0usize, None);
        let (mut offered, mut waiting, mut drained_seen) = (0usize, false, 0usize);
        let mut block = vec![0u8; 16 * 1024];
        let mut pblock = vec![0u8; 16 * 1024];
        let mut input = Vec::new();
        spin(&mut el, &mut h, LIMIT, |el, h| {
            // The server's owner: checks all input; writes until refused,
            // then waits for DRAINED.
            input.clear();
            h.bc.read_all(el.cx(), &mut input);
            if bad.is_none() {
                bad = common::check(UP, got as u64, &input);
            }
            got += input.len();
            let drained = h.count(Events::DRAINED);
            if drained > drained_seen {
                drained_seen = drained;
                waiting = false;
            }
            while !waiting && sent < BIG {
                let n = block.len().min(BIG - sent);
                common::fill(DOWN, sent as u64, &mut block[..n]);
                match h.bc.write(el.cx(), &block[..n]) {
                    Ok(()) => sent += n,
                    Err(WriteError::Full { .. }) => waiting = true,
                    Err(e) => panic!("server write: {e}"),
                }
                assert!(h.bc.output_len() <= high, "queue above the high watermark");
            }
            // The peer reads all first, and only then sends as rustls
            // takes it: while the server sends, no input of its own flushes
            // the records its transport holds (only snd_pending does).
            if peer.got.len() == BIG && offered < BIG {
                let n = pblock.len().min(BIG - offered);
                common::fill(UP, offered as u64, &mut pblock[..n]);
                offered += peer.offer(&pblock[..n]);
            } else {
                peer.pump();
            }
            got == BIG && peer.got.len() == BIG
        });
        assert_eq!(bad, None, "server: first bad byte");
        assert_eq!(common::check(DOWN, 0, &peer.got), None, "peer: first bad byte");
        let k = *h.bc.counters();
        assert_eq!((k.bytes_in, k.bytes_out), (BIG as u64, BIG as u64));
        assert!(k.refused >= 1, "the queue never reached its high watermark: {k:?}");
        let drained = h.count(Events::DRAINED);
        assert!(drained as u64 >= k.refused, "{} refusals, {drained} DRAINED", k.refused);
        assert_eq!(h.bc.error(), ConnError::None);
        h.bc.close(el.cx());
        format!("4 MiB each way in {:?}, {} refusals, {drained} DRAINED", start.elapsed(), k.refused)
    });
}

#[test]
fn tls_flush_then_close_sends_close_notify_after_every_byte() {
    matrix("bufconn_tls_flush_close", |c| {
        let mut el = c.new_loop();
        // A linger far beyond the spin's limit: the close must come from
        // the peer's close_notify, not from the linger timer.
        let cfg = Config { output_high: 32 * 1024, output_low: 0, linger: LIMIT * 10, ..Config::default() };
        let (mut h, mut peer) = tls_pair(&mut el, cfg);
        let queued = fill(&mut el, &mut h); // the peer does not read meanwhile
        let ev = h.bc.close_when_flushed(el.cx());
        assert!(!ev.contains(Events::CLOSED), "closed with bytes queued");
        assert_eq!(h.bc.write(el.cx(), b"late"), Err(WriteError::Closed));
        // The peer also sends, and nobody reads it: the lingering close
        // reads and drops it until the peer's close_notify.
        let junk = vec![b'j'; 16 * 1024];
        let (mut offered, mut notified, mut shut) = (0usize, false, false);
        spin(&mut el, &mut h, LIMIT, |_, h| {
            if offered < 256 * 1024 {
                offered += peer.offer(&junk);
            } else {
                peer.pump();
            }
            assert!(!peer.truncated, "the server's input ended without close_notify");
            if peer.clean_end && !notified {
                assert_eq!(peer.got.len(), queued, "close_notify before every byte");
            }
            if peer.clean_end && offered >= 256 * 1024 && !notified {
                notified = true;
                peer.tls.send_close_notify();
                peer.flush();
            }
            if notified && !shut && peer.all_out() {
                shut = true;
                peer.sock.shutdown(Shutdown::Write).unwrap();
            }
            h.count(Events::CLOSED) == 1
        });
        let t = Instant::now();
        while !peer.sock_eof {
            assert!(t.elapsed() < LIMIT, "no EOF on the socket after close_notify");
            std::thread::sleep(Duration::from_millis(1));
            peer.pump();
        }
        assert!(peer.clean_end && !peer.truncated);
        assert_eq!(peer.got.len(), queued, "bytes lost");
        assert!(peer.got.iter().enumerate().all(|(i, b)| *b == ((i % 1000) % 253) as u8), "bytes changed");
        assert_eq!(h.count(Events::ERROR), 0, "{:?}", h.events);
        assert_eq!(h.bc.error(), ConnError::None);
        assert!(h.bc.counters().dropped_in > 0, "nothing was dropped while lingering");
        assert!(h.bc.is_closed());
        assert_eq!(el.cx().fd_count(), 0, "fd still registered");
        format!("{queued} bytes, close_notify, EOF; {} dropped while lingering", h.bc.counters().dropped_in)
    });
}

#[test]
fn tls_idle_timeout_fires_after_the_last_record() {
    matrix("bufconn_tls_idle", |c| {
        let mut el = c.new_loop();
        let idle = Duration::from_millis(200);
        let cfg = Config { idle_timeout: Some(idle), ..Config::default() };
        let (mut h, mut peer) = tls_pair(&mut el, cfg);
        // The handshake moves no plaintext, so on a loaded machine the
        // timeout may pass before the byte is read: such an attempt proves
        // nothing and is made again, a bounded number of times. The timer
        // restarts when the connection reads the byte, which is after
        // `before_write`: the timeout can come no sooner than `idle` after it.
        let mut before_write = None;
        for _attempt in 0..5 {
            h.events.clear();
            let n = h.bc.input_len();
            let t = Instant::now();
            send_record(&mut el, &mut h, &mut peer, b"x");
            spin(&mut el, &mut h, LIMIT, |_, h| h.bc.input_len() == n + 1);
            if h.count(Events::TIMEOUT) == 0 {
                before_write = Some(t);
                break;
            }
        }
        let before_write = before_write.expect("the timeout passed before each of 5 bytes was read");
        spin(&mut el, &mut h, LIMIT, |_, h| h.count(Events::TIMEOUT) == 1);
        let waited = before_write.elapsed();
        assert_eq!(h.bc.timed_out(), Some(Timeout::Idle));
        assert!(waited >= idle, "fired {waited:?} after the last write, sooner than {idle:?}");
        // Told once, not again while still idle; the owner decides.
        let t = Instant::now();
        spin(&mut el, &mut h, LIMIT, |_, _| t.elapsed() >= idle * 2);
        assert_eq!(h.count(Events::TIMEOUT), 1, "told again: {:?}", h.events);
        assert!(!h.bc.is_closed(), "a timeout leaves the decision to the owner");
        assert_eq!(h.bc.error(), ConnError::None);
        h.bc.close(el.cx());
        format!("fired {} ms after the last write", waited.as_millis())
    });
}

#[test]
fn tls_eof_without_close_notify_is_a_truncation_after_the_data() {
    matrix("bufconn_tls_truncated", |c| {
        let mut el = c.new_loop();
        let (mut h, mut peer) = tls_pair(&mut el, Config::default());
        let mut data = vec![0u8; 40_000];
        common::fill(UP, 0, &mut data);
        let (mut offered, mut shut) = (0usize, false);
        let mut got = Vec::new();
        spin(&mut el, &mut h, LIMIT, |el, h| {
            if offered < data.len() {
                offered += peer.offer(&data[offered..]);
            } else {
                peer.pump();
            }
            if offered == data.len() && peer.all_out() && !shut {
                // A FIN without close_notify (not a close: that could
                // reset the connection over unread session tickets).
                shut = true;
                peer.sock.shutdown(Shutdown::Write).unwrap();
            }
            h.bc.read_all(el.cx(), &mut got);
            // A clean end told instead stops here too, to fail below.
            h.count(Events::CLOSED) == 1 || h.count(Events::READ_EOF) > 0
        });
        h.bc.read_all(el.cx(), &mut got);
        assert_eq!(got.len(), data.len(), "the bytes before the truncation");
        assert!(got == data, "bytes changed");
        assert_eq!(h.bc.error(), ConnError::TlsTruncated, "{:?}", h.events);
        assert_eq!(h.count(Events::ERROR), 1);
        assert_eq!(h.count(Events::READ_EOF), 0, "a truncation told as a clean end");
        assert_eq!(el.cx().fd_count(), 0, "fd still registered");
        "40000 bytes, then TlsTruncated".into()
    });
}
