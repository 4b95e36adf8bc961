//! The documented ways libkqueue (the `kqueue-libkqueue` backend: the real
//! kqueue backend over a user-space kqueue on Linux, feature `libkqueue`)
//! differs from the BSD kernels. A test that hits one is a skip on that
//! backend naming the deviation, never a pass; on every other backend it
//! runs. Pure data, built everywhere, so that every test crate names a
//! deviation the same way.

/// One documented libkqueue deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deviation {
    /// It reads `SO_ERROR` to fill `fflags`, which clears the error: the
    /// owner's `getsockopt(SO_ERROR)` then finds 0.
    SoErrorConsumed,
    /// One `kevent()` event list holds at most 512 entries; more receipts
    /// than that at once fail with `EFAULT`.
    EventListCap,
    /// `EV_ADD` can fail on a knote that exists (where FreeBSD modifies it).
    AddOnExisting,
    /// One epoll registration per fd: adding a write knote drops RDHUP, and
    /// deleting the read knote drops `EV_CLEAR` from the write one.
    SharedRegistration,
    /// After per-change errors it waits for the timeout instead of
    /// returning the `EV_ERROR` entries at once.
    WaitsAfterErrors,
}

/// The registry name of the backend over libkqueue.
pub const LIBKQUEUE: &str = "kqueue-libkqueue";

impl Deviation {
    /// What it is, for a skip's reason.
    pub fn what(self) -> &'static str {
        match self {
            Deviation::SoErrorConsumed => "libkqueue consumes SO_ERROR when it reports an error",
            Deviation::EventListCap => "libkqueue caps one kevent() event list at 512 entries",
            Deviation::AddOnExisting => "libkqueue can fail EV_ADD on an existing knote",
            Deviation::SharedRegistration => {
                "libkqueue keeps one epoll registration per fd, so RDHUP or EV_CLEAR is lost on a shared registration"
            }
            Deviation::WaitsAfterErrors => "libkqueue waits after per-change errors instead of returning at once",
        }
    }
}

/// `Err(skip reason)` if `backend` is libkqueue, which has `deviation`.
pub fn check(backend: &str, deviation: Deviation) -> Result<(), String> {
    if backend == LIBKQUEUE {
        Err(format!("{backend}: {} (a documented libkqueue deviation)", deviation.what()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_libkqueue_deviates_and_the_reason_names_the_deviation() {
        assert_eq!(check("kqueue", Deviation::EventListCap), Ok(()));
        assert_eq!(check("kqueue-model", Deviation::SoErrorConsumed), Ok(()));
        let r = check(LIBKQUEUE, Deviation::SoErrorConsumed).unwrap_err();
        assert!(r.contains("SO_ERROR") && r.contains(LIBKQUEUE), "{r}");
    }
}
