//! One row of the demo: a relay on one backend and splice setting in
//! front of the servers, driven through ping-pong, bulk and (when asked)
//! the health-check part, each part's result a check of the row.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anypoll::stream::SpliceMode;
use anypoll_relay::config::{CheckKind, RelayConfig};
use anypoll_relay::{self as relay, RelayHandle, WorkerStats};

use super::client::{bulk_client, ping_client};
use super::report::Progress;
use super::server::Farm;
use super::IO_TIMEOUT;

/// Longest wait for the relay to mark a server DOWN or UP.
const CONVERGE: Duration = Duration::from_secs(5);
/// Bulk connections per row.
const BULK_CONNS: u64 = 2;
/// The server the health-check part kills.
const VICTIM: usize = 1;
/// Connections that check the traffic while the victim is down, then up.
const PROBES: u64 = 6;

/// One backend × splice setting.
#[derive(Debug, Default)]
pub(super) struct Row {
    pub(super) backend: &'static str,
    pub(super) splice: &'static str,
    pub(super) requests: u64,
    pub(super) req_per_s: f64,
    pub(super) mib_per_s: f64,
    pub(super) syscalls_per_req: f64,
    pub(super) eagain: u64,
    pub(super) splice_fallbacks: u64,
    /// Time to DOWN and to UP again, when exercised.
    pub(super) health: Option<(Option<Duration>, Option<Duration>)>,
    pub(super) checks: u32,
    pub(super) passed: u32,
    pub(super) failures: Vec<String>,
}

impl Row {
    fn check(&mut self, what: &str, r: Result<(), String>) -> bool {
        self.checks += 1;
        match r {
            Ok(()) => {
                self.passed += 1;
                true
            }
            Err(e) => {
                self.failures.push(format!("{what}: {e}"));
                false
            }
        }
    }
}

/// Settings of one row.
pub(super) struct Plan {
    pub(super) ping: Duration,
    pub(super) clients: usize,
    pub(super) bulk: u64,
    pub(super) health: bool,
}

/// Fresh totals: a request to the stats endpoint makes the relay publish
/// its counters right before it answers.
fn snapshot(h: &RelayHandle) -> Result<WorkerStats, String> {
    let addr = (*h.shared.stats_bound.lock().map_err(|_| "stats lock")?).ok_or("the relay has no stats address")?;
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("stats: {e}"))?;
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let mut page = String::new();
    s.read_to_string(&mut page).map_err(|e| format!("stats: {e}"))?;
    Ok(h.shared.totals())
}

fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn relay_config(farm: &Farm, backend: &str, splice: SpliceMode) -> RelayConfig {
    RelayConfig {
        listen: vec![([127, 0, 0, 1], 0).into()],
        servers: farm.addrs.clone(),
        poller: Some(backend.to_string()),
        splice,
        timeout_connect: Duration::from_secs(2),
        timeout_client: IO_TIMEOUT,
        timeout_server: IO_TIMEOUT,
        threads: 1,
        check: CheckKind::Http("/health".into()),
        check_interval: Duration::from_millis(100),
        rise: 2,
        fall: 2,
        stats: Some(([127, 0, 0, 1], 0).into()),
        grace: Duration::from_secs(2),
        ..RelayConfig::default()
    }
}

pub(super) fn run_row(
    farm: &mut Farm,
    backend: &'static str,
    splice: SpliceMode,
    plan: &Plan,
    seed: u64,
    progress: &Progress,
) -> Row {
    let splice_name = match splice {
        SpliceMode::Auto => "auto",
        SpliceMode::Always => "always",
        SpliceMode::Never => "never",
    };
    let mut row = Row { backend, splice: splice_name, ..Row::default() };
    let tag = format!("{backend}/splice={splice_name}");
    let handle = match relay::start(relay_config(farm, backend, splice), false) {
        Ok(h) => h,
        Err(e) => {
            row.check("relay start", Err(e.to_string()));
            return row;
        }
    };
    let shared = handle.shared.clone();
    let relay_addr = shared.bound.lock().map(|b| b[0]).unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
    progress.say(&format!("{tag}: relay on {relay_addr} → {} servers", farm.addrs.len()));

    // 1. ping-pong
    let before = snapshot(&handle);
    let start = Instant::now();
    let deadline = start + plan.ping;
    let clients: Vec<_> = (0..plan.clients.max(1) as u64)
        .map(|i| std::thread::spawn(move || ping_client(relay_addr, seed ^ (i << 32), deadline, u64::MAX)))
        .collect();
    let mut result = Ok(());
    for c in clients {
        match c.join().unwrap_or_else(|_| Err("a client panicked".into())) {
            Ok(n) => row.requests += n,
            Err(e) => result = result.and(Err(e)),
        }
    }
    let elapsed = start.elapsed();
    let after = snapshot(&handle);
    row.req_per_s = row.requests as f64 / elapsed.as_secs_f64().max(1e-9);
    if let (Ok(b), Ok(a)) = (&before, &after) {
        let d = a.counters.since(&b.counters);
        row.syscalls_per_req = d.syscalls() as f64 / row.requests.max(1) as f64;
    }
    let ok = row.check("ping-pong", result);
    progress.say(&format!(
        "{tag}: ping-pong: {} clients, {} round trips in {:.2}s: {}",
        plan.clients,
        row.requests,
        elapsed.as_secs_f64(),
        if ok { "every reply's checksum OK" } else { "FAILED" }
    ));

    // 2. bulk
    let per_conn = (plan.bulk / BULK_CONNS).max(8);
    let start = Instant::now();
    let clients: Vec<_> = (0..BULK_CONNS)
        .map(|i| std::thread::spawn(move || bulk_client(relay_addr, seed ^ 0xb01c ^ (i << 40), per_conn)))
        .collect();
    let mut result = Ok(());
    for c in clients {
        result = result.and(c.join().unwrap_or_else(|_| Err("a client panicked".into())));
    }
    let elapsed = start.elapsed();
    row.mib_per_s = (per_conn * BULK_CONNS) as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9);
    let ok = row.check("bulk", result);
    progress.say(&format!(
        "{tag}: bulk: {BULK_CONNS} × {} each way in {:.2}s: {}",
        size(per_conn),
        elapsed.as_secs_f64(),
        if ok { "checksums and byte counts OK" } else { "FAILED" }
    ));

    // 3. health checks: kill one server, see it go DOWN and come back UP
    if plan.health {
        let victim = farm.addrs[VICTIM];
        let served = farm.served[VICTIM].clone();
        farm.kill(VICTIM);
        let down = wait_until(CONVERGE, || !shared.servers[VICTIM].up.load(Ordering::Relaxed));
        let mut through = Ok(());
        if down.is_some() {
            for i in 0..PROBES {
                through = through.and(ping_client(relay_addr, seed ^ 0xdead ^ i, Instant::now(), 1).map(|_| ()));
            }
        }
        let ok = row.check(
            "health DOWN",
            match down {
                Some(_) => through.map_err(|e| format!("traffic while {victim} is down: {e}")),
                None => Err(format!("{victim} killed but not marked DOWN within {CONVERGE:?}")),
            },
        );
        progress.say(&format!(
            "{tag}: health: killed server {victim}: {}",
            match down {
                Some(d) if ok => format!(
                    "marked DOWN after {} ms; {PROBES}/{PROBES} new connections OK through the others",
                    d.as_millis()
                ),
                Some(d) => format!("marked DOWN after {} ms, but the traffic check FAILED", d.as_millis()),
                None => format!("NOT marked DOWN within {CONVERGE:?}"),
            }
        ));
        let up = match farm.restart(VICTIM) {
            Ok(()) => wait_until(CONVERGE, || shared.servers[VICTIM].up.load(Ordering::Relaxed))
                .ok_or(format!("{victim} restarted but not marked UP within {CONVERGE:?}")),
            Err(e) => Err(format!("restarting {victim}: {e}")),
        };
        let mut up_result = up.clone().map(|_| ());
        if up_result.is_ok() {
            let before = served.load(Ordering::Relaxed);
            for i in 0..PROBES {
                up_result = up_result.and(ping_client(relay_addr, seed ^ 0xa11e ^ i, Instant::now(), 1).map(|_| ()));
            }
            if up_result.is_ok() && served.load(Ordering::Relaxed) == before {
                up_result = Err(format!("{victim} is UP but got none of {PROBES} new connections"));
            }
        }
        let ok = row.check("health UP", up_result);
        progress.say(&format!(
            "{tag}: health: restarted server {victim}: {}",
            match up {
                Ok(d) if ok => format!("marked UP after {} ms and takes connections again", d.as_millis()),
                Ok(d) => format!("marked UP after {} ms, but the traffic check FAILED", d.as_millis()),
                Err(_) => "NOT marked UP".to_string(),
            }
        ));
        row.health = Some((down, up.ok()));
    }

    // 4. stop; the relay must have aborted nothing and stop cleanly
    let last = snapshot(&handle);
    handle.stop();
    let joined = handle.join();
    let totals = shared.totals();
    row.eagain = totals.counters.eagain;
    row.splice_fallbacks = totals.counters.splice_fallbacks;
    let clean = match (joined, before.and(after).and(last)) {
        (Err(e), _) => Err(format!("the relay stopped with an error: {e}")),
        (_, Err(e)) => Err(e),
        _ if totals.aborted > 0 => Err(format!("{} stream(s) aborted", totals.aborted)),
        _ if totals.no_server > 0 => Err(format!("{} client(s) found no server up", totals.no_server)),
        _ => Ok(()),
    };
    row.check("relay", clean);
    row
}

/// `32 MiB`, `256 KiB`, `100 B`.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::SERVERS;

    #[test]
    fn one_tiny_row_on_poll() {
        let mut farm = Farm::start(SERVERS).unwrap();
        let plan = Plan { ping: Duration::from_millis(50), clients: 2, bulk: 256 << 10, health: false };
        let progress = Progress { start: Instant::now() };
        let row = run_row(&mut farm, "poll", SpliceMode::Never, &plan, 42, &progress);
        assert!(row.failures.is_empty(), "{:?}", row.failures);
        assert!(row.requests > 0);
        assert_eq!(row.passed, row.checks);
    }
}
