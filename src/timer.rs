//! Timers: a binary heap of deadlines with lazy cancellation.
//!
//! Each timer has a slot with a generation. Cancelling or rescheduling
//! bumps the slot's generation; the heap entry of the old deadline is then
//! skipped when it surfaces, so both cost O(log n) at most and never search
//! the heap. The wait timeout comes from [`Timers::next_deadline`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Names a timer; stays valid until it fires or is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    gen: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot<T> {
    gen: u32,
    deadline: Option<Instant>,
    data: Option<T>,
}

/// A timer queue holding a value `T` per timer.
#[derive(Debug)]
pub struct Timers<T> {
    heap: BinaryHeap<Reverse<(Instant, u64, u32, u32)>>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    seq: u64,
    live: usize,
}

impl<T: Copy> Default for Timers<T> {
    fn default() -> Self {
        Timers { heap: BinaryHeap::new(), slots: Vec::new(), free: Vec::new(), seq: 0, live: 0 }
    }
}

impl<T: Copy> Timers<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn push(&mut self, id: TimerId, deadline: Instant) {
        // `seq` keeps timers with equal deadlines in the order they were set.
        self.seq += 1;
        self.heap.push(Reverse((deadline, self.seq, id.slot, id.gen)));
    }

    /// Adds a timer that fires at `deadline` with `data`.
    pub fn add(&mut self, deadline: Instant, data: T) -> TimerId {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { gen: 0, deadline: None, data: None });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.gen = s.gen.wrapping_add(1);
        s.deadline = Some(deadline);
        s.data = Some(data);
        let id = TimerId { slot, gen: s.gen };
        self.live += 1;
        self.push(id, deadline);
        id
    }

    fn live_slot(&mut self, id: TimerId) -> Option<&mut Slot<T>> {
        self.slots.get_mut(id.slot as usize).filter(|s| s.gen == id.gen && s.deadline.is_some())
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let Some(s) = self.live_slot(id) else { return false };
        s.gen = s.gen.wrapping_add(1);
        s.deadline = None;
        s.data = None;
        self.free.push(id.slot);
        self.live -= 1;
        true
    }

    /// Moves a pending timer to a new deadline; returns its new id, or
    /// `None` if it already fired or was cancelled.
    pub fn reschedule(&mut self, id: TimerId, deadline: Instant) -> Option<TimerId> {
        let s = self.live_slot(id)?;
        s.gen = s.gen.wrapping_add(1);
        s.deadline = Some(deadline);
        let new = TimerId { slot: id.slot, gen: s.gen };
        self.push(new, deadline);
        Some(new)
    }

    fn drop_dead_top(&mut self) {
        while let Some(Reverse((_, _, slot, gen))) = self.heap.peek() {
            if self.slots[*slot as usize].gen == *gen && self.slots[*slot as usize].deadline.is_some() {
                break;
            }
            self.heap.pop();
        }
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_dead_top();
        self.heap.peek().map(|Reverse((d, ..))| *d)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, T)> {
        self.drop_dead_top();
        let Reverse((deadline, _, slot, gen)) = *self.heap.peek()?;
        if deadline > now {
            return None;
        }
        self.heap.pop();
        let id = TimerId { slot, gen };
        let data = self.slots[slot as usize].data.expect("live timer has data");
        self.cancel(id);
        Some((id, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_then_insertion_order() {
        let mut t = Timers::new();
        let now = Instant::now();
        t.add(now + Duration::from_millis(30), 3);
        t.add(now + Duration::from_millis(10), 1);
        t.add(now + Duration::from_millis(20), 2);
        t.add(now + Duration::from_millis(20), 22);
        let later = now + Duration::from_secs(1);
        let order: Vec<i32> = std::iter::from_fn(|| t.pop_due(later).map(|(_, d)| d)).collect();
        assert_eq!(order, vec![1, 2, 22, 3]);
        assert!(t.is_empty());
    }

    #[test]
    fn cancel_and_reschedule() {
        let mut t = Timers::new();
        let now = Instant::now();
        let a = t.add(now + Duration::from_millis(10), 'a');
        let b = t.add(now + Duration::from_millis(20), 'b');
        assert!(t.cancel(a));
        assert!(!t.cancel(a));
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(20)));
        let b2 = t.reschedule(b, now + Duration::from_millis(5)).unwrap();
        assert!(t.reschedule(b, now).is_none(), "the old id is dead");
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(5)));
        assert_eq!(t.pop_due(now + Duration::from_millis(4)), None);
        assert_eq!(t.pop_due(now + Duration::from_millis(5)), Some((b2, 'b')));
        assert_eq!(t.pop_due(now + Duration::from_secs(1)), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn slots_are_reused_with_new_generations() {
        let mut t = Timers::new();
        let now = Instant::now();
        let a = t.add(now, 1);
        t.cancel(a);
        let b = t.add(now, 2);
        assert_ne!(a, b);
        assert!(!t.cancel(a));
        assert_eq!(t.pop_due(now), Some((b, 2)));
    }
}
