//! A simulated disk for crash and fault tests: it keeps the bytes written
//! apart from the bytes made durable, for file contents and for directory
//! entries alike, and can fail the Nth write or sync.
//!
//! * `write_all_at` / `set_len` change the written image only.
//! * `sync_data` on a file makes its written bytes durable.
//! * creating, renaming and removing names change the written namespace;
//!   `sync_dir(d)` makes the names directly in `d` durable.
//! * [`SimDisk::crash`] returns a new disk holding what survives a power
//!   loss: the durable image, optionally with a torn or reordered part of
//!   the unsynced bytes of each file (as a real disk may persist them), or
//!   (`CrashMode::Lazy`, LazyFS's model and more) any subset of the writes
//!   made since the file's last sync, each whole, lost, or torn into pieces
//!   at any byte of which any subset persists, the file's size persisted
//!   or not.

use super::{DirEntry, DirLock, Storage, StorageFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Debug, Default, Clone)]
struct FileData {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// What changed the file since its last sync, in order.
    pending: Vec<Op>,
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// What survives of unsynced file bytes in a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing that was not synced.
    DropUnsynced,
    /// A prefix of the unsynced bytes, cut at a 512-byte sector boundary
    /// chosen by the seed (a torn write).
    TornPrefix(u64),
    /// Any subset of the unsynced 512-byte sectors, chosen by the seed,
    /// the others reading back as what was durable (or zeros).
    Reordered(u64),
    /// Any subset of the writes since the file's last sync, chosen by the
    /// seed: each one lost, persisted whole, or torn at up to three bytes
    /// into pieces that each persist or not; a size change persisted or
    /// not; and the file's size as written, or as what persisted makes it.
    Lazy(u64),
}

#[derive(Debug, Default)]
struct Faults {
    /// (n, errno): the n-th write from now fails after storing half its bytes.
    write: Option<(u64, i32)>,
    /// (n, errno): the n-th file or directory sync from now fails.
    sync: Option<(u64, i32)>,
    /// The n-th sync from now never happens: the machine dies just before
    /// it, and every later operation fails with EIO.
    crash_at_sync: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    files: HashMap<u64, FileData>,
    next_file: u64,
    faults: Faults,
    writes: u64,
    /// Writebacks started (file, offset, length): hints only, which make
    /// nothing durable here (a crash ignores them).
    writebacks: Vec<(u64, u64, u64)>,
    syncs: u64,
    bytes_read: u64,
    dead: bool,
    locked: bool,
}

/// An in-memory disk. Cheap to clone (a shared handle).
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    /// Where file syncs wait (see [`SimDisk::hold_syncs`]).
    gate: Arc<Gate>,
    /// Where files leaving a directory wait (see [`SimDisk::hold_removals`]).
    removals: Arc<Gate>,
    /// Where writeback starts wait (see [`SimDisk::hold_writebacks`]).
    writebacks: Arc<Gate>,
    /// Where file writes wait (see [`SimDisk::hold_writes`]).
    writes: Arc<Gate>,
}

/// Holds one kind of operation back while a [`Hold`] on it is alive.
#[derive(Default)]
struct Gate {
    /// (operations held, operations waiting at the gate)
    held: Mutex<(bool, usize)>,
    cv: parking_lot::Condvar,
}

impl Gate {
    /// Returns at once, or when the hold on the gate is dropped.
    fn pass(&self) {
        let mut g = self.held.lock();
        if g.0 {
            g.1 += 1;
            while g.0 {
                self.cv.wait(&mut g);
            }
            g.1 -= 1;
        }
    }

    fn hold(self: &Arc<Self>) -> Hold {
        self.held.lock().0 = true;
        Hold(self.clone())
    }

    fn waiting(&self) -> usize {
        self.held.lock().1
    }
}

/// While alive, every operation of the kind held waits before it happens;
/// dropping it lets them go.
pub struct Hold(Arc<Gate>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.held.lock().0 = false;
        self.0.cv.notify_all();
    }
}

fn dead() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// A tiny deterministic generator (splitmix64), enough to pick torn points.
fn mix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SimDisk {
    /// An empty simulated disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// A disk on which `root` and its ancestors already exist, durably (as
    /// the directory a test starts from).
    pub fn with_root(root: &Path) -> SimDisk {
        let d = SimDisk::default();
        {
            let mut st = d.state.lock();
            for a in root
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty() && *a != Path::new("/"))
            {
                st.names.insert(a.to_path_buf(), Node::Dir);
                st.durable_names.insert(a.to_path_buf(), Node::Dir);
            }
        }
        d
    }

    /// The n-th write from now (1-based) stores half its bytes and fails.
    pub fn fail_write(&self, n: u64, errno: i32) {
        self.state.lock().faults.write = Some((n, errno));
    }

    /// The n-th sync from now (1-based) fails with `errno`.
    pub fn fail_sync(&self, n: u64, errno: i32) {
        self.state.lock().faults.sync = Some((n, errno));
    }

    /// The machine dies just before the n-th sync from now (1-based).
    pub fn crash_at_sync(&self, n: u64) {
        self.state.lock().faults.crash_at_sync = Some(n);
    }

    /// Makes every file sync wait until the returned hold is dropped (to
    /// line several writers up behind one sync).
    pub fn hold_syncs(&self) -> Hold {
        self.gate.hold()
    }

    /// File syncs waiting behind [`SimDisk::hold_syncs`].
    pub fn syncs_waiting(&self) -> usize {
        self.gate.waiting()
    }

    /// Makes every file removal, and every move of a file to another
    /// directory, wait until the returned hold is dropped (to see what goes
    /// on while a truncation frees segments).
    pub fn hold_removals(&self) -> Hold {
        self.removals.hold()
    }

    /// Removals and moves waiting behind [`SimDisk::hold_removals`].
    pub fn removals_waiting(&self) -> usize {
        self.removals.waiting()
    }

    /// Makes every writeback start wait until the returned hold is dropped
    /// (to see what waits for one).
    pub fn hold_writebacks(&self) -> Hold {
        self.writebacks.hold()
    }

    /// Writeback starts waiting behind [`SimDisk::hold_writebacks`].
    pub fn writebacks_waiting(&self) -> usize {
        self.writebacks.waiting()
    }

    /// Makes every file write wait until the returned hold is dropped (to
    /// see what waits for one).
    pub fn hold_writes(&self) -> Hold {
        self.writes.hold()
    }

    /// File writes waiting behind [`SimDisk::hold_writes`].
    pub fn writes_waiting(&self) -> usize {
        self.writes.waiting()
    }

    /// Writes made so far.
    pub fn write_count(&self) -> u64 {
        self.state.lock().writes
    }

    /// Writebacks started so far, as (file, offset, length), in order.
    pub fn writebacks(&self) -> Vec<(u64, u64, u64)> {
        self.state.lock().writebacks.clone()
    }

    /// Bytes read from files so far.
    pub fn bytes_read(&self) -> u64 {
        self.state.lock().bytes_read
    }

    /// Syncs performed so far (file and directory).
    pub fn sync_count(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Whether a simulated crash point was reached.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// A new disk with what a power loss leaves of this one.
    pub fn crash(&self, mode: CrashMode) -> SimDisk {
        let st = self.state.lock();
        let mut seed = match mode {
            CrashMode::DropUnsynced => 0,
            CrashMode::TornPrefix(s) | CrashMode::Reordered(s) | CrashMode::Lazy(s) => s,
        };
        let mut out = State::default();
        // A name survives if every directory above it is durable too.
        for (path, node) in &st.durable_names {
            let parent_ok = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty() && *a != Path::new("/"))
                .all(|a| st.durable_names.get(a) == Some(&Node::Dir));
            if !parent_ok {
                continue;
            }
            out.names.insert(path.clone(), *node);
            if let Node::File(id) = node {
                if let Some(f) = st.files.get(id) {
                    let bytes = survive(f, mode, &mut seed);
                    out.files.insert(
                        *id,
                        FileData {
                            written: bytes.clone(),
                            durable: bytes,
                            pending: Vec::new(),
                        },
                    );
                }
            }
        }
        out.durable_names = out.names.clone();
        out.next_file = st.next_file;
        SimDisk {
            state: Arc::new(Mutex::new(out)),
            gate: Arc::default(),
            removals: Arc::default(),
            writebacks: Arc::default(),
            writes: Arc::default(),
        }
    }

    /// Flips one bit of a file's written and durable bytes (for corruption
    /// tests on the simulated disk).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut st = self.state.lock();
        let Some(Node::File(id)) = st.names.get(path).copied() else {
            return Err(not_found());
        };
        let f = st.files.get_mut(&id).ok_or_else(not_found)?;
        for v in [&mut f.written, &mut f.durable] {
            if let Some(b) = v.get_mut(offset as usize) {
                *b ^= 1 << bit;
            }
        }
        Ok(())
    }

    /// Every file path with its written length, for inspection.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let st = self.state.lock();
        st.names
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(id) => Some((
                    p.clone(),
                    st.files.get(id).map_or(0, |f| f.written.len() as u64),
                )),
                Node::Dir => None,
            })
            .collect()
    }
}

fn survive(f: &FileData, mode: CrashMode, seed: &mut u64) -> Vec<u8> {
    let durable = &f.durable;
    let written = &f.written;
    const SECTOR: usize = 512;
    match mode {
        CrashMode::DropUnsynced => durable.clone(),
        CrashMode::TornPrefix(_) => {
            if written.len() <= durable.len() || written[..durable.len()] != durable[..] {
                return durable.clone();
            }
            let extra = written.len() - durable.len();
            let keep = (mix(seed) as usize) % (extra + 1);
            let keep = if keep == extra {
                extra
            } else {
                (keep / SECTOR) * SECTOR
            };
            written[..durable.len() + keep].to_vec()
        }
        CrashMode::Lazy(_) => {
            let mut out = durable.clone();
            let put = |out: &mut Vec<u8>, at: usize, b: &[u8]| {
                if out.len() < at + b.len() {
                    out.resize(at + b.len(), 0);
                }
                out[at..at + b.len()].copy_from_slice(b);
            };
            for op in &f.pending {
                match op {
                    Op::SetLen(l) => {
                        if mix(seed) % 2 == 0 {
                            out.resize(*l as usize, 0);
                        }
                    }
                    Op::Write(at, b) => match mix(seed) % 4 {
                        0 => {}
                        1 => put(&mut out, *at as usize, b),
                        _ => {
                            let mut cuts: Vec<usize> = (0..1 + mix(seed) % 3)
                                .map(|_| (mix(seed) as usize) % (b.len() + 1))
                                .chain([0, b.len()])
                                .collect();
                            cuts.sort_unstable();
                            for w in cuts.windows(2) {
                                if w[0] < w[1] && mix(seed) % 2 == 0 {
                                    put(&mut out, *at as usize + w[0], &b[w[0]..w[1]]);
                                }
                            }
                        }
                    },
                }
            }
            if mix(seed) % 4 == 0 && out.len() < written.len() {
                // The size reached the disk, not all the bytes under it.
                out.resize(written.len(), 0);
            }
            out
        }
        CrashMode::Reordered(_) => {
            let len = if mix(seed) % 2 == 0 {
                written.len()
            } else {
                durable.len()
            };
            let mut out = durable.clone();
            out.resize(len, 0);
            for start in (0..len).step_by(SECTOR) {
                let end = (start + SECTOR).min(len);
                if mix(seed) % 2 == 0 && end <= written.len() {
                    out[start..end].copy_from_slice(&written[start..end]);
                }
            }
            out
        }
    }
}

impl State {
    fn check(&self) -> io::Result<()> {
        if self.dead {
            Err(dead())
        } else {
            Ok(())
        }
    }

    fn sync_point(&mut self) -> io::Result<()> {
        self.check()?;
        self.syncs += 1;
        if let Some(n) = self.faults.crash_at_sync.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.faults.crash_at_sync = None;
                self.dead = true;
                return Err(dead());
            }
        }
        if let Some((n, errno)) = self.faults.sync.as_mut() {
            *n -= 1;
            if *n == 0 {
                let e = *errno;
                self.faults.sync = None;
                return Err(io::Error::from_raw_os_error(e));
            }
        }
        Ok(())
    }

    fn file(&mut self, id: u64) -> io::Result<&mut FileData> {
        self.check()?;
        self.files.get_mut(&id).ok_or_else(not_found)
    }
}

mod files;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_names_and_bytes_are_lost() {
        let d = SimDisk::with_root(Path::new("/r"));
        d.create_dir(Path::new("/r/s")).unwrap();
        let f = d.open(Path::new("/r/s/a"), true).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        // File synced but its name is not: lost.
        assert!(!d.crash(CrashMode::DropUnsynced).exists(Path::new("/r/s/a")));
        d.sync_dir(Path::new("/r/s")).unwrap();
        assert!(
            !d.crash(CrashMode::DropUnsynced).exists(Path::new("/r/s/a")),
            "dir s not durable"
        );
        d.sync_dir(Path::new("/r")).unwrap();
        f.write_all_at(b" world", 5).unwrap();
        let c = d.crash(CrashMode::DropUnsynced);
        assert_eq!(c.read_file(Path::new("/r/s/a")).unwrap(), b"hello");
        let torn = d.crash(CrashMode::TornPrefix(3));
        let got = torn.read_file(Path::new("/r/s/a")).unwrap();
        assert!(got == b"hello" || got == b"hello world");
    }

    #[test]
    fn faults_fire_once() {
        let d = SimDisk::new();
        d.create_dir(Path::new("/r")).unwrap();
        let f = d.open(Path::new("/r/a"), true).unwrap();
        d.fail_write(2, libc::ENOSPC);
        f.write_all_at(b"abcd", 0).unwrap();
        let e = f.write_all_at(b"efgh", 4).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(f.len().unwrap(), 6, "half of the failed write landed");
        d.crash_at_sync(1);
        assert!(f.sync_data().is_err());
        assert!(d.is_dead());
        assert!(f.write_all_at(b"x", 0).is_err());
    }
}
