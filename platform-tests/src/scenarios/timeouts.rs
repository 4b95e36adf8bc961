//! Timeouts: a 10 ms wait and sub-millisecond precision.

use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Events, Interest, Poller, Trigger};

use super::checks::{ensure, fd_of, ms, show_all, wait_checked, Ctx, T1};
use crate::{net, Stop};

pub(super) fn timeout_10ms(p: &mut AnyPoller) -> Result<(), Stop> {
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let mut ev = Events::with_capacity(16);
    let want = Duration::from_millis(10);
    let mut took = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let evs = wait_checked(p, &mut ev, Some(want))?;
        let d = t.elapsed();
        ensure!(evs.is_empty(), "nothing is ready, yet the wait reported {}", show_all(&evs));
        ensure!(d >= want, "a 10 ms wait returned after {}", ms(d));
        took.push(d);
    }
    took.sort();
    let median = took[took.len() / 2];
    ensure!(median < Duration::from_millis(50), "a 10 ms wait took {} (median of 7)", ms(median));
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

/// How close to the asked timeout the best of [`PRECISION_TRIES`] waits must
/// end.
const PRECISION_SLACK: Duration = Duration::from_micros(500);
/// Tries per timeout in [`timeout_precision`]: the best one counts, so a
/// busy shared host does not make it fail.
const PRECISION_TRIES: usize = 50;

/// Sub-millisecond timeouts: a 100 µs and a 3.1 ms wait with nothing ready
/// each return no earlier than asked, every time, and within
/// [`PRECISION_SLACK`] of it at best. A backend whose kernel call takes
/// whole milliseconds says so through its resolution, and is skipped.
pub(super) fn timeout_precision(p: &mut AnyPoller) -> Result<(), Stop> {
    let res = p.timeout_resolution();
    if res > PRECISION_SLACK {
        return Err(Stop::Skip(format!(
            "{} waits in steps of {:?} here: a 100 µs timeout cannot end within {:?} of it",
            p.name(),
            res,
            PRECISION_SLACK
        )));
    }
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let mut ev = Events::with_capacity(16);
    for want in [Duration::from_micros(100), Duration::from_micros(3100)] {
        let mut best = Duration::MAX;
        for i in 0..PRECISION_TRIES {
            let t = Instant::now();
            let evs = wait_checked(p, &mut ev, Some(want))?;
            let d = t.elapsed();
            ensure!(evs.is_empty() && !ev.woken(), "nothing is ready, yet a {want:?} wait reported {}", show_all(&evs));
            ensure!(d >= want, "a {want:?} wait returned early, after {d:?} (try {} of {PRECISION_TRIES})", i + 1);
            best = best.min(d);
        }
        ensure!(
            best <= want + PRECISION_SLACK,
            "a {want:?} wait took {best:?} at best over {PRECISION_TRIES} tries (more than {PRECISION_SLACK:?} late; \
             the backend claims a resolution of {res:?})"
        );
    }
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}
