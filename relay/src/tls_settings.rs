//! The relay's TLS settings: termination on the listeners
//! (`--tls-cert`/`--tls-key`) and TLS to the servers (`--server-tls`,
//! `--ca`, `--server-name`), and their checks. Parsing lives with the other
//! settings in [`config`](crate::config); this file holds what is TLS's own.
//!
//! # The server name
//!
//! The name a server's certificate is verified against (and sent as SNI)
//! is `--server-name NAME` if given, for every server; otherwise each
//! server's host **as written** in `--server` (or `server = [...]`):
//! `--server backend.example:443` verifies `backend.example`, and
//! `--server 127.0.0.1:8443` verifies the IP address `127.0.0.1` (an
//! `iPAddress` subject-alternative name). The resolved address is never
//! turned back into a name.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::printable;

/// Whether this build can run TLS (anypoll's `tls` feature, forwarded by
/// the relay's `tls` feature). Without it, any TLS setting is refused at
/// start-up with one line saying so.
pub const TLS_BUILT: bool = cfg!(feature = "tls");

/// TLS termination on the listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFront {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

/// TLS to the servers, their certificates verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsBack {
    /// The CA certificates (PEM) the servers' certificates must chain to.
    pub ca: PathBuf,
    /// The name every server is verified against; `None`: each server's
    /// host as written (see the [module docs](self)).
    pub name: Option<String>,
}

/// The TLS settings as given, before they are checked for consistency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// `--tls-cert` / `tls_cert`.
    pub cert: Option<PathBuf>,
    /// `--tls-key` / `tls_key`.
    pub key: Option<PathBuf>,
    /// `--server-tls` / `server_tls`.
    pub server_tls: bool,
    /// `--ca` / `ca`.
    pub ca: Option<PathBuf>,
    /// `--server-name` / `server_name`.
    pub server_name: Option<String>,
}

impl TlsArgs {
    /// The front and back settings, or the one-line reason they do not
    /// hang together. `opt` spells an option's name as the source does
    /// (`--tls-cert` or `tls_cert`).
    pub fn resolve(&self, opt: impl Fn(&str) -> String) -> Result<(Option<TlsFront>, Option<TlsBack>), String> {
        let front = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(TlsFront { cert: cert.clone(), key: key.clone() }),
            (None, None) => None,
            (Some(_), None) => return Err(format!("{} needs {}", opt("tls-cert"), opt("tls-key"))),
            (None, Some(_)) => return Err(format!("{} needs {}", opt("tls-key"), opt("tls-cert"))),
        };
        if !self.server_tls {
            for (name, given) in [("ca", self.ca.is_some()), ("server-name", self.server_name.is_some())] {
                if given {
                    return Err(format!("{} is only used with {}", opt(name), opt("server-tls")));
                }
            }
            return Ok((front, None));
        }
        let Some(ca) = &self.ca else {
            return Err(format!(
                "{} needs {} FILE (the CA certificates the servers' certificates chain to)",
                opt("server-tls"),
                opt("ca")
            ));
        };
        if let Some(n) = &self.server_name {
            check_server_name(n).map_err(|e| format!("{}: {e}", opt("server-name")))?;
        }
        Ok((front, Some(TlsBack { ca: ca.clone(), name: self.server_name.clone() })))
    }
}

/// The host part of a server address as written: `"host:port"` →
/// `"host"`, `"[::1]:port"` → `"::1"`.
pub fn server_host(written: &str) -> String {
    let host = written.rsplit_once(':').map_or(written, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_string()
}

/// Checks that `name` can be verified against a certificate: an IP
/// address, or a DNS name of labels of letters, digits and `-`.
pub fn check_server_name(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("'{}' is not a DNS name or an IP address", printable(name)))
    }
}

/// Checks that `path` is a readable regular file: the error names the
/// option and the file, on one line. The kind is looked at before the
/// open, so a FIFO (whose open waits for a writer) is refused, not waited
/// on.
fn readable(opt: &str, path: &Path) -> Result<(), String> {
    let shown = printable(&path.display().to_string());
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::File::open(path).map(drop).map_err(|e| format!("{opt} {shown}: {e}")),
        Ok(_) => Err(format!("{opt} {shown}: not a regular file")),
        Err(e) => Err(format!("{opt} {shown}: {e}")),
    }
}

/// The start-up checks of the TLS settings that need the system: the
/// build has TLS, and every file is readable. (Whether the files hold a
/// usable certificate and key is for the TLS layer, which names the file
/// too.)
pub fn check_files(front: Option<&TlsFront>, back: Option<&TlsBack>) -> Result<(), String> {
    if (front.is_some() || back.is_some()) && !TLS_BUILT {
        let opt = if front.is_some() { "--tls-cert" } else { "--server-tls" };
        return Err(format!("{opt}: TLS is not built in (build with feature tls)"));
    }
    if let Some(f) = front {
        readable("--tls-cert", &f.cert)?;
        readable("--tls-key", &f.key)?;
    }
    if let Some(b) = back {
        readable("--ca", &b.ca)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(s: &str) -> String {
        format!("--{s}")
    }

    #[test]
    fn hosts_as_written() {
        assert_eq!(server_host("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(server_host("[::1]:8443"), "::1");
        assert_eq!(server_host("backend.example:443"), "backend.example");
    }

    #[test]
    fn names() {
        for ok in ["localhost", "a-b.example", "127.0.0.1", "::1"] {
            assert!(check_server_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", "-a", "a b", "x\ny", &"a".repeat(64)] {
            let e = check_server_name(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn consistency() {
        let p = |s: &str| Some(PathBuf::from(s));
        let none = TlsArgs::default();
        assert_eq!(none.resolve(flag), Ok((None, None)));
        let cert_only = TlsArgs { cert: p("c"), ..TlsArgs::default() };
        assert_eq!(cert_only.resolve(flag).unwrap_err(), "--tls-cert needs --tls-key");
        let ca_only = TlsArgs { ca: p("ca"), ..TlsArgs::default() };
        assert_eq!(ca_only.resolve(flag).unwrap_err(), "--ca is only used with --server-tls");
        let no_ca = TlsArgs { server_tls: true, ..TlsArgs::default() };
        assert!(no_ca.resolve(|s| s.replace('-', "_")).unwrap_err().starts_with("server_tls needs ca FILE"));
        let bad_name = TlsArgs { server_tls: true, ca: p("ca"), server_name: Some("a b".into()), ..no_ca.clone() };
        assert!(bad_name.resolve(flag).unwrap_err().starts_with("--server-name: 'a b'"));
        let both = TlsArgs { cert: p("c"), key: p("k"), server_tls: true, ca: p("ca"), server_name: None };
        let (f, b) = both.resolve(flag).unwrap();
        assert_eq!(f, Some(TlsFront { cert: "c".into(), key: "k".into() }));
        assert_eq!(b, Some(TlsBack { ca: "ca".into(), name: None }));
    }

    #[test]
    fn files_are_named() {
        let front = TlsFront { cert: "/nonexistent/cert.pem".into(), key: "/nonexistent/key.pem".into() };
        let e = check_files(Some(&front), None).unwrap_err();
        if TLS_BUILT {
            assert!(e.starts_with("--tls-cert /nonexistent/cert.pem: "), "{e}");
        } else {
            assert_eq!(e, "--tls-cert: TLS is not built in (build with feature tls)");
        }
        assert_eq!(check_files(None, None), Ok(()));
    }
}
