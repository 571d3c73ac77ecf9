//! The seam all file I/O goes through: [`RealStorage`] for the machine's
//! filesystem, [`sim::SimDisk`] for crash and fault tests.

pub mod sim;

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory entry as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// None for names that are not UTF-8 (never a walfs file).
    pub name: Option<String>,
    /// A directory, not a file (a symlink to one is neither).
    pub is_dir: bool,
    /// A symbolic link: never followed.
    pub is_symlink: bool,
}

/// A held lock on a data directory; dropping it releases the lock.
pub type DirLock = Box<dyn Any + Send + Sync>;

/// One open file. Writes are positional: the engine owns the offsets.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync {
    /// Reads at most `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Cuts or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the file's bytes and length are durable on return.
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing `len` bytes at `offset` to the device without waiting
    /// for them (sync_file_range's SYNC_FILE_RANGE_WRITE): a hint that makes
    /// no byte durable, so that a later `sync_data` has less left to wait
    /// for. Errors are the later sync's to report.
    fn start_writeback(&self, _offset: u64, _len: u64) {}
    /// A read-only mapping of the whole file, where the backend has one.
    fn map(&self) -> Option<memmap2::Mmap> {
        None
    }

    /// Reads exactly `buf.len()` bytes or fails with UnexpectedEof.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The filesystem operations of the engine. Directory changes are durable
/// only after `sync_dir` of their parent.
pub trait Storage: Send + Sync {
    /// Opens for reading, or for reading and writing (created if missing).
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// The entries of a directory.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// Creates a directory (and its parents); fine if it exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames a file or directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// The length of the file at `path`.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Takes the exclusive lock of a data directory, or says which process
    /// holds it (`Err(Some(pid))`, `Err(None)` if unknown).
    fn lock_dir(&self, root: &Path) -> io::Result<Result<DirLock, Option<u32>>>;
    /// The permission bits of `path`, where the backend has them.
    fn mode(&self, _path: &Path) -> Option<u32> {
        None
    }

    /// When `path` was last modified, where the backend keeps it.
    fn modified(&self, _path: &Path) -> Option<std::time::SystemTime> {
        None
    }

    /// The whole file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, false)?;
        let len = f.len()?;
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| io::ErrorKind::InvalidData)?];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Replaces `path` atomically: write a temp file, sync it, rename it
    /// over, sync the directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = temp_of(path);
        write_temp(self, &tmp, bytes)?;
        rename_into_place(self, &tmp, path)
    }
}

/// The temporary file of an atomic replacement, written and synced.
fn write_temp<S: Storage + ?Sized>(s: &S, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let f = s.open(tmp, true)?;
    f.set_len(0)?;
    f.write_all_at(bytes, 0)?;
    f.sync_data()
}

/// The temporary file [`Storage::write_atomic`] writes `path` through.
fn temp_of(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// The end of an atomic replacement: the synced temporary file renamed
/// over `path`, the directory synced.
fn rename_into_place<S: Storage + ?Sized>(s: &S, tmp: &Path, path: &Path) -> io::Result<()> {
    s.rename(tmp, path)?;
    s.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The part of [`Storage::write_atomic`] the machine's filesystem does its
/// own way: a temporary file with the mode of the file it replaces.
fn write_temp_like(tmp: &Path, like: &fs::Metadata, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(named(e, tmp)),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(like.permissions().mode() & 0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(|e| named(e, tmp))?;
    inherit_group(&f, tmp.parent().unwrap_or(Path::new(".")));
    f.write_all(bytes).map_err(|e| named(e, tmp))?;
    f.sync_data().map_err(|e| named(e, tmp))
}

/// The machine's filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

struct RealFile(File);

impl StorageFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn start_writeback(&self, offset: u64, len: u64) {
        // SAFETY: a plain syscall on a descriptor this file owns; it reads
        // no memory of ours.
        let r = unsafe {
            libc::sync_file_range(
                self.0.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            crate::metrics::global().writebacks_started.inc();
        }
    }
    fn map(&self) -> Option<memmap2::Mmap> {
        // SAFETY: a mapping is sound while no one changes or shrinks the
        // file under it. What walfs guarantees: it maps sealed segments only
        // (`Stream::reader` asks for a map only when the segment is sealed;
        // the growing active segment is always read with pread); a sealed
        // segment is never written again by any walfs process, because
        // appends go to the active segment only, `repair --discard-damaged`
        // cuts active segments only, and every walfs writer holds the
        // data directory's exclusive flock (`lock_dir`), so no second walfs
        // writer exists; truncation and stream deletion unlink whole files,
        // and an unlinked file stays valid while mapped. What it cannot
        // guarantee: a process that is not walfs (ironwal takes no lock)
        // writing or shrinking a sealed segment, which could change bytes
        // under a reader or raise SIGBUS. That is why Mmap is an opt-in read
        // strategy (the default is StandardIo), as it is in ironwal.
        unsafe { memmap2::Mmap::map(&self.0) }.ok()
    }
}

/// A fresh directory `<dir>/<prefix>XXXXXX` (mkdtemp(3): mode 0700, a name
/// nobody could have made first, no link followed at its last component):
/// for staging and caches, where a planted name must never be used.
pub fn make_private_dir(dir: &Path, prefix: &str) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let template = dir.join(format!("{prefix}XXXXXX"));
    let mut buf = std::ffi::CString::new(template.into_os_string().into_vec())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?
        .into_bytes_with_nul();
    // SAFETY: buf is a NUL-terminated template that mkdtemp rewrites in
    // place, within its length.
    let p = unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(named(io::Error::last_os_error(), dir));
    }
    buf.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Nothing in a data directory is followed if it is a symlink: a link
/// named like a segment, `head.state`, `segments.idx`, the lock or a stream
/// would let whoever made it point walfs's reads and writes anywhere.
/// Refuses anything but a regular file (a FIFO, a device, a socket named
/// like walfs's own files), naming it; a file opened with O_NONBLOCK keeps
/// it, which changes nothing for a regular file.
fn regular(f: &File, path: &Path) -> io::Result<()> {
    let t = f.metadata()?.file_type();
    if t.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a regular file (a {}): walfs reads and writes only its own files there",
            path.display(),
            if t.is_dir() {
                "directory"
            } else {
                "FIFO, socket or device"
            }
        ),
    ))
}

fn link_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link: walfs never follows links in its data directory (replace the link with the file or directory itself)",
            path.display()
        ),
    )
}

/// Names the path in the error when the last component was a symlink that
/// O_NOFOLLOW refused.
fn named(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        link_refused(path)
    } else {
        e
    }
}

/// The metadata of `path` itself, refusing a symlink.
fn own_metadata(path: &Path) -> io::Result<fs::Metadata> {
    let m = fs::symlink_metadata(path)?;
    if m.file_type().is_symlink() {
        return Err(link_refused(path));
    }
    Ok(m)
}

/// The mode for a new file in `dir`: never more open than the files
/// already there (the intersection of their permission bits), 0600 in a
/// directory without files. A data directory walfs creates is 0700 and its
/// files 0600, as PostgreSQL keeps its data directory.
fn new_file_mode(dir: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let mut mode = 0o666;
    let mut seen = false;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                if m.file_type().is_file() {
                    mode &= m.permissions().mode() & 0o666;
                    seen = true;
                }
            }
        }
    }
    if seen {
        mode
    } else {
        0o600
    }
}

/// A file or directory walfs just created takes its directory's group (as
/// a setgid directory would give it), so that a shared group keeps access.
/// Without the right to (neither root nor a member), it keeps the
/// process's group.
fn inherit_group(f: &File, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Ok(m)) = (fs::metadata(dir), f.metadata()) else {
        return;
    };
    if d.gid() != m.gid() {
        if let Err(e) = std::os::unix::fs::fchown(f, None, Some(d.gid())) {
            log::debug!("keeping the group of a new file in {}: {e}", dir.display());
        }
    }
}

/// Opens for reading and writing, creating the file (private, with its
/// directory's group) if it is missing; never through a symlink. The
/// directory is looked at only when a file is created, not on every open.
fn open_rw(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let existing = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    match existing() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        r => return r.map_err(|e| named(e, path)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(new_file_mode(dir))
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match created {
        Ok(f) => {
            inherit_group(&f, dir);
            Ok(f)
        }
        // Created by someone else meanwhile (or a dangling link: refused
        // by name on the second try).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            existing().map_err(|e| named(e, path))
        }
        Err(e) => Err(named(e, path)),
    }
}

impl Storage for RealStorage {
    /// As the default, but the temporary file takes the mode of the file it
    /// replaces (which keeps its permissions, and spares a scan of the
    /// directory per replacement: a checkpoint's HEAD) and, as every new
    /// file, its directory's group.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = temp_of(path);
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => write_temp_like(&tmp, &m, bytes)?,
            // Nothing to take after: the mode rule of a new file.
            _ => write_temp(self, &tmp, bytes)?,
        }
        rename_into_place(self, &tmp, path)
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = if write {
            open_rw(path)?
        } else {
            // O_NONBLOCK: a FIFO named like a segment must not make the
            // open wait for a writer (it is refused just below).
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| named(e, path))?
        };
        regular(&f, path)?;
        Ok(Arc::new(RealFile(f)))
    }

    fn modified(&self, path: &Path) -> Option<std::time::SystemTime> {
        fs::symlink_metadata(path).ok()?.modified().ok()
    }

    fn mode(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(path)? {
            let e = e?;
            let t = e.file_type()?;
            out.push(DirEntry {
                name: e.file_name().into_string().ok(),
                // Symlinks are never followed into: a stream is a real directory.
                is_dir: t.is_dir(),
                is_symlink: t.is_symlink(),
            });
        }
        Ok(out)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let fresh = fs::symlink_metadata(path).is_err();
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path);
        if let Err(e) = made {
            return Err(match fs::metadata(path) {
                Ok(m) if !m.is_dir() => io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", path.display()),
                ),
                _ => e,
            });
        }
        if !own_metadata(path)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", path.display()),
            ));
        }
        if fresh {
            if let (Some(parent), Ok(d)) = (path.parent(), File::open(path)) {
                inherit_group(&d, parent);
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(own_metadata(path)?.len())
    }

    fn lock_dir(&self, root: &Path) -> io::Result<Result<DirLock, Option<u32>>> {
        let path = root.join(LOCK_FILE);
        let f = open_rw(&path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Ok(Err(holder));
            }
            return Err(err);
        }
        f.set_len(0)?;
        f.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
        Ok(Ok(Box::new(f)))
    }
}

/// The lock file in the data directory: ironwal ignores plain files there.
pub const LOCK_FILE: &str = "walfs.lock";
