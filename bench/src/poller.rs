//! `anypoll bench poller`: libevent's `bench.c` method.
//!
//! Each contender gets `n` non-blocking socketpairs in a ring and watches
//! the read end of each. A run writes one byte into `a` pairs spaced
//! evenly (`n / a` apart), sets the write budget to `w`, and runs the loop
//! until all `a + w` bytes have gone through: each callback reads what its
//! pair holds and forwards one byte per byte read to the next pair
//! (`(i + 1) % n`) while the budget lasts. Only the loop is timed; the seed
//! writes come before the clock starts, and every run ends with all pairs
//! drained (checked).
//!
//! * **Events** are the bytes that go through a pair: `a + w` per run.
//! * **Syscalls per event** are the run's syscalls (the `a` seed writes
//!   included) over its events. The floor is 2.0: one read and one write
//!   per byte, plus one wait per batch. anypoll's come from its
//!   [`Counters`](anypoll::Counters); everyone's, anypoll's too as a
//!   cross-check, from `strace -f -c` when it is installed: the marginal
//!   count `(calls(2w) - calls(w)) / (events(2w) - events(w))` of two child
//!   processes, in which set-up and start-up cancel out.
//! * The contenders run **interleaved**: run 1 of every contender, then run
//!   2 of every contender, …, the starting contender rotating each time, so
//!   machine noise hits all of them alike. Each has its own pairs and did one
//!   untimed warm-up run (which also absorbs anypoll's registrations).
//!
//! With `a = n` every pair holds a byte at the start; a callback that drains
//! its pair may then find a byte that arrived during the same batch, so
//! bytes gather and a run needs fewer waits (and syscalls) than `a + w`
//! hops would. Spaced chains (`n ≥ 2a`) never meet.

use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anypoll_backends::registry;

use super::report::{json_num, json_str, median};
use super::ring::{Budget, Contender, Guard, Ring, RunStats, Stopwatch, Workload, BUF, FILL, WAIT};
use super::setup::{ensure_nofile, select_backends};
use super::strace;
use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent};

/// Options of `anypoll bench poller`.
#[derive(Debug, Clone, clap::Args)]
pub struct PollerArgs {
    /// Socketpairs (n); a comma-separated list runs each in turn.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000", value_name = "N[,N…]")]
    pub fds: Vec<usize>,
    /// Chains seeded per run (a).
    #[arg(long, default_value_t = 100)]
    pub active: usize,
    /// Writes per run (w).
    #[arg(long, default_value_t = 1000)]
    pub writes: usize,
    /// Timed runs per contender (R); the median is reported.
    #[arg(long, default_value_t = 25)]
    pub runs: usize,
    /// anypoll backend(s): a name, a comma-separated list, or `all` (default:
    /// `--poller` if given, else all available here).
    #[arg(long, value_name = "NAME|all")]
    pub backend: Option<String>,
    /// Also run the Rust peers: polling (level, oneshot) and mio (edge).
    #[arg(long)]
    pub peers: bool,
    /// One JSON object per contender and n, one per line, instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw median µs per run against n, one line per contender, into FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Do not run the strace children, even if strace is installed.
    #[arg(long)]
    pub no_strace: bool,
    /// The clock of the µs figures: `wall` (libevent's) or `cpu`, the loop
    /// thread's CPU time, which leaves out the time the thread was
    /// preempted on a busy machine. Both are in the JSON.
    #[arg(long, value_enum, default_value_t = Clock::Wall)]
    pub clock: Clock,
}

/// Which clock times a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    /// Wall-clock time.
    Wall,
    /// The loop thread's CPU time (user and system).
    Cpu,
}

impl Clock {
    fn name(self) -> &'static str {
        match self {
            Clock::Wall => "wall",
            Clock::Cpu => "cpu",
        }
    }
}

/// Options of the hidden `anypoll bench poller-child`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// The contender's name, as the table shows it.
    #[arg(long)]
    pub contender: String,
    /// Socketpairs.
    #[arg(long)]
    pub fds: usize,
    /// Chains seeded per run.
    #[arg(long)]
    pub active: usize,
    /// Writes per run.
    #[arg(long)]
    pub writes: usize,
    /// Runs after the warm-up.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
}

/// Who competes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An anypoll event loop on this backend.
    Anypoll(&'static str),
    /// `polling`, level-triggered.
    PollingLevel,
    /// `polling`, oneshot, re-armed after each event.
    PollingOneshot,
    /// `mio`, edge-triggered.
    Mio,
}

const PEERS: [Kind; 3] = [Kind::PollingLevel, Kind::PollingOneshot, Kind::Mio];

impl Kind {
    pub fn name(self) -> String {
        match self {
            Kind::Anypoll(b) => format!("anypoll-{b}"),
            Kind::PollingLevel => "polling-level".into(),
            Kind::PollingOneshot => "polling-oneshot".into(),
            Kind::Mio => "mio-edge".into(),
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        if let Some(b) = s.strip_prefix("anypoll-") {
            return registry::backends().iter().find(|x| x.name == b).map(|x| Kind::Anypoll(x.name));
        }
        PEERS.into_iter().find(|k| k.name() == s)
    }

    fn is_peer(self) -> bool {
        !matches!(self, Kind::Anypoll(_))
    }

    /// Sets the contender up and makes its untimed warm-up run.
    fn setup(self, w: &Workload) -> io::Result<Box<dyn Contender>> {
        let mut c: Box<dyn Contender> = match self {
            Kind::Anypoll(b) => Box::new(Anypoll::new(b, w)?),
            Kind::PollingLevel => Box::new(super::peers::Polling::new(w, false)?),
            Kind::PollingOneshot => Box::new(super::peers::Polling::new(w, true)?),
            Kind::Mio => Box::new(super::peers::Mio::new(w)?),
        };
        c.run()?;
        Ok(c)
    }
}

/// The anypoll contender's handler: owner `i` is pair `i`.
struct RingHandler {
    next_tx: Vec<RawFd>,
    budget: Budget,
    buf: Box<[u8; BUF]>,
    error: Option<io::Error>,
}

impl Handler for RingHandler {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        // One recv: with the buffer bigger than what the pair holds, the
        // read is short, so the level strategy marks the fd drained without
        // the recv that would only return EAGAIN.
        match cx.recv(ev.fd, &mut self.buf[..]) {
            Io::Done(k) => {
                let f = self.budget.take(k);
                if f > 0 {
                    match cx.send(self.next_tx[ev.owner], &FILL[..f], false) {
                        Io::Done(m) if m == f => {}
                        Io::Done(m) => self.fail(io::Error::other(format!("short write ({m} of {f})"))),
                        Io::WouldBlock => self.fail(io::Error::other("write would block")),
                        Io::Closed => self.fail(io::Error::other("pair closed")),
                        Io::Error(e) => self.fail(e),
                    }
                }
            }
            Io::WouldBlock => {}
            Io::Closed => self.fail(io::Error::other(format!("pair {} closed", ev.owner))),
            Io::Error(e) => self.fail(e),
        }
    }
}

impl RingHandler {
    fn fail(&mut self, e: io::Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

/// An anypoll [`EventLoop`] on one backend.
struct Anypoll {
    el: EventLoop,
    h: RingHandler,
    ring: Ring,
    w: Workload,
}

impl Anypoll {
    fn new(backend: &str, w: &Workload) -> io::Result<Anypoll> {
        let b = registry::backends()
            .iter()
            .find(|b| b.name == backend)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no backend '{backend}'")))?;
        let mut el = EventLoop::new(b.create()?, None)?;
        let ring = Ring::new(w)?;
        for (i, rx) in ring.rx.iter().enumerate() {
            el.cx().register(rx, i, FdState::RECV_ACTIVE | FdState::STREAM)?;
        }
        let next_tx = (0..w.n).map(|i| ring.tx[ring.next(i)].as_raw_fd()).collect();
        let mut h = RingHandler { next_tx, budget: Budget::new(w), buf: Box::new([0; BUF]), error: None };
        // Registers everything with the kernel now, outside any run.
        el.run_once(&mut h, Some(Duration::ZERO))?;
        if let Some(fd) = ring.rx.iter().map(|s| s.as_raw_fd()).find(|&fd| el.cx().take_error(fd).is_some()) {
            return Err(io::Error::other(format!("the {backend} backend refused fd {fd}")));
        }
        Ok(Anypoll { el, h, ring, w: *w })
    }
}

impl Contender for Anypoll {
    fn run(&mut self) -> io::Result<RunStats> {
        self.h.budget = Budget::new(&self.w);
        let mut guard = Guard::new(&self.w);
        let before = *self.el.cx().counters();
        self.ring.seed()?;
        let clock = Stopwatch::start();
        while !self.h.budget.done() {
            self.el.run_once(&mut self.h, Some(WAIT))?;
            if let Some(e) = self.h.error.take() {
                return Err(e);
            }
            guard.waited(&self.h.budget)?;
        }
        let (elapsed, cpu) = clock.stop();
        let d = self.el.cx().counters().since(&before);
        self.ring.check_drained()?;
        Ok(RunStats {
            elapsed,
            cpu,
            events: self.h.budget.received,
            waits: d.waits,
            syscalls: Some(d.syscalls() + self.ring.seed_syscalls()),
        })
    }
}

/// One contender's figures at one n.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub name: String,
    pub peer: bool,
    pub w: Workload,
    /// The µs of each run on the chosen clock.
    pub times_us: Vec<f64>,
    /// The µs of each run on the other clock.
    pub other_us: Vec<f64>,
    pub clock: Clock,
    pub waits: Vec<f64>,
    pub events: u64,
    /// Counted by the contender itself (anypoll).
    pub syscalls: Option<u64>,
    pub strace: Option<Result<f64, String>>,
    /// Why it did not run, or why it stopped.
    pub problem: Option<String>,
    pub skipped: bool,
    /// Runs per turn: 1 when every contender's pairs fit in the fd limit.
    pub turn: usize,
}

impl Row {
    fn new(kind: Kind, w: &Workload, clock: Clock) -> Row {
        Row {
            other_us: Vec::new(),
            clock,
            name: kind.name(),
            peer: kind.is_peer(),
            w: *w,
            times_us: Vec::new(),
            waits: Vec::new(),
            events: 0,
            syscalls: Some(0).filter(|_| !kind.is_peer()),
            strace: None,
            problem: None,
            skipped: false,
            turn: 1,
        }
    }

    fn record(&mut self, s: &RunStats) {
        let (wall, cpu) = (s.elapsed.as_secs_f64() * 1e6, s.cpu.as_secs_f64() * 1e6);
        let (chosen, other) = match self.clock {
            Clock::Wall => (wall, cpu),
            Clock::Cpu => (cpu, wall),
        };
        self.times_us.push(chosen);
        self.other_us.push(other);
        self.waits.push(s.waits as f64);
        self.events += s.events;
        self.syscalls = match (self.syscalls, s.syscalls) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    fn ok(&self) -> bool {
        self.problem.is_none() && !self.times_us.is_empty()
    }

    pub fn median_us(&self) -> Option<f64> {
        Some(median(&mut self.times_us.clone())).filter(|_| self.ok())
    }

    /// The median on the other clock.
    fn other_median_us(&self) -> Option<f64> {
        Some(median(&mut self.other_us.clone())).filter(|_| self.ok())
    }

    fn min_us(&self) -> Option<f64> {
        self.times_us.iter().copied().reduce(f64::min).filter(|_| self.ok())
    }

    fn max_us(&self) -> Option<f64> {
        self.times_us.iter().copied().reduce(f64::max).filter(|_| self.ok())
    }

    fn waits_per_run(&self) -> Option<f64> {
        Some(median(&mut self.waits.clone())).filter(|_| self.ok())
    }

    fn counted_per_event(&self) -> Option<f64> {
        let s = self.syscalls?;
        (self.ok() && self.events > 0).then(|| s as f64 / self.events as f64)
    }

    fn strace_per_event(&self) -> Option<f64> {
        self.strace.as_ref().and_then(|r| r.as_ref().ok().copied())
    }

    /// The headline figure: the counters for anypoll, strace for the peers.
    pub fn syscalls_per_event(&self) -> (Option<f64>, &'static str) {
        match self.counted_per_event() {
            Some(v) => (Some(v), "counters"),
            None => match self.strace_per_event() {
                Some(v) => (Some(v), "strace"),
                None => (None, "n/a"),
            },
        }
    }
}

/// The contenders that the options name.
fn contenders(args: &PollerArgs, poller_flag: Option<&str>) -> Result<Vec<Kind>, String> {
    let spec = args.backend.as_deref().or(poller_flag).unwrap_or("all");
    let mut kinds: Vec<Kind> = select_backends(spec)?.into_iter().map(Kind::Anypoll).collect();
    if args.peers {
        kinds.extend(PEERS);
    }
    Ok(kinds)
}

/// Measures every contender at one n, interleaved.
///
/// Each contender holds 2n fds. When RLIMIT_NOFILE (raised as far as this
/// process may) lets all of them live at once, they take turns of one run
/// each. Otherwise they live one at a time and take turns of `runs / 5`
/// runs (rounded up), each turn with its own set-up and warm-up run, so the
/// noise is still spread over the contenders in five rounds.
fn measure(kinds: &[Kind], w: &Workload, runs: usize, clock: Clock) -> Vec<Row> {
    let mut rows: Vec<Row> = kinds.iter().map(|k| Row::new(*k, w, clock)).collect();
    let per = 2 * w.n as u64 + 16;
    let needed = per * kinds.len() as u64 + 256;
    let eager = ensure_nofile(needed) >= needed;
    let turn = if eager { 1 } else { runs.div_ceil(5) };
    if !eager {
        log::info!("n={}: RLIMIT_NOFILE is below {needed}: one contender at a time, turns of {turn} runs", w.n);
    }
    let mut live: Vec<Option<Box<dyn Contender>>> = kinds.iter().map(|_| None).collect();
    let setup = |i: usize, rows: &mut [Row], live: &mut [Option<Box<dyn Contender>>]| match kinds[i].setup(w) {
        Ok(c) => live[i] = Some(c),
        Err(e) => {
            rows[i].problem = Some(format!("skipped: {e}"));
            rows[i].skipped = true;
        }
    };
    if eager {
        // Backends with an fd limit (select) first, so they get low fd numbers.
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        order.sort_by_key(|&i| !matches!(kinds[i], Kind::Anypoll(b) if b == "select"));
        for i in order {
            setup(i, &mut rows, &mut live);
        }
    }
    for round in 0..runs.div_ceil(turn) {
        for j in 0..kinds.len() {
            let i = (round + j) % kinds.len();
            if rows[i].problem.is_some() {
                continue;
            }
            if !eager {
                setup(i, &mut rows, &mut live);
            }
            while let Some(c) = live[i].as_mut() {
                let done = rows[i].times_us.len();
                if done >= runs || done >= (round + 1) * turn {
                    break;
                }
                match c.run() {
                    Ok(s) if s.events == w.events() => rows[i].record(&s),
                    Ok(s) => rows[i].problem = Some(format!("failed: {} events instead of {}", s.events, w.events())),
                    Err(e) => rows[i].problem = Some(format!("failed in run {}: {e}", done + 1)),
                }
                if rows[i].problem.is_some() {
                    live[i] = None;
                }
            }
            if !eager {
                live[i] = None;
            }
            rows[i].turn = turn;
        }
        log::info!("n={}: round {}/{} done", w.n, round + 1, runs.div_ceil(turn));
    }
    rows
}

/// The strace figure of one contender: the marginal syscalls per event
/// between a child that writes `w` per run and one that writes more.
fn strace_figure(tool: &std::path::Path, kind: Kind, w: &Workload) -> Result<f64, String> {
    const CHILD_RUNS: usize = 2;
    let w2 = w.writes + w.writes.max(10 * w.active);
    let count = |writes: usize| {
        let args: Vec<String> = [
            "bench",
            "poller-child",
            "--contender",
            &kind.name(),
            "--fds",
            &w.n.to_string(),
            "--active",
            &w.active.to_string(),
            "--writes",
            &writes.to_string(),
            "--runs",
            &CHILD_RUNS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        strace::count(tool, &args, Duration::from_secs(300)).map_err(|e| e.to_string())
    };
    let c1 = count(w.writes)?;
    let c2 = count(w2)?;
    // Warm-up and timed runs alike do the work.
    let events = ((CHILD_RUNS + 1) * (w2 - w.writes)) as f64;
    Ok((c2.total as f64 - c1.total as f64) / events)
}

/// `anypoll bench poller-child`: one contender, a warm-up and `runs` runs.
pub fn run_child(args: &ChildArgs) -> ExitCode {
    let Some(kind) = Kind::parse(&args.contender) else {
        eprintln!("anypoll: unknown contender '{}'", args.contender);
        return ExitCode::from(2);
    };
    let w = Workload { n: args.fds, active: args.active, writes: args.writes };
    if let Err(e) = w.validate() {
        eprintln!("anypoll: {e}");
        return ExitCode::from(2);
    }
    ensure_nofile(2 * w.n as u64 + 256);
    let result = kind.setup(&w).and_then(|mut c| {
        let mut events = 0;
        for _ in 0..args.runs {
            events += c.run()?.events;
        }
        Ok(events)
    });
    match result {
        Ok(events) => {
            println!("{} events={events}", kind.name());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("anypoll: {}: {e}", kind.name());
            ExitCode::from(1)
        }
    }
}

/// `anypoll bench poller`.
pub fn run(args: &PollerArgs, poller_flag: Option<&str>) -> ExitCode {
    let kinds = match contenders(args, poller_flag) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("anypoll: {e}");
            return ExitCode::from(2);
        }
    };
    if args.runs == 0 || args.fds.is_empty() {
        eprintln!("anypoll: --runs and --fds must not be empty or 0");
        return ExitCode::from(2);
    }
    for &n in &args.fds {
        if let Err(e) = (Workload { n, active: args.active, writes: args.writes }).validate() {
            eprintln!("anypoll: {e}");
            return ExitCode::from(2);
        }
    }
    let tool = if args.no_strace { None } else { strace::find() };
    let mut all = Vec::new();
    for &n in &args.fds {
        let w = Workload { n, active: args.active, writes: args.writes };
        let mut rows = measure(&kinds, &w, args.runs, args.clock);
        if let Some(tool) = &tool {
            for (row, kind) in rows.iter_mut().zip(&kinds) {
                if row.ok() {
                    row.strace = Some(strace_figure(tool, *kind, &w));
                }
            }
        }
        if args.json {
            print_json(&rows);
        }
        all.push(rows);
    }
    if !args.json {
        let note = match (&tool, args.no_strace) {
            (_, true) => " (not run: --no-strace)",
            (None, false) => " (strace not found: n/a)",
            (Some(_), false) => "",
        };
        print_table(&all, note, args.runs, args.clock);
    }
    if let Some(path) = &args.plot {
        let svg = super::svg::plot(&series(&all), &args.fds);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("anypoll: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if all.iter().flatten().any(|r| r.problem.is_some() && !r.skipped) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The median µs against n of each contender, in first-seen order: what
/// `--plot` draws (one `Vec<Row>` per n in `all`).
fn series(all: &[Vec<Row>]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for rows in all {
        for r in rows {
            let Some(m) = r.median_us() else { continue };
            let p = (r.w.n as f64, m);
            match series.iter_mut().find(|(n, _)| *n == r.name) {
                Some((_, pts)) => pts.push(p),
                None => series.push((r.name.clone(), vec![p])),
            }
        }
    }
    series
}

/// The best peer's median at this n, if any peer ran.
fn best_peer(rows: &[Row]) -> Option<f64> {
    rows.iter().filter(|r| r.peer).filter_map(Row::median_us).reduce(f64::min)
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "n/a".to_string(),
    }
}

fn print_table(all: &[Vec<Row>], strace_note: &str, runs: usize, clock: Clock) {
    println!(
        "{:<16} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>9} {:>15} {:>13} {:>12}",
        "contender",
        "n",
        "active",
        "writes",
        "median_us",
        "min_us",
        "max_us",
        "waits/run",
        "syscalls/event",
        "strace/event",
        "vs best peer"
    );
    for rows in all {
        let best = best_peer(rows);
        for r in rows {
            if let Some(p) = &r.problem {
                println!("{:<16} {:>6} {:>6} {:>6} {p}", r.name, r.w.n, r.w.active, r.w.writes);
                continue;
            }
            let (spe, src) = r.syscalls_per_event();
            let spe = match spe {
                Some(v) => format!("{v:.3} {}", if src == "counters" { "(c)" } else { "(s)" }),
                None => "n/a".to_string(),
            };
            let st = match &r.strace {
                Some(Ok(v)) => format!("{v:.3}"),
                Some(Err(_)) => "error".to_string(),
                None => "n/a".to_string(),
            };
            let vs = match (r.peer, r.median_us(), best) {
                (false, Some(m), Some(b)) => format!("{:.3}x", m / b),
                _ => String::new(),
            };
            println!(
                "{:<16} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>9} {:>15} {:>13} {:>12}",
                r.name,
                r.w.n,
                r.w.active,
                r.w.writes,
                fmt_opt(r.median_us(), 1),
                fmt_opt(r.min_us(), 1),
                fmt_opt(r.max_us(), 1),
                fmt_opt(r.waits_per_run(), 0),
                spe,
                st,
                vs
            );
        }
    }
    println!(
        "{runs} interleaved runs per contender; µs on the {} clock. syscalls/event: (c) anypoll's counters, (s) strace; strace/event: \
         marginal count under strace -f -c{}. vs best peer: median over the fastest peer's median.",
        clock.name(),
        strace_note
    );
    for rows in all {
        if let Some(r) = rows.iter().find(|r| r.turn > 1) {
            println!(
                "note: n={}: the fd limit holds one contender's pairs at a time; they took turns of {} runs, \
                 each turn with its own set-up and warm-up run.",
                r.w.n, r.turn
            );
        }
    }
    if all.iter().flatten().any(|r| r.w.n < 2 * r.w.active) {
        println!(
            "note: where n < 2 x active, chains meet: a callback that drains its pair also takes a byte that \
             arrived in the same batch, so bytes gather and a run needs fewer waits and syscalls."
        );
    }
    for r in all.iter().flatten() {
        if let Some(Err(e)) = &r.strace {
            println!("strace for {} at n={}: {e}", r.name, r.w.n);
        }
    }
}

fn print_json(rows: &[Row]) {
    let best = best_peer(rows);
    for r in rows {
        let (spe, src) = r.syscalls_per_event();
        let mut line = String::new();
        let _ = write!(
            line,
            "{{\"contender\":{},\"n\":{},\"active\":{},\"writes\":{},\"runs\":{},\"clock\":{},\"median_us\":{},\"median_wall_us\":{},\"median_cpu_us\":{},\"min_us\":{},\"max_us\":{},\
             \"runs_per_turn\":{},\"waits_per_run\":{},\"syscalls_per_event\":{},\"syscalls_source\":{},\"strace_syscalls_per_event\":{},\
             \"vs_best_peer\":{}",
            json_str(&r.name),
            r.w.n,
            r.w.active,
            r.w.writes,
            r.times_us.len(),
            json_str(r.clock.name()),
            json_num(r.median_us(), 2),
            json_num(if r.clock == Clock::Wall { r.median_us() } else { r.other_median_us() }, 2),
            json_num(if r.clock == Clock::Cpu { r.median_us() } else { r.other_median_us() }, 2),
            json_num(r.min_us(), 2),
            json_num(r.max_us(), 2),
            r.turn,
            json_num(r.waits_per_run(), 1),
            json_num(spe, 4),
            if spe.is_some() { json_str(src) } else { "null".into() },
            json_num(r.strace_per_event(), 4),
            json_num(if r.peer { None } else { r.median_us().zip(best).map(|(m, b)| m / b) }, 4),
        );
        if let Some(p) = &r.problem {
            let _ = write!(line, ",\"error\":{}", json_str(p));
        }
        line.push('}');
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tiny_run_on_poll_fires_every_event_near_the_floor() {
        let w = Workload { n: 10, active: 2, writes: 20 };
        let rows = measure(&[Kind::Anypoll("poll")], &w, 1, Clock::Wall);
        let r = &rows[0];
        assert!(r.problem.is_none(), "{:?}", r.problem);
        assert_eq!(r.events, 22);
        let (spe, src) = r.syscalls_per_event();
        let spe = spe.unwrap();
        assert_eq!(src, "counters");
        // One read and one write per byte, one wait per hop (11 hops).
        assert!(spe.is_finite() && spe >= 2.0, "{spe}");
        assert!(spe <= 3.0, "{spe}");
    }

    #[test]
    fn peers_run_the_same_workload() {
        let w = Workload { n: 8, active: 2, writes: 30 };
        for kind in PEERS {
            let mut c = kind.setup(&w).unwrap();
            let s = c.run().unwrap();
            assert_eq!(s.events, 32, "{}", kind.name());
            assert!(s.waits >= 1);
        }
    }

    #[test]
    fn contender_names_round_trip() {
        for k in [Kind::Anypoll("epoll"), Kind::Anypoll("poll"), Kind::PollingLevel, Kind::PollingOneshot, Kind::Mio] {
            assert_eq!(Kind::parse(&k.name()), Some(k));
        }
        assert_eq!(Kind::parse("anypoll-nope"), None);
    }

    #[test]
    fn a_backend_that_cannot_watch_the_fds_is_skipped_not_failed() {
        let w = Workload { n: 700, active: 7, writes: 7 };
        let rows = measure(&[Kind::Anypoll("select")], &w, 1, Clock::Cpu);
        if let Some(p) = &rows[0].problem {
            assert!(rows[0].skipped && p.contains("select"), "{p}");
        }
    }
}
