//! One upload round: what became durable locally goes up (sealed segments
//! whole, the active segment's new bytes as a part, parts merged four of a
//! level into one of the next), then one conditional manifest write.

use super::*;

/// Bytes `from..to` of a local file.
pub(super) fn read_range(path: &Path, from: u64, to: u64) -> std::io::Result<Bytes> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; (to - from) as usize];
    f.read_exact_at(&mut buf, from)?;
    Ok(Bytes::from(buf))
}

fn object(key: String, offset: u64, bytes: &Bytes, level: u32) -> ObjectRef {
    ObjectRef {
        key,
        offset,
        len: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
        level,
    }
}

impl Shipper {
    /// One upload round and its manifest write.
    pub(super) fn round(&mut self) -> std::result::Result<(), Fault> {
        let (current, version) = self.manifest.clone().expect("the prefix is taken");
        let epoch = current.epoch;
        let mut next = current.clone();
        let mut uploads: Vec<(String, Bytes)> = Vec::new();
        let mut superseded: Vec<String> = Vec::new();
        let snapshot = Instant::now();
        let now_ms = manifest::now_ms();
        let mut ends: Vec<(String, u64)> = Vec::new();
        // Root files first: a checkpoint names offsets durable when it was
        // made, so the streams read after it cover them in this manifest.
        let root = self.ctx().opts.root_path.clone();
        ship_files(
            &root,
            &mut self.root_files,
            &mut next,
            epoch,
            &mut uploads,
            &mut superseded,
        );
        for s in self.core.all_streams() {
            if s.damaged.is_some() {
                continue;
            }
            if self.ctx().opts.sync_mode != SyncMode::Strict && s.writer.lock().poisoned.is_none() {
                // Only what is durable locally is shipped.
                if let Err(e) = s.sync(self.ctx()) {
                    log::warn!("replication: syncing stream {} failed: {e}", s.name);
                }
            }
            let view = s.ship_view();
            let sm = next.streams.entry(s.name.clone()).or_default();
            let first = *self.incarnations.entry(s.name.clone()).or_insert(s.uid);
            if first != s.uid || view.durable_id < sm.next_id {
                // A stream deleted and made again here: the bucket keeps the
                // old one's history, and an id must never name two entries.
                if self.reported.insert(s.name.clone()) {
                    log::warn!(
                        "replication: stream {} was deleted and made again here after its history was shipped: it is not shipped (its ids would name other entries in the bucket); ship to another prefix to keep it",
                        s.name
                    );
                }
                continue;
            }
            ship_stream(&s, &view, sm, epoch, now_ms, &mut uploads, &mut superseded);
            ends.push((s.name.clone(), sm.next_id));
        }
        let renew = self
            .link
            .opts
            .lease
            .is_some_and(|l| self.last_put.elapsed() >= l / 3);
        if uploads.is_empty()
            && next.streams == current.streams
            && next.files == current.files
            && !renew
        {
            self.settle(&ends, snapshot, 0);
            return Ok(());
        }
        let puts = uploads.len() as u64 + 1;
        self.bucket.put_all(uploads)?;
        next.updated_ms = manifest::now_ms();
        // Superseded objects stay, listed, for a grace period: a follower
        // may be reading them by the manifest before this one.
        let expired = next.retire(std::mem::take(&mut superseded), next.updated_ms);
        next.writer = current.writer.clone();
        next.lease_ms = self.lease_ms();
        next.released = false;
        let sent = Instant::now();
        let version = self.bucket.put_manifest(next.encode(), Some(version))?;
        self.link.renewed(sent);
        self.last_put = sent;
        let shipped: u64 = next
            .streams
            .iter()
            .map(|(n, s)| s.next_id - current.streams.get(n).map_or(0, |c| c.next_id))
            .sum();
        log::debug!(
            "replication: a round shipped {shipped} entries with {puts} PUTs ({:?})",
            ends
        );
        self.manifest = Some((next, version));
        self.settle(&ends, snapshot, puts);
        {
            let mut st = self.link.state.lock();
            st.counters.rounds += 1;
            st.counters.entries += shipped;
        }
        crate::metrics::global().replicated(shipped, puts);
        if !expired.is_empty() {
            if let Err(f) = self.bucket.delete_all(expired) {
                log::warn!("replication: removing retired objects failed ({f}); the next writer removes them");
            }
        }
        Ok(())
    }

    /// Publishes what the bucket now holds and wakes waiters.
    fn settle(&self, ends: &[(String, u64)], snapshot: Instant, puts: u64) {
        let mut st = self.link.state.lock();
        st.counters.puts += puts;
        for (name, end) in ends {
            st.shipped.insert(name.clone(), *end);
            let appended = self.core.stream(name).map_or(0, |s| s.appended());
            self.link
                .set_behind(name, (appended > *end).then_some(snapshot));
        }
        drop(st);
        self.link.progress.notify_all();
    }
}

/// Adds to `uploads` the root files (a sharded log's checkpoints) whose
/// bytes differ from what `m` names, and drops from `m` those gone here.
/// A file whose stamp and crc are as `seen` last noted, and as `m` names,
/// is not read again.
fn ship_files(
    root: &std::path::Path,
    seen: &mut std::collections::HashMap<&'static str, (FileStamp, u32)>,
    m: &mut Manifest,
    epoch: u64,
    uploads: &mut Vec<(String, Bytes)>,
    superseded: &mut Vec<String>,
) {
    use std::os::unix::fs::MetadataExt;
    for name in manifest::ROOT_FILES {
        let path = root.join(name);
        let stamp = match std::fs::metadata(&path) {
            Ok(md) => (md.ino(), md.len(), md.mtime(), md.mtime_nsec()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                seen.remove(name);
                if let Some(old) = m.files.remove(name) {
                    superseded.push(old.key);
                }
                continue;
            }
            Err(e) => {
                log::warn!("replication: {name} could not be read ({e}); shipped later");
                continue;
            }
        };
        let named = m.files.get(name).map(|o| o.crc32);
        if seen
            .get(name)
            .is_some_and(|&(st, crc)| st == stamp && named == Some(crc))
        {
            continue;
        }
        // The stamp is taken before the read: a change meanwhile shows at
        // the next round.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("replication: {name} could not be read ({e}); shipped later");
                continue;
            }
        };
        let crc = crc32fast::hash(&bytes);
        seen.insert(name, (stamp, crc));
        if m.files
            .get(name)
            .is_some_and(|o| o.len == bytes.len() as u64 && o.crc32 == crc)
        {
            continue;
        }
        let bytes = Bytes::from(bytes);
        let key = manifest::file_key(name, epoch, crc);
        if let Some(old) = m
            .files
            .insert(name.to_owned(), object(key.clone(), 0, &bytes, 0))
        {
            if old.key != key {
                superseded.push(old.key);
            }
        }
        uploads.push((key, bytes));
    }
}

/// Adds to `uploads` what `sm` lacks of the local stream, and updates `sm`.
fn ship_stream(
    s: &Stream,
    view: &crate::stream::ShipView,
    sm: &mut manifest::StreamManifest,
    epoch: u64,
    now_ms: u64,
    uploads: &mut Vec<(String, Bytes)>,
    superseded: &mut Vec<String>,
) {
    for seg in &view.segments {
        if seg.start_id < sm.floor {
            continue; // removed from the bucket on purpose
        }
        let pos = sm.segments.iter().position(|g| g.start_id == seg.start_id);
        if let Some(i) = pos {
            if sm.segments[i].sealed || (!seg.sealed && sm.segments[i].len >= seg.len) {
                continue;
            }
        }
        if seg.sealed {
            let bytes = match read_range(&seg.path, 0, seg.len) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!(
                        "replication: stream {}: segment {} could not be read ({e}); it was removed here before it was shipped",
                        s.name,
                        seg.start_id
                    );
                    continue;
                }
            };
            let key = manifest::sealed_key(&s.name, seg.start_id, epoch);
            let (times, from) = match pos {
                Some(i) => (
                    std::mem::take(&mut sm.segments[i].times),
                    sm.segments[i].end_id,
                ),
                None => (Vec::new(), seg.start_id),
            };
            let mut entry = SegmentManifest {
                start_id: seg.start_id,
                end_id: seg.end_id,
                len: seg.len,
                sealed: true,
                payload: manifest::payload_of(&bytes),
                objects: vec![object(key.clone(), 0, &bytes, 0)],
                times,
                times_object: None,
            };
            uploads.push((key, bytes));
            entry.mark_shipped(from, now_ms);
            if entry.times.len() > manifest::SEALED_MARKS {
                let body: Vec<u8> = entry
                    .times
                    .iter()
                    .flat_map(|&(ms, id)| crate::format::time_record_encode(ms, id))
                    .collect();
                let body = Bytes::from(body);
                let key = manifest::times_key(&s.name, seg.start_id, epoch);
                entry.times_object = Some(object(key.clone(), 0, &body, 0));
                entry.times.truncate(1);
                uploads.push((key, body));
            }
            match pos {
                Some(i) => {
                    superseded.extend(sm.segments[i].objects.drain(..).map(|o| o.key));
                    sm.segments[i] = entry;
                }
                None => {
                    let at = sm.segments.partition_point(|g| g.start_id < seg.start_id);
                    sm.segments.insert(at, entry);
                }
            }
        } else {
            let i = match pos {
                Some(i) => i,
                None => {
                    let at = sm.segments.partition_point(|g| g.start_id < seg.start_id);
                    sm.segments.insert(at, SegmentManifest::empty(seg.start_id));
                    at
                }
            };
            let g = &mut sm.segments[i];
            let from = g.len;
            let bytes = match read_range(&seg.path, from, seg.len) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!(
                        "replication: stream {}: reading the active segment failed: {e}",
                        s.name
                    );
                    continue;
                }
            };
            let key = manifest::part_key(&s.name, seg.start_id, epoch, from, seg.len);
            g.payload += manifest::payload_of(&bytes);
            g.objects.push(object(key.clone(), from, &bytes, 0));
            uploads.push((key, bytes));
            merge_parts(&seg.path, &s.name, g, epoch, uploads, superseded);
            g.len = seg.len;
            let from = g.end_id;
            g.end_id = seg.end_id;
            g.mark_shipped(from, now_ms);
        }
    }
    sm.next_id = sm.next_id.max(view.durable_id);
}

/// While the last MERGE_FAN_IN parts share a level, replaces them with one
/// part of the next level, read back from the local file.
fn merge_parts(
    path: &Path,
    stream: &str,
    g: &mut SegmentManifest,
    epoch: u64,
    uploads: &mut Vec<(String, Bytes)>,
    superseded: &mut Vec<String>,
) {
    loop {
        let n = g.objects.len();
        if n < MERGE_FAN_IN {
            return;
        }
        let tail = &g.objects[n - MERGE_FAN_IN..];
        let level = tail[0].level;
        if tail.iter().any(|o| o.level != level) {
            return;
        }
        let (from, to) = (
            tail[0].offset,
            tail[MERGE_FAN_IN - 1].offset + tail[MERGE_FAN_IN - 1].len,
        );
        let Ok(bytes) = read_range(path, from, to) else {
            return;
        };
        let key = manifest::part_key(stream, g.start_id, epoch, from, to);
        for o in g.objects.drain(n - MERGE_FAN_IN..) {
            // A part made in this round is simply not uploaded.
            if let Some(p) = uploads.iter().position(|(k, _)| *k == o.key) {
                uploads.remove(p);
            } else {
                superseded.push(o.key);
            }
        }
        g.objects.push(object(key.clone(), from, &bytes, level + 1));
        uploads.push((key, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_file_is_read_again_only_when_its_stamp_changes() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join(crate::sharded::checkpoints::LOG_FILE);
        std::fs::write(&log, b"first version").unwrap();
        let mut seen = Default::default();
        let mut m = Manifest::empty(1);
        let round = |m: &mut Manifest, seen: &mut _| {
            let (mut up, mut gone) = (Vec::new(), Vec::new());
            ship_files(t.path(), seen, m, 1, &mut up, &mut gone);
            up.len()
        };
        assert_eq!(round(&mut m, &mut seen), 1);
        assert_eq!(round(&mut m, &mut seen), 0, "unchanged");
        // Same inode, length and mtime, other bytes: not read, not shipped.
        let mtime = std::fs::metadata(&log).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"FIRST", 0).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert_eq!(round(&mut m, &mut seen), 0, "the stamp says unchanged");
        // A new mtime: read and shipped.
        std::fs::write(&log, b"second version").unwrap();
        assert_eq!(round(&mut m, &mut seen), 1);
        assert_eq!(
            m.files[crate::sharded::checkpoints::LOG_FILE].crc32,
            crc32fast::hash(b"second version")
        );
    }
}
