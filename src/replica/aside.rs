//! An old primary that lost its prefix: what it acknowledged but never
//! shipped (async replication) is moved aside into files named in the log
//! and `stat`, never dropped and never shipped over the new history, and
//! its data directory is rebuilt from the bucket so that it can stand by.

use super::manifest::{Manifest, StreamManifest};
use super::store::Bucket;
use super::ReplicaOptions;
use crate::error::{Error, Result};
use crate::format;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the local history of one stream leaves the bucket's.
struct Fork {
    stream: String,
    /// The local segment where it does, and the byte.
    segment: u64,
    offset: u64,
    /// The first id past the fork, and one past the last id held here.
    from_id: u64,
    to_id: u64,
    /// Local segment files from the fork on: (path, start id, len).
    files: Vec<(PathBuf, u64, u64)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    }
}

/// The id at byte `off` of a segment starting at `start` (`off` on a frame
/// boundary).
fn id_at(path: &Path, start: u64, off: u64) -> Result<u64> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let (mut at, mut id) = (0u64, start);
    let mut head = [0u8; format::HEADER_SIZE];
    while at < off {
        f.read_exact_at(&mut head, at).map_err(io(path))?;
        let h = format::FrameHeader::decode(&head)
            .map_err(|e| Error::Replication(format!("{} at byte {at}: {e}", path.display())))?;
        id = h.end_id();
        at += h.frame_len();
    }
    Ok(id)
}

/// How many leading bytes of a local segment of `len` bytes at `path`
/// agree with the bucket's segment `g`.
fn agreeing(
    bucket: &Bucket,
    path: &Path,
    len: u64,
    g: &super::manifest::SegmentManifest,
) -> Result<u64> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut agree = 0;
    for o in &g.objects {
        if o.offset != agree || agree >= len {
            break;
        }
        let n = (o.offset + o.len).min(len) - o.offset;
        let mut local = vec![0u8; n as usize];
        f.read_exact_at(&mut local, o.offset).map_err(io(path))?;
        if n == o.len && crc32fast::hash(&local) == o.crc32 {
            agree += n;
            continue;
        }
        // The local copy ends inside this object, or differs in it (a
        // merged object holds bytes of both writers): compare bytes, and
        // fork at the frame the first difference falls in.
        let mut body = None;
        bucket
            .get_all(std::slice::from_ref(o), |_, b| {
                body = Some(b?);
                Ok(())
            })
            .map_err(Error::Replication)?;
        let body = body.unwrap_or_default();
        let same = local
            .iter()
            .zip(body.iter())
            .take_while(|(a, b)| a == b)
            .count() as u64;
        if same == n {
            agree += n;
            continue;
        }
        return frame_start_at_or_below(path, o.offset + same);
    }
    Ok(agree)
}

/// The start of the frame holding byte `target` of a local segment (or
/// `target` itself, when a frame starts there).
fn frame_start_at_or_below(path: &Path, target: u64) -> Result<u64> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut at = 0u64;
    let mut head = [0u8; format::HEADER_SIZE];
    loop {
        f.read_exact_at(&mut head, at).map_err(io(path))?;
        let h = format::FrameHeader::decode(&head)
            .map_err(|e| Error::Replication(format!("{} at byte {at}: {e}", path.display())))?;
        if at + h.frame_len() > target {
            return Ok(at);
        }
        at += h.frame_len();
    }
}

/// Where stream `name`'s local segments leave `sm`, if they hold anything
/// the bucket's history does not.
fn fork_of(
    bucket: &Bucket,
    name: &str,
    local: &[crate::SegmentInfo],
    sm: Option<&StreamManifest>,
) -> Result<Option<Fork>> {
    let first_bucket = sm
        .and_then(|s| s.segments.first())
        .map_or(u64::MAX, |g| g.start_id);
    for (i, l) in local.iter().enumerate() {
        let g = sm.and_then(|s| s.segments.iter().find(|g| g.start_id == l.start_id));
        let agree = match g {
            Some(g) => agreeing(bucket, &l.path, l.len, g)?,
            None if l.start_id < first_bucket && sm.is_some_and(|s| !s.segments.is_empty()) => {
                continue; // truncated in the bucket, kept here
            }
            None => 0,
        };
        if agree < l.len {
            let from_id = id_at(&l.path, l.start_id, agree)?;
            let to_id = local.last().map_or(from_id, |s| s.end_id);
            return Ok(Some(Fork {
                stream: name.to_owned(),
                segment: l.start_id,
                offset: agree,
                from_id,
                to_id,
                files: local[i..]
                    .iter()
                    .map(|s| (s.path.clone(), s.start_id, s.len))
                    .collect(),
            }));
        }
    }
    Ok(None)
}

/// If the local log in `data` holds entries the bucket's history lacks
/// (this directory's writer lost the prefix before shipping them), moves
/// those entries aside (frames in walfs's segment format, each file named
/// after its first id, under `DATA.aside-MS/STREAM/`) and rebuilds `data`
/// from the bucket. Returns the aside directory, if one was made.
pub fn move_aside_if_diverged(
    opts: &ReplicaOptions,
    data: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<PathBuf>> {
    let Some(m) = super::read_manifest(opts)? else {
        return Ok(None);
    };
    let url = super::BucketUrl::parse(&opts.url).map_err(Error::Config)?;
    let bucket = Bucket::open(&url, opts.timeout, &opts.settings).map_err(Error::Replication)?;
    // Recovery first (a torn tail is cut), then compare.
    let forks = {
        let mut o = crate::WalOptions::new(data);
        o.standby = true;
        let wal = crate::Wal::new(o)?;
        let mut forks = Vec::new();
        for name in wal.streams() {
            if let Some(f) = fork_of(&bucket, &name, &wal.segments(&name), m.streams.get(&name))? {
                forks.push(f);
            }
        }
        forks
    };
    if forks.is_empty() {
        return Ok(None);
    }
    let aside = save(data, &m, &forks)?;
    rebuild(opts, data, progress)?;
    Ok(Some(aside))
}

fn save(data: &Path, m: &Manifest, forks: &[Fork]) -> Result<PathBuf> {
    let name = data
        .file_name()
        .ok_or_else(|| Error::Config(format!("{}: name a directory", data.display())))?;
    let aside = data.with_file_name(format!(
        "{}.aside-{}",
        name.to_string_lossy(),
        super::manifest::now_ms()
    ));
    for f in forks {
        let dir = aside.join(&f.stream);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for (i, (path, start, len)) in f.files.iter().enumerate() {
            let (from, first) = if i == 0 {
                (f.offset, f.from_id)
            } else {
                (0, *start)
            };
            let src = std::fs::File::open(path).map_err(io(path))?;
            let mut bytes = vec![0u8; (len - from) as usize];
            src.read_exact_at(&mut bytes, from).map_err(io(path))?;
            let out = dir.join(format::segment_name(first));
            std::fs::write(&out, &bytes).map_err(io(&out))?;
            std::fs::File::open(&out)
                .and_then(|f| f.sync_all())
                .map_err(io(&out))?;
        }
        log::error!(
            "stream {}: ids {}..{} ({} entries, from byte {} of segment {}) were acknowledged here but never reached the bucket, whose history went on without them at epoch {} ({}): moved aside to {}; they are not in the log",
            f.stream,
            f.from_id,
            f.to_id,
            f.to_id - f.from_id,
            f.offset,
            f.segment,
            m.epoch,
            m.writer,
            dir.display()
        );
    }
    Ok(aside)
}

/// Replaces `data` by a restore of the bucket (built aside first).
fn rebuild(opts: &ReplicaOptions, data: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let old = data.with_file_name(format!(
        ".{}.replaced-{}",
        data.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        super::manifest::now_ms()
    ));
    std::fs::rename(data, &old).map_err(io(data))?;
    match super::restore(opts, data, progress) {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(data);
            let _ = std::fs::rename(&old, data);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::manifest::{ObjectRef, SegmentManifest};
    use crate::replica::BucketUrl;

    #[test]
    fn ids_and_frame_starts_are_found_by_walking_the_frames() {
        let dir = tempfile::tempdir().unwrap();
        let wal = crate::Wal::new(crate::WalOptions::new(dir.path())).unwrap();
        // Frames of 1, 2 and 3 entries.
        wal.append_batch("s", &[b"a"]).unwrap();
        wal.append_batch("s", &[b"bb", b"cc"]).unwrap();
        wal.append_batch("s", &[b"d", b"e", b"f"]).unwrap();
        let seg = wal.segments("s")[0].clone();
        drop(wal);
        let h = format::HEADER_SIZE as u64;
        let starts = [0, h + 5, 2 * h + 5 + 12];
        let end = 3 * h + 5 + 12 + 15;
        assert_eq!(seg.len, end);
        let p = &seg.path;
        // The id at each frame boundary (the frames name their ids; at
        // byte 0 it is the segment's start).
        for (off, id) in [(0, 0), (starts[1], 1), (starts[2], 3), (end, 6)] {
            assert_eq!(id_at(p, 0, off).unwrap(), id, "at byte {off}");
        }
        assert_eq!(id_at(p, 7, 0).unwrap(), 7);
        // The frame holding each byte starts at or below it.
        for (target, start) in [
            (0, 0),
            (h + 4, 0),
            (starts[1], starts[1]),
            (starts[2] - 1, starts[1]),
            (starts[2], starts[2]),
            (end - 1, starts[2]),
        ] {
            assert_eq!(
                frame_start_at_or_below(p, target).unwrap(),
                start,
                "byte {target}"
            );
        }
    }

    /// The bucket's record of a local segment, whole (one object with its
    /// crc: comparing it needs no request).
    fn shipped(seg: &crate::SegmentInfo) -> SegmentManifest {
        let bytes = std::fs::read(&seg.path).unwrap();
        SegmentManifest {
            start_id: seg.start_id,
            end_id: seg.end_id,
            len: seg.len,
            sealed: seg.sealed,
            payload: 0,
            objects: vec![ObjectRef {
                key: format!("s/{}.wal", seg.start_id),
                offset: 0,
                len: seg.len,
                crc32: crc32fast::hash(&bytes),
                level: 0,
            }],
            times: Vec::new(),
            times_object: None,
        }
    }

    #[test]
    fn a_local_segment_ending_inside_a_merged_object_agrees_as_far_as_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let wal = crate::Wal::new(crate::WalOptions::new(dir.path())).unwrap();
        for i in 0..4u64 {
            wal.append("s", format!("entry {i:02}").as_bytes()).unwrap();
        }
        let seg = wal.segments("s")[0].clone();
        drop(wal);
        let frame = format::HEADER_SIZE as u64 + 4 + 8;
        assert_eq!(seg.len, 4 * frame);
        let bytes = std::fs::read(&seg.path).unwrap();
        // The bucket's object holds the local bytes and more after them
        // (the other writer's, merged in after a takeover): no crc can say
        // they agree, the bytes are compared.
        let merged = |body: &[u8]| {
            let mut b = body.to_vec();
            b.extend_from_slice(b"frames the other writer shipped after these");
            b
        };
        let object = |body: &[u8]| SegmentManifest {
            start_id: 0,
            end_id: 9,
            len: body.len() as u64,
            sealed: false,
            payload: 0,
            objects: vec![ObjectRef {
                key: "s/0.merged".into(),
                offset: 0,
                len: body.len() as u64,
                crc32: crc32fast::hash(body),
                level: 1,
            }],
            times: Vec::new(),
            times_object: None,
        };
        let body = merged(&bytes);
        let bucket = Bucket::in_memory(&[("s/0.merged", body.clone())]);
        assert_eq!(
            agreeing(&bucket, &seg.path, seg.len, &object(&body)).unwrap(),
            seg.len,
            "every local byte is the bucket's: nothing to put aside"
        );
        // One byte of the third frame differs: the local copy agrees up to
        // that frame's start.
        let mut differs = bytes.clone();
        differs[(2 * frame + frame / 2) as usize] ^= 1;
        let body = merged(&differs);
        let bucket = Bucket::in_memory(&[("s/0.merged", body.clone())]);
        assert_eq!(
            agreeing(&bucket, &seg.path, seg.len, &object(&body)).unwrap(),
            2 * frame
        );
    }

    #[test]
    fn a_fork_is_where_the_local_log_leaves_the_buckets_not_below_its_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = crate::WalOptions::new(dir.path());
        o.max_segment_size = 200;
        let wal = crate::Wal::new(o).unwrap();
        for i in 0..20u64 {
            wal.append("s", format!("entry {i:02}").as_bytes()).unwrap();
        }
        let local = wal.segments("s");
        drop(wal);
        assert!(local.len() >= 4, "{local:?}");
        // Never contacted: every comparison below is by crc.
        let url = BucketUrl::parse("s3://nowhere/p").unwrap();
        let bucket = Bucket::open(&url, std::time::Duration::from_secs(1), &[]).unwrap();
        let stream = |segs: &[crate::SegmentInfo]| StreamManifest {
            next_id: segs.last().unwrap().end_id,
            floor: 0,
            segments: segs.iter().map(shipped).collect(),
        };
        // The bucket truncated below the local log (its first two segments
        // gone there, kept here), the rest shipped whole: no fork.
        let sm = stream(&local[2..]);
        assert!(fork_of(&bucket, "s", &local, Some(&sm)).unwrap().is_none());
        // The last local segment never shipped: the fork is its first byte
        // and id, whatever the bucket truncated.
        let n = local.len();
        let sm = stream(&local[2..n - 1]);
        let f = fork_of(&bucket, "s", &local, Some(&sm))
            .unwrap()
            .expect("a fork");
        let last = &local[n - 1];
        assert_eq!(
            (f.segment, f.offset, f.from_id, f.to_id),
            (last.start_id, 0, last.start_id, last.end_id)
        );
        assert_eq!(f.files.len(), 1);
        // The last segment shipped in two objects, but only up to a frame
        // boundary (later frames written here, never shipped): the fork is
        // that byte, and the id there.
        let h = format::HEADER_SIZE as u64;
        let frame = h + 4 + 8; // one "entry NN" a frame
        let bytes = std::fs::read(&last.path).unwrap();
        assert!(last.len >= 3 * frame, "{last:?}");
        let object = |offset: u64, len: u64| ObjectRef {
            key: format!("s/{}.{offset}.part", last.start_id),
            offset,
            len,
            crc32: crc32fast::hash(&bytes[offset as usize..(offset + len) as usize]),
            level: 0,
        };
        let mut sm = stream(&local[2..]);
        let g = sm.segments.last_mut().unwrap();
        g.objects = vec![object(0, frame), object(frame, frame)];
        g.len = 2 * frame;
        g.end_id = last.start_id + 2;
        sm.next_id = g.end_id;
        let f = fork_of(&bucket, "s", &local, Some(&sm))
            .unwrap()
            .expect("a fork");
        assert_eq!(
            (f.segment, f.offset, f.from_id, f.to_id),
            (last.start_id, 2 * frame, last.start_id + 2, last.end_id)
        );
        // A bucket with no segment at all holds none of it.
        let empty = StreamManifest::default();
        let f = fork_of(&bucket, "s", &local, Some(&empty))
            .unwrap()
            .expect("a fork");
        assert_eq!(
            (f.segment, f.from_id),
            (local[0].start_id, local[0].start_id)
        );
    }
}
