//! The stats: what each thread has done, published once a second, summed
//! for the stats page (`--stats ADDR`) and SIGUSR1.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;

use anypoll::listener::accept_batch;
use anypoll::sockops::{Real, SockOps};
use anypoll::Ctx;

use crate::{Shared, Worker, WorkerStats};

impl WorkerStats {
    pub(crate) fn add(&mut self, o: &WorkerStats) {
        let c = &mut self.counters;
        let d = &o.counters;
        c.iterations += d.iterations;
        c.waits += d.waits;
        c.ctl += d.ctl;
        c.reads += d.reads;
        c.writes += d.writes;
        c.accepts += d.accepts;
        c.splices += d.splices;
        c.splice_fallbacks += d.splice_fallbacks;
        c.other += d.other;
        c.eagain += d.eagain;
        c.events += d.events;
        c.spec_calls += d.spec_calls;
        c.stale += d.stale;
        c.timers += d.timers;
        self.accepted += o.accepted;
        self.active += o.active;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
        self.aborted += o.aborted;
        self.no_server += o.no_server;
        self.retries += o.retries;
        self.pipes_spare += o.pipes_spare;
        self.pipes_in_use += o.pipes_in_use;
    }
}

impl Shared {
    /// The sum of every thread's stats.
    pub fn totals(&self) -> WorkerStats {
        let mut t = WorkerStats::default();
        for s in self.stats.lock().expect("stats lock").iter() {
            t.add(s);
        }
        t
    }

    /// The stats page: counters, then one line per server.
    pub fn render(&self) -> String {
        let t = self.totals();
        let c = &t.counters;
        let mut s = String::new();
        use std::fmt::Write as _;
        let _ = writeln!(s, "connections_total {}\nconnections_active {}", t.accepted, t.active);
        let _ = writeln!(s, "bytes_client_to_server {}\nbytes_server_to_client {}", t.bytes_up, t.bytes_down);
        let _ = writeln!(s, "aborted {}\nno_server {}\nconnect_retries {}", t.aborted, t.no_server, t.retries);
        let _ = writeln!(
            s,
            "syscalls {}\nsyscalls_wait {}\nsyscalls_ctl {}\nsyscalls_read {}\nsyscalls_write {}\nsyscalls_accept {}\nsyscalls_splice {}\nsyscalls_other {}",
            c.syscalls(),
            c.waits,
            c.ctl,
            c.reads,
            c.writes,
            c.accepts,
            c.splices,
            c.other
        );
        let _ = writeln!(
            s,
            "eagain {}\nsplice_fallbacks {}\nloop_iterations {}\npipes_spare {}\npipes_in_use {}",
            c.eagain, c.splice_fallbacks, c.iterations, t.pipes_spare, t.pipes_in_use
        );
        for sv in &self.servers {
            let _ = writeln!(
                s,
                "server {} {} checks_passed={} checks_failed={}",
                sv.addr,
                if sv.up.load(Ordering::Relaxed) { "UP" } else { "DOWN" },
                sv.passed.load(Ordering::Relaxed),
                sv.failed.load(Ordering::Relaxed)
            );
        }
        s
    }
}

impl Worker {
    pub(crate) fn publish(&mut self, cx: &Ctx) {
        self.stats.counters = *cx.counters();
        self.stats.active = self.streams.iter().filter(|e| e.is_some()).count() as u64;
        self.stats.pipes_spare = self.pools.pipes.spare() as u64;
        self.stats.pipes_in_use = self.pools.pipes.in_use() as u64;
        if let Ok(mut v) = self.shared.stats.lock() {
            v[self.id] = self.stats;
        }
    }

    pub(crate) fn serve_stats(&mut self, cx: &mut Ctx, fd: RawFd) {
        let mut conns = Vec::new();
        accept_batch(cx, fd, 16, |_, sock, _| conns.push(sock));
        if conns.is_empty() {
            return;
        }
        self.publish(cx);
        let page = self.shared.render();
        for sock in conns {
            // A small page on a fresh socket fits its send buffer; a client
            // that does not read it loses it rather than blocking us. One
            // send, counted by the seam; the socket closes when `sock` drops.
            let _ = cx.counted(&mut Real).send(sock.as_raw_fd(), page.as_bytes(), anypoll::sockops::SEND_FLAGS);
        }
    }
}
