//! Command-line front end.
//!
//! `--poller NAME` and `-v` are global: they are accepted before or after
//! the subcommand. `anypoll -vv` with no subcommand runs `probe`.
//!
//! Exit status: 0 on success, 1 when a run fails (a demo check, a probe
//! that finds no working backend), 2 for bad usage: unknown options, an
//! unknown poller name or one that is not available here.

use std::ffi::OsString;
use std::process::ExitCode;

use anypoll_backends::registry::{self, Probe, Source};
use anypoll_backends::{AnyPoller, Poller};
use anypoll_relay::config::{printable, RelayArgs, CONFIG_EXAMPLE};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod demo;
mod relay;

/// anypoll: one event loop over epoll, kqueue, event ports, poll and select.
#[derive(Debug, Parser)]
#[command(name = "anypoll", version, about, long_about = None)]
pub struct Cli {
    /// The poller backend to use (overrides ANYPOLL_POLLER). See `anypoll probe`.
    #[arg(long, global = true, value_name = "NAME")]
    pub poller: Option<String>,

    /// More output: -v for info, -vv for debug (and `probe` when no command is given).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every backend with its preference, test result and capabilities, then the one that would be used.
    Probe,
    /// Run the self-contained demonstration on every available backend.
    Demo(demo::DemoArgs),
    /// Run the TCP relay: accept clients, forward each to a healthy server.
    Relay(Box<RelayArgs>),
    /// Benchmarks: `bench poller` (libevent's bench.c against the Rust peers), `bench idle`.
    Bench(anypoll_bench::BenchArgs),
}

/// Parses a command line, `argv[0]` first, as [`main`] does.
pub fn parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = command();
    let mut m = cmd.try_get_matches_from_mut(argv)?;
    Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd))
}

/// The command line's definition: [`Cli`]'s, with the relay's defaults
/// shown in its help (`[default: 10000]`) and the keys of its `--config`
/// file listed after the options. The defaults come from the relay's own
/// [`RelayConfig::default`](anypoll_relay::config::RelayConfig), not from
/// clap, because a clap default would override the config file.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("relay", |mut relay| {
        for (id, value) in RelayArgs::shown_defaults() {
            relay = relay.mut_arg(id, |a| {
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                a.help(format!("{help} [default: {value}]"))
            });
        }
        relay.after_help(format!(
            "The keys of a --config FILE (TOML) are the options' names with '_' for '-':\n\n{CONFIG_EXAMPLE}"
        ))
    })
}

/// What [`main`] prints for a command line clap rejects, before exiting
/// with status 2: one line. `None` when clap's "error" is `--help` or
/// `--version`, whose text `main` prints as it is, exiting 0.
pub fn usage_error(e: &clap::Error) -> Option<String> {
    if !e.use_stderr() {
        return None;
    }
    // One line, as every other usage error: clap's first paragraph names
    // the problem (the usage and hints follow with --help). It quotes the
    // offending argument, which may hold any character, so control
    // characters are escaped.
    let text = e.to_string();
    let first = text.split("\n\n").next().unwrap_or_default().trim();
    let first = if first.is_empty() { "bad usage" } else { first };
    Some(format!("anypoll: {} (see --help)", printable(first.trim_start_matches("error: "))))
}

/// Parses the command line, runs the command, returns the exit status.
pub fn main() -> ExitCode {
    let cli = match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => match usage_error(&e) {
            Some(line) => {
                eprintln!("{line}");
                return ExitCode::from(2);
            }
            None => {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
        },
    };
    init_logging(cli.verbose);
    match cli.command {
        Some(Command::Probe) => probe(cli.poller.as_deref()),
        None if cli.verbose >= 2 => probe(cli.poller.as_deref()),
        None => {
            eprintln!("anypoll: no command given; try `anypoll probe`, `anypoll demo` or `anypoll --help`");
            ExitCode::from(2)
        }
        Some(Command::Demo(args)) => demo::run(&args, cli.poller.as_deref()),
        Some(Command::Relay(args)) => relay::main(&args, cli.poller.as_deref()),
        Some(Command::Bench(args)) => anypoll_bench::run(&args, cli.poller.as_deref()),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).try_init();
}

/// Chooses the backend for a command: `--poller`, then `ANYPOLL_POLLER`,
/// then the best available. On error, prints it and gives exit status 2.
pub fn choose_poller(flag: Option<&str>) -> Result<(AnyPoller, Source), ExitCode> {
    registry::choose(None, flag).map_err(|e| {
        eprintln!("anypoll: {e}");
        ExitCode::from(2)
    })
}

/// The capabilities as `LEVEL|EDGE|…`.
pub fn caps_string(caps: anypoll_backends::Capabilities) -> String {
    caps.iter_names().map(|(n, _)| n).collect::<Vec<_>>().join("|")
}

/// `anypoll probe`'s line about TLS: whether this build has the TLS
/// transport, and over what.
pub fn tls_line() -> &'static str {
    if cfg!(feature = "tls") {
        "tls: built in (rustls 0.23, ring)"
    } else {
        "tls: not built (feature tls)"
    }
}

fn probe(flag: Option<&str>) -> ExitCode {
    // The name column fits the longest name, and is never narrower than 8,
    // so a normal build prints exactly what it always did; a models build
    // widens it for `evports-model`.
    let width = registry::backends().iter().map(|b| b.name.len()).max().unwrap_or(0).max(8);
    println!("{:<width$} {:>4}  {:<32} capabilities", "backend", "pref", "test");
    for b in registry::backends() {
        let (result, caps) = match b.test() {
            Probe::Ok(c) => ("OK".to_string(), caps_string(c)),
            Probe::Failed(e) => (format!("FAILED: {e}"), String::new()),
            Probe::NotBuilt => ("not built for this platform".to_string(), String::new()),
        };
        // A model never passes for the real system.
        let model = if b.is_model { "  (model, not the real OS)" } else { "" };
        println!("{:<width$} {:>4}  {:<32} {}{model}", b.name, b.preference, result, caps);
    }
    println!("{}", tls_line());
    match choose_poller(flag) {
        Ok((p, source)) => {
            println!("will use {} (from {source})", p.name());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_help() -> String {
        let mut cmd = command();
        let relay = cmd.find_subcommand_mut("relay").expect("relay subcommand");
        relay.render_help().to_string()
    }

    #[test]
    fn relay_help_shows_every_default() {
        let help = relay_help();
        for (id, value) in RelayArgs::shown_defaults() {
            let flag = format!("--{}", id.replace('_', "-"));
            let line =
                help.lines().find(|l| l.trim_start().starts_with(&flag)).unwrap_or_else(|| panic!("{flag}: {help}"));
            assert!(line.contains(&format!("[default: {value}]")), "{flag} shows its default {value}: {line}");
        }
        assert!(help.contains("[default: 10000]"), "{help}");
    }

    #[test]
    fn relay_help_lists_the_config_keys() {
        let help = relay_help();
        assert!(help.contains("its keys are listed below"), "{help}");
        for key in ["timeout_client = ", "check_interval = ", "grace = ", "stats = "] {
            assert!(help.contains(key), "{key} in the help: {help}");
        }
    }

    #[test]
    fn a_default_is_not_a_value() {
        // The shown defaults must not become clap defaults: a config file
        // value would then lose to an option nobody gave.
        let cli = parse_from(["anypoll", "relay", "--listen", "127.0.0.1:0"]).expect("parses");
        let Some(Command::Relay(args)) = cli.command else { panic!("not relay") };
        assert_eq!(args.maxconn, None);
        assert_eq!(args.timeout_client, None);
    }
}
