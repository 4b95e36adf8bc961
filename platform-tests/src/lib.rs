//! # platform-tests: anypoll's conformance matrix
//!
//! Every [`Scenario`] runs against every backend that
//! [`registry::backends()`] says is built here and whose `test()` passes
//! (on Linux: epoll, poll, compat and select), over real sockets: Unix
//! stream pairs and TCP on 127.0.0.1 only. With the feature `models`
//! (`cargo test -p platform-tests --features models --test conformance`)
//! the kernel models join as columns (on Linux: `evports-model`); the table
//! marks them with [`MODEL_MARK`] and says they are models, not the real OS.
//!
//! With the feature `models`, the kernel models (`kqueue-model`) get a
//! column too; the matrix says which columns are models, never the real OS.
//!
//! Each cell of the matrix is an [`Outcome`]:
//!
//! * `pass`: the backend did what the contract in `anypoll-backends` says;
//! * `FAIL: reason`: it did not (or it leaked fds);
//! * `skip: reason`: the backend's [`Capabilities`] rule the scenario out
//!   (e.g. select has no ERRHUP) or the host cannot set it up (e.g. a hard
//!   `RLIMIT_NOFILE` too low for 10,000 fds). A skip is never counted as a
//!   pass.
//!
//! Every cell gets a fresh poller, and the number of open fds is compared
//! before and after it: a cell that leaks fds fails.
//!
//! The test `tests/conformance.rs` (`cargo test -p platform-tests`) prints
//! the matrix and ends with `N passed, N failed, N skipped`. Arguments
//! after `--` narrow the run: a backend name keeps that column, any other
//! word keeps the scenarios whose id contains it.
//!
//! ```
//! use anypoll_backends::registry;
//! use platform_tests::{run_cell, scenarios, Outcome};
//!
//! let poll = registry::backends().iter().find(|b| b.name == "poll").unwrap();
//! let writable = scenarios::all().into_iter().find(|s| s.id == "writable_at_start").unwrap();
//! assert_eq!(run_cell(&writable, poll), Outcome::Pass);
//! ```

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::fmt;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use anypoll_backends::registry::{self, Backend, Probe};
use anypoll_backends::{AnyPoller, Capabilities, Poller};

pub mod net;
pub mod scenarios;
pub mod scripted;

/// The result of one scenario on one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backend behaved as the contract says.
    Pass,
    /// It did not; the reason says what was seen.
    Fail(String),
    /// The scenario does not apply to this backend or host; the reason says why.
    Skip(String),
}

impl Outcome {
    /// `pass`, `FAIL` or `skip`: the short form for the table.
    pub fn short(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "FAIL",
            Outcome::Skip(_) => "skip",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("pass"),
            Outcome::Fail(r) => write!(f, "FAIL: {r}"),
            Outcome::Skip(r) => write!(f, "skip: {r}"),
        }
    }
}

/// Why a scenario body stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The backend broke the contract.
    Fail(String),
    /// The host cannot run the scenario (found out while setting it up).
    Skip(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Fail(s)
    }
}

impl From<&str> for Stop {
    fn from(s: &str) -> Stop {
        Stop::Fail(s.to_string())
    }
}

/// What a scenario's requirement predicate sees of a backend.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    /// The backend's registry name.
    pub name: &'static str,
    /// What it can do.
    pub caps: Capabilities,
    /// Its fd limit, where it has one (select's `FD_SETSIZE`).
    pub fd_limit: Option<RawFd>,
}

/// Decides whether a scenario applies: `Err(reason)` makes the cell a skip.
pub type Requires = fn(&Subject) -> Result<(), String>;

/// A scenario's body. It gets a fresh poller of the backend under test.
pub type Body = fn(&mut AnyPoller) -> Result<(), Stop>;

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// A short, unique, `snake_case` id (the row label and the filter word).
    pub id: &'static str,
    /// One sentence saying what is checked.
    pub about: &'static str,
    /// Whether it applies to a backend; see [`Requires`].
    pub requires: Requires,
    /// The check itself.
    pub body: Body,
}

/// The backends that get a column: built here and their `test()` passes.
pub fn columns() -> Vec<&'static Backend> {
    let before = net::open_fd_count();
    let cols = registry::backends().iter().filter(|b| matches!(b.test(), Probe::Ok(_))).collect();
    // The probes' pollers are dropped: let a backend that frees its fds
    // late do so now, not inside the first cell.
    settled_fd_count(before);
    cols
}

/// Runs one scenario on a fresh poller of `backend`.
///
/// The requirement predicate is checked first (a skip if it says no).
/// A panic in the body is a failure. So is a change in the number of open
/// fds across the cell, where the host can count them.
pub fn run_cell(scenario: &Scenario, backend: &Backend) -> Outcome {
    let before = net::open_fd_count();
    let outcome = run_cell_inner(scenario, backend);
    let after = settled_fd_count(before);
    match (outcome, before, after) {
        (Outcome::Fail(r), _, _) => Outcome::Fail(r),
        (o, Some(b), Some(a)) if a != b => {
            let what = if a > b { "leaked" } else { "closed" };
            let n = a.abs_diff(b);
            let note = match o {
                Outcome::Skip(r) => format!(" (while skipping: {r})"),
                _ => String::new(),
            };
            Outcome::Fail(format!("the cell {what} {n} fd(s): {b} open before it, {a} after{note}"))
        }
        (o, _, _) => o,
    }
}

/// The open fd count once it is back to `before`, or after 500 ms. A
/// backend may free its fds after its poller is dropped rather than at
/// once (libkqueue's monitoring thread notices a closed kqueue and then
/// closes its epoll set and eventfds): a leak is a count that stays
/// changed, so the check waits for it to settle, polling every 5 ms.
fn settled_fd_count(before: Option<usize>) -> Option<usize> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let now = net::open_fd_count();
        if now == before || std::time::Instant::now() >= give_up {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn run_cell_inner(scenario: &Scenario, backend: &Backend) -> Outcome {
    let mut poller = match backend.create() {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("could not create the {} backend: {e}", backend.name)),
    };
    let subject = Subject { name: poller.name(), caps: poller.capabilities(), fd_limit: poller.fd_limit() };
    if let Err(reason) = (scenario.requires)(&subject) {
        return Outcome::Skip(reason);
    }
    let result = catch_unwind(AssertUnwindSafe(|| (scenario.body)(&mut poller)));
    drop(poller);
    match result {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(Stop::Fail(r))) => Outcome::Fail(r),
        Ok(Err(Stop::Skip(r))) => Outcome::Skip(r),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a non-string panic".to_string());
            Outcome::Fail(format!("panicked: {msg}"))
        }
    }
}

/// What follows a model column's name in the table's header.
pub const MODEL_MARK: &str = "*";

/// The outcomes of a run: one row per scenario, one column per backend.
#[derive(Debug)]
pub struct Matrix {
    /// The column names (backends).
    pub backends: Vec<&'static str>,
    /// Per column: whether it is a kernel model ([`Backend::is_model`]),
    /// which the table marks as such.
    pub is_model: Vec<bool>,
    /// One row per scenario: the scenario and one outcome per backend.
    pub rows: Vec<(Scenario, Vec<Outcome>)>,
    /// How long the whole run took.
    pub elapsed: Duration,
}

impl Matrix {
    /// Runs `scenarios` on `backends`, row by row. `progress` is called
    /// after each cell (scenario, backend, outcome, time taken).
    pub fn run(
        scenarios: &[Scenario],
        backends: &[&'static Backend],
        mut progress: impl FnMut(&Scenario, &Backend, &Outcome, Duration),
    ) -> Matrix {
        let start = Instant::now();
        let mut rows = Vec::new();
        for s in scenarios {
            let mut cells = Vec::new();
            for b in backends {
                let t = Instant::now();
                let o = run_cell(s, b);
                progress(s, b, &o, t.elapsed());
                cells.push(o);
            }
            rows.push((*s, cells));
        }
        Matrix {
            backends: backends.iter().map(|b| b.name).collect(),
            is_model: backends.iter().map(|b| b.is_model).collect(),
            rows,
            elapsed: start.elapsed(),
        }
    }

    /// (passed, failed, skipped) over every cell.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (_, cells) in &self.rows {
            for o in cells {
                match o {
                    Outcome::Pass => c.0 += 1,
                    Outcome::Fail(_) => c.1 += 1,
                    Outcome::Skip(_) => c.2 += 1,
                }
            }
        }
        c
    }

    /// The model columns' names.
    pub fn models(&self) -> Vec<&'static str> {
        self.backends.iter().zip(&self.is_model).filter(|(_, m)| **m).map(|(b, _)| *b).collect()
    }

    /// The table: short cells with a note number (`FAIL[2]`, `skip[5]`),
    /// then the notes, fails first. A model column's header ends with
    /// [`MODEL_MARK`], explained under the table.
    pub fn render(&self) -> String {
        let label_w = self.rows.iter().map(|(s, _)| s.id.len()).max().unwrap_or(8).max(8);
        let mut notes: Vec<(usize, String)> = Vec::new();
        let mut grid: Vec<Vec<String>> = Vec::new();
        // Every FAIL and skip gets a note; fails get the low numbers so
        // they are read first.
        let mut order: Vec<(usize, usize)> = Vec::new();
        for fails in [true, false] {
            for (r, (_, cells)) in self.rows.iter().enumerate() {
                for (c, o) in cells.iter().enumerate() {
                    let wanted = if fails { matches!(o, Outcome::Fail(_)) } else { matches!(o, Outcome::Skip(_)) };
                    if wanted {
                        order.push((r, c));
                    }
                }
            }
        }
        let mut number = vec![vec![0usize; self.backends.len()]; self.rows.len()];
        for (i, &(r, c)) in order.iter().enumerate() {
            number[r][c] = i + 1;
            let (s, cells) = &self.rows[r];
            notes.push((i + 1, format!("{} / {}: {}", s.id, self.backends[c], cells[c])));
        }
        for (r, (_, cells)) in self.rows.iter().enumerate() {
            grid.push(
                cells
                    .iter()
                    .enumerate()
                    .map(|(c, o)| match o {
                        Outcome::Pass => "pass".to_string(),
                        _ => format!("{}[{}]", o.short(), number[r][c]),
                    })
                    .collect(),
            );
        }
        let col_w: Vec<usize> = (0..self.backends.len())
            .map(|c| {
                grid.iter()
                    .map(|row| row[c].len())
                    .chain([self.backends[c].len() + MODEL_MARK.len()])
                    .max()
                    .unwrap_or(4)
            })
            .collect();
        let line = |label: &str, cells: &[String]| {
            let mut l = format!("{label:label_w$}");
            for (c, cell) in cells.iter().enumerate() {
                l.push_str(&format!("  {:w$}", cell, w = col_w[c]));
            }
            format!("{}\n", l.trim_end())
        };
        let header: Vec<String> = self
            .backends
            .iter()
            .enumerate()
            .map(|(c, b)| if self.is_model.get(c) == Some(&true) { format!("{b}{MODEL_MARK}") } else { b.to_string() })
            .collect();
        let mut out = line("scenario", &header);
        out.push_str(&"-".repeat(label_w + col_w.iter().map(|w| w + 2).sum::<usize>()));
        out.push('\n');
        for (r, (s, _)) in self.rows.iter().enumerate() {
            out.push_str(&line(s.id, &grid[r]));
        }
        let models = self.models();
        if !models.is_empty() {
            out.push_str(&format!(
                "\n{MODEL_MARK} a kernel model, not the real OS: {} runs that backend's own code over a user-space \
                 model of its kernel on {}; what a model can and cannot prove: docs/design.md, \"Kernel models\"\n",
                models.join(", "),
                std::env::consts::OS
            ));
        }
        if !notes.is_empty() {
            out.push('\n');
            for (n, text) in notes {
                out.push_str(&format!("[{n}] {text}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_columns_are_marked_and_explained() {
        let m = Matrix {
            backends: vec!["poll", "evports-model"],
            is_model: vec![false, true],
            rows: vec![],
            elapsed: Duration::ZERO,
        };
        let out = m.render();
        let header = out.lines().next().unwrap();
        assert!(header.ends_with(&format!("evports-model{MODEL_MARK}")), "{header}");
        assert!(!header.contains(&format!("poll{MODEL_MARK}")), "{header}");
        assert!(out.contains("a kernel model, not the real OS: evports-model runs"), "{out}");

        let real = Matrix { backends: vec!["poll"], is_model: vec![false], rows: vec![], elapsed: Duration::ZERO };
        assert!(!real.render().contains("kernel model"), "{}", real.render());
    }
}
