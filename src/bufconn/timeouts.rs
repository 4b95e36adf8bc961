//! The timeouts of a [`BufConn`]: one loop timer at the earliest deadline
//! of those that apply (see the [parent module](super)).

use std::time::{Duration, Instant};

use anypoll_backends::Poller;

use super::{BufConn, Close, Events, Timeout};
use crate::connection::ConnError;
use crate::sockops::SockOps;
use crate::transport::Transport;
use crate::{Ctx, TimerId};

impl<T: Transport, S: SockOps> BufConn<T, S> {
    /// Handles a loop timer; `id` is the one [`Handler::timer`](crate::Handler::timer)
    /// got (its data is the owner value this connection was made with).
    /// A timer of another connection returns nothing.
    pub fn on_timer<P: Poller>(&mut self, cx: &mut Ctx<P>, id: TimerId) -> Events {
        match self.timer {
            Some((mine, _)) if mine == id => self.timer = None,
            _ => return Events::empty(),
        }
        let now = Instant::now();
        let past = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let d = self.deadlines();
        if past(d.connect) {
            self.conn.set_error(ConnError::Timeout);
            self.timed_out = Some(Timeout::Connect);
            return self.fail(cx) | Events::TIMEOUT;
        }
        if past(d.linger) {
            log::debug!("fd {}: the peer did not close within the linger time; closing", self.conn.fd());
            self.close(cx);
            return Events::CLOSED;
        }
        let mut ev = std::mem::take(&mut self.pending);
        let mut told_one = false;
        for (due, told, kind) in [
            (d.read, &mut self.told_read, Timeout::Read),
            (d.write, &mut self.told_write, Timeout::Write),
            (d.idle, &mut self.told_idle, Timeout::Idle),
        ] {
            if past(due) && !*told && !told_one {
                told_one = true;
                *told = true;
                self.timed_out = Some(kind);
                ev |= Events::TIMEOUT;
            }
        }
        self.arm(cx);
        ev
    }

    fn deadlines(&self) -> Deadlines {
        let after = |from: Instant, t: Option<Duration>| t.map(|t| from + t);
        let open = !self.connecting() && !matches!(self.close, Close::Linger(_));
        let reading = open && !self.read_eof() && !self.input.is_full();
        Deadlines {
            connect: if self.connecting() { after(self.started, self.cfg.connect_timeout) } else { None },
            linger: match self.close {
                Close::Linger(since) => Some(since + self.cfg.linger),
                _ => None,
            },
            read: if reading && !self.told_read { after(self.last_in, self.cfg.read_timeout) } else { None },
            write: if open && !self.output.is_empty() && !self.told_write {
                after(self.last_out, self.cfg.write_timeout)
            } else {
                None
            },
            idle: if open && !self.told_idle {
                after(self.last_in.max(self.last_out), self.cfg.idle_timeout)
            } else {
                None
            },
        }
    }

    /// Keeps one loop timer at or before the earliest deadline. A timer
    /// already set earlier is kept (it fires, finds nothing, and re-arms).
    pub(super) fn arm<P: Poller>(&mut self, cx: &mut Ctx<P>) {
        let d = self.deadlines();
        let Some(next) = [d.connect, d.linger, d.read, d.write, d.idle].into_iter().flatten().min() else {
            return;
        };
        match self.timer {
            Some((_, at)) if at <= next => {}
            Some((id, _)) => {
                cx.cancel_timer(id);
                self.timer = Some((cx.add_timer_at(next, self.tag), next));
            }
            None => self.timer = Some((cx.add_timer_at(next, self.tag), next)),
        }
    }
}

struct Deadlines {
    connect: Option<Instant>,
    linger: Option<Instant>,
    read: Option<Instant>,
    write: Option<Instant>,
    idle: Option<Instant>,
}
