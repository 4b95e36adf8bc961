//! [`Endpoint`]: one connection driven through `raw_sock` with a scripted
//! seam.

use anypoll::buffer::Buffer;
use anypoll::connection::{ConnFlags, ConnectStatus, Connection};
use anypoll::raw_sock::{self, SendFlags};
use anypoll::{Ctx, FdState, Handler, IoEvent};

use super::Scripted;

/// A [`Handler`] that drives one [`Connection`] through `raw_sock` with a
/// [`Scripted`] seam: it settles a pending connect, receives everything
/// into `got`, sends `out` (then shuts its write side if asked), and keeps
/// the fd's interests in line. It never closes the connection itself, so
/// a test can look at the flags and check that the loop stays quiet.
#[derive(Debug)]
pub struct Endpoint {
    /// The connection.
    pub conn: Connection,
    /// The seam.
    pub ops: Scripted,
    /// Bytes received.
    pub got: Vec<u8>,
    /// Bytes to send.
    pub out: Vec<u8>,
    /// How many of `out` were sent.
    pub sent: usize,
    /// Shut the write side once `out` is sent.
    pub shut_after_send: bool,
    /// Receive (up to `want_read` bytes; `usize::MAX`: to the end).
    pub want_read: usize,
    /// While connecting, try I/O before asking whether the connect is
    /// done (as an application that writes or reads at once does).
    pub io_before_confirm: bool,
    /// The most one `rcv_buf` asks for.
    pub chunk: usize,
    /// Owner calls.
    pub calls: u64,
    /// What `confirm_connect` said last.
    pub connect: Option<ConnectStatus>,
    /// `snd_buf` returned 0 with data left (EAGAIN-like) this many times.
    pub send_blocked: u64,
    rbuf: Buffer,
    obuf: Buffer,
    queued: usize,
}

impl Endpoint {
    /// An endpoint for `conn` that receives to the end and sends nothing.
    pub fn new(conn: Connection, ops: Scripted) -> Endpoint {
        Endpoint {
            conn,
            ops,
            got: Vec::new(),
            out: Vec::new(),
            sent: 0,
            shut_after_send: false,
            want_read: usize::MAX,
            io_before_confirm: false,
            chunk: 16 * 1024,
            calls: 0,
            connect: None,
            send_blocked: 0,
            rbuf: Buffer::with_capacity(16 * 1024),
            obuf: Buffer::with_capacity(16 * 1024),
            queued: 0,
        }
    }

    /// Whether receiving is over (shut, error, or `want_read` reached).
    pub fn read_done(&self) -> bool {
        self.conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) || self.got.len() >= self.want_read
    }

    /// Whether sending is over (everything sent, and shut if asked; or an error).
    pub fn write_done(&self) -> bool {
        self.conn.flags.contains(ConnFlags::ERROR)
            || (self.sent == self.out.len()
                && (!self.shut_after_send || self.conn.flags.contains(ConnFlags::SOCK_WR_SH)))
    }

    /// Both.
    pub fn done(&self) -> bool {
        self.read_done() && self.write_done()
    }

    fn state(&self, cx: &Ctx) -> FdState {
        cx.state(self.conn.fd()).unwrap_or_default()
    }

    /// Receives while the fd is READY.
    pub fn receive(&mut self, cx: &mut Ctx) {
        while !self.read_done() && self.state(cx).contains(FdState::RECV_READY) {
            let max = self.chunk.min(self.want_read - self.got.len());
            let n = raw_sock::rcv_buf(&mut self.ops, cx, &mut self.conn, &mut self.rbuf, max);
            let mut tmp = vec![0u8; self.rbuf.len()];
            self.rbuf.read_into(&mut tmp);
            self.got.extend_from_slice(&tmp);
            self.conn.flags.remove(ConnFlags::WAIT_ROOM);
            if n == 0 {
                break;
            }
        }
    }

    /// Sends while the fd is READY.
    pub fn transmit(&mut self, cx: &mut Ctx) {
        while self.sent < self.out.len() && self.state(cx).contains(FdState::SEND_READY) {
            if self.conn.flags.intersects(ConnFlags::SOCK_WR_SH | ConnFlags::ERROR) {
                return;
            }
            let room = self.obuf.free();
            let take = room.min(self.out.len() - self.queued);
            let w = self.obuf.write_from(&self.out[self.queued..self.queued + take]);
            self.queued += w;
            let len = self.obuf.len();
            let n = raw_sock::snd_buf(&mut self.ops, cx, &mut self.conn, &mut self.obuf, len, SendFlags::empty());
            self.sent += n;
            if n == 0 {
                self.send_blocked += 1;
                break;
            }
        }
        if self.shut_after_send && self.sent == self.out.len() {
            raw_sock::shut_write(&mut self.ops, cx, &mut self.conn);
        }
    }

    /// Sets the fd's interests from what is left to do.
    pub fn interests(&self, cx: &mut Ctx) {
        if !self.conn.flags.contains(ConnFlags::CTRL_READY) {
            return;
        }
        let fd = self.conn.fd();
        if !self.read_done() {
            cx.want_recv(fd);
        } else {
            cx.stop_recv(fd);
        }
        let connecting = self.conn.flags.contains(ConnFlags::WAIT_L4_CONN);
        if connecting || (!self.write_done() && self.sent < self.out.len()) {
            cx.want_send(fd);
        } else {
            cx.stop_send(fd);
        }
    }
}

impl Handler for Endpoint {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        self.calls += 1;
        if self.conn.flags.contains(ConnFlags::WAIT_L4_CONN) {
            if self.io_before_confirm {
                self.receive(cx);
                self.transmit(cx);
            }
            if self.conn.flags.contains(ConnFlags::WAIT_L4_CONN) {
                let st = self.conn.confirm_connect(&mut self.ops, cx);
                self.connect = Some(st);
                if st != ConnectStatus::Connected {
                    self.interests(cx);
                    return;
                }
            }
        }
        self.receive(cx);
        self.transmit(cx);
        self.interests(cx);
    }
}
