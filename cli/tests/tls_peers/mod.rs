//! Real TLS peers for the relay tests: certificates made by the openssl
//! CLI at run time (none is committed), an in-test HTTP file server,
//! `openssl s_server -WWW` as a TLS server, curl and `openssl s_client` as
//! clients, sha256 through `sha256sum`. Every child runs with a time
//! limit and is killed past it; every port comes from port 0 on loopback.
//!
//! The tools are Debian's `openssl` and `curl` (ci/test.sh installs them).
//! A missing tool fails the test with a message saying which: these tests
//! never pass without having run.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::relay_common::{wait_until, Backend, Gen};
use crate::relay_proc::{open_fds_below, Proc};

/// `program`, or a panic that says to install it.
pub fn need(program: &str) {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_err() {
        panic!("{program} is needed by the TLS peer tests (Debian package {program}; ci/test.sh installs it)");
    }
}

/// Runs `cmd` to its end, killing it after `limit`; returns the status and
/// its stdout and stderr.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (ExitStatus, String, String) {
    let (st, out, err) = run_with_input(cmd, b"", limit);
    (st, String::from_utf8_lossy(&out).into_owned(), err)
}

/// Runs `cmd` with `input` on its stdin (then closed), killing it after
/// `limit`; returns the status, its stdout (bytes) and its stderr.
pub fn run_with_input(cmd: &mut Command, input: &[u8], limit: Duration) -> (ExitStatus, Vec<u8>, String) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = collect(child.stdout.take().expect("stdout"));
    let err = collect(child.stderr.take().expect("stderr"));
    let end = Instant::now() + limit;
    let st = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = String::from_utf8_lossy(&err.recv().unwrap_or_default()).into_owned();
    (st, out.recv().unwrap_or_default(), err)
}

fn collect(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        let _ = tx.send(s);
    });
    rx
}

// ----- the relay under test -----

/// The log filter of the TLS relays: the routine lines and each stream's
/// end (where TLS errors are named).
pub const LOG: &str = "warn,anypoll_cli::relay=info,anypoll_relay=info,anypoll::tls=info";

/// The sides on which the relay under test speaks TLS, with the files of
/// a [`Pki`].
#[derive(Debug, Clone, Copy)]
pub enum Tls {
    /// To its clients: it terminates TLS with the server certificate
    /// (`--tls-cert srv.pem --tls-key srv.key`).
    Clients,
    /// To its servers, trusting the test CA (`--server-tls --ca ca.pem`).
    Servers,
    /// Both: the options of [`Tls::Servers`], then those of
    /// [`Tls::Clients`].
    Both,
}

/// Runs `anypoll relay --listen 127.0.0.1:0 --server SERVER`, the options
/// of `tls` (`pki`'s files), then `extra`, with [`LOG`]. Once it listens,
/// returns it, its address and its fd [`baseline`].
pub fn relay(pki: &Pki, tls: Tls, server: &str, extra: &[&str]) -> (Proc, SocketAddr, usize) {
    let (ca, cert, key) = (pki.file("ca.pem"), pki.file("srv.pem"), pki.file("srv.key"));
    let mut all = vec!["relay", "--listen", "127.0.0.1:0", "--server", server];
    if matches!(tls, Tls::Servers | Tls::Both) {
        all.extend(["--server-tls", "--ca", &ca]);
    }
    if matches!(tls, Tls::Clients | Tls::Both) {
        all.extend(["--tls-cert", &cert, "--tls-key", &key]);
    }
    all.extend(extra);
    let p = Proc::spawn_with(&all, |c| {
        c.env("RUST_LOG", LOG);
    });
    let (addrs, _) = p.wait_listening();
    let base = baseline(&p, addrs[0]);
    (p, addrs[0], base)
}

/// The relay's open fds.
pub fn fds(p: &Proc) -> usize {
    open_fds_below(p.pid(), u64::MAX).expect("/proc/PID/fd")
}

/// The relay's fd count at rest, the baseline of the leak checks. A
/// worker thread makes its fds (the spare fd) after "listening" is
/// logged, so one connection is made and closed first (the worker has
/// run), then the count is taken once it held still for 300 ms.
pub fn baseline(p: &Proc, addr: SocketAddr) -> usize {
    drop(TcpStream::connect(addr).expect("connect to the relay"));
    let (mut last, mut still) = (fds(p), 0);
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let now = fds(p);
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still >= 6 {
            break;
        }
    }
    last
}

/// The relay's fds come back to `base` within `limit`; otherwise the
/// panic lists what is open.
pub fn fds_back(p: &Proc, base: usize, limit: Duration) {
    if !wait_until(limit, || fds(p) == base) {
        let list: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
            .map(|d| d.filter_map(|e| Some(format!("{:?}", std::fs::read_link(e.ok()?.path()).ok()?))).collect())
            .unwrap_or_default();
        panic!("fds {base} → {}: {list:?}\n{}", fds(p), p.log_text());
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after `tag` and this process.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("anypoll-tls-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// `name` in it, as a string (every path here is UTF-8).
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("utf-8").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The certificates of a test, made by the openssl CLI:
/// * `ca.pem` (`ca.key`): the test CA;
/// * `srv.pem` + `srv.key`: a server certificate signed by it, for
///   `localhost` and `127.0.0.1`, valid for two days;
/// * `expired.pem` (key `srv.key`): the same names, expired yesterday;
/// * `other-ca.pem`: another CA, which signed nothing here (a client that
///   trusts only it rejects `srv.pem`);
/// * `wrong.pem` + `wrong.key`: signed by the test CA but for
///   `wrong.example` only.
pub struct Pki {
    /// The directory holding the files.
    pub dir: TempDir,
}

impl Pki {
    /// Makes every file (a second or so).
    pub fn new(tag: &str) -> Pki {
        need("openssl");
        let dir = TempDir::new(tag);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca_ext =
            ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
        for (name, cn) in [("ca", "anypoll test CA"), ("other-ca", "anypoll other CA")] {
            let (key, pem, subj) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN={cn}"));
            openssl(
                &dir,
                &[&["req", "-x509"][..], &ec, &["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj], &ca_ext]
                    .concat(),
            );
        }
        std::fs::write(
            dir.0.join("srv.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        std::fs::write(
            dir.0.join("wrong.ext"),
            "subjectAltName=DNS:wrong.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        for (key, csr, cn) in [("srv.key", "srv.csr", "/CN=localhost"), ("wrong.key", "wrong.csr", "/CN=wrong.example")]
        {
            openssl(&dir, &[&["req"][..], &ec, &["-keyout", key, "-out", csr, "-subj", cn]].concat());
        }
        for (csr, ext, out, days) in [
            ("srv.csr", "srv.ext", "srv.pem", "2"),
            ("srv.csr", "srv.ext", "expired.pem", "-1"),
            ("wrong.csr", "wrong.ext", "wrong.pem", "2"),
        ] {
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    out,
                    "-days",
                    days,
                    "-extfile",
                    ext,
                ],
            );
        }
        Pki { dir }
    }

    /// The path of one of the files.
    pub fn file(&self, name: &str) -> String {
        self.dir.file(name)
    }
}

fn openssl(dir: &TempDir, args: &[&str]) {
    let (st, _, err) = run_bounded(Command::new("openssl").args(args).current_dir(&dir.0), Duration::from_secs(30));
    assert!(st.success(), "openssl {args:?}: {st}: {err}");
}

/// Writes `size` deterministic bytes (seed `seed`) to `path`.
pub fn make_file(path: &Path, seed: u64, size: usize) {
    let mut f = io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut g = Gen::new(seed);
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        g.fill(&mut chunk[..n]);
        f.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    f.flush().expect("flush");
}

/// The sha256 of a file, by `sha256sum`.
pub fn sha256(path: &str) -> String {
    let (st, out, err) = run_bounded(Command::new("sha256sum").arg(path), Duration::from_secs(60));
    assert!(st.success(), "sha256sum {path}: {err}");
    out.split_whitespace().next().expect("a digest").to_string()
}

/// An HTTP/1.1 server on 127.0.0.1:0 serving the files of a directory
/// (`GET /NAME`), with keep-alive: a plain backend for curl.
pub fn file_server(dir: PathBuf) -> Backend {
    Backend::spawn("127.0.0.1:0".parse().expect("addr"), move |s| serve_files(s, &dir))
}

fn serve_files(s: TcpStream, dir: &Path) {
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut w = s;
    // At most 1000 requests per connection: bounded like every loop here.
    for _ in 0..1000 {
        let mut first = String::new();
        if r.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let mut close = false;
        for _ in 0..100 {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            close |= h.to_ascii_lowercase().starts_with("connection: close");
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let name = first.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/');
        let file =
            (!name.is_empty() && !name.contains('/')).then(|| std::fs::File::open(dir.join(name)).ok()).flatten();
        let ok = match file {
            Some(mut f) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").is_ok()
                    && io::copy(&mut f, &mut w).is_ok()
            }
            None => w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_ok(),
        };
        if !ok || close {
            return;
        }
    }
}

/// `openssl s_server -WWW` on 127.0.0.1:0 in `dir` (it serves the
/// directory's files over HTTP/1.0 and TLS), with a certificate and key.
/// Killed on drop.
pub struct SServer {
    child: Child,
    /// Where it accepts.
    pub addr: SocketAddr,
}

impl SServer {
    /// Starts it and waits (at most 10 s) for its `ACCEPT` line.
    pub fn start(dir: &Path, cert: &str, key: &str) -> SServer {
        need("openssl");
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key, "-WWW"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("ACCEPT ") {
                    let _ = tx.send(a.trim().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("s_server prints ACCEPT").parse().expect("address");
        SServer { child, addr }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` fetching `urls` (one connection, keep-alive), each into the
/// matching file of `outs`, trusting `cacert` (None: plain http). Returns
/// the status and curl's stderr.
pub fn curl(cacert: Option<&str>, urls: &[String], outs: &[String], limit: Duration) -> (ExitStatus, String) {
    need("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--fail", "--max-time", &limit.as_secs().to_string()]);
    if let Some(ca) = cacert {
        cmd.args(["--cacert", ca]);
    }
    for (u, o) in urls.iter().zip(outs) {
        cmd.args(["-o", o, u]);
    }
    let (st, _, err) = run_bounded(&mut cmd, limit + Duration::from_secs(5));
    (st, err)
}
