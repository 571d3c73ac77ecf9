//! A do-nothing FUSE filesystem on the same fuser as walfs: the ceiling of
//! the mount's rows (what the transport allows on this kernel and machine,
//! measured in the same run). It does only the unavoidable work:
//!
//! - `file`: a backing file served by pread into a buffer and one reply
//!   (direct I/O, as walfs serves `log`);
//! - `append`: every WRITE is one write(2) to a backing file opened
//!   O_APPEND (no frame, no crc);
//! - `durable`: the same, and an fdatasync before the reply (strict);
//! - `framed` and `framed-checked`: the least work walfs's contract leaves
//!   for `cat log` (see [`Floor`]): the entry bytes of a walfs stream's
//!   segments, each frame's crc checked before any of its bytes is served
//!   (`framed`) or, as for frames checked once while mounted, not again
//!   (`framed-checked`);
//! - `spread` and `spread-nosync`: `durable` and `append` as concurrent
//!   writers need them: a lookup names an inode no writer holds (walfs's
//!   own `AppendSlots`, so the kernel's per-inode O_APPEND lock does not
//!   serialize them), and `spread`'s writers share an fdatasync (a group
//!   commit in its simplest form: a writer that finds a sync running waits
//!   for it, then one writer syncs for all who wrote meanwhile);
//! - `framing`: the least work the contract leaves for an async append:
//!   every complete line of a WRITE an entry of one frame (walfs's own
//!   encoder: the copy behind length prefixes and the crc), written by a
//!   thread of its own while the reply goes (write-behind, as walfs does).
//! - `sealing`: the durability the contract asks of an async append and
//!   nothing else: every WRITE is one write(2) into a 64 MiB file, whose
//!   writeback is started every MiB and which is fdatasync'ed once full
//!   (as walfs seals a segment); no lines, frames or crc.
//!
//! The mount options and worker threads are walfs's (`max_write` and
//! read-ahead 1 MiB, 8 threads, cloned descriptors). Used by
//! `examples/bench.rs` through `#[path]`; not a program of its own.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, SessionACL, WriteFlags,
};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[path = "spread.rs"]
mod spread;
use spread::{Spread, SPREAD, SPREAD_NOSYNC};

const ROOT: u64 = 1;
const FILE: u64 = 2;
const APPEND: u64 = 3;
const DURABLE: u64 = 4;
const FRAMED: u64 = 5;
const FRAMED_CHECKED: u64 = 6;
const FRAMING: u64 = 7;
const SEALING: u64 = 8;
const TTL: Duration = Duration::from_secs(1);

struct NullFs {
    file: File,
    sink: File,
    started: SystemTime,
    floor: Floor,
    spread: Spread,
    sealer: Sealer,
    /// Every request handled (a FORGET counts once per inode it names).
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl NullFs {
    fn count(&self) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = match ino {
            ROOT => (FileType::Directory, 0, 0o755),
            FILE => (
                FileType::RegularFile,
                self.file.metadata().ok()?.len(),
                0o644,
            ),
            APPEND | DURABLE | FRAMING | SEALING | SPREAD.. => (FileType::RegularFile, 0, 0o644),
            FRAMED | FRAMED_CHECKED => (FileType::RegularFile, self.floor.size, 0o644),
            _ => return None,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink: 1,
            // SAFETY: getuid and getgid take no arguments and cannot fail.
            uid: unsafe { libc::getuid() },
            // SAFETY: as getuid.
            gid: unsafe { libc::getgid() },
            rdev: 0,
            flags: 0,
            blksize: 1 << 20,
        })
    }
}

impl Filesystem for NullFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count();
        let ino = match (parent.0, name.to_str()) {
            (ROOT, Some("spread")) => SPREAD + self.spread.synced.lookup(),
            (ROOT, Some("spread-nosync")) => SPREAD_NOSYNC + self.spread.nosync.lookup(),
            (ROOT, Some("file")) => FILE,
            (ROOT, Some("append")) => APPEND,
            (ROOT, Some("durable")) => DURABLE,
            (ROOT, Some("framed")) => FRAMED,
            (ROOT, Some("framed-checked")) => FRAMED_CHECKED,
            (ROOT, Some("framing")) => FRAMING,
            (ROOT, Some("sealing")) => SEALING,
            _ => return reply.error(Errno::from_i32(libc::ENOENT)),
        };
        // `spread`'s name is looked up at every open (its attributes are
        // cached, as `append`'s are by walfs), so that each open can be
        // named an inode no writer holds.
        let entry_ttl = if ino >= SPREAD { Duration::ZERO } else { TTL };
        match self.attr(ino) {
            Some(a) => reply.entry_with_ttls(&TTL, &entry_ttl, &a, Generation(0)),
            None => reply.error(Errno::from_i32(libc::EIO)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count();
        if let Some((slots, slot)) = self.spread.slot(ino.0) {
            slots.forgot(slot, nlookup);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count();
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count();
        if let Some((slots, slot)) = self.spread.slot(ino.0) {
            slots.opened(slot);
        }
        if matches!(ino.0, FRAMED | FRAMED_CHECKED) {
            *self.floor.at.lock().unwrap() = Scan::default();
        }
        if ino.0 == SEALING {
            // Each writer starts a file of its own.
            self.sealer.state.lock().unwrap().file = None;
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.count();
        if matches!(ino.0, FRAMED | FRAMED_CHECKED) {
            return match self.floor.read(offset, size as usize, ino.0 == FRAMED) {
                Ok(out) => reply.data(&out),
                Err(e) => reply.error(Errno::from_i32(e)),
            };
        }
        let mut buf = vec![0u8; size as usize];
        match self.file.read_at(&mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.count();
        if ino.0 == FRAMING {
            return match self.floor.append(data) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(Errno::from_i32(e)),
            };
        }
        let r = match ino.0 {
            SEALING => self.sealer.append(data),
            SPREAD_NOSYNC.. => (&self.sink).write_all(data),
            SPREAD.. => self.spread.write_durably(&self.sink, data),
            DURABLE => (&self.sink)
                .write_all(data)
                .and_then(|()| self.sink.sync_data()),
            _ => (&self.sink).write_all(data),
        };
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count();
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.count();
        if let Some((slots, slot)) = self.spread.slot(ino.0) {
            slots.released(slot);
        }
        reply.ok()
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let names = [
            (ROOT, FileType::Directory, "."),
            (FILE, FileType::RegularFile, "file"),
            (APPEND, FileType::RegularFile, "append"),
            (DURABLE, FileType::RegularFile, "durable"),
            (FRAMED, FileType::RegularFile, "framed"),
            (FRAMED_CHECKED, FileType::RegularFile, "framed-checked"),
            (FRAMING, FileType::RegularFile, "framing"),
            (SEALING, FileType::RegularFile, "sealing"),
        ];
        for (i, (ino, kind, name)) in names.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok()
    }
}

/// A mounted null filesystem, unmounted on drop.
pub struct NullMount {
    pub mnt: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    spread_syncs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl NullMount {
    /// Mounts on `root/mnt`, serving `file` as `file` and appending what is
    /// written to `append` or `durable` to `root/sink` (`framing`: to
    /// `root/framed-sink`; `sealing`: to files in `root/sealed`).
    pub fn start(root: &Path, file: &Path) -> NullMount {
        NullMount::with_segments(root, file, None)
    }

    /// As [`NullMount::start`], and `framed` serves the entries of the
    /// walfs stream directory `stream` (its `*.wal` segments, in order).
    pub fn with_segments(root: &Path, file: &Path, stream: Option<&Path>) -> NullMount {
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let fs = NullFs {
            file: File::open(file).unwrap(),
            sink: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join("sink"))
                .unwrap(),
            started: SystemTime::now(),
            floor: Floor::new(stream, &root.join("framed-sink")),
            spread: Spread::default(),
            sealer: Sealer::new(&root.join("sealed")),
            requests: Default::default(),
        };
        let requests = fs.requests.clone();
        let spread_syncs = fs.spread.syncs.clone();
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("nullfs".into()),
            MountOption::NoAtime,
            MountOption::DefaultPermissions,
        ];
        config.acl = SessionACL::Owner;
        config.n_threads = Some(8);
        config.clone_fd = true;
        let session = fuser::Session::new(fs, &mnt, &config).unwrap();
        let thread = std::thread::spawn(move || {
            let _ = session.run();
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !mnt.join("file").exists() {
            assert!(std::time::Instant::now() < deadline, "nullfs did not mount");
            std::thread::sleep(Duration::from_millis(10));
        }
        NullMount {
            mnt,
            thread: Some(thread),
            requests,
            spread_syncs,
        }
    }

    /// The fdatasyncs `spread`'s writers have shared so far.
    pub fn spread_syncs(&self) -> u64 {
        self.spread_syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The requests handled so far (a FORGET counts once per inode).
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for NullMount {
    fn drop(&mut self) {
        unmount_and_join(&self.mnt, self.thread.take());
    }
}

/// Unmounts `mnt` (lazily if it is busy) and waits for the thread that
/// served it: the end of every in-process mount of the benchmark.
pub fn unmount_and_join(mnt: &Path, thread: Option<std::thread::JoinHandle<()>>) {
    let c = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    if unsafe { libc::umount(c.as_ptr()) } != 0 {
        // SAFETY: as above.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    if let Some(t) = thread {
        let _ = t.join();
    }
}

/// The least work walfs's contract leaves for `log` and an async `append`,
/// done with nothing else: no index, cache, lock or cursor beyond one
/// sequential reader. Reading: a pread of the segment into a reused
/// buffer, the crc of each frame before any of its bytes is served, and
/// one copy of the entry bytes (without their length prefixes) into the
/// reply. Appending: the lines found with memchr, walfs's own frame
/// encoder (the copy behind length prefixes and the crc), and the write
/// handed to a thread of its own. What walfs adds on top of it is its own
/// overhead; what the floor misses of a target, the contract itself does.
struct Floor {
    segments: Vec<File>,
    /// Entry bytes of all segments (`framed`'s size).
    size: u64,
    at: std::sync::Mutex<Scan>,
    next_id: std::sync::atomic::AtomicU64,
    /// Frames to write, one waiting at most (as walfs's write buffer).
    behind: std::sync::Mutex<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

/// Where the one sequential reader of `framed` is.
#[derive(Default)]
struct Scan {
    /// The segment read, and the file offset of the bytes after `raw`.
    segment: usize,
    file_off: u64,
    raw: Vec<u8>,
    /// The next byte of `raw` to look at: a frame header when it is
    /// `frame_end`, else an entry's length prefix.
    at: usize,
    frame_end: usize,
    /// Bytes of the entry at `at` already served.
    cut: usize,
    /// Entry bytes served so far (the reader's offset).
    served: u64,
}

impl Floor {
    fn new(stream: Option<&Path>, sink: &Path) -> Floor {
        let mut paths: Vec<PathBuf> = match stream {
            Some(dir) => std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                .collect(),
            None => Vec::new(),
        };
        paths.sort();
        let mut sink = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sink)
            .unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        // Ends when the filesystem (and with it the sender) is dropped.
        std::thread::spawn(move || {
            for frame in rx {
                sink.write_all(&frame).unwrap();
            }
        });
        let mut floor = Floor {
            segments: paths.iter().map(|p| File::open(p).unwrap()).collect(),
            size: 0,
            at: Default::default(),
            next_id: Default::default(),
            behind: std::sync::Mutex::new(tx),
        };
        // Its size: read through once, unchecked (not timed).
        let mut scan = Scan::default();
        while let Ok(out) = floor.serve(&mut scan, 8 << 20, false) {
            if out.is_empty() {
                break;
            }
            floor.size += out.len() as u64;
        }
        floor
    }

    fn read(&self, offset: u64, size: usize, check: bool) -> Result<Vec<u8>, i32> {
        let mut scan = self.at.lock().unwrap();
        if offset != scan.served {
            // One sequential reader only (`cat`): anything else is refused.
            return Err(libc::ESPIPE);
        }
        self.serve(&mut scan, size, check)
    }

    fn serve(&self, s: &mut Scan, size: usize, check: bool) -> Result<Vec<u8>, i32> {
        use walfs::format::frame::{FrameHeader, HEADER_SIZE};
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            if s.at == s.frame_end {
                if !self.fill(s, HEADER_SIZE, size)? {
                    break;
                }
                let Ok(h) = FrameHeader::decode(&s.raw[s.at..s.at + HEADER_SIZE]) else {
                    // Past a segment's last frame: the next segment.
                    s.segment += 1;
                    s.file_off = 0;
                    s.raw.clear();
                    (s.at, s.frame_end) = (0, 0);
                    continue;
                };
                let len = h.frame_len() as usize;
                if !self.fill(s, len, size)? {
                    return Err(libc::EIO);
                }
                let payload = &s.raw[s.at + HEADER_SIZE..s.at + len];
                if check && h.expected_crc(payload) != h.crc {
                    return Err(libc::EIO);
                }
                s.frame_end = s.at + len;
                s.at += HEADER_SIZE;
                continue;
            }
            let len = u32::from_le_bytes(s.raw[s.at..s.at + 4].try_into().unwrap()) as usize;
            let (start, end) = (s.at + 4 + s.cut, s.at + 4 + len);
            let n = (end - start).min(size - out.len());
            out.extend_from_slice(&s.raw[start..start + n]);
            if start + n == end {
                (s.at, s.cut) = (end, 0);
            } else {
                s.cut += n;
            }
        }
        s.served += out.len() as u64;
        Ok(out)
    }

    /// Makes `raw[at..at + n]` hold file bytes, reading what a request of
    /// `size` entry bytes needs at once; false at the end of the segments.
    fn fill(&self, s: &mut Scan, n: usize, size: usize) -> Result<bool, i32> {
        while s.raw.len() - s.at < n {
            let Some(f) = self.segments.get(s.segment) else {
                return Ok(false);
            };
            // Keep only what is not consumed yet (less than a frame).
            s.raw.drain(..s.at);
            s.frame_end -= s.at;
            s.at = 0;
            let have = s.raw.len();
            let want = (n - have).max(size + size / 8 + 8192);
            s.raw.resize(have + want, 0);
            let got = f
                .read_at(&mut s.raw[have..], s.file_off)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            s.raw.truncate(have + got);
            s.file_off += got as u64;
            if got == 0 {
                if have > 0 {
                    return Err(libc::EIO);
                }
                s.segment += 1;
                s.file_off = 0;
            }
        }
        Ok(true)
    }

    /// Every complete line of `data` an entry of one frame, handed to the
    /// writing thread (a trailing partial line is not kept: `cat` of whole
    /// lines leaves none).
    fn append(&self, data: &[u8]) -> Result<(), i32> {
        let mut lines: Vec<&[u8]> = Vec::with_capacity(data.len() / 32 + 1);
        let mut from = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            lines.push(&data[from..=nl]);
            from = nl + 1;
        }
        let mut frame =
            walfs::format::frame::encode_frame(&lines, None).map_err(|_| libc::EFBIG)?;
        let id = self
            .next_id
            .fetch_add(lines.len() as u64, std::sync::atomic::Ordering::Relaxed);
        frame.seal(id);
        let tx = self.behind.lock().unwrap();
        tx.send(frame.bytes).map_err(|_| libc::EIO)
    }
}

/// `sealing`'s files: the one being written, and how far. The bench's
/// sealed-files ceiling (no FUSE) writes through one too.
pub struct Sealer {
    dir: PathBuf,
    state: std::sync::Mutex<Sealing>,
}

#[derive(Default)]
struct Sealing {
    file: Option<File>,
    /// Files made so far (the next one's name).
    made: usize,
    len: u64,
    /// Bytes whose writeback was started.
    started: u64,
}

impl Sealer {
    /// As walfs's segment size and writeback step.
    const FULL: u64 = 64 << 20;
    const STEP: u64 = 1 << 20;

    /// Files go to `dir`, created if missing.
    pub fn new(dir: &Path) -> Sealer {
        std::fs::create_dir_all(dir).unwrap();
        Sealer {
            dir: dir.to_path_buf(),
            state: Default::default(),
        }
    }

    /// Writes `data` at the end of the current file (a new one after a
    /// full one), starts the writeback of every MiB, and fdatasyncs the
    /// file once it holds 64 MiB.
    pub fn append(&self, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let mut s = self.state.lock().unwrap();
        let file = match s.file.take() {
            Some(f) => f,
            None => {
                s.made += 1;
                (s.len, s.started) = (0, 0);
                File::create(self.dir.join(format!("{}.seg", s.made)))?
            }
        };
        file.write_all_at(data, s.len)?;
        s.len += data.len() as u64;
        if s.len - s.started >= Self::STEP {
            // SAFETY: a plain syscall on a descriptor held here.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    s.started as libc::off64_t,
                    (s.len - s.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            s.started = s.len;
        }
        if s.len >= Self::FULL {
            file.sync_data()?;
        } else {
            s.file = Some(file);
        }
        Ok(())
    }
}
