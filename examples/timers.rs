//! Timers on the anypoll event loop: periodic and one-shot timers,
//! cancellation and rescheduling. Ends by itself after about 1.1 s.
//!
//! ```text
//! cargo run --example timers
//! cargo run --example timers -- --poller select     # or ANYPOLL_POLLER=select
//! ```
//!
//! What happens, in milliseconds from the start:
//!
//! | at   | timer     | what it does |
//! |------|-----------|--------------|
//! | 200… | `tick`    | periodic, every 200 ms, re-armed at its *deadline* + 200 ms so it does not drift |
//! | 250  | `cancel`  | cancels `never` |
//! | 300  | `hello`   | a plain one-shot |
//! | 350  | `move`    | reschedules `moved` from 400 ms to 950 ms |
//! | 500  | `never`   | cancelled at 250 ms: never fires |
//! | 950  | `moved`   | set for 400 ms, moved to 950 ms |
//! | 1100 | `stop`    | stops the loop |
//!
//! No fd is registered: the loop sleeps in the poller's wait until the next
//! deadline, so it makes one iteration per firing (see the counters printed
//! at the end). The exit status is 0 only if the timers fired in this order
//! and none early.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anypoll::backends::registry;
use anypoll::{Ctx, EventLoop, Handler, IoEvent, TimerId};

const PERIOD: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Tick,
    Cancel,
    Hello,
    Move,
    Never,
    Moved,
    Stop,
}

impl Name {
    const ALL: [Name; 7] = [Name::Tick, Name::Cancel, Name::Hello, Name::Move, Name::Never, Name::Moved, Name::Stop];

    fn from(data: u64) -> Name {
        Name::ALL[data as usize]
    }
}

struct Demo {
    start: Instant,
    never: Option<TimerId>,
    moved: Option<TimerId>,
    /// The deadline the periodic tick was set for.
    next_tick: Instant,
    /// What fired, when, and when it was due.
    log: Vec<(Name, Duration, Duration)>,
}

impl Demo {
    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }
}

impl Handler for Demo {
    fn io(&mut self, _cx: &mut Ctx, _ev: IoEvent) {}

    fn timer(&mut self, cx: &mut Ctx, _id: TimerId, data: u64) {
        let now = Instant::now();
        let name = Name::from(data);
        let due = match name {
            Name::Tick => self.next_tick,
            Name::Cancel => self.at(250),
            Name::Hello => self.at(300),
            Name::Move => self.at(350),
            Name::Never => self.at(500),
            Name::Moved => self.at(950),
            Name::Stop => self.at(1100),
        };
        let (t, due) = (now - self.start, due - self.start);
        let late = t.saturating_sub(due);
        self.log.push((name, t, due));
        let what = match name {
            Name::Tick => {
                // Re-arm from the deadline, not from now: no drift.
                self.next_tick += PERIOD;
                cx.add_timer_at(self.next_tick, Name::Tick as u64);
                "periodic".to_string()
            }
            Name::Cancel => {
                let ok = cx.cancel_timer(self.never.take().expect("set at start"));
                format!("cancelled 'never': {ok}")
            }
            Name::Hello => "one-shot".to_string(),
            Name::Move => {
                let id = self.moved.take().expect("set at start");
                let new = cx.reschedule_timer(id, self.at(950) - now);
                self.moved = new;
                format!("moved 'moved' from 400 ms to 950 ms: {}", new.is_some())
            }
            Name::Never => "FIRED ALTHOUGH CANCELLED".to_string(),
            Name::Moved => "fired at its new time".to_string(),
            Name::Stop => {
                cx.stop();
                "stopping the loop".to_string()
            }
        };
        println!(
            "[{:>6.1} ms] {:<7} (due {:>4} ms, {:>4} µs late) {what}",
            ms(t),
            format!("{name:?}"),
            due.as_millis(),
            late.as_micros()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> ExitCode {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let mut flag = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--poller" => flag = args.next(),
            _ => {
                eprintln!("usage: timers [--poller NAME]");
                return ExitCode::from(2);
            }
        }
    }
    let (poller, source) = match registry::choose(None, flag.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("timers: {e}");
            return ExitCode::from(2);
        }
    };
    let mut el = match EventLoop::new(poller, None) {
        Ok(el) => el,
        Err(e) => {
            eprintln!("timers: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("timers: backend {} (from {source})", el.cx().backend());

    let start = Instant::now();
    let mut demo = Demo { start, never: None, moved: None, next_tick: start + PERIOD, log: Vec::new() };
    let cx = el.cx();
    cx.add_timer_at(demo.next_tick, Name::Tick as u64);
    cx.add_timer_at(demo.at(250), Name::Cancel as u64);
    cx.add_timer_at(demo.at(300), Name::Hello as u64);
    cx.add_timer_at(demo.at(350), Name::Move as u64);
    demo.never = Some(cx.add_timer_at(demo.at(500), Name::Never as u64));
    demo.moved = Some(cx.add_timer_at(demo.at(400), Name::Moved as u64));
    cx.add_timer_at(demo.at(1100), Name::Stop as u64);

    if let Err(e) = el.run(&mut demo) {
        eprintln!("timers: {e}");
        return ExitCode::FAILURE;
    }
    println!("timers: done in {:.0} ms; {}", ms(start.elapsed()), el.cx().counters());

    use Name::*;
    let want = [Tick, Cancel, Hello, Move, Tick, Tick, Tick, Moved, Tick, Stop];
    let got: Vec<Name> = demo.log.iter().map(|(n, _, _)| *n).collect();
    let early: Vec<_> = demo.log.iter().filter(|(_, t, due)| t < due).collect();
    if got != want || !early.is_empty() {
        println!("timers: FAILED: fired {got:?}, expected {want:?}; early: {early:?}");
        return ExitCode::FAILURE;
    }
    println!("timers: every timer fired in order, none early, the cancelled one never");
    ExitCode::SUCCESS
}
