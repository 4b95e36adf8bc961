//! `anypoll demo`: a self-contained run on every available backend.
//!
//! For now it drives each backend directly: `pairs` socketpairs in a ring,
//! a token passed around it `rounds` times, each hop a 64-byte message with
//! a sequence number and a checksum. Every message is checked on arrival;
//! a lost, duplicated or corrupted message fails the backend's row. The
//! relay demo (issue 5) will replace this once the relay exists.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anypoll_backends::registry;
use anypoll_backends::{Events, Interest, Poller, Token, Trigger};

/// Options of `anypoll demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Socketpairs in the ring.
    #[arg(long, default_value_t = 64)]
    pub pairs: usize,
    /// Messages passed around the ring per backend.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
}

const MSG: usize = 64;

fn message(seq: u64) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in m[8..MSG - 8].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    let sum = fnv(&m[..MSG - 8]);
    m[MSG - 8..].copy_from_slice(&sum.to_le_bytes());
    m
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// One backend's figures.
#[derive(Debug)]
struct Row {
    backend: &'static str,
    messages: u64,
    elapsed: Duration,
    waits: u64,
    error: Option<String>,
}

fn ring(backend: &registry::Backend, args: &DemoArgs) -> io::Result<Row> {
    let mut poller = backend.create()?;
    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..args.pairs.max(1)).map(|_| UnixStream::pair()).collect::<io::Result<_>>()?;
    for (i, (_, rx)) in pairs.iter().enumerate() {
        rx.set_nonblocking(true)?;
        poller.add(rx.as_raw_fd(), Token(i), Interest::READ, Trigger::Level)?;
    }
    let mut events = Events::with_capacity(256);
    let mut seq = 0u64;
    (&pairs[0].0).write_all(&message(seq))?;
    let (start, mut waits) = (Instant::now(), 0u64);
    let deadline = start + Duration::from_secs(20);
    let mut error = None;
    'run: while seq < args.messages {
        if Instant::now() > deadline {
            error = Some(format!("stalled at message {seq}"));
            break;
        }
        waits += 1;
        poller.wait(&mut events, Some(Duration::from_secs(1)))?;
        for ev in &events {
            let i = ev.token().0;
            let mut buf = [0u8; MSG];
            (&pairs[i].1).read_exact(&mut buf)?;
            if buf != message(seq) {
                error = Some(format!("message {seq} arrived wrong on pair {i}"));
                break 'run;
            }
            seq += 1;
            let next = (i + 1) % pairs.len();
            (&pairs[next].0).write_all(&message(seq))?;
        }
    }
    for (_, rx) in &pairs {
        poller.delete(rx.as_raw_fd())?;
    }
    Ok(Row { backend: backend.name, messages: seq, elapsed: start.elapsed(), waits, error })
}

/// Runs the demo; with `--poller`, on that backend only.
pub fn run(args: &DemoArgs, poller: Option<&str>) -> ExitCode {
    let chosen: Vec<&registry::Backend> = match poller {
        Some(name) => match registry::create(name, registry::Source::Flag) {
            Ok(_) => registry::backends().iter().filter(|b| b.name == name).collect(),
            Err(e) => {
                eprintln!("anypoll: {e}");
                return ExitCode::from(2);
            }
        },
        None => registry::available(),
    };
    println!(
        "anypoll demo: a message ring over {} socketpairs, {} messages per backend, each checked on arrival",
        args.pairs, args.messages
    );
    println!("{:<8} {:>10} {:>12} {:>12}  result", "backend", "messages", "msgs/s", "msgs/wait");
    let mut failed = false;
    for b in chosen {
        let row = ring(b, args).unwrap_or_else(|e| Row {
            backend: b.name,
            messages: 0,
            elapsed: Duration::ZERO,
            waits: 0,
            error: Some(e.to_string()),
        });
        let rate = row.messages as f64 / row.elapsed.as_secs_f64().max(1e-9);
        let per_wait = row.messages as f64 / row.waits.max(1) as f64;
        let result = match &row.error {
            None => "ok".to_string(),
            Some(e) => {
                failed = true;
                format!("FAIL: {e}")
            }
        };
        println!("{:<8} {:>10} {:>12.0} {:>12.2}  {}", row.backend, row.messages, rate, per_wait, result);
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
    fn messages_differ_and_carry_their_checksum() {
        let (a, b) = (message(1), message(2));
        assert_ne!(a, b);
        assert_eq!(u64::from_le_bytes(a[MSG - 8..].try_into().unwrap()), fnv(&a[..MSG - 8]));
    }

    #[test]
    fn ring_runs_on_poll() {
        let b = registry::backends().iter().find(|b| b.name == "poll").unwrap();
        let row = ring(b, &DemoArgs { pairs: 4, messages: 100 }).unwrap();
        assert_eq!((row.messages, row.error), (100, None));
    }
}
