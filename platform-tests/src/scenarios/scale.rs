//! Scale and fairness: no starvation with a capacity of one, and 10,000
//! registered fds (select: a clear refusal beyond `FD_SETSIZE`).

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::Instant;

use anypoll_backends::{AnyPoller, Events, Interest, Poller, Token, Trigger};

use super::checks::{ensure, fd_of, show, show_all, wait_checked, Ctx, SOON, T1};
use crate::{net, Stop};

pub(super) fn capacity_one_no_starvation(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut pairs = Vec::new();
    for i in 1..=3 {
        let (mut a, b) = net::unix_pair().ctx("socketpair")?;
        a.write_all(b"x").ctx("write")?;
        p.add(fd_of(&b), Token(i), Interest::READ, Trigger::Level).ctx("add")?;
        pairs.push((a, b));
    }
    // A roomy wait first: all three at once.
    let mut big = Events::with_capacity(64);
    let evs = wait_checked(p, &mut big, Some(SOON))?;
    let seen: BTreeSet<usize> = evs.iter().map(|e| e.token().0).collect();
    ensure!(seen.len() == 3, "with room for 64 events, expected all 3 ready fds, got {}", show_all(&evs));
    // Then one event per wait: three waits must report all three.
    let mut one = Events::with_capacity(1);
    let mut order = Vec::new();
    for _ in 0..3 {
        let evs = wait_checked(p, &mut one, Some(SOON))?;
        ensure!(evs.len() == 1, "a wait with capacity 1 and 3 ready fds returned {}", show_all(&evs));
        order.push(evs[0].token().0);
    }
    let seen: BTreeSet<usize> = order.iter().copied().collect();
    ensure!(seen.len() == 3, "3 waits of capacity 1 reported tokens {order:?}: a ready fd starves");
    for (_, b) in &pairs {
        p.delete(fd_of(b)).ctx("delete")?;
    }
    Ok(())
}

pub(super) fn many_fds(p: &mut AnyPoller) -> Result<(), Stop> {
    let (soft0, hard) = net::nofile_limit().ctx("getrlimit")?;
    let r = many_fds_inner(p, hard);
    // Put the soft limit back once every fd of the scenario is closed.
    if let Ok((soft, _)) = net::nofile_limit() {
        if soft != soft0 {
            let rl = libc::rlimit { rlim_cur: soft0 as libc::rlim_t, rlim_max: hard as libc::rlim_t };
            // SAFETY: setrlimit reads the rlimit we pass.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
        }
    }
    r
}

fn many_fds_inner(p: &mut AnyPoller, hard: u64) -> Result<(), Stop> {
    const PAIRS: usize = 5_000;
    if let Some(limit) = p.fd_limit() {
        // select: 10,000 fds cannot fit; what it must do is refuse an fd
        // beyond its limit clearly, instead of writing past its fd_set.
        let want = limit as u64 + 64;
        let soft = net::raise_nofile(want).ctx("setrlimit")?;
        if soft < want {
            return Err(Stop::Skip(format!(
                "the hard RLIMIT_NOFILE ({hard}) leaves no fd at or above {}'s limit {limit}",
                p.name()
            )));
        }
        let (_a, b) = net::unix_pair().ctx("socketpair")?;
        let big = net::dup_at_least(fd_of(&b), limit).ctx("fcntl(F_DUPFD_CLOEXEC)")?;
        match p.add(big.as_raw_fd(), T1, Interest::READ, Trigger::Level) {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput && e.to_string().contains("FD_SETSIZE") => {}
            Err(e) => {
                return Err(Stop::Fail(format!(
                    "add of fd {} (≥ FD_SETSIZE): expected InvalidInput naming FD_SETSIZE, got {:?}: {e}",
                    big.as_raw_fd(),
                    e.kind()
                )))
            }
            Ok(()) => return Err(Stop::Fail(format!("add of fd {} (≥ FD_SETSIZE) succeeded", big.as_raw_fd()))),
        }
        p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add of a small fd after the refusal")?;
        p.delete(fd_of(&b)).ctx("delete")?;
        return Ok(());
    }
    let open = net::open_fd_count().unwrap_or(64) as u64;
    let want = (2 * PAIRS) as u64 + open + 100;
    let soft = net::raise_nofile(want).ctx("setrlimit")?;
    if soft < want {
        return Err(Stop::Skip(format!("the hard RLIMIT_NOFILE is {hard}, below the {want} fds this needs")));
    }
    let mut pairs = Vec::with_capacity(PAIRS);
    for i in 0..PAIRS {
        let (a, b) = net::unix_pair().ctx("socketpair")?;
        p.add(fd_of(&a), Token(2 * i), Interest::READ, Trigger::Level).ctx("add")?;
        p.add(fd_of(&b), Token(2 * i + 1), Interest::READ, Trigger::Level).ctx("add")?;
        pairs.push((a, b));
    }
    let chosen = [0usize, 1, 777, 2500, 4321, PAIRS - 1];
    let expected: BTreeSet<usize> = chosen.iter().map(|i| 2 * i + 1).collect();
    for &i in &chosen {
        pairs[i].0.write_all(b"x").ctx("write")?;
    }
    let mut ev = Events::with_capacity(64);
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + SOON;
    while seen != expected && Instant::now() < deadline {
        let evs = wait_checked(p, &mut ev, Some(deadline.saturating_duration_since(Instant::now())))?;
        for e in &evs {
            let t = e.token().0;
            ensure!(
                expected.contains(&t),
                "among {} fds, one that is not readable was reported: {}",
                2 * PAIRS,
                show(e)
            );
            let (a, b) = &pairs[t / 2];
            let fd = if t % 2 == 0 { fd_of(a) } else { fd_of(b) };
            ensure!(e.fd() == fd, "token {t} came with fd {}, expected {fd}", e.fd());
            seen.insert(t);
        }
    }
    ensure!(seen == expected, "among {} fds, expected tokens {expected:?} to be reported, saw {seen:?}", 2 * PAIRS);
    // Level: one more wait reports exactly the same set again.
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    let again: BTreeSet<usize> = evs.iter().map(|e| e.token().0).collect();
    ensure!(again == expected, "a second wait reported {again:?}, expected {expected:?}");
    drop(pairs);
    Ok(())
}
