//! The workload of `bench poller`, shared by every contender: n socketpairs
//! in a ring, `a` seeded chains, a write budget, and the guards that turn a
//! stalled run into an error instead of a hang.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The size of every contender's read buffer. Bigger than the one byte a
/// pair holds, so a read that gets one byte is a short read.
pub(crate) const BUF: usize = 1024;

/// The bytes forwarded (one per byte read).
pub(crate) static FILL: [u8; BUF] = [b'e'; BUF];

/// The longest a single wait may block before the run checks its guards.
pub(crate) const WAIT: Duration = Duration::from_secs(1);

/// The longest one run may take.
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// One benchmark configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Socketpairs.
    pub n: usize,
    /// Chains seeded per run.
    pub active: usize,
    /// Writes (forwarded bytes) per run.
    pub writes: usize,
}

impl Workload {
    /// The events of one run: every byte that goes through a pair, the
    /// seeds included (`active + writes`).
    pub fn events(&self) -> u64 {
        (self.active + self.writes) as u64
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.n == 0 {
            return Err("--fds must be at least 1".into());
        }
        if self.active == 0 || self.active > self.n {
            return Err(format!("--active must be between 1 and the number of fds ({}), not {}", self.n, self.active));
        }
        Ok(())
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStats {
    /// Wall-clock time spent in the event loop.
    pub elapsed: Duration,
    /// CPU time (user and system) the loop's thread spent in it.
    pub cpu: Duration,
    /// Bytes that went through a pair (must be `active + writes`).
    pub events: u64,
    /// Waits made.
    pub waits: u64,
    /// Syscalls made, the seed writes included, when the contender counts
    /// them itself (anypoll's counters); `None` for the peers.
    pub syscalls: Option<u64>,
}

/// One contender, set up and ready for runs.
pub(crate) trait Contender {
    /// One run: seed, time the loop until every byte went through, check
    /// that the pairs are drained.
    fn run(&mut self) -> io::Result<RunStats>;
}

/// The pairs: `rx[i]` is watched; a byte for pair `i` is written to `tx[i]`.
#[derive(Debug)]
pub(crate) struct Ring {
    pub rx: Vec<UnixStream>,
    pub tx: Vec<UnixStream>,
    seeds: Vec<usize>,
}

impl Ring {
    /// `w.n` non-blocking socketpairs; the seeds are spaced evenly (`n / a`
    /// apart), as in libevent's bench.c.
    pub fn new(w: &Workload) -> io::Result<Ring> {
        let mut rx = Vec::with_capacity(w.n);
        let mut tx = Vec::with_capacity(w.n);
        for _ in 0..w.n {
            let (a, b) = UnixStream::pair()?;
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            rx.push(a);
            tx.push(b);
        }
        let space = w.n / w.active;
        let seeds = (0..w.active).map(|i| i * space).collect();
        Ok(Ring { rx, tx, seeds })
    }

    /// The pair after `i`.
    pub fn next(&self, i: usize) -> usize {
        if i + 1 == self.tx.len() {
            0
        } else {
            i + 1
        }
    }

    /// Writes one byte into each seeded pair (before the clock starts).
    pub fn seed(&self) -> io::Result<()> {
        for &s in &self.seeds {
            send_all(self.tx[s].as_raw_fd(), &FILL[..1])?;
        }
        Ok(())
    }

    /// How many syscalls [`seed`](Ring::seed) makes.
    pub fn seed_syscalls(&self) -> u64 {
        self.seeds.len() as u64
    }

    /// Checks that every pair is empty, so that the next run starts clean.
    pub fn check_drained(&self) -> io::Result<()> {
        check_drained(self.rx.iter().map(|s| s.as_raw_fd()))
    }
}

/// Checks that the read ends `fds` hold no data.
pub(crate) fn check_drained(fds: impl Iterator<Item = RawFd>) -> io::Result<()> {
    let mut b = [0u8; 1];
    for (i, fd) in fds.enumerate() {
        // SAFETY: `b` is valid for writes of one byte during the call.
        let r = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, libc::MSG_DONTWAIT) };
        if r >= 0 {
            return Err(io::Error::other(format!("pair {i} still holds data after the run")));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io::Error::other(format!("pair {i}: {e}")));
        }
    }
    Ok(())
}

/// One send of all of `buf` (the pairs never fill up in this workload).
fn send_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is valid for reads of its length during the call.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(io::Error::other(format!("short seed write ({n} of {})", buf.len())));
    }
    Ok(())
}

/// The write budget of a run and the bytes seen so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Budget {
    left: usize,
    pub received: u64,
    pub expected: u64,
}

impl Budget {
    pub fn new(w: &Workload) -> Budget {
        Budget { left: w.writes, received: 0, expected: w.events() }
    }

    /// `k` bytes were read: returns how many to forward (one per byte, while
    /// the budget lasts).
    pub fn take(&mut self, k: usize) -> usize {
        self.received += k as u64;
        let f = k.min(self.left);
        self.left -= f;
        f
    }

    /// Whether every byte has gone through.
    pub fn done(&self) -> bool {
        self.received >= self.expected
    }
}

/// Times the loop: wall clock and the thread's CPU clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        // The CPU clock first, so that reading it is not in the wall time.
        let cpu = thread_cpu();
        Stopwatch { wall: Instant::now(), cpu }
    }

    /// (wall, cpu) since [`start`](Stopwatch::start).
    pub fn stop(&self) -> (Duration, Duration) {
        let wall = self.wall.elapsed();
        (wall, thread_cpu().saturating_sub(self.cpu))
    }
}

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID).
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Bounds a run: an error after too many waits or too long.
#[derive(Debug)]
pub(crate) struct Guard {
    deadline: Instant,
    max_waits: u64,
    pub waits: u64,
}

impl Guard {
    pub fn new(w: &Workload) -> Guard {
        Guard { deadline: Instant::now() + RUN_LIMIT, max_waits: 4 * w.events() + 1000, waits: 0 }
    }

    /// Counts a wait and checks the bounds.
    pub fn waited(&mut self, budget: &Budget) -> io::Result<()> {
        self.waits += 1;
        if self.waits > self.max_waits || Instant::now() > self.deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the run stalled: {} of {} bytes after {} waits", budget.received, budget.expected, self.waits),
            ));
        }
        if budget.received > budget.expected {
            return Err(io::Error::other(format!(
                "{} bytes received, more than the {} written",
                budget.received, budget.expected
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_forwards_one_byte_per_byte_while_it_lasts() {
        let w = Workload { n: 4, active: 2, writes: 3 };
        let mut b = Budget::new(&w);
        assert_eq!(b.take(2), 2);
        assert_eq!(b.take(2), 1);
        assert_eq!(b.take(1), 0);
        assert!(b.done());
        assert_eq!(w.events(), 5);
    }

    #[test]
    fn seeds_are_spaced_and_drained_pairs_pass() {
        let w = Workload { n: 10, active: 3, writes: 0 };
        let r = Ring::new(&w).unwrap();
        assert_eq!(r.seeds, vec![0, 3, 6]);
        assert_eq!(r.next(9), 0);
        r.check_drained().unwrap();
        r.seed().unwrap();
        assert!(r.check_drained().is_err());
        assert!(Workload { n: 2, active: 3, writes: 0 }.validate().is_err());
    }
}
