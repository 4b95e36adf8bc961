//! Health checks, on the connection layer.
//!
//! Each server is checked every `check_interval`: a non-blocking connect
//! (`tcp`), then for `http:/path` a `GET` whose status line must say 2xx or
//! 3xx. A refused connect is seen the way the transport sees it (ERR while
//! the connect is pending, no recv; `SO_ERROR` names it). `rise`
//! consecutive successes mark a server up, `fall` failures mark it down;
//! both transitions are logged.

use std::time::Duration;

/// What a check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// The server answered as expected.
    Ok,
    /// It did not; the reason.
    Failed(String),
}

/// Parses an HTTP status line, e.g. `HTTP/1.1 204 No Content`. `Ok(code)`
/// when it is complete and well-formed; `Err` says why not. The reason
/// phrase is not looked at: any bytes may follow the code and a space
/// (RFC 9112 allows obs-text there, so it need not be UTF-8).
pub fn parse_status_line(data: &[u8]) -> Result<u16, String> {
    let end = data.iter().position(|&b| b == b'\n').ok_or("no complete status line")?;
    let line = &data[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") || version.len() != 8 || !version[7].is_ascii_digit() {
        return Err(format!("not an HTTP/1.x status line: {:?}", truncate(line)));
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad status code in {:?}", truncate(line)));
    }
    Ok(code.iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0')))
}

fn truncate(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(240)]).chars().take(60).collect()
}

/// Whether an HTTP status passes the check (2xx or 3xx).
pub fn status_passes(code: u16) -> bool {
    (200..400).contains(&code)
}

/// The rise/fall state of one server.
#[derive(Debug, Clone)]
pub struct Health {
    /// Whether it takes traffic.
    pub up: bool,
    streak: u32,
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// Why the last check failed.
    pub last_error: Option<String>,
}

impl Health {
    /// A server starts up: traffic flows until checks say otherwise.
    pub fn new() -> Health {
        Health { up: true, streak: 0, passed: 0, failed: 0, last_error: None }
    }

    /// Records a result; returns `Some(new_state)` when the server changes
    /// state.
    pub fn record(&mut self, result: &CheckResult, rise: u32, fall: u32) -> Option<bool> {
        let ok = matches!(result, CheckResult::Ok);
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        if let CheckResult::Failed(e) = result {
            self.last_error = Some(e.clone());
        }
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= if ok { rise } else { fall } {
            self.up = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

/// How long one check may take: the interval, at most 2 s.
pub fn check_timeout(interval: Duration) -> Duration {
    interval.min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 302 Found\r\nLocation: /\r\n"), Ok(302));
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n"), Ok(204));
        assert!(parse_status_line(b"HTTP/1.1 200 OK").is_err(), "incomplete");
        assert!(parse_status_line(b"HTTP/2 200\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 20x OK\r\n").is_err());
        assert!(parse_status_line(b"\xff\xfe\n").is_err());
        // Found by fuzzing: an obs-text reason phrase (not UTF-8) failed the check.
        assert_eq!(parse_status_line(b"HTTP/1.1 200 O\xa6K\r\n"), Ok(200));
        // Found by fuzzing: the minor version was not checked to be a digit.
        assert!(parse_status_line(b"HTTP/1.q 208\r\n").is_err());
        assert!(status_passes(200) && status_passes(399) && !status_passes(404) && !status_passes(199));
    }

    #[test]
    fn rise_and_fall() {
        let mut h = Health::new();
        let bad = CheckResult::Failed("refused".into());
        assert_eq!(h.record(&bad, 2, 3), None);
        assert_eq!(h.record(&bad, 2, 3), None);
        assert_eq!(h.record(&bad, 2, 3), Some(false));
        assert!(!h.up);
        assert_eq!(h.record(&CheckResult::Ok, 2, 3), None);
        assert_eq!(h.record(&bad, 2, 3), None, "a failure resets the rise streak");
        assert_eq!(h.record(&CheckResult::Ok, 2, 3), None);
        assert_eq!(h.record(&CheckResult::Ok, 2, 3), Some(true));
        assert_eq!((h.passed, h.failed), (3, 4));
    }
}
