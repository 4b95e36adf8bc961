//! `anypoll bench`: measurements, not timed tests.
//!
//! * [`poller`]: libevent's `bench.c` method over every anypoll backend and,
//!   with `--peers`, the Rust crates `polling` and `mio`, interleaved in one
//!   process run: µs per run and syscalls per event.
//! * [`idle`]: the syscalls an idle loop makes between timer expiries.
//!
//! Syscall counts come from the loop's [`Counters`](anypoll::Counters) for
//! anypoll and from `strace -c` (when it is installed) for everyone: the
//! command re-runs itself under strace through hidden `*-child` subcommands.

use std::process::ExitCode;

use clap::Subcommand;

pub mod idle;
mod peers;
pub mod poller;
mod ring;
mod strace;
pub mod stream;
mod svg;

/// Options of `anypoll bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// libevent's bench.c: n socketpairs, a active chains, w writes; µs per run and syscalls per event.
    Poller(poller::PollerArgs),
    /// An idle loop with a periodic timer: syscalls between expiries, apart from the wait.
    Idle(idle::IdleArgs),
    /// A bulk loopback transfer through one stream: bytes per CPU-second, syscalls per MiB, splice on and off.
    Stream(stream::StreamArgs),
    /// Internal: one poller contender in a child process, for strace.
    #[command(hide = true)]
    PollerChild(poller::ChildArgs),
    /// Internal: one idle loop in a child process, for strace.
    #[command(hide = true)]
    IdleChild(idle::ChildArgs),
}

/// Runs `anypoll bench …`. `poller_flag` is the global `--poller`, used as
/// the backend when the benchmark's own `--backend` is not given.
pub fn run(args: &BenchArgs, poller_flag: Option<&str>) -> ExitCode {
    match &args.command {
        BenchCommand::Poller(a) => poller::run(a, poller_flag),
        BenchCommand::Idle(a) => idle::run(a, poller_flag),
        BenchCommand::Stream(a) => stream::run(a, poller_flag),
        BenchCommand::PollerChild(a) => poller::run_child(a),
        BenchCommand::IdleChild(a) => idle::run_child(a),
    }
}

/// The anypoll backends that `--backend VALUE` names: `all` (every backend
/// that is built here and passes its test) or a comma-separated list.
fn select_backends(value: &str) -> Result<Vec<&'static str>, String> {
    use anypoll_backends::registry::{self, Probe};
    let available: Vec<&'static str> = registry::available().iter().map(|b| b.name).collect();
    if value == "all" {
        return Ok(available);
    }
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(b) = registry::backends().iter().find(|b| b.name == name) else {
            return Err(format!("unknown backend '{name}'; available here: {}", available.join(", ")));
        };
        match b.test() {
            Probe::Ok(_) => out.push(b.name),
            Probe::Failed(e) => return Err(format!("backend '{name}' does not work here: {e}")),
            Probe::NotBuilt => {
                return Err(format!("backend '{name}' is not built here; available here: {}", available.join(", ")))
            }
        }
    }
    if out.is_empty() {
        return Err("no backend given".to_string());
    }
    Ok(out)
}

/// Makes sure this process may open `needed` fds: raises the soft
/// RLIMIT_NOFILE up to the hard one, and the hard one too where the process
/// is allowed to. Returns the limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, i64 on some BSDs
fn ensure_nofile(needed: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let cur = lim.rlim_cur as u64;
    if cur >= needed {
        return cur;
    }
    let max = lim.rlim_max as u64;
    if max < needed {
        // Only a privileged process may raise the hard limit; try, then fall back.
        let want = libc::rlimit { rlim_cur: needed as libc::rlim_t, rlim_max: needed as libc::rlim_t };
        // SAFETY: `want` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return needed;
        }
    }
    let want = libc::rlimit { rlim_cur: max.min(needed) as libc::rlim_t, rlim_max: lim.rlim_max };
    // SAFETY: `want` is a valid rlimit, its soft value within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        max.min(needed)
    } else {
        cur
    }
}

/// A string as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number as JSON (`null` when absent or not finite).
fn json_num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".to_string(),
    }
}

/// The median of `v` (sorted in place); NaN when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_json() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_num(None, 2), "null");
        assert_eq!(json_num(Some(f64::NAN), 2), "null");
        assert_eq!(json_num(Some(1.234), 2), "1.23");
    }

    #[test]
    fn backend_selection_errors_name_the_backend() {
        assert!(select_backends("all").unwrap().contains(&"poll"));
        assert_eq!(select_backends("poll").unwrap(), vec!["poll"]);
        let e = select_backends("nope").unwrap_err();
        assert!(e.contains("'nope'") && e.contains("available here"), "{e}");
    }
}
