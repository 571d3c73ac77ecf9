//! What the mount shows: a local log (shipping, or standing by, as asked)
//! or a log followed in a bucket; a sharded log's checkpoints; the stream
//! at the root.

use super::config::{fail, MountConfig, MountError};
use crate::{Error, Wal, WalOptions};
use std::path::Path;
use std::sync::Arc;

/// What the mount shows: a local log, or one followed in a bucket.
#[derive(Clone)]
pub(super) enum Backend {
    Local(Wal),
    Bucket(Arc<crate::replica::follow::BucketLog>),
}

impl Backend {
    pub(super) fn source(&self) -> Arc<dyn crate::source::LogSource> {
        match self {
            Backend::Local(w) => Arc::new(w.clone()),
            Backend::Bucket(b) => b.clone(),
        }
    }
    pub(super) fn sync_all(&self) -> crate::Result<()> {
        match self {
            Backend::Local(w) => w.sync_all(),
            Backend::Bucket(_) => Ok(()),
        }
    }
    pub(super) fn close(self) -> crate::Result<()> {
        match self {
            Backend::Local(w) => w.close(),
            Backend::Bucket(_) => Ok(()),
        }
    }
}

/// Opens what the mount shows (a local log, shipping or standing by as
/// asked, or a bucket followed), with one line naming the fix when it
/// cannot.
pub(super) fn open(
    cfg: &MountConfig,
    data: &Path,
) -> Result<(Backend, Option<crate::replica::standby::Standby>), MountError> {
    let mut o = WalOptions::new(data);
    o.sync_mode = cfg.sync;
    o.compression = cfg.compression;
    o.max_segment_size = cfg.segment_size;
    o.read_only = cfg.read_only;
    o.block_cache_size = Some(cfg.block_cache);
    o.replicate = cfg.replicate.clone();
    o.standby = cfg.standby;
    o.retain_bytes = cfg.retain_bytes;
    o.retain_age = cfg.retain_age;
    let wal = match &cfg.follow {
        Some(f) => match crate::replica::follow::BucketLog::open(f.clone()) {
            Ok(b) => Backend::Bucket(Arc::new(b)),
            Err(e) => return fail(e.to_string()),
        },
        None => match Wal::new(o) {
        Ok(w) => Backend::Local(w),
        Err(Error::Locked { path, holder }) => {
            return fail(format!(
                "data directory {} is in use by another walfs process{}: unmount it or stop that process first",
                path.display(),
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ))
        }
        Err(e) if e.errno_is(libc::EROFS) => {
            return fail(format!(
                "cannot open the log in {} for writing: it is on a read-only filesystem; `walfs mount --read-only` serves it as it is",
                data.display()
            ))
        }
        Err(e @ (Error::Replication(_) | Error::Fenced(_))) => return fail(e.to_string()),
        Err(e) => return fail(format!("cannot open the log in {}: {e}", data.display())),
        },
    };
    let standby = match (&wal, &cfg.replicate) {
        (Backend::Local(w), Some(r)) if cfg.standby => {
            let s = crate::replica::standby::Standby::start(
                w.clone(),
                r.clone(),
                Box::new(|line: &str| {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(line)]);
                }),
            )
            .map_err(|e| MountError(format!("cannot stand by for {}: {e}", r.url)))?;
            w.set_standby_info(s.info_source(cfg.standby_aside.clone()));
            Some(s)
        }
        _ => None,
    };
    Ok((wal, standby))
}

/// The sharded log in `w`, if the directory is one or `--shards` makes it
/// one.
pub(super) fn open_sharded(
    w: &Wal,
    data: &Path,
    asked: Option<u16>,
) -> Result<Option<Arc<crate::sharded::ShardedWal>>, MountError> {
    use crate::sharded::{detect, shard_name, ShardCount, ShardedWal};
    let count = match (detect(data), asked) {
        (Err(e), _) => {
            return fail(format!(
                "cannot read the shard count of {}: {e}",
                data.display()
            ))
        }
        (Ok(None), None) => return Ok(None),
        (Ok(Some(ShardCount::AtLeast(n))), None) => {
            // Any ironwal directory mounts: its shards as streams, and
            // checkpoints/ once the count is known.
            log::warn!(
                "{} is a sharded log whose shard count is not recorded (no checkpoint yet; its highest shard is {}): its shards are under streams/, and `--shards N` (at least {n}) also shows checkpoints/",
                data.display(),
                shard_name(n - 1)
            );
            return Ok(None);
        }
        (Ok(Some(ShardCount::Exact(n))), None) => n,
        (Ok(_), Some(n)) => n,
    };
    match ShardedWal::from_wal(w.clone(), count) {
        Ok(s) => Ok(Some(Arc::new(s))),
        Err(Error::ShardCountMismatch { expected, found }) => fail(format!(
            "{} is a sharded log of {found} shards, not {expected}: mount it with --shards {found} (or without --shards)",
            data.display()
        )),
        Err(e) => fail(format!("cannot open the checkpoints of {}: {e}", data.display())),
    }
}

/// The stream shown at the root: the one asked for (created if missing,
/// unless read-only); else `default` if it exists; else the only stream;
/// else none (the root holds `streams/` alone). A new, empty data directory
/// gets `default`: the one stream anybody could have asked for. A follower
/// (`following`) may show a stream its bucket does not hold yet (the one
/// asked for, or `default` on an empty bucket): it appears at the root
/// once the writer ships it, as a fresh primary's `default` would.
pub(super) fn root_stream(
    wal: &dyn crate::source::LogSource,
    place: &Path,
    asked: Option<&str>,
    read_only: bool,
    following: bool,
) -> Result<Option<String>, MountError> {
    let streams = wal.streams();
    let listed = || {
        if streams.is_empty() {
            "it has no streams".to_string()
        } else {
            format!("its streams: {}", streams.join(", "))
        }
    };
    match asked {
        Some(s) if wal.has_stream(s) => Ok(Some(s.to_owned())),
        Some(s) if following => {
            log::info!(
                "no stream {s} in {} yet: it appears at the root once the writer ships it",
                place.display()
            );
            Ok(Some(s.to_owned()))
        }
        Some(s) if read_only => fail(format!(
            "no stream {s} in {} ({}); a --read-only mount creates none",
            place.display(),
            listed()
        )),
        Some(s) if crate::format::refuse_new_stream_name(s).is_some() => fail(format!(
            "no stream {s} in {}; {}",
            place.display(),
            crate::format::refuse_new_stream_name(s).unwrap_or_default()
        )),
        Some(s) => wal
            .create_stream(s)
            .map(|()| Some(s.to_owned()))
            .map_err(|e| MountError(format!("cannot create stream {s}: {e}"))),
        None if streams.iter().any(|s| s == "default") => Ok(Some("default".into())),
        None if streams.len() == 1 => Ok(streams.first().cloned()),
        None if streams.is_empty() && following => Ok(Some("default".into())),
        None if streams.is_empty() && !read_only => wal
            .create_stream("default")
            .map(|()| Some("default".into()))
            .map_err(|e| MountError(format!("cannot create stream default: {e}"))),
        None => Ok(None),
    }
}
