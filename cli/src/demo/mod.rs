//! `anypoll demo`: the relay on real traffic, on every available backend,
//! with nothing outside the process.
//!
//! The demo starts three backend servers in threads of its own (an echo
//! server that also answers `GET /health`), then, for each available poller
//! and each splice setting (`auto`, `never`), a relay in front of them with
//! HTTP health checks every 100 ms (rise 2, fall 2). Each row runs:
//!
//! 1. **ping-pong**: `--clients` connections, each doing request/response
//!    round trips (16–1024 bytes, a new deterministic payload each time) for
//!    `--ping-seconds`; every reply's checksum is compared with the request's.
//!    The relay's syscall counters are read just before and just after, so
//!    "syscalls/req" covers this part only.
//! 2. **bulk**: two connections that each send `--bulk-mib / 2` MiB of a
//!    deterministic stream through the relay to the echo server and read it
//!    back at the same time; the checksum and the byte count of what came
//!    back must match what went out. "MiB/s" is bytes each way over the time
//!    of this part.
//! 3. **health** (on the first row of each backend, splice `auto`): one
//!    server is killed (its listener closed, so connects are refused). The
//!    relay must mark it DOWN within 5 s, new connections must still go
//!    through the other two, then the server is restarted on the same port
//!    and the relay must mark it UP within 5 s and send it traffic again. On
//!    the `never` rows the column says `n/a`: the checks go through the same
//!    poller code whatever the splice setting.
//!
//! "checks" counts the checks of the row that passed: the ping-pong
//! checksums, the bulk checksums, the two health transitions (when
//! exercised), and a clean relay (no aborted stream, a clean stop). A row
//! with a failed check prints `FAIL` and the reason; the demo then exits
//! with status 1. Progress goes to stderr, the table to stdout.
//!
//! The checksum is FNV-1a taken over 64-bit little-endian words (the tail
//! zero-padded, the length mixed in last): any change to one word always
//! changes it, and it is fast enough not to slow the clients down.

mod checksum;
mod client;
mod report;
mod row;
mod server;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anypoll_backends::registry;

use anypoll::stream::SpliceMode;

use report::Progress;
use row::{run_row, Plan};
use server::Farm;

/// Options of `anypoll demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// A short run (CI): 0.25 s of ping-pong and 4 MiB of bulk per row.
    #[arg(long)]
    pub quick: bool,
    /// Seconds of ping-pong per row [default: 1, or 0.25 with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub ping_seconds: Option<f64>,
    /// Ping-pong clients, one connection each.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// MiB sent each way per row in the bulk part, over two connections [default: 32, or 4 with --quick].
    #[arg(long, value_name = "MIB")]
    pub bulk_mib: Option<u64>,
}

impl DemoArgs {
    fn ping_time(&self) -> Duration {
        let s = self.ping_seconds.unwrap_or(if self.quick { 0.25 } else { 1.0 });
        Duration::from_secs_f64(s.clamp(0.01, 30.0))
    }

    fn bulk_bytes(&self) -> u64 {
        let mib = self.bulk_mib.unwrap_or(if self.quick { 4 } else { 32 }).clamp(1, 4096);
        mib << 20
    }
}

/// Longest wait for any socket operation of a client or a server.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Servers behind the relay.
const SERVERS: usize = 3;

/// Runs the demo; with `--poller` (or `ANYPOLL_POLLER`), on that backend only.
pub fn run(args: &DemoArgs, poller: Option<&str>) -> ExitCode {
    let progress = Progress { start: Instant::now() };
    let env = std::env::var(registry::ENV).ok().filter(|v| !v.is_empty());
    let named = poller.map(|n| (n.to_string(), registry::Source::Flag)).or(env.map(|n| (n, registry::Source::Env)));
    let chosen: Vec<&'static str> = match named {
        Some((name, source)) => match registry::create(&name, source) {
            Ok(_) => registry::backends().iter().filter(|b| b.name == name).map(|b| b.name).collect(),
            Err(e) => {
                eprintln!("anypoll: {e}");
                return ExitCode::from(2);
            }
        },
        None => registry::available().iter().map(|b| b.name).collect(),
    };
    let plan = Plan { ping: args.ping_time(), clients: args.clients.max(1), bulk: args.bulk_bytes(), health: false };
    let splices: &[SpliceMode] =
        if SpliceMode::PLATFORM_HAS_SPLICE { &[SpliceMode::Auto, SpliceMode::Never] } else { &[SpliceMode::Never] };
    report::banner(&plan);
    let mut farm = match Farm::start(SERVERS) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("anypoll demo: cannot start the servers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<String> = farm.addrs.iter().map(|a| a.to_string()).collect();
    progress.say(&format!("servers on {}; backends: {}", names.join(", "), chosen.join(", ")));
    let mut rows = Vec::new();
    for (b, backend) in chosen.iter().enumerate() {
        for (s, &splice) in splices.iter().enumerate() {
            let plan = Plan { health: s == 0, ..plan };
            let seed = ((b as u64) << 8 | s as u64).wrapping_mul(0x9e37_79b9) ^ 0x5eed;
            rows.push(run_row(&mut farm, backend, splice, &plan, seed, &progress));
        }
    }
    let all_ok = report::table(&rows);
    let secs = progress.start.elapsed().as_secs_f64();
    if all_ok {
        println!("all {} rows OK in {secs:.1} s", rows.len());
        ExitCode::SUCCESS
    } else {
        println!("FAIL after {secs:.1} s");
        ExitCode::FAILURE
    }
}
