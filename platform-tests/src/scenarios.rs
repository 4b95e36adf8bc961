//! The scenarios of the conformance matrix, in the order they are printed.
//!
//! Each one is strict: it checks what must happen *and* what must not (an
//! event before its time, a direction that was not asked for, ERROR with
//! READABLE, a wait that returns at once when it should sleep). Every wait
//! goes through [`wait_checked`], which also enforces the invariants that
//! hold for every event on every backend (see its docs).
//!
//! One file per family, in the order the matrix prints them:
//! `readiness`, `hangup` (half-close and reset), `connect`, `triggers`,
//! `registration` (modify and delete), `stale` events, `timeouts`,
//! `wakeups` (waker and signals) and `scale`; `checks` holds the checked
//! waits they all use. [`all`] lists them.

mod checks;
mod connect;
mod hangup;
mod readiness;
mod registration;
mod scale;
mod stale;
mod timeouts;
mod triggers;
mod wakeups;

use anypoll_backends::kqueue::deviations::{self, Deviation};

pub use checks::wait_checked;
use connect::{needs_errhup_connect, pending_connect, refused_connect_error, refused_connect_so_error};
use hangup::{
    half_close_read_closed, half_close_readable, needs_errhup_reset, needs_rdhup, peer_reset_error,
    peer_reset_wakes_reader,
};
use readiness::{readable_after_write, writable_at_start, zero_timeout};
use registration::{
    add_again_replaces, delete_silent, modify_changes_token, modify_empty_silent, modify_empty_silent_after_reset,
    not_registered_errors,
};
use scale::{capacity_one_no_starvation, many_fds};
use stale::{stale_in_batch, stale_reused_fd, stale_reused_fd_dup};
use timeouts::{timeout_10ms, timeout_precision};
use triggers::{
    edge_once_per_edge, edge_oneshot_once_per_arm, edge_oneshot_rearm_pending, edge_oneshot_refused, edge_refused,
    lacks_edge, lacks_edge_oneshot, level_repeats, needs_edge, needs_edge_oneshot, needs_level,
    oneshot_silent_on_reset, oneshot_until_rearmed,
};
use wakeups::{signal_during_wait, waker_coalesces, waker_wakes_waiting_thread};

use crate::{Scenario, Subject};

fn any(_: &Subject) -> Result<(), String> {
    Ok(())
}

/// Every scenario, in the order the matrix prints them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            id: "readable_after_write",
            about: "nothing before a write (READ only, on a writable fd), then exactly READABLE",
            requires: any,
            body: readable_after_write,
        },
        Scenario {
            id: "writable_at_start",
            about: "a fresh socket registered for both directions is exactly WRITABLE",
            requires: any,
            body: writable_at_start,
        },
        Scenario {
            id: "zero_timeout",
            about: "a zero timeout returns at once, with what is ready",
            requires: any,
            body: zero_timeout,
        },
        Scenario {
            id: "half_close_readable",
            about: "the peer's shutdown(SHUT_WR) is READABLE (no HUP/ERROR), then recv returns 0",
            requires: any,
            body: half_close_readable,
        },
        Scenario {
            id: "half_close_read_closed",
            about: "with RDHUP, the peer's half-close is READ_CLOSED before any recv (and not before it)",
            requires: needs_rdhup,
            body: half_close_read_closed,
        },
        Scenario {
            id: "peer_reset_error",
            about: "a peer's RST is ERROR or READ_CLOSED|HUP; recv gives ECONNRESET or 0",
            requires: needs_errhup_reset,
            body: peer_reset_error,
        },
        Scenario {
            id: "peer_reset_wakes_reader",
            about: "a peer's RST wakes a reader; recv gives ECONNRESET or 0",
            requires: any,
            body: peer_reset_wakes_reader,
        },
        Scenario {
            id: "refused_connect_error",
            about: "a refused non-blocking connect is ERROR without READABLE/WRITABLE; SO_ERROR is ECONNREFUSED",
            requires: |s| deviations::check(s.name, Deviation::SoErrorConsumed).and_then(|()| needs_errhup_connect(s)),
            body: refused_connect_error,
        },
        Scenario {
            id: "refused_connect_so_error",
            about: "a refused connect wakes a writer (WRITABLE or ERROR); SO_ERROR is ECONNREFUSED",
            requires: |s| deviations::check(s.name, Deviation::SoErrorConsumed),
            body: refused_connect_so_error,
        },
        Scenario {
            id: "pending_connect",
            about: "silent while the connect is pending, then exactly WRITABLE; SO_ERROR 0",
            requires: any,
            body: pending_connect,
        },
        Scenario {
            id: "level_repeats",
            about: "level: 3 waits in a row report the fd; after draining, silence",
            requires: needs_level,
            body: level_repeats,
        },
        Scenario {
            id: "edge_once_per_edge",
            about: "edge: one event per write, silence in between without reading",
            requires: needs_edge,
            body: edge_once_per_edge,
        },
        Scenario {
            id: "edge_refused",
            about: "without EDGE, add/modify with Trigger::Edge is Unsupported, naming backend and \"edge\"",
            requires: lacks_edge,
            body: edge_refused,
        },
        Scenario {
            id: "edge_oneshot_once_per_arm",
            about: "edge-oneshot: one event per arm, none for new data until modify re-arms it",
            requires: needs_edge_oneshot,
            body: edge_oneshot_once_per_arm,
        },
        Scenario {
            id: "edge_oneshot_rearm_pending",
            about: "edge-oneshot: modify with data still unread fires at once (as epoll does), then silence",
            requires: needs_edge_oneshot,
            body: edge_oneshot_rearm_pending,
        },
        Scenario {
            id: "edge_oneshot_refused",
            about: "a backend without EDGE_ONESHOT refuses it loudly (Unsupported, naming backend and trigger)",
            requires: lacks_edge_oneshot,
            body: edge_oneshot_refused,
        },
        Scenario {
            id: "oneshot_until_rearmed",
            about: "oneshot: one event, silence until modify re-arms it",
            requires: any,
            body: oneshot_until_rearmed,
        },
        Scenario {
            id: "oneshot_silent_on_reset",
            about: "a fired oneshot stays silent even when the peer then resets",
            requires: any,
            body: oneshot_silent_on_reset,
        },
        Scenario {
            id: "modify_empty_silent",
            about: "modify to an empty interest silences a ready fd; modify back revives it",
            requires: any,
            body: modify_empty_silent,
        },
        Scenario {
            id: "modify_empty_after_reset",
            about: "an empty interest silences a reset socket too: no ERROR/HUP, no busy wake-ups",
            requires: any,
            body: modify_empty_silent_after_reset,
        },
        Scenario {
            id: "delete_silent",
            about: "delete silences the fd (and a dup of it); a second delete is NotFound",
            requires: any,
            body: delete_silent,
        },
        Scenario {
            id: "modify_changes_token",
            about: "modify changes the token that comes back",
            requires: any,
            body: modify_changes_token,
        },
        Scenario {
            id: "add_again_replaces",
            about: "add of an fd already registered replaces the registration",
            requires: any,
            body: add_again_replaces,
        },
        Scenario {
            id: "not_registered_errors",
            about: "delete/modify of an unregistered fd is NotFound, naming the fd and the backend",
            requires: any,
            body: not_registered_errors,
        },
        Scenario {
            id: "stale_reused_fd",
            about: "fd closed without delete, number reused: add works, no stale event for the new owner",
            requires: any,
            body: stale_reused_fd,
        },
        Scenario {
            id: "stale_reused_fd_dup",
            about: "as stale_reused_fd, with the old file alive in a dup (still in epoll's set)",
            requires: any,
            body: stale_reused_fd_dup,
        },
        Scenario {
            id: "stale_in_batch",
            about: "old (dup) and new file both readable on one number: one event, the new token",
            requires: any,
            body: stale_in_batch,
        },
        Scenario {
            id: "timeout_10ms",
            about: "a 10 ms timeout: every run >= 10 ms, median < 50 ms",
            requires: any,
            body: timeout_10ms,
        },
        Scenario {
            id: "timeout_precision",
            about: "100 µs and 3.1 ms waits: never early, best of 50 within 500 µs (or a skip naming the resolution)",
            requires: any,
            body: timeout_precision,
        },
        Scenario {
            id: "waker_wakes_waiting_thread",
            about: "a wake from another thread ends a 5 s wait early with woken()",
            requires: any,
            body: waker_wakes_waiting_thread,
        },
        Scenario {
            id: "waker_coalesces",
            about: "wakes before a wait end it at once; several wakes give one woken() wait",
            requires: any,
            body: waker_coalesces,
        },
        Scenario {
            id: "signal_during_wait",
            about: "SIGUSR1 (no SA_RESTART) during a wait: Ok, no events; early for native backends",
            requires: any,
            body: signal_during_wait,
        },
        Scenario {
            id: "capacity_one_no_starvation",
            about: "level, capacity 1, 3 ready fds: 3 waits report all three",
            requires: needs_level,
            body: capacity_one_no_starvation,
        },
        Scenario {
            id: "ten_thousand_fds",
            about: "10,000 registered fds, exactly the readable ones reported; select refuses fds >= FD_SETSIZE",
            requires: any,
            body: many_fds,
        },
    ]
}
