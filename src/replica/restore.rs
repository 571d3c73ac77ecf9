//! `walfs restore`: a data directory rebuilt from the bucket, built aside
//! and renamed into place, so a failed restore leaves nothing half-made.

use super::manifest::Manifest;
use super::store::Bucket;
use crate::error::{Error, Result};
use crate::format;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a restore rebuilt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Streams written.
    pub streams: usize,
    /// Segment files written.
    pub segments: usize,
    /// Objects fetched.
    pub objects: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Entries the restored log holds.
    pub entries: u64,
    /// The epoch of the manifest restored.
    pub epoch: u64,
    /// Where a restore to a point cut its stream (one past its last id).
    pub to_id: Option<u64>,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_at(path))
}

/// A point to restore to: one stream as it stood when `to` was its next
/// id, or at a time (its ids below the point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    /// The stream cut (None: the log's only stream).
    pub stream: Option<String>,
    /// Where it is cut.
    pub to: RestoreTo,
}

/// Where a restore cuts a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTo {
    /// One past the last id restored.
    Id(u64),
    /// The ids shipped before this time, by the manifest's marks: to
    /// within a second, or a round when rounds are slower.
    Time(std::time::SystemTime),
}

/// Rebuilds the log at `opts.url` into `data`, which must be absent or
/// empty (`opts.timeout` bounds each request).
/// `progress(done, total)` sees bytes. Every object's length and crc32 are
/// checked against the manifest, and the result is verified frame by frame.
pub fn restore(
    opts: &super::ReplicaOptions,
    data: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport> {
    restore_to(opts, data, None, progress)
}

/// As [`restore`], up to `point` when given: only that stream, its ids
/// below `point.to_id` (which must start a batch: a batch is restored
/// whole or not at all).
pub fn restore_to(
    opts: &super::ReplicaOptions,
    data: &Path,
    point: Option<&RestorePoint>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport> {
    if data.exists() {
        let empty = fs::read_dir(data).map_err(io_at(data))?.next().is_none();
        if !empty {
            return Err(Error::Config(format!(
                "{} is not empty: restore into a new or empty directory",
                data.display()
            )));
        }
    }
    let (bucket, mut m, _) = super::open_log(opts)?;
    let cut = match point {
        Some(p) => Some(cut_manifest(&bucket, &mut m, p)?),
        None => None,
    };
    // Built beside DATA (one filesystem: renamed into place at the end), in
    // a directory of its own that no one else's name can collide with.
    let name = data.file_name().ok_or_else(|| {
        Error::Config(format!(
            "{}: name a directory to restore into",
            data.display()
        ))
    })?;
    let parent = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let staging = crate::storage::make_private_dir(
        &parent,
        &format!(".{}.restoring-", name.to_string_lossy()),
    )
    .map_err(Error::Io)?;
    let r = build(&bucket, &m, &staging, cut, progress);
    if r.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    let mut report = r?;
    if data.exists() {
        fs::remove_dir(data).map_err(io_at(data))?;
    }
    fs::rename(&staging, data).map_err(io_at(data))?;
    if let Some(parent) = data.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let v = crate::verify(&crate::RealStorage, data, &mut |_, _| {})?;
    if let Some(f) = v.faults.first().filter(|_| !v.is_sound()) {
        return Err(Error::Replication(format!(
            "the restored log in {} does not verify: {f}",
            data.display()
        )));
    }
    report.epoch = m.epoch;
    report.to_id = cut;
    Ok(report)
}

/// Keeps, of `m`, the stream `p` names and its segments below the point;
/// returns the id the last one is cut at.
fn cut_manifest(bucket: &Bucket, m: &mut Manifest, p: &RestorePoint) -> Result<u64> {
    let flag = match p.to {
        RestoreTo::Id(_) => "--to-id",
        RestoreTo::Time(_) => "--to-time",
    };
    if !m.files.is_empty() {
        return Err(Error::Config(format!(
            "a sharded log is restored whole (its checkpoints name offsets in every shard): drop {flag}"
        )));
    }
    let name = match &p.stream {
        Some(s) => s.clone(),
        None if m.streams.len() == 1 => m.streams.keys().next().expect("one").clone(),
        None => {
            let names: Vec<&str> = m.streams.keys().map(String::as_str).collect();
            return Err(Error::Config(format!(
                "the log has {} streams ({}): name the one to restore with --stream",
                names.len(),
                names.join(", "),
            )));
        }
    };
    let mut sm = m
        .streams
        .remove(&name)
        .ok_or_else(|| Error::Config(format!("the bucket holds no stream {name:?}")))?;
    let first = sm.segments.first().map_or(sm.next_id, |g| g.start_id);
    let to_id = match p.to {
        RestoreTo::Id(id) => id,
        RestoreTo::Time(t) => {
            let id = super::times::id_at_time(bucket, &name, &sm, super::times::unix_ms(t))?;
            if id <= first {
                return Err(Error::Config(format!(
                    "no id of stream {name} in the bucket (its first is {first}) was shipped before {}: name a later time",
                    humantime::format_rfc3339_seconds(t)
                )));
            }
            id
        }
    };
    if to_id <= first || to_id > sm.next_id {
        return Err(Error::Config(format!(
            "stream {name} holds ids {first}..{} in the bucket: --to-id takes {}..={}",
            sm.next_id,
            first + 1,
            sm.next_id
        )));
    }
    sm.segments.retain(|g| g.start_id < to_id);
    sm.next_id = to_id;
    m.streams.clear();
    m.streams.insert(name, sm);
    Ok(to_id)
}

/// Cuts the segment file at `path` where id `to` starts: the offset of the
/// frame that starts with it (or the end, if its last frame ends below it).
fn cut_at_id(path: &Path, file: &fs::File, start_id: u64, len: u64, to: u64) -> Result<u64> {
    let (mut off, mut id) = (0u64, start_id);
    let mut head = [0u8; format::HEADER_SIZE];
    while id < to && off < len {
        file.read_exact_at(&mut head, off).map_err(io_at(path))?;
        let h = format::FrameHeader::decode(&head)
            .map_err(|e| Error::Replication(format!("{} at byte {off}: {e}", path.display())))?;
        if h.end_id() > to {
            return Err(Error::Config(format!(
                "id {to} is inside a batch of ids {}..{} (a batch is restored whole or not at all): use --to-id {} or {}",
                h.start_id,
                h.end_id(),
                h.start_id,
                h.end_id()
            )));
        }
        id = h.end_id();
        off += h.frame_len();
    }
    file.set_len(off).map_err(io_at(path))?;
    Ok(off)
}

fn build(
    bucket: &Bucket,
    m: &Manifest,
    root: &Path,
    cut: Option<u64>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport> {
    let total: u64 = m
        .streams
        .values()
        .flat_map(|s| &s.segments)
        .map(|g| g.len)
        .sum();
    let mut report = RestoreReport::default();
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(root)
        .map_err(io_at(root))?;
    progress(0, total);
    for (name, sm) in &m.streams {
        let dir = root.join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_at(&dir))?;
        let mut starts: Vec<u64> = sm.segments.iter().map(|g| g.start_id).collect();
        let mut last_mark = None;
        for g in &sm.segments {
            let path = dir.join(format::segment_name(g.start_id));
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_at(&path))?;
            bucket
                .get_all(&g.objects, |i, body| {
                    let o = &g.objects[i];
                    let body = body.map_err(|e| format!("stream {name}: {e}"))?;
                    file.write_all_at(&body, o.offset)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    report.bytes += o.len;
                    report.objects += 1;
                    progress(report.bytes, total);
                    Ok(())
                })
                .map_err(Error::Replication)?;
            if let Some(to) = cut.filter(|&to| g.end_id > to) {
                let len = cut_at_id(&path, &file, g.start_id, g.len, to)?;
                last_mark = Some((g.start_id, len, to));
            } else {
                last_mark = Some((g.start_id, g.len, g.end_id));
            }
            file.sync_all().map_err(io_at(&path))?;
            report.segments += 1;
        }
        if starts.is_empty() {
            // A stream with nothing shipped yet: an empty one.
            starts.push(0);
            write_new(&dir.join(format::segment_name(0)), &[])?;
        }
        // Everything written is synced: walfs.synced says so, so that
        // damage found in it later is corruption, never a torn tail.
        if let Some((segment, len, end_id)) = last_mark {
            let mark = format::SyncedMark {
                segment,
                len,
                end_id,
            };
            let mut b = format::synced_encode(1, mark).to_vec();
            b.resize(format::SYNCED_SLOT as usize, 0);
            b.extend_from_slice(&format::synced_encode(2, mark));
            write_new(&dir.join(format::SYNCED), &b)?;
        }
        write_times(bucket, sm, &dir, cut)?;
        report.entries += sm.next_id - starts[0].min(sm.next_id);
        write_new(
            &dir.join(format::SEGMENTS_IDX),
            &format::segments_idx_encode(&starts),
        )?;
        write_new(
            &dir.join(format::HEAD_STATE),
            &format::head_state_encode(*starts.last().expect("one segment at least")),
        )?;
        sync_dir(&dir)?;
        report.streams += 1;
    }
    // A sharded log's checkpoints (SHARDS, checkpoints.log, HEAD).
    for (name, o) in &m.files {
        let path = root.join(name);
        bucket
            .get_all(std::slice::from_ref(o), |_, body| {
                write_new(&path, &body?).map_err(|e| e.to_string())?;
                report.objects += 1;
                Ok(())
            })
            .map_err(Error::Replication)?;
    }
    sync_dir(root)?;
    Ok(report)
}

/// The restored stream's walfs.times, from the manifest's marks of the ids
/// restored: `walfs cat --since/--until TIME` works on it as on the log it
/// came from (to within a round).
fn write_times(
    bucket: &Bucket,
    sm: &super::manifest::StreamManifest,
    dir: &Path,
    cut: Option<u64>,
) -> Result<()> {
    let end = cut.unwrap_or(sm.next_id);
    let mut b = Vec::new();
    for g in &sm.segments {
        for (ms, id) in super::times::segment_marks(bucket, g)? {
            if id < end {
                b.extend_from_slice(&format::time_record_encode(ms, id));
            }
        }
    }
    if b.is_empty() {
        return Ok(());
    }
    write_new(&dir.join(format::TIMES), &b)
}
