//! The relay as a child process, and what /proc and its stats page say
//! about it.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The relay child.
pub struct Relay {
    /// The process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// Its stats address.
    pub stats: SocketAddr,
}

impl Relay {
    /// Spawns `bin relay args…` with RUST_LOG=info (or `$SOAK_RUST_LOG`),
    /// stderr to `log`.
    pub fn spawn(bin: &Path, args: &[String], log: &Path, stats: SocketAddr) -> io::Result<Relay> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("relay")
            .args(args)
            .env("RUST_LOG", std::env::var("SOAK_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let pid = child.id();
        Ok(Relay { child, pid, stats })
    }

    /// `Some(status)` if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// A /proc reader for `pid`.
    pub fn probe(pid: u32) -> Probe {
        Probe(pid)
    }

    /// Open fds.
    pub fn fds(&self) -> io::Result<usize> {
        Probe(self.pid).fds()
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> io::Result<u64> {
        Probe(self.pid).rss_kib()
    }

    /// utime + stime, in clock ticks.
    pub fn cpu_ticks(&self) -> io::Result<u64> {
        Probe(self.pid).cpu_ticks()
    }

    /// The stats page, parsed.
    pub fn stats(&self) -> io::Result<Stats> {
        let mut s = TcpStream::connect_timeout(&self.stats, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let mut st = Stats::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("server"), Some(addr), Some(state)) => {
                    if let Ok(a) = addr.parse() {
                        st.servers.insert(a, state == "UP");
                    }
                }
                (Some(k), Some(v), None) => {
                    if let Ok(v) = v.parse() {
                        st.values.insert(k.to_string(), v);
                    }
                }
                _ => {}
            }
        }
        if st.servers.is_empty() {
            return Err(io::Error::other(format!("stats page without servers: {text:?}")));
        }
        Ok(st)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped
        // yet (so the pid cannot have been reused).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The relay's stats page.
#[derive(Debug, Default)]
pub struct Stats {
    /// `key value` lines.
    pub values: HashMap<String, u64>,
    /// Server → UP?
    pub servers: HashMap<SocketAddr, bool>,
}

impl Stats {
    /// A counter (0 if absent).
    pub fn get(&self, k: &str) -> u64 {
        self.values.get(k).copied().unwrap_or(0)
    }
}

/// What /proc says about a process.
pub struct Probe(pub u32);

impl Probe {
    /// Open fds (/proc/PID/fd).
    pub fn fds(&self) -> io::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.0))?.count())
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> io::Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0))?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::other("no VmRSS"))
    }

    /// utime + stime, in clock ticks.
    pub fn cpu_ticks(&self) -> io::Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.0))?;
        // Fields after the command name, which is in parentheses and may
        // hold spaces: state is field 3, utime 14, stime 15.
        let rest = &s[s.rfind(')').ok_or_else(|| io::Error::other("bad stat"))? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num =
            |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| io::Error::other("bad stat"));
        Ok(num(14)? + num(15)?)
    }
}

/// TcpExt counters from /proc/net/netstat (this network namespace) that
/// tell of listen-queue overflows and SYN cookies.
pub fn tcp_ext() -> HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(keys), Some(vals)) = (lines.next(), lines.next()) else { return HashMap::new() };
    keys.split_whitespace()
        .zip(vals.split_whitespace())
        .skip(1)
        .filter(|(k, _)| k.starts_with("Syncookies") || k.starts_with("Listen"))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}
