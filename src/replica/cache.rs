//! A follower's cache of fetched blocks, on disk, LRU-bounded. It holds
//! the log's bytes, so it is a security boundary: its directory is made
//! fresh and private (mkdtemp: mode 0700, a name no one could plant first,
//! no link followed), its files are 0600, and what dead followers left is
//! removed at the next start.

use crate::cache::Lru;
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Blocks of immutable objects, as files under a private directory.
pub struct DiskCache {
    /// The directory of this process's cache (removed when dropped).
    pub dir: PathBuf,
    lru: Mutex<Lru<(String, u64), ()>>,
}

fn io_err(m: String) -> Error {
    Error::Io(std::io::Error::other(m))
}

impl DiskCache {
    /// A cache of at most `cap` bytes in a fresh directory under `root`,
    /// named after `label` (bucket and prefix) and this process.
    pub fn open(root: &Path, label: &str, cap: u64) -> Result<DiskCache> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| io_err(format!("cache {}: {e}", root.display())))?;
        remove_stale(root);
        let prefix = format!("{label}-{}-", std::process::id());
        let dir = crate::storage::make_private_dir(root, &prefix)
            .map_err(|e| io_err(format!("cache {}: {e}", root.display())))?;
        Ok(DiskCache {
            dir,
            lru: Mutex::new(Lru::new(cap.max(1))),
        })
    }

    fn file(&self, key: &str, block: u64) -> PathBuf {
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{name}.{block}"))
    }

    /// A block, if cached.
    pub fn get(&self, key: &str, block: u64) -> Option<Vec<u8>> {
        let k = (key.to_owned(), block);
        self.lru.lock().get(&k)?;
        std::fs::read(self.file(key, block)).ok()
    }

    /// Caches a block (best effort: a failure only costs a fetch later).
    pub fn put(&self, key: &str, block: u64, bytes: &[u8]) {
        use std::io::Write;
        let path = self.file(key, block);
        let tmp = path.with_extension("tmp");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes));
        if written.and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        let evicted = self
            .lru
            .lock()
            .insert((key.to_owned(), block), (), bytes.len() as u64);
        for ((k, b), ()) in evicted {
            let _ = std::fs::remove_file(self.file(&k, b));
        }
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes what followers that are gone left under `root`: directories of
/// ours (`LABEL-PID-XXXXXX`, owned by this user, not links) whose process
/// no longer runs.
fn remove_stale(root: &Path) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !md.is_dir() || md.uid() != me {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        // LABEL-PID-XXXXXX: the pid is the second part from the end.
        let Some(pid) = name
            .rsplit('-')
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|&p| p > 0)
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            log::info!("removing the cache a follower left: {}", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_no_planted_names_and_dead_caches_go() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        // A link planted where an old walfs put its cache, to a directory
        // of the victim's.
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("precious"), b"x").unwrap();
        let planted = format!("b-p-{}", std::process::id());
        std::os::unix::fs::symlink(&victim, root.join(&planted)).unwrap();
        // What a dead follower left (pid 2^22 + 1 is past pid_max's default).
        let dead = root.join("b-p-4194305-AbCdEf");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("block.0"), b"old").unwrap();
        let c = DiskCache::open(&root, "b-p", 1 << 20).unwrap();
        assert!(!dead.exists(), "a dead follower's cache is removed");
        assert!(
            victim.join("precious").exists(),
            "nothing behind the link touched"
        );
        assert!(c.dir.starts_with(&root) && c.dir != root.join(&planted));
        let mode = std::fs::metadata(&c.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        c.put("s/obj.part", 0, b"bytes");
        let f = c.file("s/obj.part", 0);
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(c.get("s/obj.part", 0).unwrap(), b"bytes");
        let dir = c.dir.clone();
        drop(c);
        assert!(!dir.exists(), "removed when dropped");
        assert!(victim.join("precious").exists());
    }
}
