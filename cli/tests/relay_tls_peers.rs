//! `anypoll relay` with TLS between real peers: curl and `openssl
//! s_client` as clients, an in-test HTTP server and `openssl s_server` as
//! servers, TLS on the client side, on the server side, and on both at
//! once. Files go through whole (sha256, the largest 64 MiB and more) and
//! the relay's fds are back to their count at start once the clients are
//! gone. Certificates are made by the test (openssl CLI).
//!
//! Needs Debian's `curl` and `openssl` (ci/test.sh installs them), and
//! Linux (the leak checks read `/proc/PID/fd`): elsewhere, and in a build
//! without the `tls` feature, this file has no tests.

#![cfg(all(feature = "tls", target_os = "linux"))]

#[path = "../../relay/tests/relay_common/mod.rs"]
mod relay_common;
mod relay_proc;
mod tls_peers;

use std::process::Command;
use std::time::Duration;

use relay_proc::Proc;
use tls_peers::*;

/// The files served: (name, seed, size). The last one is the large one.
const FILES: [(&str, u64, usize); 3] =
    [("small", 1, 1000), ("odd", 2, 3 * 1024 * 1024 + 7), ("large", 3, 64 * 1024 * 1024 + 3)];

/// A directory holding [`FILES`].
fn files(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    for (name, seed, size) in FILES {
        make_file(&d.0.join(name), seed, size);
    }
    d
}

/// Fetches every file of `dir` through `base` (one curl, keep-alive) and
/// compares each sha256 with the original's.
fn fetch_all(base: &str, cacert: Option<&str>, dir: &TempDir, out: &TempDir) {
    let urls: Vec<String> = FILES.iter().map(|(n, _, _)| format!("{base}/{n}")).collect();
    let outs: Vec<String> = FILES.iter().map(|(n, _, _)| out.file(n)).collect();
    let (st, err) = curl(cacert, &urls, &outs, Duration::from_secs(240));
    assert!(st.success(), "curl {urls:?}: {st}: {err}");
    for (name, _, size) in FILES {
        let got = std::fs::metadata(out.file(name)).map(|m| m.len()).unwrap_or(0);
        assert_eq!(got, size as u64, "{name}: size through the relay");
        assert_eq!(sha256(&out.file(name)), sha256(&dir.file(name)), "{name}: sha256 through the relay");
    }
}

/// The relay's log lines that report bytes lost (a stream ended with
/// bytes not delivered; "0 B not delivered" loses nothing).
fn lost_lines(p: &Proc) -> Vec<String> {
    p.log_text()
        .lines()
        .filter(|l| l.contains(" B not delivered") && !l.contains(" 0 B not delivered"))
        .map(String::from)
        .collect()
}

#[test]
fn curl_through_tls_termination_to_a_plain_server() {
    let pki = Pki::new("term");
    let dir = files("term-files");
    let out = TempDir::new("term-out");
    let backend = file_server(dir.0.clone());
    let (p, addr, base) = relay(&pki, Tls::Clients, &backend.addr.to_string(), &[]);
    // By name (the certificate's DNS name) and by address (its IP SAN).
    fetch_all(&format!("https://localhost:{}", addr.port()), Some(&pki.file("ca.pem")), &dir, &out);
    fetch_all(&format!("https://{addr}"), Some(&pki.file("ca.pem")), &dir, &out);
    fds_back(&p, base, Duration::from_secs(10));
    assert_eq!(lost_lines(&p), Vec::<String>::new(), "nothing lost");
}

#[test]
fn curl_through_tls_on_both_sides_to_openssl_s_server() {
    let pki = Pki::new("both");
    let dir = files("both-files");
    let out = TempDir::new("both-out");
    let srv = SServer::start(&dir.0, &pki.file("srv.pem"), &pki.file("srv.key"));
    let (p, addr, base) = relay(&pki, Tls::Both, &srv.addr.to_string(), &[]);
    fetch_all(&format!("https://{addr}"), Some(&pki.file("ca.pem")), &dir, &out);
    fds_back(&p, base, Duration::from_secs(10));
}

#[test]
fn plain_client_through_tls_to_the_server() {
    let pki = Pki::new("origin");
    let dir = files("origin-files");
    let out = TempDir::new("origin-out");
    let srv = SServer::start(&dir.0, &pki.file("srv.pem"), &pki.file("srv.key"));
    // The server name comes from --server as written: "localhost".
    let (p, addr, base) = relay(&pki, Tls::Servers, &format!("localhost:{}", srv.addr.port()), &[]);
    fetch_all(&format!("http://{addr}"), None, &dir, &out);
    fds_back(&p, base, Duration::from_secs(10));
}

/// A plain client that sends its request and half-closes at once, before
/// the relay's handshake with the server is done: the request must reach
/// the server before the relay's `close_notify` (which must wait for the
/// handshake), and the reply come back whole.
#[test]
fn a_half_close_during_the_server_handshake_loses_nothing() {
    use std::io::{Read, Write};
    let pki = Pki::new("halfclose");
    let dir = files("halfclose-files");
    let srv = SServer::start(&dir.0, &pki.file("srv.pem"), &pki.file("srv.key"));
    let (p, addr, base) = relay(&pki, Tls::Servers, &format!("localhost:{}", srv.addr.port()), &[]);
    let expected = std::fs::read(dir.0.join("small")).expect("small");
    for i in 0..3 {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        s.write_all(b"GET /small HTTP/1.0\r\n\r\n").expect("request");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut body = Vec::new();
        let r = s.read_to_end(&mut body);
        let at = body.windows(4).position(|w| w == b"\r\n\r\n").map(|a| a + 4);
        assert!(at.is_some(), "round {i}: no HTTP reply ({r:?}, {} B)\n{}", body.len(), p.log_text());
        assert_eq!(&body[at.unwrap_or(0)..], &expected[..], "round {i}: the file after a half-close");
    }
    fds_back(&p, base, Duration::from_secs(10));
}

#[test]
fn openssl_s_client_through_tls_termination_to_s_server() {
    let pki = Pki::new("sclient");
    let dir = files("sclient-files");
    let srv = SServer::start(&dir.0, &pki.file("srv.pem"), &pki.file("srv.key"));
    let (p, addr, base) = relay(&pki, Tls::Both, &srv.addr.to_string(), &["--server-name", "localhost"]);
    // s_client sends the request typed on its stdin and prints the reply.
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-verify_return_error", "-CAfile", &pki.file("ca.pem")]);
    cmd.args(["-servername", "localhost", "-connect", &addr.to_string()]);
    let (st, body, _) = run_with_input(&mut cmd, b"GET /small HTTP/1.0\r\n\r\n", Duration::from_secs(30));
    assert!(st.success(), "s_client: {st}");
    let expected = std::fs::read(dir.0.join("small")).expect("small");
    let at = body.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP reply") + 4;
    assert!(body.starts_with(b"HTTP/1.0 200"), "{:?}", String::from_utf8_lossy(&body[..at]));
    assert_eq!(&body[at..], &expected[..], "the file through s_client → relay → s_server");
    fds_back(&p, base, Duration::from_secs(10));
}
