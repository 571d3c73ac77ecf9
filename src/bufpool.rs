//! Read buffers kept for reuse. A fresh buffer of a MiB costs 256 page
//! faults and the zeroing of each page, about as much as the read it
//! serves; `log` reads take one per request, and a decoded frame keeps the
//! buffer it was read into (see `segment::Window::frame`), so buffers
//! return here when the last of them is dropped.

use parking_lot::Mutex;

/// Bytes kept at most, over all buffers.
const MAX_KEPT: usize = 16 << 20;
/// Buffers kept at most.
const MAX_COUNT: usize = 16;
/// Smaller buffers are not worth keeping.
const MIN_LEN: usize = 64 << 10;

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The smallest of `kept` whose `size` is at least `n` and at most twice
/// that: a larger one would hold memory the request does not use.
fn best_fit(kept: &[Vec<u8>], n: usize, size: fn(&Vec<u8>) -> usize) -> Option<usize> {
    kept.iter()
        .enumerate()
        .filter(|(_, b)| size(b) >= n && size(b) <= n.saturating_mul(2))
        .min_by_key(|(_, b)| size(b))
        .map(|(i, _)| i)
}

/// A buffer of at least `len` bytes (contents unspecified): a kept one no
/// more than twice as large, or a new zeroed one.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let mut kept = KEPT.lock();
    match best_fit(&kept, len, Vec::len) {
        Some(i) => kept.swap_remove(i),
        None => {
            drop(kept);
            vec![0u8; len]
        }
    }
}

/// Keeps the buffer behind `buf` for reuse, unless something else still
/// shares it (the last holder gives it back).
pub(crate) fn give_unshared(buf: &mut std::sync::Arc<Vec<u8>>) {
    if let Some(b) = std::sync::Arc::get_mut(buf) {
        give(std::mem::take(b));
    }
}

/// Keeps `buf` for reuse if there is room.
pub(crate) fn give(buf: Vec<u8>) {
    if buf.len() < MIN_LEN {
        return;
    }
    let mut kept = KEPT.lock();
    let held: usize = kept.iter().map(Vec::len).sum();
    if kept.len() < MAX_COUNT && held + buf.len() <= MAX_KEPT {
        kept.push(buf);
    }
}

/// Empty buffers with room, kept for the frames appends encode: a frame of
/// a MiB encoded into a fresh buffer pays the same page faults.
static ROOMY: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// How many times [`take_empty`] gave out a kept buffer.
static EMPTY_REUSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times [`take_empty`] gave out a kept buffer, in all.
#[cfg(test)]
pub(crate) fn empty_reuses() -> u64 {
    EMPTY_REUSES.load(std::sync::atomic::Ordering::Relaxed)
}

/// An empty buffer with room for at least `cap` bytes: a kept one with no
/// more than twice that, or a new one.
pub(crate) fn take_empty(cap: usize) -> Vec<u8> {
    if cap >= MIN_LEN {
        let mut kept = ROOMY.lock();
        if let Some(i) = best_fit(&kept, cap, Vec::capacity) {
            EMPTY_REUSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return kept.swap_remove(i);
        }
    }
    Vec::with_capacity(cap)
}

/// Keeps `buf`'s room (emptied) for [`take_empty`], dropping the oldest
/// kept to make room: the frames being made now are the likeliest sizes.
pub(crate) fn give_empty(mut buf: Vec<u8>) {
    if buf.capacity() < MIN_LEN || buf.capacity() > MAX_KEPT {
        return;
    }
    buf.clear();
    let mut kept = ROOMY.lock();
    let mut held: usize = kept.iter().map(Vec::capacity).sum();
    while kept.len() >= MAX_COUNT || held + buf.capacity() > MAX_KEPT {
        held -= kept.remove(0).capacity();
    }
    kept.push(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_a_buffer_of_about_the_size_asked() {
        let a = take(3 << 20);
        let p = a.as_ptr();
        give(a);
        // Too large for a small request: a new one.
        let small = take(1 << 20);
        assert_ne!(small.as_ptr(), p);
        let again = take(2 << 20);
        assert_eq!(again.as_ptr(), p, "kept and given back");
        assert!(again.len() >= 2 << 20);
        give(small);
        give(again);
        give(vec![0u8; MAX_KEPT]);
        assert!(KEPT.lock().iter().map(Vec::len).sum::<usize>() <= MAX_KEPT);
    }

    #[test]
    fn keeps_the_room_of_an_emptied_buffer() {
        let mut a = take_empty(3 << 20);
        a.extend_from_slice(&[7; 100]);
        let p = a.as_ptr();
        give_empty(a);
        // Too roomy for a small request: a new one.
        let small = take_empty(1 << 20);
        assert_ne!(small.as_ptr(), p);
        let again = take_empty(2 << 20);
        assert_eq!(again.as_ptr(), p, "kept and given back");
        assert!(again.is_empty() && again.capacity() >= 2 << 20);
        give_empty(small);
        give_empty(again);
        // Past the bound: not kept (and the pool, shared with the tests
        // running beside this one, is not filled).
        give_empty(Vec::with_capacity(MAX_KEPT + 1));
        assert!(ROOMY.lock().iter().map(Vec::capacity).sum::<usize>() <= MAX_KEPT);
    }
}
