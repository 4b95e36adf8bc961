//! The servers behind the demo's relay: echo servers in threads of their
//! own that also answer HTTP health checks, and the farm of them that the
//! health part kills and restarts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::IO_TIMEOUT;

/// An echo server in threads: one accepting, one per connection. A
/// connection whose first byte is `G` is taken as an HTTP health check and
/// answered `200 OK`. Dropping it (or [`Server::kill`]) closes the listener,
/// so connects are refused; live connections finish on their own.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` (port 0 for any) and serves. `served` counts the
    /// data (non-check) connections.
    fn start(addr: SocketAddr, served: Arc<AtomicU64>) -> io::Result<Server> {
        // std sets SO_REUSEADDR on Unix, so a restart on the same port works
        // despite the connections left in TIME_WAIT.
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::Builder::new().name(format!("demo-server-{}", addr.port())).spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                match conn {
                    Ok(sock) => {
                        let served = served.clone();
                        let spawned =
                            std::thread::Builder::new().name("demo-conn".into()).spawn(move || serve(sock, &served));
                        if spawned.is_err() {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    // EMFILE and the like: do not spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;
        Ok(Server { addr, stop, acceptor: Some(acceptor) })
    }

    /// Closes the listener: from now on, connects are refused.
    fn kill(&mut self) {
        if let Some(t) = self.acceptor.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocked accept so the thread sees the flag.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(mut sock: TcpStream, served: &AtomicU64) {
    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
    let _ = sock.set_write_timeout(Some(IO_TIMEOUT));
    let _ = sock.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = match sock.read(&mut buf) {
        Ok(n) if n > 0 => n,
        _ => return,
    };
    if buf[0] == b'G' {
        // A health check: read the whole request so that closing does not
        // reset, answer, then wait for the checker to close.
        let mut req = buf[..n].to_vec();
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => req.extend_from_slice(&buf[..k]),
            }
        }
        let _ = sock.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = sock.shutdown(Shutdown::Write);
        while matches!(sock.read(&mut buf), Ok(k) if k > 0) {}
        return;
    }
    served.fetch_add(1, Ordering::Relaxed);
    loop {
        if sock.write_all(&buf[..n]).is_err() {
            return;
        }
        n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// The servers, with a counter of data connections each.
pub(super) struct Farm {
    pub(super) addrs: Vec<SocketAddr>,
    servers: Vec<Option<Server>>,
    pub(super) served: Vec<Arc<AtomicU64>>,
}

impl Farm {
    pub(super) fn start(n: usize) -> io::Result<Farm> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut farm = Farm { addrs: Vec::new(), servers: Vec::new(), served: Vec::new() };
        for _ in 0..n {
            let served = Arc::new(AtomicU64::new(0));
            let s = Server::start(any, served.clone())?;
            farm.addrs.push(s.addr);
            farm.servers.push(Some(s));
            farm.served.push(served);
        }
        Ok(farm)
    }

    pub(super) fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.servers[i].take() {
            s.kill();
        }
    }

    pub(super) fn restart(&mut self, i: usize) -> io::Result<()> {
        if self.servers[i].is_none() {
            self.servers[i] = Some(Server::start(self.addrs[i], self.served[i].clone())?);
        }
        Ok(())
    }
}
