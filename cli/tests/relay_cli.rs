//! `anypoll relay` as a process: bad arguments and bad config files are
//! one-line errors with exit status 2; SIGTERM stops gracefully (no new
//! connections, live ones finish, idle ones are closed at the grace end,
//! exit 0); SIGUSR1 logs the counters; `--threads 2` and `--stats` work.

#[path = "../../relay/tests/relay_common/mod.rs"]
mod relay_common;
mod relay_proc;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_common::*;
use relay_proc::*;

/// Runs `anypoll ARGS`, expecting a quick exit; returns (status, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let (st, err) = Proc::spawn(args).finish(Duration::from_secs(10));
    (st.code(), err)
}

/// Exit status 2 and exactly one line on stderr that contains each of
/// `needles`.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let (code, err) = run(args);
    assert_eq!(code, Some(2), "{args:?}: exit status; stderr: {err:?}");
    let err = err.trim();
    assert_eq!(err.lines().count(), 1, "{args:?}: one line on stderr, got {err:?}");
    assert!(err.starts_with("anypoll"), "{args:?}: {err:?}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} does not name {n:?}");
    }
    println!("{args:?} → {err}");
}

const L: &str = "127.0.0.1:0";
const S: &str = "127.0.0.1:9";

#[test]
fn bad_arguments_are_one_line_errors_with_status_2() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["relay"], &["no address to listen on", "--listen"]),
        (&["relay", "--listen", L], &["no server", "--server"]),
        (&["relay", "--listen", L, "--server", "nonsense"], &["--server", "nonsense"]),
        (&["relay", "--listen", "nonsense:x", "--server", S], &["--listen", "nonsense:x"]),
        (&["relay", "--listen", L, "--server", S, "--timeout-client", "5x"], &["--timeout-client", "5x"]),
        (&["relay", "--listen", L, "--server", S, "--timeout-server", "0"], &["--timeout-server"]),
        (&["relay", "--listen", L, "--server", S, "--timeout-connect", "soon"], &["--timeout-connect", "soon"]),
        (&["relay", "--listen", L, "--server", S, "--grace", "1y"], &["--grace", "1y"]),
        (&["relay", "--listen", L, "--server", S, "--poller", "nope"], &["poller", "nope"]),
        (&["relay", "--listen", L, "--server", S, "--splice", "sometimes"], &["--splice", "sometimes"]),
        (&["relay", "--listen", L, "--server", S, "--check", "http:health"], &["--check", "http:health"]),
        (&["relay", "--listen", L, "--server", S, "--stats", "nonsense"], &["--stats", "nonsense"]),
        (&["relay", "--listen", L, "--server", S, "--bufsize", "10"], &["--bufsize", "10"]),
        (&["relay", "--listen", L, "--server", S, "--threads", "0"], &["--threads"]),
        (&["relay", "--listen", L, "--server", S, "--maxconn", "0"], &["--maxconn"]),
        (&["relay", "--listen", L, "--server", S, "--rise", "0"], &["--rise"]),
    ];
    for (args, needles) in cases {
        assert_usage_error(args, needles);
    }
}

/// Errors clap itself reports (an unknown option, a value that is not a
/// number) also exit with status 2 and name the problem on the first line
/// (clap adds a usage hint below it).
#[test]
fn option_syntax_errors_exit_2() {
    for (args, needle) in [
        (&["relay", "--listen", L, "--server", S, "--maxconn", "abc"][..], "--maxconn"),
        (&["relay", "--listen", L, "--server", S, "--frobnicate"][..], "--frobnicate"),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err:?}");
        let first = err.trim().lines().next().unwrap_or("");
        assert!(first.contains(needle), "{args:?}: first line {first:?}");
        println!("{args:?} → {first} (+{} more line(s))", err.trim().lines().count() - 1);
    }
}

#[test]
fn bad_config_files_are_one_line_errors_with_status_2() {
    let head = "listen = [\"127.0.0.1:0\"]\nserver = [\"127.0.0.1:9\"]\n";
    let cases: &[(&str, String, &[&str])] = &[
        ("unknown-key", format!("{head}bogus = 1\n"), &["bogus", "line 3"]),
        ("bad-duration", format!("{head}timeout_client = \"5x\"\n"), &["timeout_client", "5x"]),
        ("bad-duration-type", format!("{head}grace = 1.5\n"), &["grace", "float"]),
        ("bad-type", format!("{head}maxconn = \"many\"\n"), &["line 3", "many"]),
        ("bad-splice", format!("{head}splice = \"sometimes\"\n"), &["splice", "sometimes"]),
        ("bad-check", format!("{head}check = \"http:health\"\n"), &["check", "http:health"]),
        ("bad-server", "listen = [\"127.0.0.1:0\"]\nserver = [\"nonsense\"]\n".into(), &["server", "nonsense"]),
        ("syntax", "listen = [\"127.0.0.1:0\"\nserver = 1\n".into(), &["line"]),
    ];
    for (name, text, needles) in cases {
        let f = TempFile::new(&format!("{name}.toml"), text);
        assert_usage_error(&["relay", "--config", f.path()], &[&[f.path()][..], needles].concat());
    }
    // Checked after the file and the command line are merged: the error
    // names the setting (as its option), not the file.
    let f = TempFile::new("invalid.toml", &format!("{head}bufsize = 10\n"));
    assert_usage_error(&["relay", "--config", f.path()], &["bufsize", "10"]);
    let missing = std::env::temp_dir().join("anypoll-relay-test-no-such-file.toml");
    let missing = missing.to_str().expect("utf-8");
    assert_usage_error(&["relay", "--config", missing], &[missing]);
}

#[test]
fn config_file_runs_and_command_line_wins() {
    let server = EchoServer::start(7, v4());
    // The file names a server that does not exist; --server overrides it.
    let f = TempFile::new(
        "good.toml",
        &format!(
            "listen = [\"127.0.0.1:0\"]\nserver = [\"{}\"]\ntimeout_client = \"20s\"\nsplice = \"never\"\n",
            dead_port()
        ),
    );
    let s = server.addr().to_string();
    let p = Proc::spawn(&["relay", "--config", f.path(), "--server", &s]);
    let (addrs, _) = p.wait_listening();
    assert_eq!(ping_once(addrs[0]), 7);
    p.signal(libc::SIGTERM);
    let (st, err) = p.finish(Duration::from_secs(5));
    assert!(st.success(), "{st:?}: {err}");
}

// ----- graceful stop -----

const CHUNK: usize = 64 * 1024;
const CHUNKS: u64 = 20;
const PULL_SEED: u64 = 0x5eed_f0a1_1234;

/// On `pull`, sends CHUNKS × 64 KiB of a known stream, 50 ms apart, then
/// closes: a transfer that lasts about a second.
fn slow_source() -> Backend {
    Backend::spawn(v4(), |mut s| {
        let mut cmd = [0u8; 4];
        if s.read_exact(&mut cmd).is_err() || &cmd != b"pull" {
            return;
        }
        let mut g = Gen::new(PULL_SEED);
        let mut buf = vec![0u8; CHUNK];
        for _ in 0..CHUNKS {
            g.fill(&mut buf);
            if s.write_all(&buf).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn expected_pull() -> (u64, u64) {
    let mut g = Gen::new(PULL_SEED);
    let mut sum = Sum::new();
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..CHUNKS {
        g.fill(&mut buf);
        sum.update(&buf);
    }
    sum.finish()
}

/// Connects until refused (the listener is closed), at most `limit`.
/// A connect that still gets through is closed at once.
fn refused_within(addr: SocketAddr, limit: Duration) -> bool {
    wait_until(limit, || match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
        Ok(s) => {
            drop(s);
            false
        }
    })
}

#[test]
fn sigterm_lets_a_live_transfer_finish_then_exits_0() {
    let grace = Duration::from_secs(4);
    let source = slow_source();
    let s = source.addr.to_string();
    let mut p = Proc::spawn(&["relay", "--listen", L, "--server", &s, "--grace", "4s"]);
    let (addrs, _) = p.wait_listening();
    let addr = addrs[0];

    let progress = Arc::new(AtomicU64::new(0));
    let prog = progress.clone();
    let client = std::thread::spawn(move || -> io::Result<((u64, u64), Instant)> {
        let mut c = connect(addr);
        c.write_all(b"pull")?;
        let mut sum = Sum::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match c.read(&mut buf)? {
                0 => return Ok((sum.finish(), Instant::now())),
                n => {
                    sum.update(&buf[..n]);
                    prog.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
    });
    assert!(wait_until(Duration::from_secs(5), || progress.load(Ordering::SeqCst) > 0), "the transfer starts");
    let at_signal = progress.load(Ordering::SeqCst);
    let t_sig = Instant::now();
    p.signal(libc::SIGTERM);

    assert!(refused_within(addr, Duration::from_secs(2)), "new connections are refused after SIGTERM");
    let (got, t_done) = client.join().expect("client thread").expect("the live transfer completes");
    let want = expected_pull();
    assert!(at_signal < want.0, "SIGTERM came mid-transfer ({at_signal} of {} bytes)", want.0);
    assert_eq!(got, want, "every byte of the live transfer arrived, in order");
    let st = p.wait_exit(grace + Duration::from_secs(3)).expect("the relay exits");
    let t_exit = Instant::now();
    assert!(st.success(), "exit status {st:?}");
    assert!(
        t_exit.duration_since(t_sig) < grace,
        "exited {:?} after SIGTERM, once the live transfer ended ({:?} after SIGTERM), not at the grace end",
        t_exit.duration_since(t_sig),
        t_done.duration_since(t_sig)
    );
    let log = p.log.lock().expect("log").join("\n");
    assert!(log.contains("stopping"), "the stop is logged: {log}");
}

/// The routine lines, "relay listening on" and "stopping", are
/// information, not warnings: at the default level a healthy relay that
/// starts and stops says nothing.
#[test]
fn routine_lines_log_at_info() {
    let server = EchoServer::start(3, v4());
    let s = server.addr().to_string();
    let p = Proc::spawn_with(&["relay", "--listen", L, "--server", &s], |cmd| {
        cmd.env("RUST_LOG", "info");
    });
    p.wait_listening();
    p.signal(libc::SIGTERM);
    let (st, err) = p.finish(Duration::from_secs(10));
    assert!(st.success(), "exit status {st:?}; stderr: {err}");
    for needle in ["relay listening on", "stopping"] {
        let line = err.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} line: {err}"));
        assert!(line.contains(" INFO "), "{needle:?} is logged at info: {line}");
    }
}

#[test]
fn sigterm_closes_an_idle_connection_at_the_grace_end() {
    let grace = Duration::from_secs(1);
    let server = EchoServer::start(3, v4());
    let s = server.addr().to_string();
    let mut p = Proc::spawn(&["relay", "--listen", L, "--server", &s, "--grace", "1s"]);
    let (addrs, _) = p.wait_listening();
    let mut c = connect(addrs[0]);
    assert_eq!(ping(&mut c).expect("ping"), 3);
    let t_sig = Instant::now();
    p.signal(libc::SIGTERM);
    let (_, got) = read_until_closed(&mut c, Duration::from_secs(5)).expect("closed at the grace end");
    let closed = t_sig.elapsed();
    assert!(got.is_empty());
    assert!(closed >= grace.mul_f64(0.95), "closed {closed:?} after SIGTERM, before the grace ({grace:?}) ended");
    assert!(closed < grace * 3, "closed {closed:?} after SIGTERM, grace {grace:?}");
    let st = p.wait_exit(Duration::from_secs(3)).expect("the relay exits after the grace");
    assert!(st.success(), "exit status {st:?}");
    assert!(t_sig.elapsed() < grace * 3 + Duration::from_secs(1));
    let log = p.log.lock().expect("log").join("\n");
    assert!(log.contains("grace period over"), "the forced close is logged: {log}");
}

#[test]
fn threads_stats_and_sigusr1_then_a_prompt_stop() {
    let server = EchoServer::start(5, v4());
    let s = server.addr().to_string();
    let mut p = Proc::spawn(&["relay", "--listen", L, "--server", &s, "--threads", "2", "--stats", "0"]);
    let (addrs, stats) = p.wait_listening();
    let stats = stats.expect("the stats address is logged");
    assert!(stats.ip().is_loopback(), "--stats PORT binds loopback: {stats}");
    for _ in 0..20 {
        let mut c = connect(addrs[0]);
        assert_eq!(ping(&mut c).expect("ping through --threads 2"), 5);
        echo(&mut c, b"two threads").expect("echo");
    }
    assert_eq!(server.served.load(Ordering::SeqCst), 20);

    p.signal(libc::SIGUSR1);
    let line = p.wait_line("connections_total", Duration::from_secs(5));
    assert!(line.is_some(), "SIGUSR1 logs the counters: {:?}", p.log.lock().expect("log"));

    // Both threads publish within a second.
    let mut page = String::new();
    assert!(
        wait_until(Duration::from_secs(3), || {
            page = fetch_stats(stats);
            stat(&page, "connections_total") == Some(20)
        }),
        "the stats count every connection of both threads:\n{page}"
    );
    assert_eq!(stat(&page, "bytes_client_to_server"), Some(20 * (4 + 11)), "{page}");
    assert!(page.contains(&format!("server {s} UP")), "{page}");

    // No live connection: SIGTERM stops at once.
    let t_sig = Instant::now();
    p.signal(libc::SIGTERM);
    let st = p.wait_exit(Duration::from_secs(3)).expect("the relay exits");
    assert!(st.success(), "exit status {st:?}");
    assert!(t_sig.elapsed() < Duration::from_millis(2500), "idle relay stopped in {:?}", t_sig.elapsed());
}
