//! The checks behind the fuzz targets, one function per target.
//!
//! Each takes the fuzzer's bytes, drives anypoll with them and panics when
//! a property fails. The same functions serve twice: `fuzz/fuzz_targets/*`
//! hand them to libFuzzer (nightly, `ci/fuzz.sh`), and the stable test
//! `cli/tests/fuzz_corpus.rs` includes this file to replay the committed inputs
//! under `cargo test`: the hand-written seeds (`fuzz/seeds/TARGET/`), the
//! minimized corpus (`fuzz/corpus/TARGET/`) and the inputs of past findings
//! (`fuzz/regressions/TARGET/`). So this file depends on nothing but
//! the anypoll crates and std.
//!
//! Name lookup is turned off ([`set_name_lookup`]) in the two relay
//! targets: an address is then numeric or an error, and no input waits on
//! DNS.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anypoll::backends::registry::{self, Source};
use anypoll::buffer::{Buffer, BufferPool};
use anypoll::stream::SpliceMode;
use anypoll_cli::{self as cli, Command};
use anypoll_relay::check::{parse_status_line, status_passes};
use anypoll_relay::config::{parse_check, parse_duration, set_name_lookup, RelayConfig};

/// A check: panics when a property fails for these bytes.
pub type Check = fn(&[u8]);

/// Every target, by the name of its directories under `fuzz/seeds/`,
/// `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("ring_buffer", ring_buffer),
    ("relay_args", relay_args),
    ("relay_config", relay_config),
    ("http_status", http_status),
];

/// The fuzzer's bytes, taken from the front.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// An error message is one non-empty line: no '\n' and no '\r' (a carriage
/// return overwrites the line on a terminal).
fn assert_one_line(what: &str, msg: &str) {
    assert!(!msg.is_empty(), "{what}: empty message");
    assert!(!msg.contains(['\n', '\r']), "{what} is not one line: {msg:?}");
}

/// Ring buffer operations against a `VecDeque<u8>` model.
///
/// The first byte picks the capacity (0..=64, small so that data and free
/// space wrap often), then each pair of bytes is an operation and a size:
/// `write_from`, `read_into`, a write through `free_slices` + `commit`, a
/// read through `data_slices` + `consume`, and a [`BufferPool`] get/put.
/// Bytes written count up, so a lost, duplicated or reordered byte shows.
/// After every operation, len/free/is_empty/is_full and the data must match
/// the model.
pub fn ring_buffer(data: &[u8]) {
    let mut input = Input(data);
    let Some(cap) = input.byte() else { return };
    let cap = usize::from(cap % 65);
    let mut buf = Buffer::with_capacity(cap);
    let mut model: VecDeque<u8> = VecDeque::new();
    let mut next = 0u8;
    let mut fresh = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                next = next.wrapping_add(1);
                next
            })
            .collect()
    };
    let mut pool = BufferPool::new(cap, data.len() % 4);
    let mut held: Vec<Buffer> = Vec::new();
    assert_buffer(&mut buf, &model, "new");
    while let Some(op) = input.byte() {
        let n = usize::from(input.byte().unwrap_or(0));
        let op = match op % 6 {
            0 => {
                let src = fresh(n);
                let done = buf.write_from(&src);
                assert_eq!(done, n.min(cap - model.len()), "write_from({n}) wrote {done}");
                model.extend(&src[..done]);
                "write_from"
            }
            1 => {
                let mut dst = vec![0xee; n];
                let done = buf.read_into(&mut dst);
                assert_eq!(done, n.min(model.len()), "read_into({n}) read {done}");
                let want: Vec<u8> = model.drain(..done).collect();
                assert_eq!(dst[..done], want[..], "read_into({n}) bytes");
                assert!(dst[done..].iter().all(|&b| b == 0xee), "read_into({n}) wrote past {done}");
                "read_into"
            }
            2 => {
                let (f1, f2) = buf.free_slices();
                assert_eq!(f1.len() + f2.len(), cap - model.len(), "free_slices total");
                assert!(!f1.is_empty() || f2.is_empty(), "free_slices: second piece without a first");
                if model.is_empty() {
                    assert_eq!(f1.len(), cap, "an empty buffer offers its whole storage in one piece");
                }
                let k = n.min(f1.len() + f2.len());
                let src = fresh(k);
                let in_first = k.min(f1.len());
                f1[..in_first].copy_from_slice(&src[..in_first]);
                f2[..k - in_first].copy_from_slice(&src[in_first..]);
                buf.commit(k);
                model.extend(&src);
                "free_slices+commit"
            }
            3 => {
                let (d1, d2) = buf.data_slices();
                assert!(!d1.is_empty() || d2.is_empty(), "data_slices: second piece without a first");
                assert!(d1.iter().chain(d2).eq(model.iter()), "data_slices bytes");
                let k = n.min(model.len());
                buf.consume(k);
                model.drain(..k);
                "data_slices+consume"
            }
            4 => {
                let mut b = pool.get();
                assert_eq!(b.capacity(), cap, "pooled buffer size");
                assert_buffer(&mut b, &VecDeque::new(), "pool.get");
                held.push(b);
                assert_eq!(pool.in_use(), held.len(), "in_use after get");
                "pool.get"
            }
            _ => {
                if !held.is_empty() {
                    // Dirty it first (data, and a head off 0): put must reset it.
                    let mut b = held.swap_remove(n % held.len());
                    b.write_from(&fresh(n));
                    let k = n / 2;
                    b.consume(k.min(b.len()));
                    pool.put(b);
                }
                assert_eq!(pool.in_use(), held.len(), "in_use after put");
                "pool.put"
            }
        };
        assert_buffer(&mut buf, &model, op);
    }
}

fn assert_buffer(buf: &mut Buffer, model: &VecDeque<u8>, after: &str) {
    let cap = buf.capacity();
    assert_eq!(buf.len(), model.len(), "len after {after}");
    assert_eq!(buf.free(), cap - model.len(), "free after {after}");
    assert_eq!(buf.is_empty(), model.is_empty(), "is_empty after {after}");
    assert_eq!(buf.is_full(), model.len() == cap, "is_full after {after}");
    let (d1, d2) = buf.data_slices();
    assert!(d1.iter().chain(d2).eq(model.iter()), "data after {after}: {d1:?} {d2:?} vs {model:?}");
    let (f1, f2) = buf.free_slices();
    assert_eq!(f1.len() + f2.len(), cap - model.len(), "free_slices after {after}");
}

/// The command line, as `anypoll ARGS` parses it, then `relay`'s settings.
///
/// The bytes are the arguments, separated by NUL bytes (so any argument,
/// even non-UTF-8, can occur). Properties:
/// * parsing never panics, and an error clap reports is one line
///   ([`cli::usage_error`], what `anypoll` prints before exiting 2);
/// * for `relay`, [`RelayConfig::from_args`] never panics; its error is
///   one line that names the setting (an option or the config file);
/// * when it succeeds, each option given is what the settings hold, and a
///   `--poller` name that the registry refuses gets a one-line error.
///
/// `--config FILE` is read from a directory that does not exist, so no
/// input opens a real file (`/dev/stdin` would block); the TOML path has
/// its own target, [`relay_config`].
pub fn relay_args(data: &[u8]) {
    set_name_lookup(false);
    let args = if data.is_empty() { Vec::new() } else { data.split(|&b| b == 0).map(OsStr::from_bytes).collect() };
    let argv = std::iter::once(OsStr::new("anypoll")).chain(args);
    let parsed = match cli::parse_from(argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            if let Some(line) = cli::usage_error(&e) {
                assert_one_line("usage error", &line);
            }
            return;
        }
    };
    let Some(Command::Relay(mut args)) = parsed.command else { return };
    let poller = parsed.poller.as_deref();
    if let Some(path) = args.config.take() {
        // "/nonexistent-anypoll-fuzz/../dev/stdin" fails too: the kernel
        // resolves ".." only after the missing directory.
        let mut missing = PathBuf::from("/nonexistent-anypoll-fuzz").into_os_string();
        missing.push("/");
        missing.push(path.as_os_str());
        args.config = Some(missing.into());
        let e = RelayConfig::from_args(&args, poller).expect_err("the config file does not exist");
        assert_one_line("config file error", &e);
        assert!(e.starts_with("config "), "a config file error names the file: {e:?}");
        args.config = None;
    }
    let cfg = match RelayConfig::from_args(&args, poller) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert_one_line("relay settings error", &e);
            assert!(e.contains("--"), "the error names the option: {e:?}");
            return;
        }
    };
    // The command line wins over the defaults.
    let def = RelayConfig::default();
    let addrs = |given: &[String]| -> Vec<SocketAddr> {
        given.iter().map(|s| s.parse().expect("accepted, so numeric with lookup off")).collect()
    };
    assert_eq!(cfg.listen, addrs(&args.listen), "--listen");
    assert_eq!(cfg.servers, addrs(&args.server), "--server");
    assert_eq!(cfg.poller.as_deref(), poller, "--poller");
    assert_eq!(cfg.maxconn, args.maxconn.unwrap_or(def.maxconn), "--maxconn");
    assert_eq!(cfg.bufsize, args.bufsize.unwrap_or(def.bufsize), "--bufsize");
    assert_eq!(cfg.threads, args.threads.unwrap_or(def.threads), "--threads");
    assert_eq!(cfg.rise, args.rise.unwrap_or(def.rise), "--rise");
    assert_eq!(cfg.fall, args.fall.unwrap_or(def.fall), "--fall");
    if args.no_splice {
        assert_eq!(cfg.splice, SpliceMode::Never, "--no-splice");
    }
    if let Some(c) = &args.check {
        assert_eq!(Ok(&cfg.check), parse_check(c).as_ref(), "--check");
    }
    for (name, given, got) in [
        ("--timeout-connect", &args.timeout_connect, cfg.timeout_connect),
        ("--timeout-client", &args.timeout_client, cfg.timeout_client),
        ("--timeout-server", &args.timeout_server, cfg.timeout_server),
        ("--check-interval", &args.check_interval, cfg.check_interval),
        ("--grace", &args.grace, cfg.grace),
    ] {
        if let Some(s) = given {
            assert_eq!(Ok(got), parse_duration(s), "{name}");
        }
    }
    assert_eq!(cfg.validate(), Ok(()), "from_args validated");
    if let Some(name) = &cfg.poller {
        // What `anypoll relay` does next with the name (an epoll fd or so,
        // closed again).
        if let Err(e) = registry::create(name, Source::Flag) {
            assert_one_line("poller error", &e.to_string());
        }
    }
}

/// A TOML config file, through [`RelayConfig::apply_file`] then
/// [`RelayConfig::validate`]. Neither panics; each error is one line;
/// applying the same file again changes nothing.
pub fn relay_config(data: &[u8]) {
    set_name_lookup(false);
    let text = String::from_utf8_lossy(data);
    let mut cfg = RelayConfig::default();
    if let Err(e) = cfg.apply_file(&text) {
        assert_one_line("config error", &e);
        return;
    }
    let once = format!("{cfg:?}");
    cfg.apply_file(&text).expect("a file that applied once applies again");
    assert_eq!(format!("{cfg:?}"), once, "applying the file twice");
    if let Err(e) = cfg.validate() {
        assert_one_line("validation error", &e);
    }
}

/// The health check's status-line parser against RFC 9112's grammar.
///
/// `HTTP/1.D SSS` (D and S digits), then a space and a reason phrase or
/// the end of the line, then LF or CRLF. Properties:
/// * `Ok(code)` only when the first line starts that way, with that code;
/// * every such line whose reason phrase is made of the bytes RFC 9112
///   allows there (tab, space, visible ASCII, obs-text 0x80-0xff) is `Ok`;
/// * an error is one line of at most 1 KiB.
pub fn http_status(data: &[u8]) {
    let got = parse_status_line(data);
    let line = data.iter().position(|&b| b == b'\n').map(|end| {
        let line = &data[..end];
        line.strip_suffix(b"\r").unwrap_or(line)
    });
    let expected = line.and_then(status_prefix);
    match &got {
        Ok(code) => {
            assert_eq!(expected, Some(*code), "accepted {:?}", String::from_utf8_lossy(data));
            assert_eq!(status_passes(*code), matches!(code / 100, 2 | 3), "status_passes({code})");
        }
        Err(e) => {
            assert_one_line("status line error", e);
            assert!(e.len() <= 1024, "error of {} bytes", e.len());
            if let (Some(line), Some(_)) = (line, expected) {
                let reason_ok = line[12..].iter().all(|&b| b == b'\t' || b >= b' ' && b != 0x7f);
                assert!(!reason_ok, "rejected a valid status line {:?}: {e}", String::from_utf8_lossy(data));
            }
        }
    }
}

/// The code of a line that starts as a status line: `HTTP/1.D SSS`, then
/// a space or the end.
fn status_prefix(line: &[u8]) -> Option<u16> {
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    if line.len() < 12 || &line[..7] != b"HTTP/1." || !digits(&line[7..8]) || line[8] != b' ' || !digits(&line[9..12]) {
        return None;
    }
    if !matches!(line.get(12), None | Some(b' ')) {
        return None;
    }
    Some(line[9..12].iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0')))
}
