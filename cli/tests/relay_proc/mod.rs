//! The `anypoll` binary run as a child process for the relay tests that
//! need a whole process (signals, exit status, resource limits), and what
//! a test reads of such a process from `/proc`. The in-process helpers are
//! in `relay/tests/relay_common`, shared with the `anypoll-relay` tests.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The log filter a spawned relay runs with: warnings, plus the routine
/// start and stop lines ("relay listening on", "stopping"), which are
/// information and which the tests wait for.
pub const ROUTINE_LOG: &str = "warn,anypoll_cli::relay=info,anypoll_relay::worker=info";

// ----- the binary -----

/// `anypoll` run as a child process; stderr is collected line by line.
/// Dropping it kills the child if it still runs.
pub struct Proc {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Proc {
    /// Runs `anypoll ARGS` with a clean environment for the relay knobs
    /// and the log filter [`ROUTINE_LOG`]. `ANYPOLL_POLLER` is passed on:
    /// `ANYPOLL_POLLER=kqueue-model cargo test` runs the relay processes on
    /// that backend (a `--poller` in ARGS still wins).
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(args, |_| {})
    }

    /// As [`Proc::spawn`], letting `setup` change the command first (an
    /// environment variable, a resource limit in `pre_exec`).
    pub fn spawn_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anypoll"));
        cmd.args(args)
            .env("RUST_LOG", ROUTINE_LOG)
            .env_remove("ANYPOLL_NO_SPLICE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("run anypoll");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log2.lock().expect("log").push(line.clone());
                let _ = tx.send(line);
            }
        });
        Proc { child, lines, log, reader: Some(reader) }
    }

    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Waits (at most `limit`) for a stderr line containing `needle`.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits for the "relay listening on …" line; returns the listening
    /// addresses and the stats address.
    pub fn wait_listening(&self) -> (Vec<SocketAddr>, Option<SocketAddr>) {
        let line = self.wait_line("relay listening on ", Duration::from_secs(10)).unwrap_or_else(|| {
            panic!("the relay did not log its addresses; stderr: {:?}", self.log.lock().expect("log"))
        });
        let rest = &line[line.find("relay listening on ").expect("found") + "relay listening on ".len()..];
        let list = rest.split(" →").next().expect("addresses");
        let addrs = list.split(", ").map(|a| a.trim().parse().expect("listening address")).collect();
        let stats = rest.split("stats on ").nth(1).map(|a| a.trim().parse().expect("stats address"));
        (addrs, stats)
    }

    /// Stderr lines so far that contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.log.lock().expect("log").iter().filter(|l| l.contains(needle)).count()
    }

    /// The whole of stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // waited for yet (so the pid cannot have been reused).
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig}): {}", self.pid(), io::Error::last_os_error());
    }

    /// Waits at most `limit` for the child to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit (at most `limit`, then kills it and panics) and
    /// returns the status and the whole of stderr.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        let Some(st) = self.wait_exit(limit) else {
            panic!("anypoll still runs after {limit:?}; stderr so far: {:?}", self.log.lock().expect("log"));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text = self.log.lock().expect("log").join("\n");
        (st, text)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ----- a process seen from /proc -----

/// The CPU time (user + system) of `pid` so far, in clock ticks, from
/// `/proc/PID/stat` (fields 14 and 15). `None` off Linux or if it is gone.
pub fn cpu_ticks(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count the fields after its closing parenthesis (field 3 first).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The resident set size of `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The fds `pid` has open below `limit` (entries of `/proc/PID/fd`).
/// RLIMIT_NOFILE bounds fd numbers, not their count, and a child may
/// inherit fds numbered above its limit (a jobserver pipe, say): those take
/// no room under it.
pub fn open_fds_below(pid: libc::pid_t, limit: u64) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok()).filter(|&n| n < limit).count())
}

/// Makes `cmd`'s child run with at most `n` fds (RLIMIT_NOFILE, soft and
/// hard).
pub fn limit_fds(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    let lim = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes one setrlimit(2)
    // call on a value captured by copy, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
