//! Opening a stream: its layout, the recovery of its active segment, and
//! the segments it is made of.

use super::{Ctx, Stream, Writer};
use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::format::{self};
use crate::index::SparseIndex;
use crate::options::SyncMode;
use crate::recovery;
use crate::segment::{Extent, ReadHandle, Segment, Window};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Identifies each incarnation of a stream in the shared caches.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

impl Stream {
    /// Opens (recovering) or creates the stream in `dir`.
    pub fn open(ctx: &Ctx, name: &str, dir: PathBuf, create: bool) -> Result<Arc<Stream>> {
        let st = &*ctx.storage;
        if create {
            if ctx.opts.read_only {
                return Err(Error::ReadOnly);
            }
            st.create_dir(&dir)?;
        }
        let layout = recovery::plan_layout(st, &dir, name)?;
        let damaged = layout.damage();
        // A damaged stream is opened as if read-only: nothing of it is
        // rewritten or cut until the damage is dealt with.
        let ro = ctx.opts.read_only || damaged.is_some();
        let active_start = *layout.segments.last().expect("layout has a segment");
        let active_path = dir.join(format::segment_name(active_start));
        if !ro {
            if layout.create_active {
                st.open(&active_path, true)?;
            }
            if layout.rewrite_idx {
                st.write_atomic(
                    &dir.join(format::SEGMENTS_IDX),
                    &format::segments_idx_encode(&layout.segments),
                )?;
            }
            if layout.rewrite_head {
                st.write_atomic(
                    &dir.join(format::HEAD_STATE),
                    &format::head_state_encode(active_start),
                )?;
            }
            if layout.create_active || layout.rewrite_idx || layout.rewrite_head {
                st.sync_dir(&dir)?;
            }
            if create {
                st.sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
            }
        }

        // The active segment is scanned with crcs; sealed ones are trusted
        // until read (verify checks them all).
        // The mark before the length: beside a live writer (a read-only
        // open), the length read after it is at least what it says.
        let mark = recovery::read_synced(st, &dir);
        let (file, rec) = match st.open(&active_path, !ro) {
            Ok(f) => {
                let len = f.len()?;
                let mut win = Window::new(
                    Arc::new(ReadHandle::File(f.clone())),
                    len,
                    ctx.opts.read_buffer_size.max(1 << 16),
                );
                let seg_name = format::segment_name(active_start);
                let synced = recovery::Synced::active(
                    mark,
                    active_start,
                    len,
                    &format!("{name}/{seg_name}"),
                );
                let rec = recovery::recover_active(
                    &mut win,
                    name,
                    &seg_name,
                    active_start,
                    synced,
                    ctx.opts.on_corruption,
                )?;
                if let Some(torn) = &rec.cut {
                    let what = format!(
                        "{}/{} at byte {}: torn tail ({}): {} bytes past the last whole frame, entries from id {} on were never synced",
                        name,
                        format::segment_name(active_start),
                        torn.offset,
                        torn.reason,
                        len - rec.valid_len,
                        rec.end_id
                    );
                    if ro {
                        log::info!("{what}; a writable open will cut them (read-only: left as is)");
                    } else {
                        log::warn!("{what}; cutting them");
                        f.set_len(rec.valid_len)?;
                    }
                }
                if !ro {
                    // Whatever is on disk now counts as durable: make it so.
                    f.sync_data()?;
                }
                (Some(f), rec)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && ro => (
                None,
                recovery::Recovered {
                    index: SparseIndex::new(),
                    valid_len: 0,
                    end_id: active_start,
                    cut: None,
                },
            ),
            Err(e) => return Err(e.into()),
        };

        let active_payload = rec.index.payload();
        // Entry bytes of sealed segments, as recorded when walfs sealed them.
        let hints: std::collections::HashMap<u64, (u64, u64)> = st
            .read_file(&dir.join(format::PAYLOADS))
            .map(|b| {
                format::payload_records_decode(&b)
                    .into_iter()
                    .map(|(s, l, p)| (s, (l, p)))
                    .collect()
            })
            .unwrap_or_default();
        let mut active_index = Some(rec.index);
        let mut segs = BTreeMap::new();
        for (i, &start) in layout.segments.iter().enumerate() {
            let path = dir.join(format::segment_name(start));
            let seg = if layout.missing.contains(&start) {
                Segment::lost(start, path, layout.segments[i + 1])
            } else if start == active_start {
                Segment::new(
                    start,
                    path,
                    Extent {
                        len: rec.valid_len,
                        end_id: rec.end_id,
                        sealed: false,
                        payload: Some(active_payload),
                    },
                    active_index.take(),
                )
            } else {
                let len = st.file_len(&path)?;
                let hint = hints.get(&start).filter(|h| h.0 == len).map(|h| h.1);
                Segment::sealed(start, path, len, layout.segments[i + 1], hint)
            };
            segs.insert(start, Arc::new(seg));
        }
        let active = segs[&active_start].clone();
        let modified = st.modified(&active_path);
        let stream = Arc::new(Stream {
            name: name.to_owned(),
            dir,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            damaged,
            writer: Mutex::new(Writer {
                active,
                file: None,
                len: rec.valid_len,
                next_id: rec.end_id,
                payload: active_payload,
                idx: layout.segments.clone(),
                poisoned: None,
                deleted: false,
                pending: Vec::new(),
                written_back: rec.valid_len,
            }),
            retention: Mutex::new(()),
            segs: RwLock::new(segs),
            appended: AtomicU64::new(rec.end_id),
            time_mark: AtomicU64::new(0),
            times_last: Mutex::default(),
            first_time: Mutex::default(),
            cursor: Mutex::new(None),
            commit: Commit::new(
                rec.end_id,
                rec.valid_len,
                active_start,
                ctx.opts.sync_mode == SyncMode::Strict,
                ctx.epoch.clone(),
            ),
        });
        if let Some(t) = modified {
            stream.commit.set_modified(t);
        }
        if let (Some(f), false) = (file, ro) {
            let storage = ctx.storage.clone();
            let path = stream.dir.join(format::SYNCED);
            // Its name must survive a power loss too (a clean close syncs
            // its bytes, not the directory).
            if !st.exists(&path) {
                st.open(&path, true)?;
                st.sync_dir(&stream.dir)?;
            }
            *stream.commit.marker.lock() = Some(crate::commit::Marker::new(move || {
                storage.open(&path, true)
            }));
            // Everything kept is on disk now (synced above).
            stream
                .commit
                .mark_synced(active_start, rec.valid_len, rec.end_id);
            let mut w = stream.writer.lock();
            stream.adopt_write_file(ctx, &mut w, f);
        }
        Ok(stream)
    }
}
