//! [`StreamRig`]: a [`Stream`] relayed through a scripted seam, as the
//! relay does it.

use anypoll::connection::{ConnFlags, Connection};
use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
use anypoll::{Ctx, FdState, Handler, IoEvent};

use super::Scripted;

/// A [`Handler`] that relays a [`Stream`] through a [`Scripted`] seam, the
/// way the relay does, and records the connections' flags when it ends
/// (then closes it).
#[derive(Debug)]
pub struct StreamRig {
    /// The stream.
    pub stream: Stream,
    /// Its pools.
    pub pools: Pools,
    /// The seam.
    pub ops: Scripted,
    /// Owner calls.
    pub calls: u64,
    /// Calls that ended with the front's WAIT_ROOM set and its recv not ACTIVE.
    pub wait_room_seen: u64,
    /// Calls that ended with the front's WAIT_ROOM set but its recv still ACTIVE (must stay 0).
    pub wait_room_polled: u64,
    /// The flags of (front, back) when it ended.
    pub final_flags: Option<(ConnFlags, ConnFlags)>,
}

impl StreamRig {
    /// Registers both connections with the loop (recv wanted) and builds
    /// the stream with `mode` and 16 KiB buffers.
    pub fn new(
        cx: &mut Ctx,
        mut front: Connection,
        mut back: Connection,
        mode: SpliceMode,
        ops: Scripted,
    ) -> StreamRig {
        front.ctrl_init(cx, 0, FdState::RECV_ACTIVE).expect("ctrl_init front");
        front.xprt_init();
        back.ctrl_init(cx, 1, FdState::RECV_ACTIVE).expect("ctrl_init back");
        back.xprt_init();
        StreamRig {
            stream: Stream::new(front, back, mode),
            pools: Pools::new(16 * 1024),
            ops,
            calls: 0,
            wait_room_seen: 0,
            wait_room_polled: 0,
            final_flags: None,
        }
    }

    /// Whether it ended.
    pub fn ended(&self) -> bool {
        self.final_flags.is_some()
    }
}

impl Handler for StreamRig {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        if self.final_flags.is_some() {
            return;
        }
        self.calls += 1;
        let o = self.stream.process(&mut self.ops, cx, &mut self.pools);
        let front = &self.stream.front;
        if front.flags.contains(ConnFlags::WAIT_ROOM) && front.flags.contains(ConnFlags::CTRL_READY) {
            if cx.state(front.fd()).is_some_and(|s| s.contains(FdState::RECV_ACTIVE)) {
                self.wait_room_polled += 1;
            } else {
                self.wait_room_seen += 1;
            }
        }
        if o != Outcome::Running {
            self.final_flags = Some((self.stream.front.flags, self.stream.back.flags));
            self.stream.close(cx, &mut self.pools);
        }
    }
}
