//! The demo's clients: ping-pong round trips and bulk transfers through
//! the relay, every byte that comes back checked against what went out.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Instant;

use super::checksum::{checksum, Checksum, Pattern};
use super::IO_TIMEOUT;

/// Ping-pong payloads are 16 to this many bytes.
const MAX_MSG: usize = 1024;

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect to the relay: {e}"))?;
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Closes our side and expects the relay to close its side with nothing
/// more to read: the half-close went through both ways.
fn finish_client(mut s: TcpStream) -> Result<(), String> {
    s.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    let mut extra = [0u8; 64];
    match s.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{n} unexpected byte(s) after the last reply")),
        Err(e) => Err(format!("waiting for the relay to close: {e}")),
    }
}

/// Round trips until `deadline` or `max` of them; returns how many, each
/// one's reply checked.
pub(super) fn ping_client(relay: SocketAddr, seed: u64, deadline: Instant, max: u64) -> Result<u64, String> {
    let mut s = connect(relay)?;
    let mut pat = Pattern::new(seed);
    let mut msg = vec![0u8; MAX_MSG];
    let mut reply = vec![0u8; MAX_MSG];
    let mut n = 0u64;
    while n < max && (n == 0 || Instant::now() < deadline) {
        let len = 16 + (pat.next_word() % (MAX_MSG as u64 - 15)) as usize;
        pat.fill(&mut msg[..len]);
        // Never `G`: that would be a health check to the server.
        msg[0] = b'P';
        let want = checksum(&msg[..len]);
        s.write_all(&msg[..len]).map_err(|e| format!("request {n}: sending: {e}"))?;
        s.read_exact(&mut reply[..len]).map_err(|e| format!("request {n}: reading the reply: {e}"))?;
        if checksum(&reply[..len]) != want {
            return Err(format!("request {n}: reply checksum mismatch ({len} bytes)"));
        }
        n += 1;
    }
    finish_client(s)?;
    Ok(n)
}

/// Sends `bytes` of a deterministic stream and reads the echo at the same
/// time; both checksums and the count must match.
pub(super) fn bulk_client(relay: SocketAddr, seed: u64, bytes: u64) -> Result<(), String> {
    let mut s = connect(relay)?;
    let mut w = s.try_clone().map_err(|e| format!("clone: {e}"))?;
    let writer = std::thread::Builder::new()
        .name("demo-bulk-writer".into())
        .spawn(move || -> Result<u64, String> {
            let mut pat = Pattern::new(seed);
            let mut buf = vec![0u8; 64 * 1024];
            let mut sum = Checksum::new();
            let mut left = bytes;
            let mut first = true;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                pat.fill(&mut buf[..n]);
                if first {
                    buf[0] = b'B';
                    first = false;
                }
                sum.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(|e| format!("sending: {e}"))?;
                left -= n as u64;
            }
            w.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
            Ok(sum.finish())
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sum = Checksum::new();
    let mut got = 0u64;
    let read = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                sum.update(&buf[..n]);
                got += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(format!("reading after {got} bytes: {e}")),
        }
    };
    if read.is_err() {
        // Unblock the writer if it is stuck.
        let _ = s.shutdown(Shutdown::Both);
    }
    let sent = writer.join().map_err(|_| "the writer panicked".to_string())??;
    read?;
    if got != bytes {
        return Err(format!("{got} bytes came back of {bytes}"));
    }
    if sum.finish() != sent {
        return Err(format!("checksum mismatch over {bytes} bytes"));
    }
    Ok(())
}
