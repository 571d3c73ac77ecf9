//! The seam all file I/O goes through: [`RealStorage`] for the machine's
//! filesystem, [`sim::SimDisk`] for crash and fault tests.

pub mod sim;

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// A directory entry as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// None for names that are not UTF-8 (never a walfs file).
    pub name: Option<String>,
    /// A directory, not a file.
    pub is_dir: bool,
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
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        let f = self.open(tmp, true)?;
        f.set_len(0)?;
        f.write_all_at(bytes, 0)?;
        f.sync_data()?;
        drop(f);
        self.rename(tmp, path)?;
        self.sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
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

impl Storage for RealStorage {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let f = if write {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?
        } else {
            File::open(path)?
        };
        Ok(Arc::new(RealFile(f)))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(path)? {
            let e = e?;
            out.push(DirEntry {
                name: e.file_name().into_string().ok(),
                // Symlinks are never followed into: a stream is a real directory.
                is_dir: e.file_type()?.is_dir(),
            });
        }
        Ok(out)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
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
        Ok(fs::metadata(path)?.len())
    }

    fn lock_dir(&self, root: &Path) -> io::Result<Result<DirLock, Option<u32>>> {
        let path = root.join(LOCK_FILE);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
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
