//! What an fd owner or a timer's data stands for in a relay thread.
//!
//! The loop hands back, with each event, the owner an fd was registered
//! with, and with each timer the `u64` it was armed with. The relay packs
//! a kind and an index into both: the kind in the top 4 bits, the index
//! below. [`Owner`] and [`TimerTag`] are those values typed; the packing
//! is here alone, and a value with an unknown kind decodes to `None`
//! instead of being taken for something it is not.

/// Bits under the kind: the room for an index.
const KIND_SHIFT: u32 = usize::BITS - 4;
const INDEX_MASK: usize = (1 << KIND_SHIFT) - 1;

fn pack(kind: usize, index: usize) -> usize {
    // An index never reaches 2^28 (32-bit) or 2^60: it counts fds,
    // servers or connection slots. The mask keeps a wrong one from
    // changing the kind.
    (kind << KIND_SHIFT) | (index & INDEX_MASK)
}

fn unpack(value: usize) -> (usize, usize) {
    (value >> KIND_SHIFT, value & INDEX_MASK)
}

/// Whose fd an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This thread's listener number `.0`.
    Listener(usize),
    /// The client side of the stream in slot `.0`.
    Front(usize),
    /// The server side of the stream in slot `.0`.
    Back(usize),
    /// The health check of server `.0`.
    Check(usize),
    /// The stats endpoint's listener.
    StatsListener,
}

impl Owner {
    /// The owner value to register the fd with.
    pub(crate) fn encode(self) -> usize {
        match self {
            Owner::Listener(i) => pack(1, i),
            Owner::Front(slot) => pack(2, slot * 2),
            Owner::Back(slot) => pack(2, slot * 2 + 1),
            Owner::Check(i) => pack(3, i),
            Owner::StatsListener => pack(4, 0),
        }
    }

    /// The owner an event carries; `None` for a value no relay fd has.
    pub(crate) fn decode(value: usize) -> Option<Owner> {
        match unpack(value) {
            (1, i) => Some(Owner::Listener(i)),
            (2, i) if i % 2 == 0 => Some(Owner::Front(i / 2)),
            (2, i) => Some(Owner::Back(i / 2)),
            (3, i) => Some(Owner::Check(i)),
            (4, 0) => Some(Owner::StatsListener),
            _ => None,
        }
    }
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerTag {
    /// The connect or idle timeout of the stream in slot `.0`.
    Stream(usize),
    /// Time to check server `.0`.
    CheckStart(usize),
    /// The check of server `.0` took too long.
    CheckTimeout(usize),
    /// Publish this thread's stats (every second).
    Publish,
    /// The grace period after a stop request is over.
    Grace,
    /// Look again whether a connection slot is free (accepting paused).
    Maxconn,
}

impl TimerTag {
    /// The data to arm the timer with.
    pub(crate) fn encode(self) -> u64 {
        let v = match self {
            TimerTag::Stream(slot) => pack(1, slot),
            TimerTag::CheckStart(i) => pack(2, i),
            TimerTag::CheckTimeout(i) => pack(3, i),
            TimerTag::Publish => pack(4, 0),
            TimerTag::Grace => pack(5, 0),
            TimerTag::Maxconn => pack(6, 0),
        };
        v as u64
    }

    /// The tag a timer's data stands for; `None` for data no relay timer
    /// has.
    pub(crate) fn decode(data: u64) -> Option<TimerTag> {
        match unpack(usize::try_from(data).ok()?) {
            (1, slot) => Some(TimerTag::Stream(slot)),
            (2, i) => Some(TimerTag::CheckStart(i)),
            (3, i) => Some(TimerTag::CheckTimeout(i)),
            (4, 0) => Some(TimerTag::Publish),
            (5, 0) => Some(TimerTag::Grace),
            (6, 0) => Some(TimerTag::Maxconn),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEXES: [usize; 5] = [0, 1, 2, 1000, INDEX_MASK / 2];

    #[test]
    fn owners_round_trip() {
        let mut seen = Vec::new();
        for i in INDEXES {
            for o in [Owner::Listener(i), Owner::Front(i), Owner::Back(i), Owner::Check(i), Owner::StatsListener] {
                let v = o.encode();
                assert_eq!(Owner::decode(v), Some(o), "{o:?} encoded as {v:#x}");
                seen.push(v);
            }
        }
        // Distinct owners have distinct values.
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), INDEXES.len() * 4 + 1);
    }

    #[test]
    fn timer_tags_round_trip() {
        for i in INDEXES {
            for t in [
                TimerTag::Stream(i),
                TimerTag::CheckStart(i),
                TimerTag::CheckTimeout(i),
                TimerTag::Publish,
                TimerTag::Grace,
                TimerTag::Maxconn,
            ] {
                let d = t.encode();
                assert_eq!(TimerTag::decode(d), Some(t), "{t:?} encoded as {d:#x}");
            }
        }
    }

    #[test]
    fn unknown_values_are_rejected() {
        for kind in [0, 5, 7, 15] {
            assert_eq!(Owner::decode(pack(kind, 3)), None, "owner kind {kind}");
        }
        assert_eq!(Owner::decode(0), None);
        assert_eq!(Owner::decode(usize::MAX), None);
        assert_eq!(Owner::decode(pack(4, 1)), None, "a second stats listener");
        for kind in [0, 7, 15] {
            assert_eq!(TimerTag::decode(pack(kind, 3) as u64), None, "timer kind {kind}");
        }
        assert_eq!(TimerTag::decode(0), None);
        assert_eq!(TimerTag::decode(u64::MAX), None);
        assert_eq!(TimerTag::decode(pack(5, 1) as u64), None, "grace with an index");
    }
}
