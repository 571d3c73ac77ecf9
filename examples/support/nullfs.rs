//! A do-nothing FUSE filesystem on the same fuser as walfs: the ceiling of
//! the mount's rows (what the transport allows on this kernel and machine,
//! measured in the same run). It does only the unavoidable work:
//!
//! - `file`: a backing file served by pread into a buffer and one reply
//!   (direct I/O, as walfs serves `log`);
//! - `append`: every WRITE is one write(2) to a backing file opened
//!   O_APPEND (no frame, no crc);
//! - `durable`: the same, and an fdatasync before the reply (strict).
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

const ROOT: u64 = 1;
const FILE: u64 = 2;
const APPEND: u64 = 3;
const DURABLE: u64 = 4;
const TTL: Duration = Duration::from_secs(1);

struct NullFs {
    file: File,
    sink: File,
    started: SystemTime,
}

impl NullFs {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = match ino {
            ROOT => (FileType::Directory, 0, 0o755),
            FILE => (
                FileType::RegularFile,
                self.file.metadata().ok()?.len(),
                0o644,
            ),
            APPEND | DURABLE => (FileType::RegularFile, 0, 0o644),
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
        let ino = match (parent.0, name.to_str()) {
            (ROOT, Some("file")) => FILE,
            (ROOT, Some("append")) => APPEND,
            (ROOT, Some("durable")) => DURABLE,
            _ => return reply.error(Errno::from_i32(libc::ENOENT)),
        };
        match self.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::from_i32(libc::EIO)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
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
        let r = (&self.sink).write_all(data).and_then(|()| match ino.0 {
            DURABLE => self.sink.sync_data(),
            _ => Ok(()),
        });
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
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
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
}

impl NullMount {
    /// Mounts on `root/mnt`, serving `file` as `file` and appending what is
    /// written to `append` or `durable` to `root/sink`.
    pub fn start(root: &Path, file: &Path) -> NullMount {
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
        };
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
        }
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
