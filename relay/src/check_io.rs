//! The health checks' I/O (thread 0): a connect per server every
//! interval, for `check = "http:/path"` a request and its status line, and
//! the verdict recorded in the server's shared state.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use anypoll::connection::{ConnectStatus, Connection};
use anypoll::listener::{is_out_of_fds, next_fd_fits};
use anypoll::sockops::Real;
use anypoll::{Ctx, FdState, Io};

use crate::check::{check_timeout, parse_status_line, status_passes, CheckResult};
use crate::config::CheckKind;
use crate::tag::{Owner, TimerTag};
use crate::Worker;

impl Worker {
    pub(crate) fn check_start(&mut self, cx: &mut Ctx, i: usize) {
        let interval = self.shared.cfg.check_interval;
        cx.add_timer(interval, TimerTag::CheckStart(i).encode());
        if self.checks[i].conn.is_some() || self.stopping {
            return;
        }
        let addr = self.shared.servers[i].addr;
        // Nor does a socket the backend could not watch: on select, with
        // every number below FD_SETSIZE taken, skip this check too.
        if let (Some(limit), Some(l)) = (cx.fd_limit(), self.listeners.first()) {
            if !next_fd_fits(l.as_raw_fd(), limit).unwrap_or(false) {
                return log::debug!("server {addr}: check skipped: no fd below {limit} for it");
            }
        }
        let mut conn = match Connection::connect(addr) {
            Ok(c) => c,
            // Out of fds says nothing of the server: marking it down would
            // turn clients away once fds are back. Skip this check.
            Err(e) if is_out_of_fds(&e) => return log::debug!("server {addr}: check skipped: {e}"),
            Err(e) => return self.check_done(cx, i, CheckResult::Failed(e.to_string())),
        };
        if let Err(e) = conn.ctrl_init(cx, Owner::Check(i).encode(), FdState::SEND_ACTIVE | FdState::RECV_ACTIVE) {
            conn.force_close(cx);
            return self.check_done(cx, i, CheckResult::Failed(e.to_string()));
        }
        conn.xprt_init();
        let c = &mut self.checks[i];
        c.conn = Some(conn);
        c.sent = false;
        c.reply.clear();
        c.timeout = Some(cx.add_timer(check_timeout(interval), TimerTag::CheckTimeout(i).encode()));
    }

    pub(crate) fn check_io(&mut self, cx: &mut Ctx, i: usize) {
        let kind = self.shared.cfg.check.clone();
        let Some(conn) = self.checks[i].conn.as_mut() else { return };
        match conn.confirm_connect(&mut Real, cx) {
            ConnectStatus::Pending => return,
            ConnectStatus::Failed => {
                let err = conn.error();
                return self.check_done(cx, i, CheckResult::Failed(format!("connect: {err}")));
            }
            ConnectStatus::Connected => {}
        }
        let path = match kind {
            CheckKind::Http(p) => p,
            _ => return self.check_done(cx, i, CheckResult::Ok),
        };
        let fd = conn.fd();
        let c = &mut self.checks[i];
        if !c.sent {
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: anypoll-check\r\n\r\n",
                self.shared.servers[i].addr
            );
            match cx.send(fd, req.as_bytes(), false) {
                Io::Done(n) if n == req.len() => {
                    c.sent = true;
                    cx.stop_send(fd);
                }
                Io::WouldBlock => return,
                other => return self.check_done(cx, i, CheckResult::Failed(format!("sending the request: {other:?}"))),
            }
        }
        let mut buf = [0u8; 512];
        loop {
            match cx.recv(fd, &mut buf) {
                Io::Done(n) => {
                    let c = &mut self.checks[i];
                    c.reply.extend_from_slice(&buf[..n]);
                    if c.reply.contains(&b'\n') || c.reply.len() > 4096 {
                        break;
                    }
                }
                Io::WouldBlock => return,
                Io::Closed => break,
                Io::Error(e) => return self.check_done(cx, i, CheckResult::Failed(format!("reading the reply: {e}"))),
            }
        }
        let result = match parse_status_line(&self.checks[i].reply) {
            Ok(code) if status_passes(code) => CheckResult::Ok,
            Ok(code) => CheckResult::Failed(format!("HTTP status {code}")),
            Err(e) => CheckResult::Failed(e),
        };
        self.check_done(cx, i, result);
    }

    pub(crate) fn check_done(&mut self, cx: &mut Ctx, i: usize, result: CheckResult) {
        let (rise, fall) = (self.shared.cfg.rise, self.shared.cfg.fall);
        let c = &mut self.checks[i];
        if let Some(mut conn) = c.conn.take() {
            conn.force_close(cx);
        }
        if let Some(t) = c.timeout.take() {
            cx.cancel_timer(t);
        }
        let sv = &self.shared.servers[i];
        match &result {
            CheckResult::Ok => sv.passed.fetch_add(1, Ordering::Relaxed),
            CheckResult::Failed(_) => sv.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(up) = c.health.record(&result, rise, fall) {
            sv.up.store(up, Ordering::Relaxed);
            let n_up = self.shared.servers.iter().filter(|s| s.up.load(Ordering::Relaxed)).count();
            let total = self.shared.servers.len();
            if up {
                log::warn!("server {} is UP again ({n_up}/{total} up)", sv.addr);
            } else {
                let why = c.health.last_error.clone().unwrap_or_default();
                log::warn!("server {} is DOWN: {why} ({n_up}/{total} up)", sv.addr);
            }
        }
    }

    /// The check of server `i` ran out of time.
    pub(crate) fn check_timed_out(&mut self, cx: &mut Ctx, i: usize) {
        self.checks[i].timeout = None;
        // The loop runs due timers before it dispatches the events of the
        // same turn: after a turn longer than the timeout, the check's
        // answer may be polled already but not handled. Let it count
        // before the timeout does.
        if self.checks[i].conn.is_some() {
            self.check_io(cx, i);
        }
        if self.checks[i].conn.is_some() {
            self.check_done(cx, i, CheckResult::Failed("check timed out".into()));
        }
    }
}
