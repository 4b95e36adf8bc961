//! The `anypoll` command: `probe`, `demo`, and (as they land) `bench` and
//! `relay`. See `anypoll --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    anypoll_cli::main()
}
