//! Ring buffers and their pool.
//!
//! A [`Buffer`] holds its data from `head` for `len` bytes, wrapping at the
//! end of its storage; both the data and the free space may therefore be
//! split in two. [`Buffer::data_slices`] and [`Buffer::free_slices`] expose
//! the two contiguous parts of each, which is what recv/send want. When a
//! buffer empties, `head` goes back to 0, so the next read gets the whole
//! storage in one piece.
//!
//! Buffers come from a [`BufferPool`]. A connection holds one only while it
//! moves data and gives it back as soon as it is empty, so 10,000 idle
//! connections hold no buffer at all.

/// A ring buffer of fixed capacity.
///
/// ```
/// use anypoll::buffer::{Buffer, BufferPool};
///
/// let mut b = Buffer::with_capacity(8);
/// assert_eq!(b.write_from(b"abcdef"), 6);
/// let mut out = [0u8; 4];
/// assert_eq!(b.read_into(&mut out), 4);
/// assert_eq!(&out, b"abcd");
/// // "ef" is left at 4..6; new data fills 6..8, then wraps to 0..4.
/// assert_eq!(b.write_from(b"ghijklmn"), 6);
/// assert!(b.is_full());
/// assert_eq!(b.data_slices(), (&b"efgh"[..], &b"ijkl"[..]));
/// b.consume(8);
/// assert!(b.is_empty());
/// // Empty again: the free space is one piece, for one recv.
/// assert_eq!(b.free_slices().0.len(), 8);
///
/// let mut pool = BufferPool::new(16 * 1024, 2);
/// let buf = pool.get();
/// assert_eq!((buf.capacity(), pool.in_use()), (16 * 1024, 1));
/// pool.put(buf);
/// assert_eq!(pool.in_use(), 0);
/// ```
#[derive(Debug)]
pub struct Buffer {
    data: Box<[u8]>,
    head: usize,
    len: usize,
}

impl Buffer {
    /// A buffer of `capacity` bytes (not from a pool).
    pub fn with_capacity(capacity: usize) -> Buffer {
        Buffer { data: vec![0; capacity].into_boxed_slice(), head: 0, len: 0 }
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }
    /// Bytes of data held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it holds no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Free bytes.
    pub fn free(&self) -> usize {
        self.capacity() - self.len
    }
    /// Whether there is no free byte.
    pub fn is_full(&self) -> bool {
        self.free() == 0
    }

    fn tail(&self) -> usize {
        let cap = self.capacity();
        if cap == 0 {
            0
        } else {
            (self.head + self.len) % cap
        }
    }

    /// The data, as its two contiguous parts (the second is empty unless
    /// the data wraps).
    pub fn data_slices(&self) -> (&[u8], &[u8]) {
        let cap = self.capacity();
        if self.head + self.len <= cap {
            (&self.data[self.head..self.head + self.len], &[])
        } else {
            let first = cap - self.head;
            (&self.data[self.head..], &self.data[..self.len - first])
        }
    }

    /// The free space, as its two contiguous parts, in the order they fill.
    pub fn free_slices(&mut self) -> (&mut [u8], &mut [u8]) {
        let cap = self.capacity();
        let tail = self.tail();
        if self.len == cap {
            return (&mut [], &mut []);
        }
        if tail >= self.head {
            // Free: tail..cap, then 0..head.
            let (left, right) = self.data.split_at_mut(tail);
            (right, &mut left[..self.head])
        } else {
            (&mut self.data[tail..self.head], &mut [])
        }
    }

    /// Marks `n` bytes written into the free space as data.
    ///
    /// # Panics
    /// If `n` exceeds the free space.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.free(), "commit {n} bytes with only {} free", self.free());
        self.len += n;
    }

    /// Drops `n` bytes from the front of the data.
    ///
    /// # Panics
    /// If `n` exceeds the data.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len, "consume {n} bytes of {}", self.len);
        self.len -= n;
        self.head = if self.len == 0 { 0 } else { (self.head + n) % self.capacity() };
    }

    /// Copies as much of `src` as fits; returns how much.
    pub fn write_from(&mut self, src: &[u8]) -> usize {
        let mut done = 0;
        for _ in 0..2 {
            let (first, _) = self.free_slices();
            let n = first.len().min(src.len() - done);
            first[..n].copy_from_slice(&src[done..done + n]);
            self.commit(n);
            done += n;
        }
        done
    }

    /// Moves up to `dst.len()` bytes of data into `dst`; returns how much.
    pub fn read_into(&mut self, dst: &mut [u8]) -> usize {
        let (a, b) = self.data_slices();
        let n1 = a.len().min(dst.len());
        dst[..n1].copy_from_slice(&a[..n1]);
        let n2 = b.len().min(dst.len() - n1);
        dst[n1..n1 + n2].copy_from_slice(&b[..n2]);
        self.consume(n1 + n2);
        n1 + n2
    }

    /// The offset, from the front of the data, of the first `byte`, looking
    /// across the wrap (a delimiter may sit in either part).
    pub fn find(&self, byte: u8) -> Option<usize> {
        let (a, b) = self.data_slices();
        a.iter().position(|&c| c == byte).or_else(|| b.iter().position(|&c| c == byte).map(|i| a.len() + i))
    }

    /// Moves the first `n` bytes of data (at most all of it) to the end of
    /// `out`; returns how many.
    pub fn take_into(&mut self, n: usize, out: &mut Vec<u8>) -> usize {
        let (a, b) = self.data_slices();
        let n = n.min(a.len() + b.len());
        let n1 = n.min(a.len());
        out.extend_from_slice(&a[..n1]);
        out.extend_from_slice(&b[..n - n1]);
        self.consume(n);
        n
    }

    fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// A pool of equal-sized buffers.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    free: Vec<Buffer>,
    keep: usize,
    out: usize,
}

impl BufferPool {
    /// A pool of `size`-byte buffers that keeps at most `keep` spare ones.
    pub fn new(size: usize, keep: usize) -> BufferPool {
        BufferPool { size, free: Vec::new(), keep, out: 0 }
    }
    /// The size of its buffers.
    pub fn buffer_size(&self) -> usize {
        self.size
    }
    /// A buffer, empty.
    pub fn get(&mut self) -> Buffer {
        self.out += 1;
        self.free.pop().unwrap_or_else(|| Buffer::with_capacity(self.size))
    }
    /// Gives a buffer back (its data is dropped).
    pub fn put(&mut self, mut buf: Buffer) {
        self.out = self.out.saturating_sub(1);
        if self.free.len() < self.keep && buf.capacity() == self.size {
            buf.reset();
            self.free.push(buf);
        }
    }
    /// Buffers currently handed out.
    pub fn in_use(&self) -> usize {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_data_and_free_space() {
        let mut b = Buffer::with_capacity(8);
        assert_eq!(b.write_from(b"abcdef"), 6);
        let mut out = [0u8; 4];
        assert_eq!(b.read_into(&mut out), 4);
        assert_eq!(&out, b"abcd");
        // Data "ef" at 4..6; free is 6..8 then 0..4.
        {
            let (f1, f2) = b.free_slices();
            assert_eq!((f1.len(), f2.len()), (2, 4));
        }
        assert_eq!(b.write_from(b"ghijkl"), 6);
        assert!(b.is_full());
        let (d1, d2) = b.data_slices();
        assert_eq!((d1, d2), (&b"efgh"[..], &b"ijkl"[..]));
        let mut all = [0u8; 8];
        assert_eq!(b.read_into(&mut all), 8);
        assert_eq!(&all, b"efghijkl");
        assert!(b.is_empty());
        assert_eq!(b.free_slices().0.len(), 8, "an empty buffer realigns to offer one piece");
    }

    #[test]
    fn find_and_take_look_across_the_wrap() {
        let mut b = Buffer::with_capacity(8);
        b.write_from(b"xxxxxab");
        b.consume(5);
        b.write_from(b"c\nde"); // "ab" at 5..7, then "c\nde" wraps to 7, 0..3
        assert_eq!(b.data_slices(), (&b"abc"[..], &b"\nde"[..]));
        assert_eq!(b.find(b'\n'), Some(3));
        assert_eq!(b.find(b'z'), None);
        let mut out = Vec::new();
        assert_eq!(b.take_into(4, &mut out), 4);
        assert_eq!(out, b"abc\n");
        assert_eq!(b.take_into(10, &mut out), 2, "no more than the data");
        assert_eq!(out, b"abc\nde");
        assert!(b.is_empty());
    }

    #[test]
    fn consume_and_commit_bounds() {
        let mut b = Buffer::with_capacity(4);
        b.commit(3);
        b.consume(3);
        assert!(std::panic::catch_unwind(move || b.consume(1)).is_err());
    }

    #[test]
    fn pool_reuses_and_counts() {
        let mut p = BufferPool::new(16, 1);
        let a = p.get();
        let b = p.get();
        assert_eq!(p.in_use(), 2);
        p.put(a);
        p.put(b);
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.free.len(), 1);
    }
}
