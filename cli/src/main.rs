//! The `anypoll` command: `probe`, `demo`, `relay` and `bench`, all in
//! the `anypoll_cli` library next to this file. See `anypoll --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    anypoll_cli::main()
}
