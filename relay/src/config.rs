//! Relay settings: from the command line, from a TOML file (`--config`),
//! or both (the command line wins). Every key of the file
//! ([`CONFIG_EXAMPLE`], also shown at the end of `anypoll relay --help`):
//!
//! ```toml
#![doc = include_str!("config_example.toml")]
//! ```

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use anypoll::stream::SpliceMode;

use crate::tls_settings::{server_host, TlsArgs, TlsBack, TlsFront};

/// Every key of a `--config` file, with its default or an example
/// value, as `anypoll relay --help` lists them.
pub const CONFIG_EXAMPLE: &str = include_str!("config_example.toml");

/// How servers are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Not checked: always up.
    None,
    /// A TCP connect.
    Tcp,
    /// `GET path` expecting a 2xx or 3xx status.
    Http(String),
}

/// Everything the relay needs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Addresses to accept clients on.
    pub listen: Vec<SocketAddr>,
    /// Servers, used round-robin while healthy.
    pub servers: Vec<SocketAddr>,
    /// Each server's host as written (`servers[i]` before resolution): the
    /// name its certificate is verified against with `--server-tls`,
    /// unless `--server-name` is given.
    pub server_hosts: Vec<String>,
    /// The backend name, if one is forced.
    pub poller: Option<String>,
    /// When to splice.
    pub splice: SpliceMode,
    /// Connections at most, over all threads; beyond, accepting pauses.
    pub maxconn: usize,
    /// Longest wait for a server connect.
    pub timeout_connect: Duration,
    /// Longest inactivity on the client side.
    pub timeout_client: Duration,
    /// Longest inactivity on the server side.
    pub timeout_server: Duration,
    /// Buffer size per direction.
    pub bufsize: usize,
    /// Event loops (threads), one per thread with SO_REUSEPORT.
    pub threads: usize,
    /// Health checks.
    pub check: CheckKind,
    /// Time between checks of one server.
    pub check_interval: Duration,
    /// Consecutive successes to mark a server up.
    pub rise: u32,
    /// Consecutive failures to mark a server down.
    pub fall: u32,
    /// Where to serve the counters as text.
    pub stats: Option<SocketAddr>,
    /// How long live connections may finish after SIGTERM/SIGINT.
    pub grace: Duration,
    /// Connections accepted per wake-up of a listener.
    pub maxaccept: usize,
    /// TLS termination on the listeners (`--tls-cert`, `--tls-key`).
    pub tls: Option<TlsFront>,
    /// TLS to the servers (`--server-tls`, `--ca`, `--server-name`).
    pub server_tls: Option<TlsBack>,
    /// Longest wait for a TLS handshake, on either side (a client's runs
    /// before its server is connected).
    pub timeout_handshake: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: Vec::new(),
            servers: Vec::new(),
            server_hosts: Vec::new(),
            poller: None,
            splice: SpliceMode::Auto,
            maxconn: 10_000,
            timeout_connect: Duration::from_secs(5),
            timeout_client: Duration::from_secs(30),
            timeout_server: Duration::from_secs(30),
            bufsize: 16 * 1024,
            threads: 1,
            check: CheckKind::None,
            check_interval: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            stats: None,
            grace: Duration::from_secs(5),
            maxaccept: 64,
            tls: None,
            server_tls: None,
            timeout_handshake: Duration::from_secs(10),
        }
    }
}

/// `anypoll relay` options.
#[derive(Debug, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct RelayArgs {
    /// Address to listen on (repeatable). IPv4, or IPv6 as `[::1]:port`.
    #[cfg_attr(feature = "clap", arg(long, value_name = "ADDR"))]
    pub listen: Vec<String>,
    /// Server address (repeatable).
    #[cfg_attr(feature = "clap", arg(long, value_name = "ADDR"))]
    pub server: Vec<String>,
    /// TOML file with the same settings (its keys are listed below); the command line wins.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub config: Option<PathBuf>,
    /// Splice mode: auto, always or never.
    #[cfg_attr(feature = "clap", arg(long, value_name = "MODE"))]
    pub splice: Option<String>,
    /// Same as --splice never.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_splice: bool,
    /// Connections at most; beyond, accepting pauses.
    #[cfg_attr(feature = "clap", arg(long))]
    pub maxconn: Option<usize>,
    /// Server connect timeout (e.g. 5s, 500ms; a number alone is ms).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub timeout_connect: Option<String>,
    /// Client-side inactivity timeout.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub timeout_client: Option<String>,
    /// Server-side inactivity timeout.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub timeout_server: Option<String>,
    /// Buffer size per direction, in bytes.
    #[cfg_attr(feature = "clap", arg(long))]
    pub bufsize: Option<usize>,
    /// Event loops, one per thread, each with its own SO_REUSEPORT listeners.
    #[cfg_attr(feature = "clap", arg(long))]
    pub threads: Option<usize>,
    /// Health check: tcp, http:/path or none.
    #[cfg_attr(feature = "clap", arg(long, value_name = "KIND"))]
    pub check: Option<String>,
    /// Time between checks of one server.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub check_interval: Option<String>,
    /// Consecutive successes to mark a server up.
    #[cfg_attr(feature = "clap", arg(long))]
    pub rise: Option<u32>,
    /// Consecutive failures to mark a server down.
    #[cfg_attr(feature = "clap", arg(long))]
    pub fall: Option<u32>,
    /// Serve the counters as text here; a port alone binds to 127.0.0.1.
    #[cfg_attr(feature = "clap", arg(long, value_name = "ADDR"))]
    pub stats: Option<String>,
    /// Grace period for live connections after SIGTERM/SIGINT.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub grace: Option<String>,
    /// TLS termination on the listeners: the certificate chain (PEM).
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub tls_key: Option<PathBuf>,
    /// TLS to the servers, their certificates verified against --ca.
    #[cfg_attr(feature = "clap", arg(long))]
    pub server_tls: bool,
    /// CA certificates (PEM) for --server-tls.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub ca: Option<PathBuf>,
    /// Name the servers' certificates must carry (default: each --server's host as written).
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME"))]
    pub server_name: Option<String>,
    /// Longest TLS handshake, on either side.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub timeout_handshake: Option<String>,
}

impl RelayArgs {
    /// The default of each option that has one, as `anypoll relay --help`
    /// shows it: (field name, value). Taken from [`RelayConfig::default`],
    /// so the help cannot drift from the code.
    pub fn shown_defaults() -> Vec<(&'static str, String)> {
        let d = RelayConfig::default();
        vec![
            ("splice", splice_name(d.splice).to_string()),
            ("maxconn", d.maxconn.to_string()),
            ("timeout_connect", show_duration(d.timeout_connect)),
            ("timeout_client", show_duration(d.timeout_client)),
            ("timeout_server", show_duration(d.timeout_server)),
            ("bufsize", d.bufsize.to_string()),
            ("threads", d.threads.to_string()),
            ("check", check_name(&d.check)),
            ("check_interval", show_duration(d.check_interval)),
            ("rise", d.rise.to_string()),
            ("fall", d.fall.to_string()),
            ("grace", show_duration(d.grace)),
            ("timeout_handshake", show_duration(d.timeout_handshake)),
        ]
    }
}

/// `d` as [`parse_duration`] reads it back: `5s`, `2m`, `250ms`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".to_string(),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

fn splice_name(m: SpliceMode) -> &'static str {
    match m {
        SpliceMode::Auto => "auto",
        SpliceMode::Always => "always",
        SpliceMode::Never => "never",
    }
}

fn check_name(c: &CheckKind) -> String {
    match c {
        CheckKind::None => "none".to_string(),
        CheckKind::Tcp => "tcp".to_string(),
        CheckKind::Http(path) => format!("http:{path}"),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    server: Option<Vec<String>>,
    poller: Option<String>,
    splice: Option<String>,
    maxconn: Option<usize>,
    timeout_connect: Option<toml::Value>,
    timeout_client: Option<toml::Value>,
    timeout_server: Option<toml::Value>,
    bufsize: Option<usize>,
    threads: Option<usize>,
    check: Option<String>,
    check_interval: Option<toml::Value>,
    rise: Option<u32>,
    fall: Option<u32>,
    stats: Option<String>,
    grace: Option<toml::Value>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    server_tls: Option<bool>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    timeout_handshake: Option<toml::Value>,
}

/// `s` with control characters (and the Unicode line and paragraph
/// separators) escaped as `\n`, `\r`, `\u{1b}`..., so that text from the
/// user keeps an error message on one line and cannot drive the terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `5s`, `250ms`, `2m`, `1h`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let shown = || printable(s);
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("'{}' is not a duration (try 5s, 250ms or a number of ms)", shown()))?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("'{}': unknown unit '{}' (use ms, s, m or h)", shown(), printable(unit))),
    };
    Ok(Duration::from_millis(ms))
}

fn value_duration(key: &str, v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(Duration::from_millis(*n as u64)),
        toml::Value::String(s) => parse_duration(s).map_err(|e| format!("{key}: {e}")),
        other => Err(format!("{key}: expected a duration like \"5s\" or a number of ms, found {}", other.type_str())),
    }
}

/// A TOML error as one line, `line N: what` (toml's message may span
/// several lines, e.g. "invalid array\nexpected `]`", and quote a key that
/// holds control characters).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ");
    match e.span().and_then(|s| text.get(..s.start)) {
        Some(before) => format!("line {}: {}", before.matches('\n').count() + 1, printable(&what)),
        None => printable(&what),
    }
}

/// The largest config file read: far beyond any real one, and a path to
/// something endless (`/dev/zero`, a FIFO fed forever) is refused rather
/// than read into memory without end.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read_config(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("larger than {MAX_CONFIG_BYTES} bytes"));
    }
    Ok(text)
}

thread_local! {
    static NAME_LOOKUP: Cell<bool> = const { Cell::new(true) };
}

/// Test support: turns host-name lookup in [`parse_addr`] off (or back on)
/// for the calling thread. While it is off, only numeric addresses parse and
/// a host name is an error, so that fuzzing and corpus replay never wait on
/// DNS. On by default.
#[doc(hidden)]
pub fn set_name_lookup(on: bool) {
    NAME_LOOKUP.with(|c| c.set(on));
}

/// Resolves `host:port` (IPv6 as `[::1]:port`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !NAME_LOOKUP.with(Cell::get) {
        return Err(format!("'{}' is not a numeric address (name lookup is off)", printable(s)));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("'{}' is not an address: {e}", printable(s)))?
        .next()
        .ok_or_else(|| format!("'{}' resolves to no address", printable(s)))
}

fn parse_splice(s: &str) -> Result<SpliceMode, String> {
    match s {
        "auto" => Ok(SpliceMode::Auto),
        "always" | "on" => Ok(SpliceMode::Always),
        "never" | "off" => Ok(SpliceMode::Never),
        _ => Err(format!("splice mode '{}' is not auto, always or never", printable(s))),
    }
}

/// Parses a check kind: `tcp`, `http:/path`, `none`.
pub fn parse_check(s: &str) -> Result<CheckKind, String> {
    match s {
        "none" => Ok(CheckKind::None),
        "tcp" => Ok(CheckKind::Tcp),
        _ => match s.strip_prefix("http:") {
            Some(path) if path.starts_with('/') && !path.contains(|c: char| c.is_whitespace() || c.is_control()) => {
                Ok(CheckKind::Http(path.to_string()))
            }
            _ => Err(format!("check '{}' is not tcp, none or http:/path", printable(s))),
        },
    }
}

/// A stats address: a port alone is 127.0.0.1:port (loopback by default).
pub fn parse_stats(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    parse_addr(s)
}

impl RelayConfig {
    /// Builds the settings from the arguments and, if given, the file.
    /// Every error is one line that names the setting.
    pub fn from_args(args: &RelayArgs, poller_flag: Option<&str>) -> Result<RelayConfig, String> {
        let mut cfg = RelayConfig::default();
        let mut tls = TlsArgs::default();
        if let Some(path) = &args.config {
            let shown = printable(&path.display().to_string());
            let text = read_config(path).map_err(|e| format!("config {shown}: {e}"))?;
            tls = cfg.apply_file(&text).map_err(|e| format!("config {shown}: {e}"))?;
            // The file's TLS settings must hang together on their own.
            (cfg.tls, cfg.server_tls) =
                tls.resolve(|k| k.replace('-', "_")).map_err(|e| format!("config {shown}: {e}"))?;
        }
        let dur = |key: &str, v: &Option<String>, out: &mut Duration| -> Result<(), String> {
            if let Some(s) = v {
                *out = parse_duration(s).map_err(|e| format!("--{key}: {e}"))?;
            }
            Ok(())
        };
        if !args.listen.is_empty() {
            cfg.listen = args
                .listen
                .iter()
                .map(|s| parse_addr(s).map_err(|e| format!("--listen: {e}")))
                .collect::<Result<_, _>>()?;
        }
        if !args.server.is_empty() {
            cfg.servers = args
                .server
                .iter()
                .map(|s| parse_addr(s).map_err(|e| format!("--server: {e}")))
                .collect::<Result<_, _>>()?;
            cfg.server_hosts = args.server.iter().map(|s| server_host(s)).collect();
        }
        if let Some(p) = poller_flag {
            cfg.poller = Some(p.to_string());
        }
        if let Some(s) = &args.splice {
            cfg.splice = parse_splice(s).map_err(|e| format!("--splice: {e}"))?;
        }
        if args.no_splice {
            cfg.splice = SpliceMode::Never;
        }
        cfg.splice = SpliceMode::from_env(cfg.splice);
        cfg.maxconn = args.maxconn.unwrap_or(cfg.maxconn);
        dur("timeout-connect", &args.timeout_connect, &mut cfg.timeout_connect)?;
        dur("timeout-client", &args.timeout_client, &mut cfg.timeout_client)?;
        dur("timeout-server", &args.timeout_server, &mut cfg.timeout_server)?;
        cfg.bufsize = args.bufsize.unwrap_or(cfg.bufsize);
        cfg.threads = args.threads.unwrap_or(cfg.threads);
        if let Some(c) = &args.check {
            cfg.check = parse_check(c).map_err(|e| format!("--check: {e}"))?;
        }
        dur("check-interval", &args.check_interval, &mut cfg.check_interval)?;
        cfg.rise = args.rise.unwrap_or(cfg.rise);
        cfg.fall = args.fall.unwrap_or(cfg.fall);
        if let Some(s) = &args.stats {
            cfg.stats = Some(parse_stats(s).map_err(|e| format!("--stats: {e}"))?);
        }
        dur("grace", &args.grace, &mut cfg.grace)?;
        dur("timeout-handshake", &args.timeout_handshake, &mut cfg.timeout_handshake)?;
        let given = TlsArgs {
            cert: args.tls_cert.clone().or(tls.cert),
            key: args.tls_key.clone().or(tls.key),
            server_tls: args.server_tls || tls.server_tls,
            ca: args.ca.clone().or(tls.ca),
            server_name: args.server_name.clone().or(tls.server_name),
        };
        (cfg.tls, cfg.server_tls) = given.resolve(|k| format!("--{k}"))?;
        cfg.validate()?;
        crate::tls_settings::check_files(cfg.tls.as_ref(), cfg.server_tls.as_ref())?;
        Ok(cfg)
    }

    /// Applies a TOML document. Its TLS settings are returned as given:
    /// they are checked together with the command line's
    /// ([`TlsArgs::resolve`]).
    pub fn apply_file(&mut self, text: &str) -> Result<TlsArgs, String> {
        let f: FileConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        if let Some(l) = f.listen {
            self.listen =
                l.iter().map(|s| parse_addr(s).map_err(|e| format!("listen: {e}"))).collect::<Result<_, _>>()?;
        }
        if let Some(l) = f.server {
            self.servers =
                l.iter().map(|s| parse_addr(s).map_err(|e| format!("server: {e}"))).collect::<Result<_, _>>()?;
            self.server_hosts = l.iter().map(|s| server_host(s)).collect();
        }
        if f.poller.is_some() {
            self.poller = f.poller;
        }
        if let Some(s) = f.splice {
            self.splice = parse_splice(&s).map_err(|e| format!("splice: {e}"))?;
        }
        let durs = [
            ("timeout_connect", f.timeout_connect, &mut self.timeout_connect),
            ("timeout_client", f.timeout_client, &mut self.timeout_client),
            ("timeout_server", f.timeout_server, &mut self.timeout_server),
            ("check_interval", f.check_interval, &mut self.check_interval),
            ("grace", f.grace, &mut self.grace),
            ("timeout_handshake", f.timeout_handshake, &mut self.timeout_handshake),
        ];
        for (key, v, out) in durs {
            if let Some(v) = v {
                *out = value_duration(key, &v)?;
            }
        }
        self.maxconn = f.maxconn.unwrap_or(self.maxconn);
        self.bufsize = f.bufsize.unwrap_or(self.bufsize);
        self.threads = f.threads.unwrap_or(self.threads);
        if let Some(c) = f.check {
            self.check = parse_check(&c).map_err(|e| format!("check: {e}"))?;
        }
        self.rise = f.rise.unwrap_or(self.rise);
        self.fall = f.fall.unwrap_or(self.fall);
        if let Some(s) = f.stats {
            self.stats = Some(parse_stats(&s).map_err(|e| format!("stats: {e}"))?);
        }
        Ok(TlsArgs {
            cert: f.tls_cert,
            key: f.tls_key,
            server_tls: f.server_tls.unwrap_or(false),
            ca: f.ca,
            server_name: f.server_name,
        })
    }

    /// The name server `i`'s certificate is verified against with
    /// `--server-tls`: `--server-name`, else its host as written, else (a
    /// configuration built in code, without hosts) its IP address.
    pub fn server_name(&self, i: usize) -> String {
        match (self.server_tls.as_ref().and_then(|t| t.name.clone()), self.server_hosts.get(i)) {
            (Some(n), _) => n,
            (None, Some(h)) => h.clone(),
            (None, None) => self.servers.get(i).map(|a| a.ip().to_string()).unwrap_or_default(),
        }
    }

    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Err("no address to listen on (--listen ADDR)".into());
        }
        if self.servers.is_empty() {
            return Err("no server (--server ADDR)".into());
        }
        if self.maxconn == 0 {
            return Err("--maxconn must be at least 1".into());
        }
        if !(1024..=(64 << 20)).contains(&self.bufsize) {
            return Err(format!("--bufsize {} is outside 1024..=67108864", self.bufsize));
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(format!("--threads {} is outside 1..=256", self.threads));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err("--rise and --fall must be at least 1".into());
        }
        for (name, d) in [
            ("timeout-connect", self.timeout_connect),
            ("timeout-client", self.timeout_client),
            ("timeout-server", self.timeout_server),
            ("check-interval", self.check_interval),
            ("timeout-handshake", self.timeout_handshake),
        ] {
            if d.is_zero() {
                return Err(format!("--{name} must be more than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("700"), Ok(Duration::from_millis(700)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        // Found by fuzzing: user text was echoed raw, so a newline in it
        // broke the one-line error.
        assert_eq!(parse_duration("5\nx").unwrap_err(), "'5\\nx': unknown unit '\\nx' (use ms, s, m or h)");
    }

    #[test]
    fn checks_and_stats() {
        assert_eq!(parse_check("tcp"), Ok(CheckKind::Tcp));
        assert_eq!(parse_check("http:/health"), Ok(CheckKind::Http("/health".into())));
        assert!(parse_check("http:health").is_err());
        assert!(parse_check("http:/a b").is_err());
        assert_eq!(parse_stats("8404").unwrap(), "127.0.0.1:8404".parse().unwrap());
    }

    #[test]
    fn shown_defaults_read_back_as_the_defaults() {
        let d = RelayConfig::default();
        let shown = RelayArgs::shown_defaults();
        let get = |k: &str| shown.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).expect(k);
        assert_eq!(parse_duration(&get("timeout_connect")), Ok(d.timeout_connect));
        assert_eq!(parse_duration(&get("timeout_client")), Ok(d.timeout_client));
        assert_eq!(parse_duration(&get("timeout_server")), Ok(d.timeout_server));
        assert_eq!(parse_duration(&get("check_interval")), Ok(d.check_interval));
        assert_eq!(parse_duration(&get("grace")), Ok(d.grace));
        assert_eq!(parse_splice(&get("splice")), Ok(d.splice));
        assert_eq!(parse_check(&get("check")), Ok(d.check.clone()));
        assert_eq!(get("maxconn").parse(), Ok(d.maxconn));
        assert_eq!(get("bufsize").parse(), Ok(d.bufsize));
        assert_eq!(get("threads").parse(), Ok(d.threads));
        assert_eq!(get("rise").parse(), Ok(d.rise));
        assert_eq!(get("fall").parse(), Ok(d.fall));
        for d in [Duration::ZERO, Duration::from_millis(1500), Duration::from_secs(120), Duration::from_secs(7200)] {
            assert_eq!(parse_duration(&show_duration(d)), Ok(d), "{d:?}");
        }
    }

    #[test]
    fn the_config_example_is_a_valid_file_with_every_key() {
        let mut c = RelayConfig::default();
        c.apply_file(CONFIG_EXAMPLE).expect("the example parses");
        assert!(c.validate().is_ok());
        // What is not marked "example" is the default.
        let d = RelayConfig::default();
        assert_eq!(
            (c.splice, c.maxconn, c.timeout_connect, c.timeout_client, c.timeout_server, c.bufsize, c.threads),
            (d.splice, d.maxconn, d.timeout_connect, d.timeout_client, d.timeout_server, d.bufsize, d.threads)
        );
        assert_eq!(
            (&c.check, c.check_interval, c.rise, c.fall, c.grace),
            (&d.check, d.check_interval, d.rise, d.fall, d.grace)
        );
        let keys: Vec<&str> =
            CONFIG_EXAMPLE.lines().filter_map(|l| l.split_once(" =")).map(|(k, _)| k.trim()).collect();
        // Every key FileConfig knows (deny_unknown_fields rejects others).
        for k in [
            "listen",
            "server",
            "poller",
            "splice",
            "maxconn",
            "timeout_connect",
            "timeout_client",
            "timeout_server",
            "bufsize",
            "threads",
            "check",
            "check_interval",
            "rise",
            "fall",
            "stats",
            "grace",
            "timeout_handshake",
            "tls_cert",
            "tls_key",
            "server_tls",
            "ca",
            "server_name",
        ] {
            assert!(keys.contains(&k), "{k} is not in the example");
        }
    }

    #[test]
    fn file_then_validation() {
        let mut c = RelayConfig::default();
        c.apply_file(
            "listen = [\"127.0.0.1:1\"]\nserver = [\"[::1]:2\"]\ntimeout_client = 1500\ncheck = \"http:/h\"\nsplice = \"never\"\n",
        )
        .unwrap();
        assert_eq!(c.timeout_client, Duration::from_millis(1500));
        assert_eq!(c.splice, SpliceMode::Never);
        assert!(c.validate().is_ok());
        assert!(c.apply_file("bogus = 1").unwrap_err().contains("bogus"));
        let tls = c.apply_file("server = [\"localhost:2\"]\ntls_cert = \"c.pem\"\nserver_tls = true\n").unwrap();
        assert_eq!(c.server_hosts, ["localhost"]);
        assert_eq!((tls.cert.as_deref(), tls.key.as_deref(), tls.server_tls), (Some("c.pem".as_ref()), None, true));
        assert!(c.apply_file("server_tls = \"yes\"").unwrap_err().starts_with("line 1: "));
        assert!(c.apply_file("timeout_server = \"x\"").unwrap_err().contains("timeout_server"));
    }
}
