//! What `walfs mount` is asked to do, and why it could not.

use crate::{CompressionType, SyncMode};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
/// What `walfs mount` was asked to do.
pub struct MountConfig {
    /// The data directory.
    pub data: PathBuf,
    /// Where the log is shown.
    pub mountpoint: PathBuf,
    /// The stream shown at the root; None for the rule in [`root_stream`].
    pub stream: Option<String>,
    /// When appends are durable.
    pub sync: SyncMode,
    /// How new frames are stored.
    pub compression: CompressionType,
    /// The size at which segments rotate.
    pub segment_size: u64,
    /// Serve reads only; change nothing.
    pub read_only: bool,
    /// FUSE worker threads: concurrent writers are group-committed only if
    /// their requests reach the engine together.
    pub threads: usize,
    /// Let other users in (the shown modes decide what they may do).
    pub allow_other: bool,
    /// Bytes of decoded frames kept for reads of `entries/`.
    pub block_cache: u64,
    /// Let the kernel read sealed segments itself (FUSE passthrough) where
    /// it and the daemon's privileges allow.
    pub passthrough: bool,
    /// The owner of every file (default: the mounting user).
    pub uid: Option<u32>,
    /// The group of every file (default: the mounting user's group).
    pub gid: Option<u32>,
    /// Permission bits of files (see [`Modes`](super::tree::Modes)).
    pub file_mode: u16,
    /// Permission bits of directories.
    pub dir_mode: u16,
    /// Where to serve Prometheus metrics over HTTP (`HOST:PORT`, or a port
    /// alone for loopback).
    pub metrics: Option<String>,
    /// Ship the log to a bucket.
    pub replicate: Option<crate::ReplicaOptions>,
    /// With `replicate`: stand by (apply the bucket, serve read-only, take
    /// the prefix when the holder's lease lapses).
    pub standby: bool,
    /// Where `replica::standby::prepare` moved an earlier primary's
    /// unshipped entries, to name in `stat`.
    pub standby_aside: Option<PathBuf>,
    /// Follow a log in a bucket instead of a data directory (read-only;
    /// `data` is then only its address, for messages).
    pub follow: Option<crate::replica::follow::FollowOptions>,
    /// The shard count of a sharded log (`checkpoints/`): needed to make
    /// one, or where the directory does not record it.
    pub shards: Option<u16>,
    /// Retention: free sealed segments, oldest first, while a stream holds
    /// more bytes than this.
    pub retain_bytes: Option<u64>,
    /// Retention: free sealed segments last written longer ago than this.
    pub retain_age: Option<Duration>,
}

/// Why the mount could not start, as one line that names the fix.
#[derive(Debug)]
pub struct MountError(pub String);

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn fail<T>(msg: String) -> Result<T, MountError> {
    Err(MountError(msg))
}
