//! Retention: truncation (to the archive or away), restoring archived
//! segments, and deleting the stream.

use super::{Ctx, Stream};
use crate::error::Result;
use crate::format::{self};
use crate::recovery;
use crate::segment::Segment;
use crate::storage::Storage;
use std::io;
use std::path::Path;
use std::sync::Arc;

impl Stream {
    /// Frees whole sealed segments below the one holding `safe_id`.
    pub fn truncate(
        self: &Arc<Self>,
        ctx: &Ctx,
        safe_id: u64,
        archive: Option<&Path>,
    ) -> Result<usize> {
        let st = &*ctx.storage;
        // One truncation or restore at a time: their files move outside
        // the writer's lock.
        let _one = self.retention.lock();
        let mut w = self.writer.lock();
        let locked = std::time::Instant::now();
        self.check_writable(&mut w)?;
        let keep_from = self
            .segment_for(safe_id)
            .map_or_else(|| self.first_id(), |s| s.start_id)
            .min(w.active.start_id);
        let doomed: Vec<u64> = w.idx.iter().copied().filter(|&s| s < keep_from).collect();
        let strays: Vec<u64> = recovery::plan_layout(st, &self.dir, &self.name)?.strays;
        if doomed.is_empty() && strays.is_empty() {
            return Ok(0);
        }
        let keep: Vec<u64> = w.idx.iter().copied().filter(|&s| s >= keep_from).collect();
        // The index moves first: a crash after it leaves files that the
        // next open ignores and the next truncate removes.
        st.write_atomic(
            &self.dir.join(format::SEGMENTS_IDX),
            &format::segments_idx_encode(&keep),
        )?;
        w.idx = keep;
        {
            let mut segs = self.segs.write();
            for s in &doomed {
                segs.remove(s);
            }
        }
        // Appends go on while the files go: only the index is the writer's.
        drop(w);
        let m = crate::metrics::global();
        m.truncations.inc();
        m.truncation_lock_seconds
            .inc_by(locked.elapsed().as_secs_f64());
        if let Some(dir) = archive {
            st.create_dir(dir)?;
        }
        for &s in doomed.iter().chain(&strays) {
            let name = format::segment_name(s);
            let path = self.dir.join(&name);
            let r = match archive {
                Some(dir) => move_file(st, &path, &dir.join(&name)),
                None => st.remove_file(&path),
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!(
                    "stream {}: could not free {name}: {e} (it is no longer part of the stream)",
                    self.name
                ),
            }
            ctx.readers.lock().remove(&(self.uid, s));
        }
        if let Some(dir) = archive {
            st.sync_dir(dir)?;
        }
        st.sync_dir(&self.dir)?;
        if let Some(b) = &ctx.blocks {
            b.forget(self.uid, keep_from);
        }
        if !doomed.is_empty() {
            self.trim_times(ctx, keep_from);
        }
        Ok(doomed.len())
    }

    /// Moves archived segments back and re-reads the stream's layout.
    pub fn restore(self: &Arc<Self>, ctx: &Ctx, archive: &Path) -> Result<usize> {
        let st = &*ctx.storage;
        let _one = self.retention.lock();
        let mut w = self.writer.lock();
        self.check_writable(&mut w)?;
        let mut found: Vec<u64> = match st.read_dir(archive) {
            Ok(v) => v
                .into_iter()
                .filter_map(|e| e.name.as_deref().and_then(format::parse_segment_name))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        found.retain(|s| !w.idx.contains(s) && *s < w.active.start_id);
        // Newest first: an interrupted restore leaves a contiguous run
        // below the index's first segment, which a rerun completes.
        found.sort_unstable_by(|a, b| b.cmp(a));
        for &s in &found {
            let name = format::segment_name(s);
            move_file(st, &archive.join(&name), &self.dir.join(&name))?;
        }
        st.sync_dir(&self.dir)?;
        let mut ids: Vec<u64> = w.idx.iter().copied().chain(found.iter().copied()).collect();
        ids.sort_unstable();
        st.write_atomic(
            &self.dir.join(format::SEGMENTS_IDX),
            &format::segments_idx_encode(&ids),
        )?;
        {
            let mut segs = self.segs.write();
            for (i, &s) in ids.iter().enumerate() {
                if segs.contains_key(&s) {
                    continue;
                }
                let path = self.dir.join(format::segment_name(s));
                let len = st.file_len(&path)?;
                segs.insert(s, Arc::new(Segment::sealed(s, path, len, ids[i + 1], None)));
            }
        }
        w.idx = ids;
        Ok(found.len())
    }

    /// The stream was deleted: its handles stop writing and waiting.
    pub(crate) fn mark_deleted(&self) {
        // A truncation under way finishes with its files first.
        let _one = self.retention.lock();
        let mut w = self.writer.lock();
        w.deleted = true;
        w.file = None;
        self.commit.set_file(None);
        self.commit.close();
    }
}

/// Rename, or copy and remove across filesystems.
pub(super) fn move_file(st: &dyn Storage, from: &Path, to: &Path) -> io::Result<()> {
    match st.rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let bytes = st.read_file(from)?;
            let f = st.open(to, true)?;
            f.set_len(0)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_data()?;
            st.remove_file(from)
        }
        r => r,
    }
}
