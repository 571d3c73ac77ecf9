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
    pub is_dir: bool,
}

/// A held lock on a data directory; dropping it releases the lock.
pub type DirLock = Box<dyn Any + Send + Sync>;

/// One open file. Writes are positional: the engine owns the offsets.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
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
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Takes the exclusive lock of a data directory, or says which process
    /// holds it (`Err(Some(pid))`, `Err(None)` if unknown).
    fn lock_dir(&self, root: &Path) -> io::Result<Result<DirLock, Option<u32>>>;

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
        // SAFETY: the engine maps sealed segments only. A sealed segment is
        // never written again by this process, and the directory lock keeps
        // other walfs and (cooperating) ironwal writers out; truncation
        // unlinks the file, which keeps the mapping valid. A foreign process
        // shrinking the file could still raise SIGBUS, which is why mmap is
        // an opt-in read strategy, as in ironwal.
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
