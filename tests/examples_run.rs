//! The examples run and do what they say: `echo_server --selftest` and
//! `forward --selftest` on every backend (and under edge where the backend
//! has EDGE), `chat --selftest` on every backend, `timers` on the default
//! backend.
//!
//! `cargo test` builds the examples before it runs the tests; this test
//! runs those binaries (`target/<profile>/examples/`). When they were not
//! built by this run (e.g. `cargo test --test examples_run` builds no
//! examples), it prints `skip:` and checks nothing rather than run a stale
//! binary.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anypoll::backends::Capabilities;

/// The example binary, if it was built after its source last changed.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join("examples").join(name);
    let built = bin.metadata().and_then(|m| m.modified()).ok();
    let changed = source_changed(name);
    match built {
        Some(t) if t >= changed => Some(bin),
        Some(_) => {
            println!("skip: {} is older than its source; run `cargo test` (which builds examples)", bin.display());
            None
        }
        None => {
            println!("skip: {} was not built; run `cargo test` (which builds examples)", bin.display());
            None
        }
    }
}

/// When the example's source last changed: `examples/NAME.rs`, or the
/// newest file of `examples/NAME/` (an example of several files).
fn source_changed(name: &str) -> SystemTime {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mtime = |p: &std::path::Path| p.metadata().and_then(|m| m.modified()).ok();
    let files = std::fs::read_dir(dir.join(name)).into_iter().flatten().flatten().map(|e| e.path());
    files.chain([dir.join(format!("{name}.rs"))]).filter_map(|p| mtime(&p)).max().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Runs `cmd` with a time limit; kills the child (by its pid) past it.
fn run(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn example");
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} ran over {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().expect("output"), start.elapsed())
}

/// Runs `NAME --selftest --poller B` on every backend, and with `--edge`
/// too where `edge_too` and the backend has EDGE; fails unless each run
/// prints `selftest passed` and exits 0.
fn selftest_on_every_backend(name: &str, edge_too: bool) {
    let Some(bin) = example(name) else { return };
    let mut combos = Vec::new();
    for (b, caps) in common::backends() {
        combos.push((b.name, false));
        if !edge_too {
            continue;
        }
        if caps.contains(Capabilities::EDGE) {
            combos.push((b.name, true));
        } else {
            println!("{name}: skip: {} has no EDGE", b.name);
        }
    }
    let mut failed = Vec::new();
    for (backend, edge) in combos {
        let mut cmd = Command::new(&bin);
        cmd.args(["--selftest", "--poller", backend]).env_remove("ANYPOLL_POLLER");
        if edge {
            cmd.arg("--edge");
        }
        let (out, took) = run(cmd, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let label = format!("{backend}/{}", if edge { "edge" } else { "level" });
        if out.status.success() && stdout.contains("selftest passed") {
            println!("{name} {label}: pass ({} ms)", took.as_millis());
        } else {
            println!("{name} {label}: FAIL ({})\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
            failed.push(label);
        }
    }
    assert!(failed.is_empty(), "{name} --selftest failed on {failed:?}");
}

#[test]
fn echo_server_selftest_passes_on_every_backend() {
    selftest_on_every_backend("echo_server", true);
}

/// The forwarder relays concurrent clients to an echo server, every byte
/// intact, and passes each client's half-close on: the server's reply
/// after it (a trailer) still arrives.
#[test]
fn forward_selftest_passes_on_every_backend() {
    selftest_on_every_backend("forward", true);
}

/// The chat server broadcasts to fast clients, drops a slow reader once
/// its bounded output fills, and an idle client after its timeout.
#[test]
fn chat_selftest_passes_on_every_backend() {
    selftest_on_every_backend("chat", false);
}

#[test]
fn echo_server_refuses_edge_on_a_level_only_backend() {
    let Some(bin) = example("echo_server") else { return };
    let mut cmd = Command::new(bin);
    cmd.args(["--edge", "--poller", "select"]);
    let (out, _) = run(cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("select") && stderr.contains("edge"), "{stderr}");
    println!("echo_server select/edge: pass (refused: {})", stderr.trim());
}

#[test]
fn timers_example_fires_in_order_and_ends_by_itself() {
    let Some(bin) = example("timers") else { return };
    let (out, took) = run(Command::new(bin), Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every timer fired in order"), "{stdout}");
    assert!(took < Duration::from_secs(2), "timers took {took:?}");
    println!("timers: pass ({} ms)", took.as_millis());
}

/// The README's "Embedding anypoll" handler is the code of
/// `examples/embed.rs`, which this test runs: so the README's code compiles
/// and does what it says.
#[test]
fn readme_embedding_code_is_examples_embed_and_it_answers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let code = std::fs::read_to_string(root.join("examples/embed.rs")).expect("examples/embed.rs");
    let section = readme.split("## Embedding anypoll").nth(1).expect("a section \"Embedding anypoll\" in README.md");
    let block = section.split("```rust\n").nth(1).and_then(|b| b.split("```").next()).expect("a rust block in it");
    assert!(block.lines().count() >= 20, "the README's handler is too short to be one:\n{block}");
    assert!(code.contains(block), "README.md's handler is not examples/embed.rs's code; copy it over:\n{block}");
    let Some(bin) = example("embed") else { return };
    let (out, _) = run(Command::new(bin), Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"HELLO, LOOP\"") && stdout.contains("1 fds left"), "{stdout}");
    println!("embed: pass ({})", stdout.trim());
}
