//! The conformance matrix: every scenario on every backend built here.
//!
//! `cargo test -p platform-tests --test conformance -- [WORD…]`: a word that
//! names a backend keeps that column; any other word keeps the scenarios
//! whose id contains it. `--list` prints the scenarios and exits. Flags that
//! cargo's test harness takes (`--nocapture`, `--quiet`, …) are ignored.
//!
//! It prints one line per cell as it goes (on stderr), then the matrix, the
//! reason for each FAIL and skip, and the closing line
//! `N passed, N failed, N skipped` (cells; a leak of fds by the run as a
//! whole counts as one more failure). It exits 1 if anything failed.

use std::io::Write;
use std::process::ExitCode;

use platform_tests::{columns, net, scenarios, Matrix};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = scenarios::all();
    if args.iter().any(|a| a == "--list") {
        for s in &all {
            println!("{}: {}", s.id, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let words: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let mut backends = columns();
    let backend_words: Vec<&str> = words.iter().copied().filter(|w| backends.iter().any(|b| b.name == *w)).collect();
    let scenario_words: Vec<&str> = words.iter().copied().filter(|w| !backend_words.contains(w)).collect();
    if !backend_words.is_empty() {
        backends.retain(|b| backend_words.contains(&b.name));
    }
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|s| scenario_words.is_empty() || scenario_words.iter().any(|w| s.id.contains(w)))
        .collect();

    let fds_before = net::open_fd_count();
    let matrix = Matrix::run(&chosen, &backends, |s, b, o, took| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{:<28} {:<7} {:>7.1} ms  {}", s.id, b.name, took.as_secs_f64() * 1000.0, o);
    });
    let fds_after = net::open_fd_count();

    println!();
    let models = matrix.models();
    let note =
        if models.is_empty() { String::new() } else { format!("; models, not the real OS: {}", models.join(", ")) };
    println!("anypoll conformance matrix ({}, {:.1} s{note})", std::env::consts::OS, matrix.elapsed.as_secs_f64());
    println!();
    print!("{}", matrix.render());
    let (passed, mut failed, skipped) = matrix.counts();
    match (fds_before, fds_after) {
        (Some(b), Some(a)) if a != b => {
            println!("\nFAIL: the run as a whole changed the number of open fds: {b} before, {a} after");
            failed += 1;
        }
        (Some(_), Some(_)) => {}
        _ => println!("\nnote: this host cannot count open fds, so leaks are not checked"),
    }
    println!();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
