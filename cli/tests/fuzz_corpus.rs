//! Replays the fuzz corpus and the inputs of past findings on stable.
//!
//! The checks are the fuzz targets' own (`fuzz/src/lib.rs`, included here
//! as a module), so `cargo test` asserts on every committed input exactly
//! what the fuzzer asserts: `fuzz/seeds/TARGET/*` (written by hand),
//! `fuzz/corpus/TARGET/*` (grown by `ci/fuzz.sh`, minimized) and
//! `fuzz/regressions/TARGET/*` (inputs that once failed).

#[path = "../../fuzz/src/lib.rs"]
mod fuzz;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    // The repository root: this test lives in cli/.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("read_dir entry").path()).collect();
    files.sort();
    files
}

/// Runs `check` on every file of `dir`; returns how many, panicking with
/// the names of the files that failed.
fn replay(target: &str, check: fuzz::Check, dir: &Path) -> usize {
    let files = files(dir);
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).expect("read input");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: {} input(s) fail: {failed:#?}", failed.len());
    files.len()
}

#[test]
fn seeds_pass() {
    for &(target, check) in fuzz::TARGETS {
        let n = replay(target, check, &root().join("fuzz/seeds").join(target));
        assert!(n > 0, "{target}: no seeds under fuzz/seeds/{target}");
        println!("{target}: {n} seed inputs pass");
    }
}

#[test]
fn corpus_passes() {
    for &(target, check) in fuzz::TARGETS {
        let n = replay(target, check, &root().join("fuzz/corpus").join(target));
        assert!(n > 0, "{target}: no corpus under fuzz/corpus/{target}");
        println!("{target}: {n} corpus inputs pass");
    }
}

#[test]
fn regressions_pass() {
    for &(target, check) in fuzz::TARGETS {
        let n = replay(target, check, &root().join("fuzz/regressions").join(target));
        println!("{target}: {n} regression inputs pass");
    }
}

/// Every directory and every fuzz target belongs to a check in `TARGETS`,
/// so no input is silently skipped.
#[test]
fn every_target_is_replayed() {
    let known: Vec<&str> = fuzz::TARGETS.iter().map(|t| t.0).collect();
    for dir in ["fuzz/seeds", "fuzz/corpus", "fuzz/regressions"] {
        for d in files(&root().join(dir)) {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            assert!(known.contains(&name.as_str()), "{dir}/{name} is not a target in fuzz/src/lib.rs");
        }
    }
    let targets = files(&root().join("fuzz/fuzz_targets"));
    assert_eq!(targets.len(), known.len(), "fuzz/fuzz_targets vs TARGETS");
    for t in targets {
        let stem = t.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(known.contains(&stem.as_str()), "fuzz/fuzz_targets/{stem}.rs is not in TARGETS");
    }
}
