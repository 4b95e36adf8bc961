//! `anypoll relay`: the command around [`anypoll_relay`]: the settings
//! from the command line, the panic policy, the start-up line, the exit
//! status.

use std::io;
use std::process::ExitCode;

use anypoll_backends::registry;
use anypoll_relay::config::{RelayArgs, RelayConfig};
use anypoll_relay::start;

/// A panic in any relay thread ends the process with status 70
/// (EX_SOFTWARE), after the usual panic message and an error log line.
/// Without this, a panic would end only its thread: if that were thread 0,
/// nothing would answer signals, run the checks or serve the stats any
/// more, while the other threads went on relaying: a half-dead daemon that
/// a supervisor cannot see. Only the command sets this hook; a program that
/// embeds the relay with [`anypoll_relay::start`] keeps its own panic policy.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        log::error!("{}: panic, exiting: {info}", std::thread::current().name().unwrap_or("relay"));
        std::process::exit(70);
    }));
}

/// `anypoll relay`: runs until SIGTERM/SIGINT and the grace period.
pub fn main(args: &RelayArgs, poller: Option<&str>) -> ExitCode {
    let cfg = match RelayConfig::from_args(args, poller) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("anypoll relay: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(name) = &cfg.poller {
        if let Err(e) = registry::create(name, registry::Source::Flag) {
            eprintln!("anypoll relay: {e}");
            return ExitCode::from(2);
        }
    }
    exit_on_panic();
    let handle = match start(cfg, true) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("anypoll relay: {e}");
            return ExitCode::from(if e.kind() == io::ErrorKind::InvalidInput { 2 } else { 1 });
        }
    };
    let bound = handle.shared.bound.lock().expect("lock").clone();
    let stats = *handle.shared.stats_bound.lock().expect("lock");
    let names: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
    log::info!(
        "relay listening on {} → {} server(s), {} thread(s){}",
        names.join(", "),
        handle.shared.servers.len(),
        handle.shared.cfg.threads,
        stats.map(|s| format!(", stats on {s}")).unwrap_or_default()
    );
    match handle.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anypoll relay: {e}");
            ExitCode::FAILURE
        }
    }
}
