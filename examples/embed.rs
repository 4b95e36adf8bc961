// The handler of the README's "Embedding anypoll": a server that answers
// in upper case, driven here by one client of its own.
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anypoll::listener::{self, accept_batch};
use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent};

const LISTENER: usize = usize::MAX; // owner values are yours: this one marks the listener

#[derive(Default)]
struct Upper {
    conns: HashMap<RawFd, OwnedFd>, // the loop borrows fds; the handler owns them
}

impl Handler for Upper {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        if ev.owner == LISTENER {
            let conns = &mut self.conns;
            accept_batch(cx, ev.fd, 64, |cx, sock, peer| match cx.register(&sock, 0, FdState::RECV_ACTIVE) {
                Ok(()) => drop(conns.insert(sock.as_raw_fd(), sock)),
                Err(e) => eprintln!("{peer}: {e}"),
            });
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            let done = match cx.recv(ev.fd, &mut buf) {
                Io::WouldBlock => return, // the loop polls for more
                // A short send closes here; examples/echo_server.rs keeps the rest.
                Io::Done(n) => !matches!(cx.send(ev.fd, &buf[..n].to_ascii_uppercase(), false), Io::Done(m) if m == n),
                Io::Closed | Io::Error(_) => true,
            };
            if done {
                if let Some(sock) = self.conns.remove(&ev.fd) {
                    let _ = cx.close(sock); // deregistered, then closed
                }
                return;
            }
        }
    }
}

fn main() -> io::Result<()> {
    let mut el = EventLoop::from_env()?; // ANYPOLL_POLLER, or the best backend here
    let l = listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 128, false)?;
    el.cx().register(&l, LISTENER, FdState::RECV_ACTIVE)?;
    let addr = l.local_addr()?;
    let client = std::thread::spawn(move || -> io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"hello, loop")?;
        s.shutdown(Shutdown::Write)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    });
    let mut handler = Upper::default();
    for _ in 0..200 {
        if client.is_finished() {
            break;
        }
        el.run_once(&mut handler, Some(Duration::from_millis(50)))?;
    }
    let reply = client.join().map_err(|_| io::Error::other("the client panicked"))??;
    println!("embed: {reply:?} on {}, {} fds left", el.cx().backend(), el.cx().fd_count());
    Ok(())
}
