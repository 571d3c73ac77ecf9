//! `impl fuser::Filesystem`: each callback parses its arguments, asks the
//! view, and replies. No logic of its own.

use super::passthrough::Passthrough;
use super::view::{Attr, Cache, FileKind, Node, View};
use crate::metrics;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the kernel may keep attributes of files that never change.
const IMMUTABLE_TTL: Duration = Duration::from_secs(3600);
/// Everything else is asked for again on every use: sizes are always true.
const LIVE_TTL: Duration = Duration::ZERO;
/// The largest read or write one FUSE request carries (max_write, and
/// max_pages follows from it), and the I/O size every file reports.
const REQUEST_SIZE: u32 = 1 << 20;

/// The fuser filesystem: the view behind thin glue.
pub struct WalFs {
    /// The tree it serves.
    pub view: Arc<View>,
    uid: u32,
    gid: u32,
    started: SystemTime,
    /// Given once the session exists; see `destroy`.
    pub unmounter: Arc<parking_lot::Mutex<Option<fuser::SessionUnmounter>>>,
    /// Ask the kernel for passthrough of sealed segments.
    want_passthrough: bool,
    passthrough: Passthrough,
}

impl WalFs {
    /// Serves `view` with every file owned by `uid` and `gid` (default: the
    /// mounting user's); sealed segments by passthrough where allowed.
    pub fn new(view: Arc<View>, uid: Option<u32>, gid: Option<u32>, passthrough: bool) -> WalFs {
        // SAFETY: getuid takes no arguments, touches no memory, cannot fail.
        let uid = uid.unwrap_or_else(|| unsafe { libc::getuid() });
        // SAFETY: as getuid.
        let gid = gid.unwrap_or_else(|| unsafe { libc::getgid() });
        WalFs {
            view,
            uid,
            gid,
            started: SystemTime::now(),
            unmounter: Arc::default(),
            want_passthrough: passthrough,
            passthrough: Passthrough::default(),
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: self.started,
            mtime: a.mtime.unwrap_or(self.started),
            ctime: a.mtime.unwrap_or(self.started),
            crtime: self.started,
            kind: match a.kind {
                FileKind::Dir => FileType::Directory,
                FileKind::File => FileType::RegularFile,
            },
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            // The preferred I/O size: tools that size their buffers by it
            // (cat, cp, dd's default is not one) ask for a whole request at
            // a time, so each FUSE round trip carries 1 MiB, not 128 KiB.
            blksize: REQUEST_SIZE,
        }
    }

    /// (attribute TTL, entry TTL). A directory's attributes (mode, owner,
    /// size 0) never change while mounted: caching them spares the kernel
    /// a GETATTR per path component when it checks permissions
    /// (`default_permissions`) on every path walk.
    fn ttls(a: &Attr) -> (Duration, Duration) {
        let (attr, entry) = match a.cache {
            Cache::Live => (LIVE_TTL, LIVE_TTL),
            Cache::Name => (LIVE_TTL, IMMUTABLE_TTL),
            Cache::Immutable => (IMMUTABLE_TTL, IMMUTABLE_TTL),
            Cache::Fixed => (IMMUTABLE_TTL, LIVE_TTL),
        };
        match a.kind {
            FileKind::Dir => (IMMUTABLE_TTL, entry),
            FileKind::File => (attr, entry),
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, a: &Attr) {
        let (attr_ttl, entry_ttl) = Self::ttls(a);
        reply.entry_with_ttls(&attr_ttl, &entry_ttl, &self.attr(a), Generation(0));
    }
}

fn node(ino: INodeNo) -> Result<Node, Errno> {
    Node::from_ino(ino.0).ok_or_else(|| errno(libc::ENOENT))
}

/// The reply for an errno, counted by errno.
fn errno(e: i32) -> Errno {
    metrics::global().fuse_error(e);
    Errno::from_i32(e)
}

/// Replies to a request that returns nothing.
fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for WalFs {
    /// The session is over: the mount is already gone (unmounted by the
    /// stop, or by `umount` from outside). Telling fuser so keeps it from
    /// unmounting again and warning that it could not.
    fn destroy(&mut self) {
        if let Some(mut u) = self.unmounter.lock().take() {
            let _ = u.unmount();
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large writes: one write(2) of up to 1 MiB arrives whole, as one frame.
        let _ = config.set_max_write(REQUEST_SIZE);
        let _ = config.set_max_readahead(REQUEST_SIZE);
        // O_TRUNC comes with the open (a `>` redirection is an open), so
        // that a SETATTR of the size is only ever truncate(2), refused.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        self.passthrough.negotiate(self.want_passthrough, config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _m = metrics::global().fuse_op("lookup");
        match node(parent).and_then(|p| self.view.lookup(p, name.as_bytes()).map_err(errno)) {
            Ok(a) => self.reply_entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _m = metrics::global().fuse_op("forget");
        if let Some(n) = Node::from_ino(ino.0) {
            self.view.forget(n, nlookup);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _m = metrics::global().fuse_op("getattr");
        match node(ino).and_then(|n| self.view.getattr(n).map_err(errno)) {
            Ok(a) => reply.attr(&Self::ttls(&a).0, &self.attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _m = metrics::global().fuse_op("setattr");
        let other =
            mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some();
        match node(ino).and_then(|n| self.view.setattr(n, size, other).map_err(errno)) {
            Ok(a) => reply.attr(&Self::ttls(&a).0, &self.attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _m = metrics::global().fuse_op("mkdir");
        match node(parent).and_then(|p| self.view.mkdir(p, name.as_bytes()).map_err(errno)) {
            Ok(a) => self.reply_entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _m = metrics::global().fuse_op("rmdir");
        reply_empty(
            reply,
            node(parent).and_then(|p| self.view.rmdir(p, name.as_bytes()).map_err(errno)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _m = metrics::global().fuse_op("unlink");
        reply_empty(
            reply,
            node(parent).and_then(|p| self.view.unlink(p, name.as_bytes()).map_err(errno)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _m = metrics::global().fuse_op("open");
        let (read, write) = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        let n = match node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.view.open(n, read, write) {
            Ok(o) => self.passthrough.reply(reply, ino.0, &o),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _m = metrics::global().fuse_op("read");
        match node(ino).and_then(|n| self.view.read(n, fh.0, offset, size).map_err(errno)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _m = metrics::global().fuse_op("write");
        match self.view.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _m = metrics::global().fuse_op("flush");
        reply_empty(reply, self.view.flush(fh.0).map_err(errno));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _m = metrics::global().fuse_op("fsync");
        reply_empty(
            reply,
            node(ino).and_then(|n| self.view.fsync(n, fh.0).map_err(errno)),
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _m = metrics::global().fuse_op("release");
        self.view.release(fh.0);
        self.passthrough.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _m = metrics::global().fuse_op("opendir");
        match node(ino).and_then(|n| self.view.getattr(n).map_err(errno)) {
            Ok(a) if a.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(errno(libc::ENOTDIR)),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _m = metrics::global().fuse_op("readdir");
        let n = match node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let r = self.view.readdir(n, offset, |name, ino, is_dir, next| {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            !reply.add(INodeNo(ino), next, kind, OsStr::from_bytes(name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        let _m = metrics::global().fuse_op("create");
        reply.error(errno(libc::EACCES));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let _m = metrics::global().fuse_op("mknod");
        reply.error(errno(libc::EACCES));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let _m = metrics::global().fuse_op("symlink");
        reply.error(errno(libc::EACCES));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _m = metrics::global().fuse_op("link");
        reply.error(errno(libc::EPERM));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _m = metrics::global().fuse_op("rename");
        reply.error(errno(libc::EPERM));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let _m = metrics::global().fuse_op("getxattr");
        reply.error(errno(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        let _m = metrics::global().fuse_op("listxattr");
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _m = metrics::global().fuse_op("setxattr");
        reply.error(errno(libc::EOPNOTSUPP));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        let _m = metrics::global().fuse_op("removexattr");
        reply.error(errno(libc::EOPNOTSUPP));
    }

    /// Only reached without `default_permissions`; the kernel checks modes
    /// itself otherwise. Existence is all there is to check here.
    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let _m = metrics::global().fuse_op("access");
        reply_empty(
            reply,
            node(ino).and_then(|n| self.view.getattr(n).map(|_| ()).map_err(errno)),
        );
    }

    /// No file here is a terminal or takes ioctls: isatty(3) (every Python
    /// `open()`) asks TCGETS and must hear ENOTTY.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let _m = metrics::global().fuse_op("ioctl");
        reply.error(errno(libc::ENOTTY));
    }

    /// Like any regular file: always ready (`less +F`, `tail -f` with
    /// inotify off poll it).
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        let _m = metrics::global().fuse_op("poll");
        use fuser::PollEvents as P;
        reply.poll(events & (P::POLLIN | P::POLLRDNORM | P::POLLOUT | P::POLLWRNORM));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        let _m = metrics::global().fuse_op("fallocate");
        reply.error(errno(libc::EOPNOTSUPP));
    }

    /// ENOSYS tells the kernel to seek by itself from now on (SEEK_DATA and
    /// SEEK_HOLE then treat every file as data).
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        let _m = metrics::global().fuse_op("lseek");
        reply.error(errno(libc::ENOSYS));
    }

    /// ENOSYS: the kernel falls back to reads and writes, which carry the
    /// mount's rules (and `cp` does the same).
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _m = metrics::global().fuse_op("copy_file_range");
        reply.error(errno(libc::ENOSYS));
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        let _m = metrics::global().fuse_op("readlink");
        reply.error(errno(libc::EINVAL));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _m = metrics::global().fuse_op("fsyncdir");
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _m = metrics::global().fuse_op("statfs");
        let Some(root) = self.view.source().local_root() else {
            return reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        };
        let root = std::ffi::CString::new(root.as_os_str().as_bytes()).unwrap_or_default();
        // SAFETY: statvfs is plain data; all-zero bytes are a valid value.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `root` is a NUL-terminated string that outlives the call,
        // and `s` a live statvfs of ours that the call fills in.
        if unsafe { libc::statvfs(root.as_ptr(), &mut s) } != 0 {
            return reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            255,
            s.f_frsize as u32,
        );
    }
}
