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
mod report;
mod ring;
mod setup;
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
