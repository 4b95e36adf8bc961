//! What the demo tells: progress lines on stderr while it runs, then on
//! stdout the plan, one table row per backend × splice setting, and the
//! legend.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::row::{Plan, Row};
use super::SERVERS;

/// Progress lines, timed from the start of the demo.
pub(super) struct Progress {
    pub(super) start: Instant,
}

impl Progress {
    pub(super) fn say(&self, what: &str) {
        // One write per line, so lines from the relay's log do not cut it.
        let line = format!("[{:6.2}s] {what}\n", self.start.elapsed().as_secs_f64());
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// The first line: what every row runs.
pub(super) fn banner(plan: &Plan) {
    println!(
        "anypoll demo: relay → {SERVERS} in-process echo servers, per backend × splice: {:.2} s of ping-pong ({} clients), \
         {} MiB each way of bulk, every byte checksummed; health checks every 100 ms (kill one server, see it go DOWN and UP)",
        plan.ping.as_secs_f64(),
        plan.clients,
        plan.bulk >> 20
    );
}

/// The table and its legend; returns whether every row passed.
pub(super) fn table(rows: &[Row]) -> bool {
    // At least 8 wide, as always; wider for a model's name (`kqueue-model`).
    let width = rows.iter().map(|r| r.backend.len()).max().unwrap_or(0).max(8);
    println!(
        "{:<width$} {:<6} {:>9} {:>8} {:>13} {:>8} {:>16} {:<22} {:>6}  result",
        "backend", "splice", "req/s", "MiB/s", "syscalls/req", "EAGAINs", "splice fallbacks", "health check", "checks"
    );
    let mut failed = false;
    for r in rows {
        let result = if r.failures.is_empty() {
            "ok".to_string()
        } else {
            failed = true;
            format!("FAIL: {}", r.failures.join("; "))
        };
        println!(
            "{:<width$} {:<6} {:>9.0} {:>8.1} {:>13.2} {:>8} {:>16} {:<22} {:>6}  {}",
            r.backend,
            r.splice,
            r.req_per_s,
            r.mib_per_s,
            r.syscalls_per_req,
            r.eagain,
            r.splice_fallbacks,
            fmt_health(&r.health),
            format!("{}/{}", r.passed, r.checks),
            result
        );
    }
    println!(
        "req/s, syscalls/req: ping-pong part (relay's own counters); MiB/s: bulk, each way; EAGAINs, splice fallbacks: whole row; \
         health check: time for the relay to mark the killed server DOWN, then the restarted one UP (n/a: exercised on the splice=auto row)"
    );
    !failed
}

fn fmt_health(h: &Option<(Option<Duration>, Option<Duration>)>) -> String {
    let ms = |d: &Option<Duration>| d.map(|d| format!("{}ms", d.as_millis())).unwrap_or_else(|| "never".into());
    match h {
        None => "n/a".to_string(),
        Some((down, up)) => format!("DOWN {} UP {}", ms(down), ms(up)),
    }
}
