//! The registry: every backend anypoll knows, whether it is built here,
//! a `test()` that really creates one, and the run-time selection.
//!
//! Selection order, first match wins:
//!
//! 1. a name given through the API ([`choose`]'s `api` argument);
//! 2. `--poller NAME` on the command line (its `flag` argument);
//! 3. the environment variable [`ENV`] (`ANYPOLL_POLLER=NAME`);
//! 4. the best backend available: built for this platform, its test passes,
//!    highest preference first.
//!
//! A name that is unknown, not built for this platform, or whose test fails
//! is an error (never a silent fallback) that lists the backends available
//! here.
//!
//! ```
//! use anypoll_backends::registry;
//! use anypoll_backends::Poller;
//!
//! let (poller, source) = registry::choose(Some("poll"), None).unwrap();
//! assert_eq!(poller.name(), "poll");
//! assert_eq!(source, registry::Source::Api);
//!
//! let err = registry::choose(Some("nope"), None).unwrap_err();
//! assert!(err.to_string().contains("available here: "));
//! ```

use std::fmt;
use std::io;

use crate::{AnyPoller, Capabilities, Poller};

/// The environment variable that names a backend.
pub const ENV: &str = "ANYPOLL_POLLER";

/// One backend anypoll knows about.
#[derive(Debug)]
pub struct Backend {
    /// Its name, as `--poller` and [`ENV`] take it.
    pub name: &'static str,
    /// Higher is preferred when nothing names a backend.
    pub preference: u32,
    /// The platforms it is built for.
    pub platforms: &'static str,
    /// A kernel model: the backend's own logic over a user-space model of
    /// another system's kernel, for tests. Never the real OS, and never
    /// chosen unless named.
    pub is_model: bool,
    create: Option<fn() -> io::Result<AnyPoller>>,
}

/// The outcome of [`Backend::test`].
#[derive(Debug)]
pub enum Probe {
    /// It was created and waited once; these are its capabilities.
    Ok(Capabilities),
    /// It is built here but could not be created or could not wait.
    Failed(io::Error),
    /// It is not built here: made for another platform, or behind a feature
    /// that is off (`compat`).
    NotBuilt,
}

impl Backend {
    /// Whether it is built for this platform.
    pub fn built(&self) -> bool {
        self.create.is_some()
    }

    /// Creates one.
    ///
    /// # Errors
    /// `Unsupported` if it is not built for this platform; otherwise the
    /// backend's own error.
    pub fn create(&self) -> io::Result<AnyPoller> {
        match self.create {
            Some(f) => f(),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the {} backend is not built for {} (it is for {})",
                    self.name,
                    std::env::consts::OS,
                    self.platforms
                ),
            )),
        }
    }

    /// Really creates one and does a zero-timeout wait with it.
    pub fn test(&self) -> Probe {
        if !self.built() {
            return Probe::NotBuilt;
        }
        let mut p = match self.create() {
            Ok(p) => p,
            Err(e) => return Probe::Failed(e),
        };
        let mut events = crate::Events::with_capacity(4);
        match p.wait(&mut events, Some(std::time::Duration::ZERO)) {
            Ok(_) => Probe::Ok(p.capabilities()),
            Err(e) => Probe::Failed(e),
        }
    }
}

macro_rules! ctor {
    ($cfg:meta => $variant:ident($ty:path)) => {{
        #[cfg($cfg)]
        let f: Option<fn() -> io::Result<AnyPoller>> = Some(|| Ok(AnyPoller::$variant(<$ty>::new()?)));
        #[cfg(not($cfg))]
        let f: Option<fn() -> io::Result<AnyPoller>> = None;
        f
    }};
}

// A slice, not an array: `kqueue-libkqueue` is in it only when built.
static BACKENDS: &[Backend] = &[
    Backend {
        name: "epoll",
        is_model: false,
        preference: 300,
        platforms: "Linux, Android",
        create: ctor!(any(target_os = "linux", target_os = "android") => Epoll(crate::epoll::Epoll)),
    },
    Backend {
        name: "kqueue",
        is_model: false,
        preference: 300,
        platforms: "macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly",
        create: ctor!(anypoll_kqueue => Kqueue(crate::kqueue::Kqueue)),
    },
    Backend {
        name: "evports",
        is_model: false,
        preference: 300,
        platforms: "illumos, Solaris",
        create: ctor!(any(target_os = "illumos", target_os = "solaris") => EvPorts(crate::evports::EvPorts<crate::evports::Sys>)),
    },
    Backend {
        name: "poll",
        is_model: false,
        preference: 200,
        platforms: "every Unix",
        create: Some(|| Ok(AnyPoller::Poll(crate::poll::Poll::new()?))),
    },
    Backend {
        name: "compat",
        is_model: false,
        preference: 150,
        platforms: "every platform the polling crate supports, with the feature `compat`",
        create: ctor!(feature = "compat" => Compat(crate::compat::Compat)),
    },
    Backend {
        name: "select",
        is_model: false,
        preference: 100,
        platforms: "every Unix",
        create: Some(|| Ok(AnyPoller::Select(crate::select::Select::new()?))),
    },
    // Listed only in a build that has it, so that a normal build (and its
    // `anypoll probe`) knows exactly the real systems.
    #[cfg(all(target_os = "linux", feature = "libkqueue"))]
    Backend {
        name: "kqueue-libkqueue",
        is_model: false,
        preference: 20,
        platforms: "Linux via libkqueue (user space over epoll), with the feature `libkqueue`: \
                    the kqueue backend, not the real OS",
        create: Some(|| Ok(AnyPoller::KqueueLibkqueue(crate::kqueue::KqueueLibkqueue::new()?))),
    },
    Backend {
        name: "kqueue-model",
        is_model: true,
        preference: 10,
        platforms: "Linux with the feature `models`: the kqueue backend over a user-space model of \
                    a kqueue (poll(2) underneath), not the real OS",
        create: ctor!(all(target_os = "linux", feature = "models") =>
            KqueueModel(crate::kqueue_model::KqueueModel)),
    },
    Backend {
        name: "evports-model",
        is_model: true,
        preference: 10,
        platforms: "Linux with the feature `models`: the event-ports backend over a user-space model of \
                    an illumos event port (poll(2) underneath), not the real OS",
        create: ctor!(all(target_os = "linux", feature = "models") =>
            EvPortsModel(crate::evports::EvPorts<crate::evports_model::Model>)),
    },
];

/// Whether this build has the kernel models (Linux, feature `models`).
const MODELS: bool = cfg!(all(target_os = "linux", feature = "models"));

/// Every backend anypoll knows, built here or not, by preference. The
/// kernel models (last in the table) are listed only in a build that has
/// them, so a normal build knows exactly the real systems.
pub fn backends() -> &'static [Backend] {
    if MODELS {
        BACKENDS
    } else {
        &BACKENDS[..BACKENDS.iter().take_while(|b| !b.is_model).count()]
    }
}

/// The backends that are built here and pass their test, by preference.
pub fn available() -> Vec<&'static Backend> {
    backends().iter().filter(|b| matches!(b.test(), Probe::Ok(_))).collect()
}

/// Where the chosen backend's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The program asked for it through the API.
    Api,
    /// `--poller NAME`.
    Flag,
    /// `ANYPOLL_POLLER=NAME`.
    Env,
    /// Nothing named one: the best available.
    Best,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Api => "the API",
            Source::Flag => "--poller",
            Source::Env => ENV,
            Source::Best => "the best available",
        })
    }
}

/// Why no backend could be chosen. Its message names the backend asked
/// for, where the name came from, and the backends available here.
///
/// It converts into an `io::Error` (with `?` in a function returning
/// `io::Result`) that keeps it as its inner error: `InvalidInput` for a
/// name that is unknown here, the backend's own error kind when it cannot
/// be created (EMFILE, ENOSYS, …, whose errno stays reachable through
/// [`source`](std::error::Error::source)), `Unsupported` when no backend
/// works at all.
///
/// ```
/// use anypoll_backends::registry::{self, Source};
///
/// let e = registry::create("no-such-poller", Source::Api).unwrap_err();
/// let io: std::io::Error = e.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
/// assert!(io.to_string().contains("no-such-poller"));
/// ```
#[derive(Debug)]
pub struct SelectError {
    message: String,
    kind: io::ErrorKind,
    source: Option<io::Error>,
}

impl SelectError {
    /// The `io::ErrorKind` it converts to.
    pub fn kind(&self) -> io::ErrorKind {
        self.kind
    }
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SelectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<SelectError> for io::Error {
    fn from(e: SelectError) -> io::Error {
        io::Error::new(e.kind, e)
    }
}

fn available_list() -> String {
    let names: Vec<&str> = available().iter().map(|b| b.name).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Creates the backend called `name`, with errors that say why not.
pub fn create(name: &str, source: Source) -> Result<AnyPoller, SelectError> {
    let Some(backend) = backends().iter().find(|b| b.name == name) else {
        return Err(SelectError {
            // Escaped: the name comes from the user and may hold a newline.
            message: format!(
                "unknown poller '{}' (from {source}); available here: {}",
                name.escape_debug(),
                available_list()
            ),
            kind: io::ErrorKind::InvalidInput,
            source: None,
        });
    };
    backend.create().map_err(|e| SelectError {
        message: format!("poller '{name}' (from {source}) cannot be used: {e}; available here: {}", available_list()),
        kind: e.kind(),
        source: Some(e),
    })
}

/// The backends tried, in order, when nothing names one: built here and not
/// a model (a model is used only when named: it is not this system's kernel).
fn unnamed_candidates() -> impl Iterator<Item = &'static Backend> {
    backends().iter().filter(|b| b.built() && !b.is_model)
}

/// Chooses and creates a backend, in the order given in the module docs.
/// `api` is a name the program passes, `flag` the value of `--poller`.
/// An empty [`ENV`] counts as unset.
pub fn choose(api: Option<&str>, flag: Option<&str>) -> Result<(AnyPoller, Source), SelectError> {
    let env = std::env::var(ENV).ok().filter(|v| !v.is_empty());
    let named = api
        .map(|n| (n.to_string(), Source::Api))
        .or_else(|| flag.map(|n| (n.to_string(), Source::Flag)))
        .or_else(|| env.map(|n| (n, Source::Env)));
    if let Some((name, source)) = named {
        return create(&name, source).map(|p| (p, source));
    }
    let mut failures = Vec::new();
    for b in unnamed_candidates() {
        match b.create() {
            Ok(p) => return Ok((p, Source::Best)),
            Err(e) => failures.push(format!("{}: {e}", b.name)),
        }
    }
    Err(SelectError {
        message: format!("no poller works here ({})", failures.join("; ")),
        kind: io::ErrorKind::Unsupported,
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sorted_by_preference() {
        let b = backends();
        for w in b.windows(2) {
            assert!(w[0].preference >= w[1].preference);
        }
        let mut names: Vec<_> = b.iter().map(|b| b.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), b.len());
    }

    #[test]
    fn api_beats_flag() {
        let (p, s) = choose(Some("select"), Some("poll")).unwrap();
        assert_eq!((p.name(), s), ("select", Source::Api));
        let (p, s) = choose(None, Some("poll")).unwrap();
        assert_eq!((p.name(), s), ("poll", Source::Flag));
    }

    #[test]
    fn unknown_and_unbuilt_names_are_errors_that_list_what_is_available() {
        let e = choose(None, Some("bogus")).unwrap_err().to_string();
        assert!(e.contains("unknown poller 'bogus'") && e.contains("available here: "), "{e}");
        assert!(e.contains("poll"), "{e}");
        let foreign = backends().iter().find(|b| !b.built()).expect("some backend is foreign here");
        let e = choose(Some(foreign.name), None).unwrap_err().to_string();
        assert!(e.contains("not built for"), "{e}");
        assert!(matches!(foreign.test(), Probe::NotBuilt));
    }

    #[test]
    fn models_say_so_and_come_last() {
        let b = BACKENDS;
        let models: Vec<_> = b.iter().filter(|b| b.is_model).collect();
        assert!(!models.is_empty(), "the table holds the kernel models");
        // backends() cuts them off the end of the table in a normal build.
        assert!(b.iter().skip_while(|b| !b.is_model).all(|b| b.is_model), "a real backend after a model");
        assert_eq!(backends().iter().any(|b| b.is_model), MODELS);
        assert_eq!(models.iter().all(|m| m.built()), MODELS);
        for m in &models {
            assert!(m.name.ends_with("-model"), "{}", m.name);
            assert!(m.platforms.contains("model") && m.platforms.contains("not the real OS"), "{}", m.platforms);
            for real in b.iter().filter(|b| !b.is_model) {
                assert!(m.preference < real.preference, "{} is preferred to {}", m.name, real.name);
            }
        }
        // Unnamed, the choice is never a model.
        assert!(unnamed_candidates().all(|b| !b.is_model));
    }

    #[test]
    fn a_select_error_is_an_error_and_converts_into_io_error() {
        let e = choose(None, Some("bogus")).unwrap_err();
        let dynamic: &dyn std::error::Error = &e;
        assert!(dynamic.source().is_none());
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert!(io.to_string().contains("unknown poller 'bogus'"), "{io}");
        assert!(io.get_ref().is_some_and(|inner| inner.is::<SelectError>()), "{io:?}");

        // A backend that cannot be created keeps the backend's error.
        let foreign = backends().iter().find(|b| !b.built()).expect("some backend is foreign here");
        let e = create(foreign.name, Source::Flag).unwrap_err();
        let kind = e.kind();
        assert!(std::error::Error::source(&e).is_some(), "{e}");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), kind);
        assert!(io.to_string().contains(foreign.name) && io.to_string().contains("--poller"), "{io}");
    }

    #[test]
    fn every_built_backend_passes_its_test() {
        for b in backends().iter().filter(|b| b.built()) {
            assert!(matches!(b.test(), Probe::Ok(_)), "{}: {:?}", b.name, b.test());
        }
    }
}
