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

/// Rebuilds the log at `opts.url` into `data`, which must be absent or
/// empty (`opts.timeout` bounds each request).
/// `progress(done, total)` sees bytes. Every object's length and crc32 are
/// checked against the manifest, and the result is verified frame by frame.
pub fn restore(
    opts: &super::ReplicaOptions,
    data: &Path,
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
    let (bucket, m, _) = super::open_log(opts)?;
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
    let r = build(&bucket, &m, &staging, progress);
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
    Ok(report)
}

fn build(
    bucket: &Bucket,
    m: &Manifest,
    root: &Path,
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
        for g in &sm.segments {
            let path = dir.join(format::segment_name(g.start_id));
            let file = fs::OpenOptions::new()
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
        if let Some(last) = sm.segments.last() {
            let mark = format::SyncedMark {
                segment: last.start_id,
                len: last.len,
                end_id: last.end_id,
            };
            let mut b = format::synced_encode(1, mark).to_vec();
            b.resize(format::SYNCED_SLOT as usize, 0);
            b.extend_from_slice(&format::synced_encode(2, mark));
            write_new(&dir.join(format::SYNCED), &b)?;
        }
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
