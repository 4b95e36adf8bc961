//! The chat server's `--selftest` clients (see `main.rs`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Drops, FAST, LIMIT};

/// Lines a fast writer has in flight (sent, not yet read by every fast reader).
const WINDOW: u64 = 100;

type Res = Result<String, String>;

/// A fast client: writes its lines while every fast reader keeps up with
/// it (a window), reads everything, until each fast writer said "end".
fn fast(id: usize, addr: SocketAddr, seen: Arc<Vec<AtomicU64>>, drops: Arc<Drops>) -> Res {
    let s = TcpStream::connect(addr).map_err(|e| format!("fast {id}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    let (mut w, seen_w) = (s.try_clone().map_err(|e| e.to_string())?, seen.clone());
    let writer = std::thread::spawn(move || -> io::Result<u64> {
        let (start, mut seq) = (Instant::now(), 0u64);
        while drops.accepted.load(SeqCst) < FAST + 2 && start.elapsed() < LIMIT {
            std::thread::sleep(Duration::from_millis(1)); // every reader is in: none misses a line
        }
        while (drops.slow.load(SeqCst) == 0 || seq < 2000) && seq < 200_000 && start.elapsed() < LIMIT {
            if (0..FAST).all(|r| seen_w[r * FAST + id].load(SeqCst) + WINDOW > seq) {
                writeln!(w, "c{id} {seq} {}", "x".repeat(80))?;
                seq += 1;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        writeln!(w, "c{id} end")?;
        Ok(seq)
    });
    let (mut r, mut line, mut ended) = (BufReader::new(&s), String::new(), 0);
    while ended < FAST {
        line.clear();
        if r.read_line(&mut line).map_err(|e| format!("fast {id}: read: {e}"))? == 0 {
            return Err(format!("fast {id} was disconnected"));
        }
        let mut f = line.trim_end().splitn(3, ' ');
        let (Some(who), Some(seq)) = (f.next().and_then(|w| w.strip_prefix('c')), f.next()) else { continue };
        let from: usize = who.parse().map_err(|_| format!("fast {id}: bad line {line:?}"))?;
        let want = seen[id * FAST + from].load(SeqCst);
        match seq {
            "end" => ended += 1,
            n if n.parse::<u64>() == Ok(want) => _ = seen[id * FAST + from].fetch_add(1, SeqCst),
            n => return Err(format!("fast {id}: line {n} of c{from} where {want} was due")),
        }
    }
    s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let sent = writer.join().map_err(|_| "writer panicked")?.map_err(|e| format!("fast {id}: write: {e}"))?;
    Ok(format!("fast {id}: sent {sent}, got all"))
}

/// Sends a line every 20 ms and never reads: it must be dropped.
fn slow(addr: SocketAddr) -> Res {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("slow: {e}"))?;
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if writeln!(s, "slow").is_err() {
            return Ok(format!("slow: dropped after {} ms", start.elapsed().as_millis()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("slow: never dropped".into())
}

/// Reads everything, never sends: it must be dropped after `idle`.
fn idle(addr: SocketAddr, idle: Duration) -> Res {
    let (s, start) = (TcpStream::connect(addr).map_err(|e| format!("idle: {e}"))?, Instant::now());
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    match io::copy(&mut &s, &mut io::sink()) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(format!("idle: never dropped ({e})"));
        }
        _ => {} // EOF or a reset: dropped
    }
    let took = start.elapsed();
    if took < idle {
        return Err(format!("idle: dropped after {took:?}, before its {idle:?} timeout"));
    }
    Ok(format!("idle: dropped after {} ms", took.as_millis()))
}

pub(crate) fn start(addr: SocketAddr, idle_for: Duration, drops: Arc<Drops>, out: Arc<Mutex<Vec<Res>>>) {
    std::thread::spawn(move || {
        let seen: Arc<Vec<AtomicU64>> = Arc::new((0..FAST * FAST).map(|_| AtomicU64::new(0)).collect());
        let mut ts = vec![std::thread::spawn(move || slow(addr)), std::thread::spawn(move || idle(addr, idle_for))];
        for id in 0..FAST {
            let (seen, drops) = (seen.clone(), drops.clone());
            ts.push(std::thread::spawn(move || fast(id, addr, seen, drops)));
        }
        let results = ts.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("a client panicked".into())));
        *out.lock().unwrap() = results.collect();
        // SAFETY: kill() on our own process with a signal the loop handles.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
}
