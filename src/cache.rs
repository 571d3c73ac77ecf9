//! Bounded LRU caches: open descriptors and decoded frames.

use crate::format::DecodedFrame;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

/// A weighted LRU map. Eviction is O(log n).
pub struct Lru<K, V> {
    map: HashMap<K, (V, u64, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    used: u64,
    cap: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    /// An empty cache holding at most `cap` units.
    pub fn new(cap: u64) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            used: 0,
            cap,
        }
    }

    /// The value of `k`, made the most recently used.
    pub fn get(&mut self, k: &K) -> Option<V> {
        let (v, t, _) = self.map.get_mut(k)?;
        self.order.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.order.insert(self.tick, k.clone());
        Some(v.clone())
    }

    /// Inserts and returns what was evicted to stay within capacity.
    pub fn insert(&mut self, k: K, v: V, weight: u64) -> Vec<(K, V)> {
        self.remove(&k);
        self.tick += 1;
        self.order.insert(self.tick, k.clone());
        self.map.insert(k, (v, self.tick, weight));
        self.used += weight;
        let mut out = Vec::new();
        while self.used > self.cap && self.map.len() > 1 {
            let (_, old) = self.order.pop_first().expect("order tracks map");
            let (v, _, w) = self.map.remove(&old).expect("order tracks map");
            self.used -= w;
            out.push((old, v));
        }
        out
    }

    /// Removes `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (v, t, w) = self.map.remove(k)?;
        self.order.remove(&t);
        self.used -= w;
        Some(v)
    }

    /// Keeps only the keys `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let drop: Vec<K> = self.map.keys().filter(|k| !keep(k)).cloned().collect();
        for k in drop {
            self.remove(&k);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Decoded frames keyed by (stream incarnation, frame start id), so that a
/// read of any id finds its frame with one ordered lookup, before any I/O.
pub struct BlockCache {
    inner: Mutex<BlockInner>,
    /// The most it keeps, in bytes (fixed: read without the lock).
    cap: u64,
}

struct BlockInner {
    frames: BTreeMap<(u64, u64), (Arc<DecodedFrame>, u64)>,
    order: BTreeMap<u64, (u64, u64)>,
    tick: u64,
    used: u64,
}

impl BlockCache {
    /// A cache of at most `cap` bytes of decoded frames.
    pub fn new(cap: u64) -> BlockCache {
        BlockCache {
            inner: Mutex::new(BlockInner {
                frames: BTreeMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                used: 0,
            }),
            cap,
        }
    }

    /// The cached frame of stream `uid` holding `id`.
    pub fn get(&self, uid: u64, id: u64) -> Option<Arc<DecodedFrame>> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let (&key, (frame, tick)) = inner.frames.range_mut((uid, 0)..=(uid, id)).next_back()?;
        if id >= frame.end_id() {
            return None;
        }
        inner.order.remove(tick);
        inner.tick += 1;
        *tick = inner.tick;
        inner.order.insert(inner.tick, key);
        Some(frame.clone())
    }

    /// The most it keeps, in bytes.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Whether a frame of `weight` bytes can be kept.
    pub fn fits(&self, weight: u64) -> bool {
        weight <= self.cap
    }

    /// Keeps a decoded frame of the stream incarnation `uid`.
    pub fn insert(&self, uid: u64, frame: Arc<DecodedFrame>) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let w = frame.weight();
        if w > self.cap {
            return;
        }
        let key = (uid, frame.start_id);
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((old, t)) = inner.frames.insert(key, (frame, tick)) {
            inner.order.remove(&t);
            inner.used -= old.weight();
        }
        inner.order.insert(tick, key);
        inner.used += w;
        while inner.used > self.cap {
            let Some((_, k)) = inner.order.pop_first() else {
                break;
            };
            if let Some((f, _)) = inner.frames.remove(&k) {
                inner.used -= f.weight();
            }
        }
    }

    /// Drops the frames of a stream incarnation below `before` (truncated).
    pub fn forget(&self, uid: u64, before: u64) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let keys: Vec<(u64, u64)> = inner
            .frames
            .range((uid, 0)..(uid, before))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some((f, t)) = inner.frames.remove(&k) {
                inner.order.remove(&t);
                inner.used -= f.weight();
            }
        }
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.inner.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recent_by_weight() {
        let mut l = Lru::new(3);
        assert!(l.insert("a", 1, 1).is_empty());
        l.insert("b", 2, 1);
        l.insert("c", 3, 1);
        assert_eq!(l.get(&"a"), Some(1));
        assert_eq!(l.insert("d", 4, 1), vec![("b", 2)]);
        assert_eq!(l.insert("e", 5, 2), vec![("c", 3), ("a", 1)]);
        assert_eq!(l.len(), 2);
    }
}
