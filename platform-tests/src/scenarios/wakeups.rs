//! What ends a wait early: a waker from another thread (coalesced), and a
//! signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Events, Interest, Poller, Trigger};

use super::checks::{ensure, fd_of, ms, wait_checked, Ctx, QUIET, T1};
use crate::{net, Stop};

pub(super) fn waker_wakes_waiting_thread(p: &mut AnyPoller) -> Result<(), Stop> {
    let waker = p.waker();
    let mut ev = Events::with_capacity(16);
    let t = Instant::now();
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake()
    });
    let r = p.wait(&mut ev, Some(Duration::from_secs(5)));
    let took = t.elapsed();
    let woke = h.join().map_err(|_| Stop::Fail("the waking thread panicked".into()))?;
    woke.ctx("wake")?;
    let n = r.ctx("wait")?;
    ensure!(ev.woken(), "the wait returned after {} without woken() set ({n} events)", ms(took));
    ensure!(n == 0, "woken with nothing registered, yet {n} events");
    ensure!(took >= Duration::from_millis(50), "the wait returned after {}, before the wake", ms(took));
    ensure!(took < Duration::from_secs(2), "the wake took {} to end the wait", ms(took));
    Ok(())
}

pub(super) fn waker_coalesces(p: &mut AnyPoller) -> Result<(), Stop> {
    let waker = p.waker();
    let other = waker.clone();
    let mut ev = Events::with_capacity(16);
    waker.wake().ctx("wake")?;
    other.wake().ctx("wake")?;
    waker.wake().ctx("wake")?;
    let t = Instant::now();
    wait_checked(p, &mut ev, Some(Duration::from_secs(1)))?;
    let took = t.elapsed();
    ensure!(ev.woken(), "a wake before the wait: the wait returned after {} without woken()", ms(took));
    ensure!(took < Duration::from_millis(200), "a wake before the wait: the wait took {}", ms(took));
    let t = Instant::now();
    wait_checked(p, &mut ev, Some(QUIET))?;
    let took = t.elapsed();
    ensure!(!ev.woken(), "three wakes gave a second woken() wait: they must coalesce");
    ensure!(took >= QUIET, "after the coalesced wake, a {} wait returned after {}", ms(QUIET), ms(took));
    Ok(())
}

/// Backends whose wait retries EINTR itself and so cannot end early on a
/// signal: compat, because the `polling` crate loops on EINTR inside its
/// `wait` (recomputing the deadline).
const RETRIES_EINTR: &[&str] = &["compat"];

pub(super) fn signal_during_wait(p: &mut AnyPoller) -> Result<(), Stop> {
    net::install_noop_sigusr1().ctx("sigaction(SIGUSR1)")?;
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let me = net::ThreadHandle::current();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    // Signals every 30 ms (at most 10) until the wait is over, so a slow
    // start of this thread does not make the test miss the wait.
    let h = thread::spawn(move || {
        let mut sent = 0;
        for _ in 0..10 {
            thread::sleep(Duration::from_millis(30));
            if done2.load(Ordering::SeqCst) {
                break;
            }
            // SAFETY: the target thread joins this one before it returns, so it is alive.
            if unsafe { me.signal_usr1() }.is_ok() {
                sent += 1;
            }
        }
        sent
    });
    let mut ev = Events::with_capacity(16);
    let t = Instant::now();
    let r = p.wait(&mut ev, Some(Duration::from_secs(1)));
    let took = t.elapsed();
    done.store(true, Ordering::SeqCst);
    let sent = h.join().map_err(|_| Stop::Fail("the signalling thread panicked".into()))?;
    ensure!(sent > 0, "no signal could be sent");
    let n = match r {
        Ok(n) => n,
        Err(e) => {
            return Err(Stop::Fail(format!("a signal during the wait made it fail: {e} (EINTR is not an error)")))
        }
    };
    ensure!(n == 0 && ev.is_empty(), "nothing is ready, yet {n} events after a signal");
    ensure!(!ev.woken(), "a signal is not a wake-up, yet woken() is set");
    if !RETRIES_EINTR.contains(&p.name()) {
        ensure!(took < Duration::from_millis(500), "a signal did not end the wait early: it took {}", ms(took));
    }
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}
