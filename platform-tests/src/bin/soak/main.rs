//! `soak`: the relay under chaos, bounded in time (issue 6, item 3).
//!
//! Starts three echo backends (in process), runs the release `anypoll
//! relay` as a child with TCP health checks and a stats endpoint, and keeps
//! `--conns` client connections open for `--duration` seconds: normal
//! transfers, clients that half-close before reading, clients that reset
//! in the middle, slowloris clients, paced (long-lived, mostly idle)
//! transfers and garbage senders that half-close at random moments. Meanwhile backends are killed (RST or FIN) and
//! restarted. Then it checks:
//!
//! * no crash, no panic in the log, exit status 0 after SIGTERM;
//! * every completed transfer came back byte for byte (and its FNV-1a
//!   checksum matched); cut transfers got a correct prefix; no client hung;
//! * after each kill/restart, the stats page shows the true server states
//!   within `(max(rise, fall) + 1) × interval + 1.4 s`;
//! * the relay's CPU time from 1 s to 2 s after the last client closed is
//!   at most 2 ticks (20 ms; an idle second before the load, with the
//!   same health checks, is measured and printed for comparison);
//! * its fd count returns to the start-up count plus the spare pipes its
//!   pool keeps (shown on the stats page), and no connection stays active;
//! * its peak RSS stays below start-up + conns × (2 × bufsize + 8 KiB) +
//!   threads × 64 spare buffers + 16 MiB;
//! * every reset client, by its address, has an abort line in the log
//!   (but for at most as many as the relay never accepted: a client that
//!   resets in an overflowing accept queue never reaches it);
//!   the `aborted` counter equals the "not delivered" lines; every cut
//!   transfer is explained by a killed backend connection or a logged
//!   abort.
//!
//! The backends listen with a large backlog: when a listen queue
//! overflows, Linux falls back to SYN cookies, and a cookie connection
//! whose handshake ACK was dropped can be set up from a later data segment
//! up to 3 bytes in, losing the first bytes without a trace (seen in this
//! soak before the backlog was raised: slowloris echoes missing 1 to 3
//! leading bytes). The summary prints the namespace's listen-overflow and
//! SYN-cookie counters so that such a run can be told apart.
//!
//! Run it with `ci/soak.sh`; `soak --help` lists the options.

mod backend;
mod clients;
mod relay_proc;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend::Backends;
use clients::{End, Load, LoadReport, KINDS};
use relay_proc::Relay;

/// SplitMix64, the generator and the payload pattern.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small seeded generator.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }
}

const USAGE: &str = "usage: soak [--duration SECS] [--conns N] [--threads N] [--bufsize B] [--warmup SECS] \
[--seed N] [--splice auto|always|never] [--relay PATH] [--log PATH]";

struct Opts {
    duration: u64,
    conns: usize,
    threads: usize,
    bufsize: usize,
    warmup: u64,
    seed: u64,
    splice: String,
    relay: PathBuf,
    log: PathBuf,
}

fn parse_args() -> Result<Opts, String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(&manifest).to_path_buf();
    let mut o = Opts {
        duration: 60,
        conns: 2000,
        threads: 2,
        bufsize: 16384,
        warmup: 3,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        splice: "auto".into(),
        relay: root.join("target/release/anypoll"),
        log: root.join("target/soak-relay.log"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            return Err(USAGE.into());
        }
        let v = args.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{a} {v}: {e}"));
        match a.as_str() {
            "--duration" => o.duration = num(&v)?,
            "--conns" => o.conns = num(&v)? as usize,
            "--threads" => o.threads = num(&v)? as usize,
            "--bufsize" => o.bufsize = num(&v)? as usize,
            "--warmup" => o.warmup = num(&v)?,
            "--seed" => o.seed = num(&v)?,
            "--splice" => o.splice = v,
            "--relay" => o.relay = v.into(),
            "--log" => o.log = v.into(),
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid, owned rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    // rlim_t is u64 on Linux, i64 on the BSDs (where the soak does not run,
    // since it reads /proc, but still builds).
    #[allow(clippy::unnecessary_cast)]
    let cur = r.rlim_cur as u64;
    cur
}

/// The checks and the figures of one run.
#[derive(Default)]
struct Verdict {
    failures: Vec<String>,
    lines: Vec<String>,
}

impl Verdict {
    fn check(&mut self, ok: bool, what: String) {
        self.lines.push(format!("{} {what}", if ok { "ok  " } else { "FAIL" }));
        if !ok {
            self.failures.push(what);
        }
    }
    fn figure(&mut self, what: String) {
        self.lines.push(format!("     {what}"));
    }
}

#[derive(Default)]
struct Peaks {
    rss_kib: u64,
    fds: usize,
    samples: u64,
}

/// Polls the stats page until the relay's view of every server equals the
/// truth; the time it took, or `None` after `limit`.
fn converge(relay: &Relay, backends: &Backends, limit: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut last;
    loop {
        match relay.stats() {
            Ok(st) => {
                let wrong: Vec<String> = backends
                    .addrs
                    .iter()
                    .enumerate()
                    .filter(|(i, a)| st.servers.get(a) != Some(&backends.is_up(*i)))
                    .map(|(i, a)| format!("{a} is {} but shown {:?}", updown(backends.is_up(i)), st.servers.get(a)))
                    .collect();
                if wrong.is_empty() {
                    return Ok(t0.elapsed());
                }
                last = wrong.join(", ");
            }
            Err(e) => last = format!("stats: {e}"),
        }
        if t0.elapsed() > limit {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn updown(up: bool) -> &'static str {
    if up {
        "UP"
    } else {
        "DOWN"
    }
}

/// The client address an abort line is about, if it is one.
fn abort_client(line: &str) -> Option<SocketAddr> {
    let aborted = line.contains("not delivered")
        || line.contains("no server is up")
        || (line.contains(": connect to server") && !line.contains(" failed: "));
    if !aborted {
        return None;
    }
    let rest = &line[line.find("client ")? + 7..];
    let addr = rest.split_whitespace().next()?.trim_end_matches(':');
    addr.parse().ok()
}

fn run_load(relay: SocketAddr, conns: usize, seed: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<LoadReport> {
    let live = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("soak-clients".into())
        .spawn(move || {
            clients::run(Load { relay, conns, seed, stop, live, drain: clients::STUCK + Duration::from_secs(5) })
                .expect("client loop")
        })
        .expect("spawn clients")
}

fn merge(into: &mut LoadReport, r: LoadReport) {
    for (k, v) in r.ends {
        *into.ends.entry(k).or_default() += v;
    }
    into.opened += r.opened;
    into.bytes_verified += r.bytes_verified;
    into.prefix_bytes += r.prefix_bytes;
    into.resets.extend(r.resets);
    into.peak_live = into.peak_live.max(r.peak_live);
    into.last_close = r.last_close.or(into.last_close);
    into.problems.extend(r.problems);
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match soak(&o) {
        Ok(v) => {
            for l in &v.lines {
                println!("{l}");
            }
            if v.failures.is_empty() {
                println!("soak: PASS");
                ExitCode::SUCCESS
            } else {
                println!("soak: FAIL ({} check(s))", v.failures.len());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("soak: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

fn soak(o: &Opts) -> Result<Verdict, String> {
    let t_start = Instant::now();
    let mut v = Verdict::default();
    let mut rng = Rng(o.seed);
    let nofile = raise_nofile();
    let netstat0 = relay_proc::tcp_ext();
    v.figure(format!(
        "seed {}, {} conns, {} s (+{} s warm-up), relay threads {}, bufsize {}, RLIMIT_NOFILE {nofile}",
        o.seed, o.conns, o.duration, o.warmup, o.threads, o.bufsize
    ));
    let mut backends = Backends::start(3, &mut rng).map_err(|e| format!("backends: {e}"))?;
    let listen = free_port().map_err(|e| e.to_string())?;
    let stats_addr = free_port().map_err(|e| e.to_string())?;
    let (interval_ms, rise, fall) = (200u64, 2u64, 2u64);
    let mut args: Vec<String> = vec!["--listen".into(), listen.to_string()];
    for a in &backends.addrs {
        args.extend(["--server".into(), a.to_string()]);
    }
    args.extend(
        [
            "--check",
            "tcp",
            "--check-interval",
            &format!("{interval_ms}ms"),
            "--rise",
            &rise.to_string(),
            "--fall",
            &fall.to_string(),
            "--stats",
            &stats_addr.to_string(),
            "--threads",
            &o.threads.to_string(),
            "--bufsize",
            &o.bufsize.to_string(),
            "--timeout-connect",
            "2s",
            "--timeout-client",
            "10s",
            "--timeout-server",
            "10s",
            "--grace",
            "2s",
            "--splice",
            &o.splice,
        ]
        .map(String::from),
    );
    v.figure(format!("relay: {} relay {}", o.relay.display(), args.join(" ")));
    let mut relay = Relay::spawn(&o.relay, &args, &o.log, stats_addr).map_err(|e| format!("spawn relay: {e}"))?;
    let limit = Duration::from_millis((rise.max(fall) + 1) * interval_ms + 1400);
    converge(&relay, &backends, Duration::from_secs(10)).map_err(|e| format!("relay not ready: {e}"))?;

    // Cold baseline: the fewest fds over 200 ms (a health check may hold
    // one for a moment).
    let mut fd_cold = usize::MAX;
    for _ in 0..20 {
        fd_cold = fd_cold.min(relay.fds().map_err(|e| e.to_string())?);
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss_cold = relay.rss_kib().map_err(|e| e.to_string())?;
    // CPU over one idle second before any load, for comparison with the
    // second after it (health checks and the publish timer run in both).
    let c0 = relay.cpu_ticks().map_err(|e| format!("cpu: {e}"))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_ticks = relay.cpu_ticks().map_err(|e| format!("cpu: {e}"))? - c0;
    v.figure(format!("baseline: {fd_cold} fds, RSS {rss_cold} KiB, CPU {idle_ticks} tick(s) in an idle second"));

    // Sample RSS and fds all along.
    let peaks = Arc::new(Mutex::new(Peaks::default()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, sampling, pid) = (peaks.clone(), sampling.clone(), relay.pid);
        std::thread::spawn(move || {
            let probe = Relay::probe(pid);
            while sampling.load(Ordering::Relaxed) {
                if let (Ok(r), Ok(f)) = (probe.rss_kib(), probe.fds()) {
                    let mut p = peaks.lock().expect("peaks");
                    p.rss_kib = p.rss_kib.max(r);
                    p.fds = p.fds.max(f);
                    p.samples += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Warm-up: full load, no chaos.
    let mut total = LoadReport::default();
    let stop = Arc::new(AtomicBool::new(false));
    let h = run_load(listen, o.conns, rng.next_u64(), stop.clone());
    std::thread::sleep(Duration::from_secs(o.warmup));
    stop.store(true, Ordering::Relaxed);
    let warm = h.join().map_err(|_| "client thread panicked".to_string())?;
    v.figure(format!("warm-up: {} connections, {} completed", warm.opened, warm.count(None, End::Completed)));
    merge(&mut total, warm);

    // The soak: load plus chaos.
    let stop = Arc::new(AtomicBool::new(false));
    let h = run_load(listen, o.conns, rng.next_u64(), stop.clone());
    let t_soak = Instant::now();
    let (mut kills_rst, mut kills_fin, mut restarts) = (0u64, 0u64, 0u64);
    let mut conv_ok = 0u64;
    let mut conv_max = Duration::ZERO;
    let mut conv_fail: Vec<String> = Vec::new();
    let mut record = |what: String, r: Result<Duration, String>| match r {
        Ok(d) => {
            conv_ok += 1;
            conv_max = conv_max.max(d);
        }
        Err(e) => conv_fail.push(format!("after {what}: {e}")),
    };
    while t_soak.elapsed() < Duration::from_secs(o.duration) {
        let nap = Duration::from_millis(1000 + rng.next_u64() % 2000);
        std::thread::sleep(nap.min(Duration::from_secs(o.duration).saturating_sub(t_soak.elapsed())));
        if relay.exited().is_some() {
            break;
        }
        if t_soak.elapsed() >= Duration::from_secs(o.duration) {
            break;
        }
        let down: Vec<usize> = (0..3).filter(|&i| !backends.is_up(i)).collect();
        let up: Vec<usize> = (0..3).filter(|&i| backends.is_up(i)).collect();
        // At most two of three down at a time; restart about as often as kill.
        let what = if down.len() == 2 || (!down.is_empty() && rng.next_u64() & 1 == 0) {
            let i = down[(rng.next_u64() % down.len() as u64) as usize];
            backends.restart(i).map_err(|e| format!("restart backend {i}: {e}"))?;
            restarts += 1;
            format!("restart of {}", backends.addrs[i])
        } else {
            let i = up[(rng.next_u64() % up.len() as u64) as usize];
            let rst = (kills_rst + kills_fin) & 1 == 0;
            backends.kill(i, rst).map_err(|e| format!("kill backend {i}: {e}"))?;
            if rst {
                kills_rst += 1;
            } else {
                kills_fin += 1;
            }
            format!("kill of {}", backends.addrs[i])
        };
        record(what.clone(), converge(&relay, &backends, limit));
    }
    stop.store(true, Ordering::Relaxed);
    for i in 0..3 {
        if !backends.is_up(i) {
            backends.restart(i).map_err(|e| format!("restart backend {i}: {e}"))?;
            restarts += 1;
            record(format!("final restart of {}", backends.addrs[i]), converge(&relay, &backends, limit));
        }
    }
    let soak_report = h.join().map_err(|_| "client thread panicked".to_string())?;
    let (soak_opened, soak_avg) = (soak_report.opened, soak_report.avg_live);
    merge(&mut total, soak_report);
    let last_close = total.last_close.unwrap_or_else(Instant::now);

    // CPU from +1 s to +2 s after the last client closed (no stats
    // requests meanwhile: they would cost the relay CPU).
    let at = |d: u64| last_close + Duration::from_secs(d);
    std::thread::sleep(at(1).saturating_duration_since(Instant::now()));
    let c1 = relay.cpu_ticks().map_err(|e| format!("cpu: {e}"))?;
    std::thread::sleep(at(2).saturating_duration_since(Instant::now()));
    let c2 = relay.cpu_ticks().map_err(|e| format!("cpu: {e}"))?;
    let late = Instant::now().duration_since(at(2));

    // fds: back to the cold baseline plus the pool's spare pipes; no
    // connection left. Stats are published once a second per thread.
    let end = Instant::now() + Duration::from_secs(5);
    let (fd_end, spare, active, stats) = loop {
        let st = relay.stats().map_err(|e| format!("stats: {e}"))?;
        let spare = st.get("pipes_spare") as usize;
        let fds = relay.fds().map_err(|e| e.to_string())?;
        let active = st.get("connections_active");
        if (fds <= fd_cold + 2 * spare && active == 0) || Instant::now() > end {
            break (fds, spare, active, st);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rss_end = relay.rss_kib().map_err(|e| e.to_string())?;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let peaks = std::mem::take(&mut *peaks.lock().expect("peaks"));
    let log_before_stop = std::fs::read_to_string(&o.log).unwrap_or_default();
    let alive = relay.exited().is_none();
    let exit = if alive { relay.terminate(Duration::from_secs(5)) } else { relay.exited() };
    let log = std::fs::read_to_string(&o.log).unwrap_or_default();

    // ----- figures and checks -----
    v.figure(format!(
        "connections: {} opened ({} in the soak phase), {} live at most, {:.0} on average in the soak phase",
        total.opened, soak_opened, total.peak_live, soak_avg
    ));
    for k in KINDS {
        let ends: Vec<String> =
            [End::Completed, End::Truncated, End::Reset, End::Abandoned, End::ConnectFailed, End::Corrupt, End::Stuck]
                .iter()
                .filter_map(|&e| match total.count(Some(k), e) {
                    0 => None,
                    n => Some(format!("{e:?} {n}")),
                })
                .collect();
        v.figure(format!("  {k:?}: {}", ends.join(", ")));
    }
    let completed = total.count(None, End::Completed);
    let truncated = total.count(None, End::Truncated);
    v.figure(format!(
        "completed transfers {completed}, bytes verified {} ({} MiB); truncated {truncated} (correct prefixes, {} B)",
        total.bytes_verified,
        total.bytes_verified >> 20,
        total.prefix_bytes
    ));
    let killed = backends.stats.killed_conns.load(Ordering::Relaxed);
    v.figure(format!(
        "backends: {kills_rst} kills by RST, {kills_fin} by FIN, {restarts} restarts, {killed} connections cut, {} accepted",
        backends.stats.accepted.load(Ordering::Relaxed)
    ));
    v.figure(format!(
        "relay: connections_total {}, aborted {}, no_server {}, connect_retries {}, splice_fallbacks {}",
        stats.get("connections_total"),
        stats.get("aborted"),
        stats.get("no_server"),
        stats.get("connect_retries"),
        stats.get("splice_fallbacks")
    ));
    let netstat1 = relay_proc::tcp_ext();
    let mut deltas: Vec<String> = netstat1
        .iter()
        .map(|(k, v)| format!("{k} {}", v.saturating_sub(netstat0.get(k).copied().unwrap_or(0))))
        .collect();
    deltas.sort();
    v.figure(format!("kernel (whole namespace, during the run): {}", deltas.join(", ")));
    for p in &total.problems {
        v.figure(format!("problem: {p}"));
    }
    v.check(alive, "relay alive after the load (no crash)".into());
    let panics = log.lines().filter(|l| l.contains("panicked")).count();
    v.check(panics == 0, format!("log: {panics} line(s) with \"panicked\""));
    v.check(completed > 0, format!("some transfers completed ({completed})"));
    let corrupt = total.count(None, End::Corrupt);
    v.check(corrupt == 0, format!("checksum/byte failures: {corrupt}"));
    let stuck = total.count(None, End::Stuck);
    v.check(stuck == 0, format!("clients stuck (no progress for {:?}): {stuck}", clients::STUCK));
    v.check(
        conv_fail.is_empty(),
        format!(
            "checks converged to the true states: {conv_ok} times, at most {} ms (limit {} ms), {} failure(s) {:?}",
            conv_max.as_millis(),
            limit.as_millis(),
            conv_fail.len(),
            conv_fail
        ),
    );
    let ticks = c2.saturating_sub(c1);
    v.check(
        ticks <= 2 && late < Duration::from_millis(200),
        format!(
            "CPU from +1 s to +2 s after the last close: {ticks} tick(s) (≤ 2; measured {} ms late)",
            late.as_millis()
        ),
    );
    v.check(
        fd_end <= fd_cold + 2 * spare && active == 0,
        format!("fds: baseline {fd_cold}, end {fd_end} (allowed {fd_cold} + 2 × {spare} spare pipes), peak {}, connections_active {active}", peaks.fds),
    );
    let bound = rss_cold
        + (o.conns as u64 * (2 * o.bufsize as u64 + 8192)) / 1024
        + (o.threads as u64 * 64 * o.bufsize as u64) / 1024
        + 16 * 1024;
    v.check(
        peaks.rss_kib <= bound && rss_end <= bound,
        format!(
            "RSS: baseline {rss_cold} KiB, peak {} KiB, end {rss_end} KiB, bound {bound} KiB ({} samples)",
            peaks.rss_kib, peaks.samples
        ),
    );
    // At most two of three backends are ever down, so a server shown
    // DOWN more often than servers were killed, or a client turned away
    // for want of a server, is a check that failed on a live server.
    let downs = log_before_stop.lines().filter(|l| l.contains(" is DOWN: ")).count() as u64;
    let flaps: Vec<&str> = log_before_stop.lines().filter(|l| l.contains(" is DOWN: ")).collect();
    v.check(
        downs <= kills_rst + kills_fin && stats.get("no_server") == 0,
        format!(
            "no false DOWN: {downs} DOWN transitions for {} kills, {} clients turned away with no server up {:?}",
            kills_rst + kills_fin,
            stats.get("no_server"),
            flaps.iter().filter(|l| !l.contains("refused")).take(3).collect::<Vec<_>>()
        ),
    );
    // Aborts in the log.
    let mut aborts: HashMap<SocketAddr, u64> = HashMap::new();
    let mut not_delivered = 0u64;
    for l in log_before_stop.lines() {
        if l.contains("not delivered") {
            not_delivered += 1;
        }
        if let Some(a) = abort_client(l) {
            *aborts.entry(a).or_default() += 1;
        }
    }
    let mut resets: HashMap<SocketAddr, u64> = HashMap::new();
    for a in &total.resets {
        *resets.entry(*a).or_default() += 1;
    }
    let unlogged: Vec<String> = resets
        .iter()
        .filter(|(a, n)| aborts.get(a).copied().unwrap_or(0) < **n)
        .map(|(a, n)| format!("{a} reset {n}×, {} abort line(s)", aborts.get(a).copied().unwrap_or(0)))
        .collect();
    // A client that resets while its connection still waits in the
    // relay's accept queue (the queue overflowed and the handshake's last
    // ACK was dropped) is never seen by the relay: nothing to log. Those
    // are at most the connections opened that the relay never accepted.
    let unaccepted = total
        .opened
        .saturating_sub(total.count(None, End::ConnectFailed))
        .saturating_sub(stats.get("connections_total"));
    v.check(
        unlogged.len() as u64 <= unaccepted,
        format!(
            "client resets logged as aborts: {} resets, {} without a log line (≤ {unaccepted} never accepted) {:?}",
            total.resets.len(),
            unlogged.len(),
            &unlogged[..unlogged.len().min(5)]
        ),
    );
    v.check(
        not_delivered == stats.get("aborted"),
        format!("\"not delivered\" log lines {not_delivered} = aborted counter {}", stats.get("aborted")),
    );
    // A reset client's abort explains no cut transfer.
    let explained = killed + stats.get("aborted").saturating_sub(total.resets.len() as u64) + stats.get("no_server");
    v.check(
        truncated <= explained,
        format!("cut transfers {truncated} ≤ cut backend connections + other aborts + no-server closes {explained}"),
    );
    v.check(
        exit.is_some_and(|s| s.success()),
        format!("exit after SIGTERM: {}", exit.map(|s| s.to_string()).unwrap_or_else(|| "none within 5 s".into())),
    );
    v.figure(format!("log: {} ({} lines)", o.log.display(), log.lines().count()));
    v.figure(format!("wall time {:.1} s", t_start.elapsed().as_secs_f64()));
    Ok(v)
}
