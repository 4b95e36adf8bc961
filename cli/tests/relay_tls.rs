//! `anypoll relay`'s TLS settings as a process: every inconsistent or
//! unusable setting is one line on stderr with exit status 2, naming the
//! option (and the file, for a config file or a certificate file).

#[path = "../../relay/tests/relay_common/mod.rs"]
mod relay_common;
mod relay_proc;

use std::time::Duration;

use relay_common::*;
use relay_proc::*;

/// Runs `anypoll ARGS`, expecting a quick exit with status 2 and one line
/// on stderr containing each of `needles`.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let (st, err) = Proc::spawn(args).finish(Duration::from_secs(10));
    assert_eq!(st.code(), Some(2), "{args:?}: exit status; stderr: {err:?}");
    let err = err.trim();
    assert_eq!(err.lines().count(), 1, "{args:?}: one line on stderr, got {err:?}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} does not name {n:?}");
    }
    println!("{args:?} → {err}");
}

const L: &str = "127.0.0.1:0";
const S: &str = "127.0.0.1:9";

/// Whether the binary under test has TLS, from its own `probe` line.
fn tls_built() -> bool {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anypoll")).arg("probe").output().expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("tls: ")).unwrap_or_else(|| panic!("no tls line in {text:?}"));
    assert!(
        line == "tls: not built (feature tls)" || line.starts_with("tls: built in (rustls"),
        "probe's tls line: {line:?}"
    );
    line.starts_with("tls: built in")
}

#[test]
fn tls_settings_errors_are_one_line_with_status_2() {
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        ["relay", "--listen", L, "--server", S].into_iter().chain(extra.iter().copied()).collect()
    }
    let cases: &[(Vec<&str>, &[&str])] = &[
        (with(&["--tls-cert", "c.pem"]), &["--tls-cert needs --tls-key"]),
        (with(&["--tls-key", "k.pem"]), &["--tls-key needs --tls-cert"]),
        (with(&["--ca", "ca.pem"]), &["--ca is only used with --server-tls"]),
        (with(&["--server-name", "x"]), &["--server-name is only used with --server-tls"]),
        (with(&["--server-tls"]), &["--server-tls needs --ca FILE"]),
        (with(&["--server-tls", "--ca", "ca.pem", "--server-name", "a b"]), &["--server-name", "'a b'"]),
        (with(&["--timeout-handshake", "0"]), &["--timeout-handshake"]),
        (with(&["--timeout-handshake", "soon"]), &["--timeout-handshake", "soon"]),
    ];
    for (args, needles) in cases {
        assert_usage_error(args, needles);
    }
    // A certificate file that cannot be read is named, with the option
    // (or, in a build without TLS, the refusal says so).
    let missing = std::env::temp_dir().join("anypoll-tls-test-no-such-cert.pem");
    let missing = missing.to_str().expect("utf-8");
    let args = with(&["--tls-cert", missing, "--tls-key", missing]);
    if tls_built() {
        assert_usage_error(&args, &["--tls-cert", missing, "No such file"]);
        assert_usage_error(&with(&["--server-tls", "--ca", "/"]), &["--ca /: not a regular file"]);
    } else {
        assert_usage_error(&args, &["--tls-cert: TLS is not built in (build with feature tls)"]);
    }
}

#[test]
fn tls_config_file_errors_name_the_file() {
    let head = "listen = [\"127.0.0.1:0\"]\nserver = [\"127.0.0.1:9\"]\n";
    let cases: &[(&str, String, &[&str])] = &[
        ("cert-alone", format!("{head}tls_cert = \"c.pem\"\n"), &["tls_cert needs tls_key"]),
        ("ca-alone", format!("{head}ca = \"ca.pem\"\n"), &["ca is only used with server_tls"]),
        ("no-ca", format!("{head}server_tls = true\n"), &["server_tls needs ca FILE"]),
        ("bad-name", format!("{head}server_tls = true\nca = \"c\"\nserver_name = \"-x\"\n"), &["server_name", "-x"]),
        ("bad-handshake", format!("{head}timeout_handshake = \"5x\"\n"), &["timeout_handshake", "5x"]),
    ];
    for (name, text, needles) in cases {
        let f = TempFile::new(&format!("tls-{name}.toml"), text);
        assert_usage_error(&["relay", "--config", f.path()], &[&[f.path()][..], needles].concat());
    }
}
