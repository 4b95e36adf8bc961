//! What a benchmark needs before it runs: the backends it names, and
//! room for its fds.

/// The anypoll backends that `--backend VALUE` names: `all` (every backend
/// that is built here and passes its test) or a comma-separated list.
pub(crate) fn select_backends(value: &str) -> Result<Vec<&'static str>, String> {
    use anypoll_backends::registry::{self, Probe};
    let available: Vec<&'static str> = registry::available().iter().map(|b| b.name).collect();
    if value == "all" {
        return Ok(available);
    }
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(b) = registry::backends().iter().find(|b| b.name == name) else {
            return Err(format!("unknown backend '{name}'; available here: {}", available.join(", ")));
        };
        match b.test() {
            Probe::Ok(_) => out.push(b.name),
            Probe::Failed(e) => return Err(format!("backend '{name}' does not work here: {e}")),
            Probe::NotBuilt => {
                return Err(format!("backend '{name}' is not built here; available here: {}", available.join(", ")))
            }
        }
    }
    if out.is_empty() {
        return Err("no backend given".to_string());
    }
    Ok(out)
}

/// Makes sure this process may open `needed` fds: raises the soft
/// RLIMIT_NOFILE up to the hard one, and the hard one too where the process
/// is allowed to. Returns the limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, i64 on some BSDs
pub(crate) fn ensure_nofile(needed: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let cur = lim.rlim_cur as u64;
    if cur >= needed {
        return cur;
    }
    let max = lim.rlim_max as u64;
    if max < needed {
        // Only a privileged process may raise the hard limit; try, then fall back.
        let want = libc::rlimit { rlim_cur: needed as libc::rlim_t, rlim_max: needed as libc::rlim_t };
        // SAFETY: `want` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return needed;
        }
    }
    let want = libc::rlimit { rlim_cur: max.min(needed) as libc::rlim_t, rlim_max: lim.rlim_max };
    // SAFETY: `want` is a valid rlimit, its soft value within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        max.min(needed)
    } else {
        cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_selection_errors_name_the_backend() {
        assert!(select_backends("all").unwrap().contains(&"poll"));
        assert_eq!(select_backends("poll").unwrap(), vec!["poll"]);
        let e = select_backends("nope").unwrap_err();
        assert!(e.contains("'nope'") && e.contains("available here"), "{e}");
    }
}
