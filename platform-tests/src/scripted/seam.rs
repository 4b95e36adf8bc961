//! The scripted [`SockOps`]: [`Scripted`], the [`Step`]s it takes per
//! [`Op`], and the [`Call`] log it keeps.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;

use anypoll::sockops::{Real, SockOps};

/// A socket operation of the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `recv(2)`.
    Recv,
    /// `send(2)`.
    Send,
    /// `splice(2)`.
    Splice,
    /// `read(2)` (draining a pipe).
    Read,
    /// `getsockopt(SO_ERROR)`.
    SoError,
    /// `shutdown(2)`.
    Shutdown,
}

/// What a scripted call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The real call.
    Pass,
    /// Fails with this errno; no syscall is made.
    Err(i32),
    /// The real call, but with at most this many bytes (recv, send, splice,
    /// read); the same as `Pass` for the others.
    Short(usize),
    /// `so_error` only: returns this value without a syscall.
    Value(i32),
}

/// One call made through [`Scripted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The operation.
    pub op: Op,
    /// The fd (splice: the source).
    pub fd: RawFd,
    /// Splice: the destination; -1 otherwise.
    pub to: RawFd,
    /// recv/send flags (0 for the others).
    pub flags: libc::c_int,
    /// The length asked for by the caller.
    pub len: usize,
    /// The step that applied.
    pub step: Step,
    /// What the caller got: a byte count (or the `so_error` value), or an errno.
    pub result: Result<usize, i32>,
}

impl Call {
    /// Whether a real syscall was made.
    pub fn real(&self) -> bool {
        !matches!(self.step, Step::Err(_) | Step::Value(_))
    }
    /// Whether the call concerns `fd` (either end of a splice).
    pub fn touches(&self, fd: RawFd) -> bool {
        self.fd == fd || self.to == fd
    }
}

/// Which end of a splice a queue is tied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum End {
    Any,
    From,
    To,
}

type Key = (Op, Option<RawFd>, End);

/// A [`SockOps`] that scripts outcomes per operation and logs every call;
/// see the [module docs](super).
#[derive(Debug, Default)]
pub struct Scripted {
    queues: HashMap<Key, VecDeque<Step>>,
    always: HashMap<Key, Step>,
    log: Vec<Call>,
}

impl Scripted {
    /// No script: every call passes through to [`Real`].
    pub fn new() -> Scripted {
        Scripted::default()
    }

    /// Queues `steps` for `op` on any fd.
    pub fn script(&mut self, op: Op, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((op, None, End::Any)).or_default().extend(steps);
        self
    }

    /// Queues `steps` for `op` on `fd` only (for splice: either end). A
    /// queue for the fd is used before the queue for any fd.
    pub fn script_fd(&mut self, op: Op, fd: RawFd, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((op, Some(fd), End::Any)).or_default().extend(steps);
        self
    }

    /// Queues `steps` for the splices that read from `fd` (socket → pipe).
    /// Used before a queue for either end.
    pub fn script_splice_from(&mut self, fd: RawFd, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((Op::Splice, Some(fd), End::From)).or_default().extend(steps);
        self
    }

    /// Queues `steps` for the splices that write to `fd` (pipe → socket).
    /// Used before a queue for either end.
    pub fn script_splice_to(&mut self, fd: RawFd, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((Op::Splice, Some(fd), End::To)).or_default().extend(steps);
        self
    }

    /// Applies `step` to every `op` call, on any fd, once the queues are empty.
    pub fn always(&mut self, op: Op, step: Step) -> &mut Scripted {
        self.always.insert((op, None, End::Any), step);
        self
    }

    /// Applies `step` to every `op` call on `fd` once the queues are empty.
    pub fn always_fd(&mut self, op: Op, fd: RawFd, step: Step) -> &mut Scripted {
        self.always.insert((op, Some(fd), End::Any), step);
        self
    }

    /// Removes every standing rule for `op`.
    pub fn clear_always(&mut self, op: Op) {
        self.always.retain(|k, _| k.0 != op);
    }

    /// Scripted steps of `op` not used yet (all fds).
    pub fn unused(&self, op: Op) -> usize {
        self.queues.iter().filter(|(k, _)| k.0 == op).map(|(_, q)| q.len()).sum()
    }

    /// Every call so far, in order.
    pub fn log(&self) -> &[Call] {
        &self.log
    }

    /// A position in the log, for [`since`](Scripted::since).
    pub fn mark(&self) -> usize {
        self.log.len()
    }

    /// The calls made after `mark`.
    pub fn since(&self, mark: usize) -> &[Call] {
        &self.log[mark.min(self.log.len())..]
    }

    /// How many `op` calls were made (scripted or real).
    pub fn calls(&self, op: Op) -> usize {
        self.log.iter().filter(|c| c.op == op).count()
    }

    /// How many `op` calls concerned `fd`.
    pub fn calls_fd(&self, op: Op, fd: RawFd) -> usize {
        self.log.iter().filter(|c| c.op == op && c.touches(fd)).count()
    }

    /// How many `op` calls reached the kernel.
    pub fn real_calls(&self, op: Op) -> usize {
        self.log.iter().filter(|c| c.op == op && c.real()).count()
    }

    /// How many `op` calls on `fd` returned `errno`.
    pub fn errors_fd(&self, op: Op, fd: RawFd, errno: i32) -> usize {
        self.log.iter().filter(|c| c.op == op && c.touches(fd) && c.result == Err(errno)).count()
    }

    /// The keys that apply to a call on `fds` (splice: `[from, to]`), most
    /// specific first.
    fn keys(op: Op, fds: &[RawFd]) -> Vec<Key> {
        let mut keys = Vec::with_capacity(5);
        if op == Op::Splice {
            keys.push((op, Some(fds[0]), End::From));
            keys.push((op, Some(fds[1]), End::To));
        }
        keys.extend(fds.iter().map(|&fd| (op, Some(fd), End::Any)));
        keys.push((op, None, End::Any));
        keys
    }

    fn next(&mut self, op: Op, fds: &[RawFd]) -> Step {
        let keys = Scripted::keys(op, fds);
        for key in &keys {
            if let Some(step) = self.queues.get_mut(key).and_then(VecDeque::pop_front) {
                return step;
            }
        }
        for key in &keys {
            if let Some(&step) = self.always.get(key) {
                return step;
            }
        }
        Step::Pass
    }

    fn record(&mut self, call: Call) {
        self.log.push(call);
    }
}

fn outcome(r: &io::Result<usize>) -> Result<usize, i32> {
    match r {
        Ok(n) => Ok(*n),
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

fn limit(step: Step, len: usize) -> usize {
    match step {
        Step::Short(n) => n.min(len),
        _ => len,
    }
}

fn value_misuse(op: Op) -> ! {
    panic!("Step::Value is for so_error only, not {op:?}")
}

impl SockOps for Scripted {
    fn recv(&mut self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        let step = self.next(Op::Recv, &[fd]);
        let len = buf.len();
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Recv),
            _ => Real.recv(fd, &mut buf[..limit(step, len)], flags),
        };
        self.record(Call { op: Op::Recv, fd, to: -1, flags, len, step, result: outcome(&r) });
        r
    }

    fn send(&mut self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
        let step = self.next(Op::Send, &[fd]);
        let len = buf.len();
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Send),
            _ => Real.send(fd, &buf[..limit(step, len)], flags),
        };
        self.record(Call { op: Op::Send, fd, to: -1, flags, len, step, result: outcome(&r) });
        r
    }

    fn splice(&mut self, from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        let step = self.next(Op::Splice, &[from, to]);
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Splice),
            _ => Real.splice(from, to, limit(step, len)),
        };
        self.record(Call { op: Op::Splice, fd: from, to, flags: 0, len, step, result: outcome(&r) });
        r
    }

    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        let step = self.next(Op::Read, &[fd]);
        let len = buf.len();
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Read),
            _ => Real.read(fd, &mut buf[..limit(step, len)]),
        };
        self.record(Call { op: Op::Read, fd, to: -1, flags: 0, len, step, result: outcome(&r) });
        r
    }

    fn so_error(&mut self, fd: RawFd) -> io::Result<i32> {
        let step = self.next(Op::SoError, &[fd]);
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(v) => Ok(v),
            _ => Real.so_error(fd),
        };
        let result = match &r {
            Ok(v) => Ok(*v as usize),
            Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
        };
        self.record(Call { op: Op::SoError, fd, to: -1, flags: 0, len: 0, step, result });
        r
    }

    fn shutdown(&mut self, fd: RawFd, how: libc::c_int) -> io::Result<()> {
        let step = self.next(Op::Shutdown, &[fd]);
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Shutdown),
            _ => Real.shutdown(fd, how),
        };
        let result = match &r {
            Ok(()) => Ok(0),
            Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
        };
        self.record(Call { op: Op::Shutdown, fd, to: -1, flags: how, len: 0, step, result });
        r
    }
}
