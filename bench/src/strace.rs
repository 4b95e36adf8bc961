//! Syscall counts from `strace -f -c`: this binary re-runs itself (a hidden
//! `bench …-child` subcommand) under strace, and the summary table is parsed.
//!
//! A count covers the whole child, its start-up included, so callers take
//! the difference between two children that differ only in the amount of
//! work: the fixed costs cancel out.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The syscalls of one traced child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// All syscalls.
    pub total: u64,
    /// Per syscall name.
    pub calls: BTreeMap<String, u64>,
    /// What the child printed on stdout.
    pub stdout: String,
}

impl Counts {
    /// The calls of the syscalls named in `names`.
    pub fn sum_of(&self, names: &[&str]) -> u64 {
        names.iter().map(|n| self.calls.get(*n).copied().unwrap_or(0)).sum()
    }
}

/// `strace` on PATH, if any.
pub(crate) fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("strace")).find(|p| p.is_file())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs this executable with `args` under `strace -f -c` and returns the
/// counts. The child is killed (by its pid) if it outlives `limit`.
pub(crate) fn count(strace: &Path, args: &[String], limit: Duration) -> io::Result<Counts> {
    let exe = std::env::current_exe()?;
    let out = std::env::temp_dir().join(format!(
        "anypoll-strace-{}-{}.txt",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new(strace)
        .arg("-f")
        .arg("-c")
        .arg("-o")
        .arg(&out)
        .arg(&exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read both pipes on threads, so that a full pipe cannot block the child.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&out);
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("strace child ran longer than {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = stderr.join().unwrap_or_default();
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return Err(io::Error::other(format!("strace child failed ({status}): {}", err.trim())));
    }
    let printed = stdout.join().unwrap_or_default();
    let mut counts = parse(&text?).ok_or_else(|| io::Error::other("strace -c printed no summary table"))?;
    counts.stdout = printed;
    Ok(counts)
}

fn drain<R: io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Parses strace's `-c` table: `% time seconds usecs/call calls [errors] syscall`,
/// ending with a `total` row.
pub(crate) fn parse(text: &str) -> Option<Counts> {
    let mut counts = Counts::default();
    let mut total = None;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 || cols[0].parse::<f64>().is_err() {
            continue;
        }
        let Ok(calls) = cols[3].parse::<u64>() else { continue };
        let name = cols[cols.len() - 1];
        if name == "total" {
            total = Some(calls);
        } else {
            counts.calls.insert(name.to_string(), calls);
        }
    }
    counts.total = total?;
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_table() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.000600           2       300           epoll_wait
 30.00    0.000300           1       200        20 read
 10.00    0.000100           1       100           write
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           1       600        20 total
";
        let c = parse(text).unwrap();
        assert_eq!(c.total, 600);
        assert_eq!(c.calls["read"], 200);
        assert_eq!(c.sum_of(&["epoll_wait", "poll"]), 300);
        assert!(parse("nothing here").is_none());
    }
}
