//! The simulated disk as [`Storage`]: its files and namespace operations,
//! each changing the written image only, as the module above describes.

use super::*;

struct SimFile {
    disk: SimDisk,
    id: u64,
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.disk.state.lock();
        let f = st.file(self.id)?;
        let Some(avail) = f.written.get(offset as usize..) else {
            return Ok(0);
        };
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        st.bytes_read += n as u64;
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.disk.writes.pass();
        let mut st = self.disk.state.lock();
        st.check()?;
        st.writes += 1;
        let mut fail = None;
        if let Some((n, errno)) = st.faults.write.as_mut() {
            *n -= 1;
            if *n == 0 {
                fail = Some(*errno);
                st.faults.write = None;
            }
        }
        let take = if fail.is_some() {
            buf.len() / 2
        } else {
            buf.len()
        };
        let f = st.file(self.id)?;
        let end = offset as usize + take;
        if f.written.len() < end {
            f.written.resize(end, 0);
        }
        f.written[offset as usize..end].copy_from_slice(&buf[..take]);
        f.pending.push(Op::Write(offset, buf[..take].to_vec()));
        match fail {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.disk.state.lock();
        Ok(st.file(self.id)?.written.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.disk.state.lock();
        let f = st.file(self.id)?;
        f.written.resize(len as usize, 0);
        f.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn start_writeback(&self, offset: u64, len: u64) {
        self.disk.writebacks.pass();
        self.disk
            .state
            .lock()
            .writebacks
            .push((self.id, offset, len));
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.gate.pass();
        let mut st = self.disk.state.lock();
        st.sync_point()?;
        let f = st.file(self.id)?;
        f.durable = f.written.clone();
        f.pending.clear();
        Ok(())
    }
}

impl Storage for SimDisk {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.state.lock();
        st.check()?;
        let id = match st.names.get(path) {
            Some(Node::File(id)) => *id,
            Some(Node::Dir) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None if write => {
                match path.parent() {
                    Some(p)
                        if !p.as_os_str().is_empty()
                            && st.names.get(p) != Some(&Node::Dir)
                            && st.names.contains_key(p) =>
                    {
                        return Err(io::Error::from_raw_os_error(libc::ENOTDIR))
                    }
                    _ => {}
                }
                let id = st.next_file;
                st.next_file += 1;
                st.files.insert(id, FileData::default());
                st.names.insert(path.to_path_buf(), Node::File(id));
                id
            }
            None => return Err(not_found()),
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            id,
        }))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.state.lock();
        st.check()?;
        if st.names.get(path) != Some(&Node::Dir)
            && !st.names.keys().any(|k| k.parent() == Some(path))
        {
            return Err(not_found());
        }
        Ok(st
            .names
            .iter()
            .filter(|(k, _)| k.parent() == Some(path))
            .map(|(k, n)| DirEntry {
                name: k.file_name().and_then(|s| s.to_str()).map(str::to_owned),
                is_dir: *n == Node::Dir,
                is_symlink: false,
            })
            .collect())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        for a in path.ancestors() {
            if a.as_os_str().is_empty() {
                continue;
            }
            match st.names.get(a) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                None => {
                    st.names.insert(a.to_path_buf(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if from.parent() != to.parent() {
            self.removals.pass();
        }
        let mut st = self.state.lock();
        st.check()?;
        let node = st.names.remove(from).ok_or_else(not_found)?;
        // Everything below a renamed directory moves with it.
        let below: Vec<(PathBuf, Node)> = st
            .names
            .range(from.to_path_buf()..)
            .take_while(|(k, _)| k.starts_with(from))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, v) in below {
            st.names.remove(&k);
            st.names
                .insert(to.join(k.strip_prefix(from).expect("prefix")), v);
        }
        st.names.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.removals.pass();
        let mut st = self.state.lock();
        st.check()?;
        match st.names.get(path) {
            Some(Node::File(_)) => {
                st.names.remove(path);
                Ok(())
            }
            Some(Node::Dir) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None => Err(not_found()),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        if !st.names.contains_key(path) {
            return Err(not_found());
        }
        st.names.retain(|k, _| !k.starts_with(path));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.sync_point()?;
        let durable: Vec<PathBuf> = st
            .durable_names
            .keys()
            .filter(|k| k.parent() == Some(path))
            .cloned()
            .collect();
        for k in durable {
            st.durable_names.remove(&k);
        }
        let now: Vec<(PathBuf, Node)> = st
            .names
            .iter()
            .filter(|(k, _)| k.parent() == Some(path))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        st.durable_names.extend(now);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.state.lock().names.contains_key(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let mut st = self.state.lock();
        let Some(Node::File(id)) = st.names.get(path).copied() else {
            return Err(not_found());
        };
        Ok(st.file(id)?.written.len() as u64)
    }

    fn lock_dir(&self, _root: &Path) -> io::Result<Result<DirLock, Option<u32>>> {
        let mut st = self.state.lock();
        st.check()?;
        if st.locked {
            return Ok(Err(None));
        }
        st.locked = true;
        Ok(Ok(Box::new(SimLock(self.clone()))))
    }
}

struct SimLock(SimDisk);

impl Drop for SimLock {
    fn drop(&mut self) {
        self.0.state.lock().locked = false;
    }
}
