//! One relay thread: its state, its start-up, the dispatch of the loop's
//! events and timers to the other files' handlers, signals and the
//! graceful stop.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anypoll::connection::ConnError;
use anypoll::timer::TimerId;
use anypoll::{Ctx, FdState, Handler, IoEvent, Signal};

use crate::accept::spare_fd;
use crate::config::CheckKind;
use crate::handshake::Slot;
use crate::tag::{Owner, TimerTag};
use crate::Worker;

impl Worker {
    pub(crate) fn setup(&mut self, cx: &mut Ctx) -> io::Result<()> {
        if !self.listeners.is_empty() {
            self.spare = Some(spare_fd()?);
        }
        for (i, l) in self.listeners.iter().enumerate() {
            cx.register(l, Owner::Listener(i).encode(), FdState::RECV_ACTIVE | FdState::RECV_READY)?;
        }
        if let Some(l) = &self.stats_listener {
            cx.register(l, Owner::StatsListener.encode(), FdState::RECV_ACTIVE)?;
        }
        if self.id == 0 && self.shared.cfg.check != CheckKind::None {
            for i in 0..self.checks.len() {
                // Spread the first checks over the interval.
                // Divided first: interval × i overflows a Duration for a
                // huge interval (u64::MAX ms) and a thousand servers.
                let n = self.checks.len() as u32;
                let at = self.shared.cfg.check_interval / n.max(1) * i as u32;
                cx.add_timer(at, TimerTag::CheckStart(i).encode());
            }
        }
        cx.add_timer(Duration::from_secs(1), TimerTag::Publish.encode());
        Ok(())
    }

    pub(crate) fn begin_stop(&mut self, cx: &mut Ctx) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        log::info!(
            "thread {}: stopping: no more accepts, {} live connection(s) get {:?} to finish",
            self.id,
            self.live(),
            self.shared.cfg.grace
        );
        for l in self.listeners.drain(..) {
            let _ = cx.close(l.into());
        }
        if let Some(l) = self.stats_listener.take() {
            let _ = cx.close(l.into());
        }
        for i in 0..self.checks.len() {
            if let Some(mut conn) = self.checks[i].conn.take() {
                conn.force_close(cx);
            }
        }
        if self.live() == 0 {
            cx.stop();
        } else {
            cx.add_timer(self.shared.cfg.grace, TimerTag::Grace.encode());
        }
    }
}

impl Handler for Worker {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        match Owner::decode(ev.owner) {
            Some(Owner::Listener(_)) => self.accept(cx, ev.fd),
            Some(Owner::Front(slot) | Owner::Back(slot)) => self.slot_io(cx, slot),
            Some(Owner::Check(i)) => self.check_io(cx, i),
            Some(Owner::StatsListener) => self.serve_stats(cx, ev.fd),
            None => log::error!("fd {}: unknown owner {:#x}", ev.fd, ev.owner),
        }
    }

    fn timer(&mut self, cx: &mut Ctx, _id: TimerId, data: u64) {
        match TimerTag::decode(data) {
            Some(TimerTag::Stream(slot)) => self.slot_timer(cx, slot),
            Some(TimerTag::CheckStart(i)) => self.check_start(cx, i),
            Some(TimerTag::CheckTimeout(i)) => self.check_timed_out(cx, i),
            Some(TimerTag::Publish) => {
                self.publish(cx);
                if self.shared.stopping.load(Ordering::Relaxed) {
                    self.begin_stop(cx);
                }
                cx.add_timer(Duration::from_secs(1), TimerTag::Publish.encode());
            }
            Some(TimerTag::Grace) => {
                let slots: Vec<usize> = (0..self.streams.len()).filter(|&i| self.streams[i].is_some()).collect();
                for slot in slots {
                    if let Some(peer) = self.streams[slot].as_ref().map(Slot::peer) {
                        log::warn!("client {peer}: grace period over, closing");
                    }
                    self.abort_slot(cx, slot, ConnError::Timeout);
                }
                cx.stop();
            }
            Some(TimerTag::Maxconn) => {
                self.maybe_resume(cx);
                if self.paused {
                    cx.add_timer(Duration::from_millis(50), TimerTag::Maxconn.encode());
                }
            }
            None => log::error!("unknown timer data {data:#x}"),
        }
    }

    fn signal(&mut self, cx: &mut Ctx, signal: Signal) {
        self.pending_signals.push_back(signal);
        while let Some(sig) = self.pending_signals.pop_front() {
            match sig {
                Signal::Usr1 => {
                    self.publish(cx);
                    log::warn!("counters:\n{}", self.shared.render());
                }
                _ => {
                    self.shared.stopping.store(true, Ordering::SeqCst);
                    self.shared.wake_all();
                    self.begin_stop(cx);
                }
            }
        }
    }

    fn wake(&mut self, cx: &mut Ctx) {
        if self.shared.stopping.load(Ordering::Relaxed) {
            self.begin_stop(cx);
        }
    }
}
