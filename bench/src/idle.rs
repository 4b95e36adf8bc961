//! `anypoll bench idle`: an idle loop with a periodic timer must make no
//! syscall between timer expiries apart from the wait itself.
//!
//! Each backend runs a loop with nothing registered and one timer that
//! re-arms itself every `--period-ms` for `--duration-ms`. The loop's
//! counters give the syscalls and the waits; under `strace -f -c` (when it
//! is installed) two children of different durations give the marginal
//! syscalls per expiry, split into the wait syscall and everything else.

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anypoll_backends::registry;

use super::report::{json_num, json_str};
use super::setup::select_backends;
use super::strace;
use anypoll::{Counters, Ctx, EventLoop, Handler, IoEvent, TimerId};

/// The syscalls that are a backend's wait.
const WAIT_SYSCALLS: [&str; 10] = [
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "_newselect",
    "kevent",
    "port_getn",
];

/// Options of `anypoll bench idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// anypoll backend(s): a name, a comma-separated list, or `all` (default:
    /// `--poller` if given, else all available here).
    #[arg(long, value_name = "NAME|all")]
    pub backend: Option<String>,
    /// The timer's period.
    #[arg(long, default_value_t = 10)]
    pub period_ms: u64,
    /// How long the loop runs.
    #[arg(long, default_value_t = 200)]
    pub duration_ms: u64,
    /// One JSON object per backend, one per line, instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Do not run the strace children, even if strace is installed.
    #[arg(long)]
    pub no_strace: bool,
}

/// Options of the hidden `anypoll bench idle-child`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// The backend.
    #[arg(long)]
    pub backend: String,
    /// The timer's period.
    #[arg(long)]
    pub period_ms: u64,
    /// How long the loop runs.
    #[arg(long)]
    pub duration_ms: u64,
}

struct Ticker {
    period: Duration,
    end: Instant,
}

impl Handler for Ticker {
    fn io(&mut self, _cx: &mut Ctx, _ev: IoEvent) {}

    fn timer(&mut self, cx: &mut Ctx, _id: TimerId, _data: u64) {
        if cx.now() >= self.end {
            cx.stop();
        } else {
            cx.add_timer(self.period, 0);
        }
    }
}

/// Runs an idle loop on `backend` and returns its counters.
pub(crate) fn idle_loop(backend: &str, period: Duration, duration: Duration) -> io::Result<Counters> {
    let b = registry::backends()
        .iter()
        .find(|b| b.name == backend)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no backend '{backend}'")))?;
    let mut el = EventLoop::new(b.create()?, None)?;
    let start = Instant::now();
    let mut h = Ticker { period, end: start + duration };
    el.cx().add_timer(period, 0);
    let hard_end = start + duration + Duration::from_secs(5);
    let max_iterations = 4 * (duration.as_nanos() / period.as_nanos().max(1)) as u64 + 100;
    while !el.cx().is_stopping() {
        el.run_once(&mut h, Some(Duration::from_secs(1)))?;
        let c = el.cx().counters();
        if c.iterations > max_iterations || Instant::now() > hard_end {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("the idle loop did not stop: {c}")));
        }
    }
    Ok(*el.cx().counters())
}

/// `anypoll bench idle-child`.
pub fn run_child(args: &ChildArgs) -> ExitCode {
    match idle_loop(&args.backend, Duration::from_millis(args.period_ms), Duration::from_millis(args.duration_ms)) {
        Ok(c) => {
            println!("{c}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("anypoll: {e}");
            ExitCode::from(1)
        }
    }
}

/// Under strace: (wait syscalls, other syscalls) per expiry, marginal
/// between a run of `duration` and one of twice that.
fn strace_figure(
    tool: &std::path::Path,
    backend: &str,
    period_ms: u64,
    duration_ms: u64,
) -> Result<(f64, f64), String> {
    let count = |d: u64| {
        let args: Vec<String> = [
            "bench",
            "idle-child",
            "--backend",
            backend,
            "--period-ms",
            &period_ms.to_string(),
            "--duration-ms",
            &d.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        strace::count(tool, &args, Duration::from_millis(2 * d) + Duration::from_secs(60)).map_err(|e| e.to_string())
    };
    let c1 = count(duration_ms)?;
    let c2 = count(2 * duration_ms)?;
    // The children print their counters: `… timers=N`.
    let timers = |c: &strace::Counts| -> Result<u64, String> {
        c.stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("timers=")?.parse().ok())
            .ok_or_else(|| format!("no timer count in the child's output: {:?}", c.stdout))
    };
    let expiries = (timers(&c2)? as f64 - timers(&c1)? as f64).max(1.0);
    let waits = c2.sum_of(&WAIT_SYSCALLS) as f64 - c1.sum_of(&WAIT_SYSCALLS) as f64;
    let other = (c2.total as f64 - c1.total as f64) - waits;
    Ok((waits / expiries, other / expiries))
}

/// `anypoll bench idle`.
pub fn run(args: &IdleArgs, poller_flag: Option<&str>) -> ExitCode {
    let spec = args.backend.as_deref().or(poller_flag).unwrap_or("all");
    let backends = match select_backends(spec) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("anypoll: {e}");
            return ExitCode::from(2);
        }
    };
    if args.period_ms == 0 || args.duration_ms < args.period_ms {
        eprintln!("anypoll: --period-ms must be at least 1 and --duration-ms at least the period");
        return ExitCode::from(2);
    }
    let tool = if args.no_strace { None } else { strace::find() };
    let (period, duration) = (Duration::from_millis(args.period_ms), Duration::from_millis(args.duration_ms));
    let mut failed = false;
    if !args.json {
        println!(
            "{:<8} {:>8} {:>6} {:>9} {:>14} {:>16} {:>17}",
            "backend", "expiries", "waits", "syscalls", "other syscalls", "strace waits/exp", "strace other/exp"
        );
    }
    for b in backends {
        let counted = idle_loop(b, period, duration);
        let st = tool.as_ref().map(|t| strace_figure(t, b, args.period_ms, args.duration_ms));
        let (sw, so) = match &st {
            Some(Ok((w, o))) => (Some(*w), Some(*o)),
            _ => (None, None),
        };
        match counted {
            Ok(c) => {
                let other = c.syscalls() - c.waits;
                if args.json {
                    println!(
                        "{{\"backend\":{},\"period_ms\":{},\"duration_ms\":{},\"expiries\":{},\"waits\":{},\"syscalls\":{},\
                         \"other_syscalls\":{other},\"strace_waits_per_expiry\":{},\"strace_other_per_expiry\":{}}}",
                        json_str(b),
                        args.period_ms,
                        args.duration_ms,
                        c.timers,
                        c.waits,
                        c.syscalls(),
                        json_num(sw, 3),
                        json_num(so, 3)
                    );
                } else {
                    let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
                    println!(
                        "{:<8} {:>8} {:>6} {:>9} {:>14} {:>16} {:>17}",
                        b,
                        c.timers,
                        c.waits,
                        c.syscalls(),
                        other,
                        f(sw),
                        f(so)
                    );
                }
                if let Some(Err(e)) = &st {
                    eprintln!("anypoll: strace for {b}: {e}");
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("anypoll: {b}: {e}");
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_loop_makes_no_syscall_but_the_wait() {
        for b in registry::available() {
            let c = idle_loop(b.name, Duration::from_millis(5), Duration::from_millis(50)).unwrap();
            assert_eq!(c.syscalls(), c.waits, "{}: {c}", b.name);
            assert!(c.timers >= 5, "{}: {c}", b.name);
            // One wait per expiry (plus the first), never a busy wait.
            assert!(c.waits <= c.timers + 2, "{}: {c}", b.name);
        }
    }
}
