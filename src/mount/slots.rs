//! Which inode a lookup of `append` names. The kernel holds an exclusive
//! per-inode lock across every O_APPEND write, so writers in different
//! processes reach the daemon together (and share an fdatasync) only
//! through different inodes; yet a name that resolves to another inode at
//! every lookup makes the kernel's revalidation fail and look up twice per
//! open. So a lookup names the lowest-numbered `append` inode no one is
//! using: not open, and not handed out by a lookup that has not yet been
//! opened (or forgotten by the kernel). A lone writer keeps one inode (one
//! LOOKUP per open); concurrent writers get one each.

use parking_lot::Mutex;

/// How many `append` inodes may be in use at once; past it they are
/// shared (writers then take turns on one, which is slower only).
const MAX_SLOTS: usize = 4096;

#[derive(Default, Clone, Copy)]
struct Slot {
    /// Lookups that named it and were neither opened nor forgotten yet.
    pending: u64,
    /// Open handles.
    open: u64,
}

/// The `append` inodes in use, by value (index + 1).
#[derive(Default)]
pub struct AppendSlots {
    slots: Mutex<Vec<Slot>>,
    /// Where sharing starts when every slot is busy.
    spill: std::sync::atomic::AtomicUsize,
}

impl AppendSlots {
    /// The value a lookup of `append` names now.
    pub fn lookup(&self) -> u64 {
        let mut slots = self.slots.lock();
        let free = slots.iter().position(|s| s.pending == 0 && s.open == 0);
        let i = match free {
            Some(i) => i,
            None if slots.len() < MAX_SLOTS => {
                slots.push(Slot::default());
                slots.len() - 1
            }
            None => {
                self.spill
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    % MAX_SLOTS
            }
        };
        slots[i].pending += 1;
        i as u64 + 1
    }

    fn with(&self, value: u64, f: impl FnOnce(&mut Slot)) {
        let mut slots = self.slots.lock();
        if let Some(s) = (value as usize)
            .checked_sub(1)
            .and_then(|i| slots.get_mut(i))
        {
            f(s);
        }
    }

    /// A handle was opened on it (the lookup that named it is used).
    pub fn opened(&self, value: u64) {
        self.with(value, |s| {
            s.pending = s.pending.saturating_sub(1);
            s.open += 1;
        });
    }

    /// A handle on it was released.
    pub fn released(&self, value: u64) {
        self.with(value, |s| s.open = s.open.saturating_sub(1));
    }

    /// The kernel dropped `n` lookups of it (a revalidation that found
    /// another inode, or an inode evicted).
    pub fn forgot(&self, value: u64, n: u64) {
        self.with(value, |s| s.pending = s.pending.saturating_sub(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_writer_keeps_one_inode_and_concurrent_ones_get_their_own() {
        let s = AppendSlots::default();
        // One writer, again and again: the same inode.
        for _ in 0..3 {
            let v = s.lookup();
            assert_eq!(v, 1);
            s.opened(v);
            s.released(v);
        }
        // Two looked up before either opens: two inodes; a third while
        // both are open: a third.
        let (a, b) = (s.lookup(), s.lookup());
        assert_eq!((a, b), (1, 2));
        s.opened(a);
        s.opened(b);
        assert_eq!(s.lookup(), 3);
        s.forgot(3, 1);
        // One released: its inode is the next one named.
        s.released(a);
        assert_eq!(s.lookup(), 1);
        s.forgot(1, 1);
        s.released(b);
        // A stat's lookup never opened holds its inode until forgotten.
        let st = s.lookup();
        assert_eq!(st, 1);
        assert_eq!(s.lookup(), 2);
        s.forgot(1, 1);
        s.forgot(2, 1);
        assert_eq!(s.lookup(), 1);
    }
}
