//! `anypoll bench stream`: a bulk loopback transfer through one
//! [`Stream`], with splice on and off.
//!
//! A source thread writes `--bytes` of a pattern into the stream's front
//! socket; the stream forwards them to a sink thread that checksums what
//! it reads. Only the loop thread's CPU time is counted (the
//! `CLOCK_THREAD_CPUTIME_ID` clock), so the figure is the forwarding cost
//! alone: bytes per CPU-second, and the recv/send/splice syscalls per MiB
//! from the loop's counters. A checksum mismatch is an error.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anypoll::connection::Connection;
use anypoll::sockops::Real;
use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent};

/// Options of `anypoll bench stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// Bytes to transfer per run.
    #[arg(long, default_value_t = 256 << 20)]
    pub bytes: u64,
    /// Splice on, off, or both (one run each).
    #[arg(long, default_value = "both", value_parser = ["on", "off", "both"])]
    pub splice: String,
    /// Runs per setting; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Buffer size per direction.
    #[arg(long, default_value_t = 16 * 1024)]
    pub bufsize: usize,
    /// One JSON object per setting and line.
    #[arg(long)]
    pub json: bool,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub struct StreamRun {
    /// Bytes moved.
    pub bytes: u64,
    /// CPU time of the loop thread.
    pub cpu: Duration,
    /// Wall time.
    pub wall: Duration,
    /// recv syscalls.
    pub reads: u64,
    /// send syscalls.
    pub writes: u64,
    /// splice syscalls.
    pub splices: u64,
    /// All syscalls of the loop.
    pub syscalls: u64,
    /// Splice fallbacks.
    pub fallbacks: u64,
}

fn thread_cpu() -> Duration {
    // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is live for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn fnv_update(h: u64, data: &[u8]) -> u64 {
    data.iter().fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

fn chunk(i: u64) -> [u8; 4096] {
    let mut c = [0u8; 4096];
    for (k, b) in c.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(k as u8);
    }
    c
}

struct One {
    stream: Stream,
    pools: Pools,
}

impl Handler for One {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        if self.stream.process(&mut Real, cx, &mut self.pools) != Outcome::Running {
            self.stream.close(cx, &mut self.pools);
            cx.stop();
        }
    }
}

/// One transfer of `bytes` through a stream with `mode`.
pub fn run_once(bytes: u64, mode: SpliceMode, bufsize: usize, poller: Option<&str>) -> io::Result<StreamRun> {
    let front_l = TcpListener::bind("127.0.0.1:0")?;
    let sink_l = TcpListener::bind("127.0.0.1:0")?;
    let (front_addr, sink_addr) = (front_l.local_addr()?, sink_l.local_addr()?);
    let source = std::thread::spawn(move || -> io::Result<u64> {
        let mut s = TcpStream::connect(front_addr)?;
        let (mut sent, mut h, mut i) = (0u64, FNV0, 0u64);
        while sent < bytes {
            let c = chunk(i);
            let n = (bytes - sent).min(c.len() as u64) as usize;
            s.write_all(&c[..n])?;
            h = fnv_update(h, &c[..n]);
            sent += n as u64;
            i += 1;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(h)
    });
    let sink = std::thread::spawn(move || -> io::Result<(u64, u64)> {
        let (mut s, _) = sink_l.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut got, mut h) = (0u64, FNV0);
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h = fnv_update(h, &buf[..n]);
            got += n as u64;
        }
        Ok((got, h))
    });
    let (front, _) = front_l.accept()?;
    front.set_nonblocking(true)?;
    let poller = match poller {
        Some(name) => anypoll_backends::registry::create(name, anypoll_backends::registry::Source::Flag),
        None => anypoll_backends::registry::choose(None, None).map(|(p, _)| p),
    }
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut el = EventLoop::new(poller, None)?;
    let mut fc = Connection::from_connected(OwnedFd::from(front));
    let mut bc = Connection::connect(sink_addr)?;
    fc.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE)?;
    bc.ctrl_init(el.cx(), 1, FdState::SEND_ACTIVE)?;
    let mut h = One { stream: Stream::new(fc, bc, mode), pools: Pools::new(bufsize) };
    let before = *el.cx().counters();
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let deadline = wall0 + Duration::from_secs(120);
    while !el.cx().is_stopping() {
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "stream transfer stalled"));
        }
        el.run_once(&mut h, Some(Duration::from_millis(200)))?;
    }
    let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
    let c = el.cx().counters().since(&before);
    let sent_sum = source.join().map_err(|_| io::Error::other("source panicked"))??;
    let (got, got_sum) = sink.join().map_err(|_| io::Error::other("sink panicked"))??;
    if h.stream.outcome() != Outcome::Finished {
        return Err(io::Error::other(format!("stream ended with {:?}", h.stream.outcome())));
    }
    if got != bytes || got_sum != sent_sum {
        return Err(io::Error::other(format!(
            "checksum mismatch: {got} of {bytes} bytes, sums {got_sum:#x} vs {sent_sum:#x}"
        )));
    }
    Ok(StreamRun {
        bytes,
        cpu,
        wall,
        reads: c.reads,
        writes: c.writes,
        splices: c.splices,
        syscalls: c.syscalls(),
        fallbacks: c.splice_fallbacks,
    })
}

/// Runs the benchmark.
pub fn run(args: &StreamArgs, poller: Option<&str>) -> ExitCode {
    // ANYPOLL_NO_SPLICE=1 is the global switch: splice off, whatever --splice says.
    let forced_off = SpliceMode::from_env(SpliceMode::Auto) == SpliceMode::Never;
    let modes: Vec<(&str, SpliceMode)> = match if forced_off { "off" } else { args.splice.as_str() } {
        "on" => vec![("on", SpliceMode::Always)],
        "off" => vec![("off", SpliceMode::Never)],
        _ => vec![("off", SpliceMode::Never), ("on", SpliceMode::Always)],
    };
    if !args.json {
        println!(
            "bench stream: {} MiB per run, {} run(s) per setting, median shown; CPU is the loop thread's only",
            args.bytes >> 20,
            args.runs
        );
        println!(
            "{:<7} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "splice", "MiB/cpu-s", "MiB/s", "recv/MiB", "send/MiB", "splice/MiB", "sys/MiB", "fallback"
        );
    }
    let mut failed = false;
    for (name, mode) in modes {
        if mode != SpliceMode::Never && !SpliceMode::PLATFORM_HAS_SPLICE {
            println!("{name:<7} skip: this platform has no splice");
            continue;
        }
        let mut runs = Vec::new();
        for _ in 0..args.runs.max(1) {
            match run_once(args.bytes, mode, args.bufsize, poller) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    eprintln!("bench stream (splice {name}): FAIL: {e}");
                    failed = true;
                    break;
                }
            }
        }
        if runs.is_empty() {
            continue;
        }
        runs.sort_by_key(|r| r.cpu);
        let r = runs[runs.len() / 2];
        let mib = r.bytes as f64 / (1u64 << 20) as f64;
        let per_cpu = mib / r.cpu.as_secs_f64().max(1e-9);
        let per_wall = mib / r.wall.as_secs_f64().max(1e-9);
        let per = |n: u64| n as f64 / mib;
        if args.json {
            println!(
                "{{\"splice\":\"{name}\",\"bytes\":{},\"mib_per_cpu_s\":{per_cpu:.1},\"mib_per_s\":{per_wall:.1},\"recv_per_mib\":{:.2},\"send_per_mib\":{:.2},\"splice_per_mib\":{:.2},\"syscalls_per_mib\":{:.2},\"fallbacks\":{}}}",
                r.bytes,
                per(r.reads),
                per(r.writes),
                per(r.splices),
                per(r.syscalls),
                r.fallbacks
            );
        } else {
            println!(
                "{:<7} {:>12.0} {:>10.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>9}",
                name,
                per_cpu,
                per_wall,
                per(r.reads),
                per(r.writes),
                per(r.splices),
                per(r.syscalls),
                r.fallbacks
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_transfers_arrive_whole_both_ways() {
        let off = run_once(3 << 20, SpliceMode::Never, 16 * 1024, Some("poll")).unwrap();
        assert_eq!((off.bytes, off.splices), (3 << 20, 0));
        assert!(off.reads > 0 && off.writes > 0);
        if SpliceMode::PLATFORM_HAS_SPLICE {
            let on = run_once(3 << 20, SpliceMode::Always, 16 * 1024, Some("epoll")).unwrap();
            assert!(on.splices > 0, "{on:?}");
        }
    }
}
