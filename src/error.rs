//! The one error type of the engine. Corruption always carries where it is.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Where a fault sits: stream, segment file and byte offset inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The stream's name.
    pub stream: String,
    /// The segment file's name.
    pub segment: String,
    /// Byte offset in the segment.
    pub offset: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} at byte {}",
            self.stream, self.segment, self.offset
        )
    }
}

#[derive(Debug, thiserror::Error)]
/// Everything the engine can fail with.
pub enum Error {
    #[error("I/O error: {0}")]
    /// A system call failed.
    Io(#[from] io::Error),

    /// Bytes on disk that are not a valid log: a bad magic, crc, length or id.
    #[error("corruption in {location}: {reason}")]
    Corruption {
        /// Where the damage is.
        location: Location,
        /// What is wrong there.
        reason: String,
    },

    /// Structural damage that is not tied to one frame (a missing segment,
    /// an unreadable segments.idx or head.state).
    #[error("damaged stream {stream}: {reason}")]
    Damaged {
        /// The stream.
        stream: String,
        /// What is damaged, and what follows from it.
        reason: String,
    },

    #[error("invalid stream name {0:?}: use 1-255 bytes of [A-Za-z0-9._-], not \".\" or \"..\"")]
    /// A stream name walfs cannot use.
    InvalidStreamName(String),

    #[error("no such stream: {0}")]
    /// The stream does not exist.
    NoSuchStream(String),

    #[error("stream already exists: {0}")]
    /// The stream exists already.
    StreamExists(String),

    /// A batch larger than a frame can hold.
    #[error("record too large: {size} bytes (limit {limit})")]
    TooLarge {
        /// The batch's size in bytes.
        size: u64,
        /// The largest batch a frame can hold.
        limit: u64,
    },

    /// Another process holds the data directory.
    #[error("the data directory {path} is locked by another process{}", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The pid of the holder, if it is known.
        holder: Option<u32>,
    },

    /// A write or fsync failed earlier: the stream refuses writes until the
    /// log is reopened, because the kernel may have dropped the dirty pages.
    #[error(
        "stream {stream} refuses writes after an earlier I/O failure ({cause}); reopen the log"
    )]
    Poisoned {
        /// The stream.
        stream: String,
        /// The failure that poisoned it.
        cause: String,
    },

    #[error("the log is open read-only")]
    /// A write to a log opened read-only.
    ReadOnly,

    /// Another writer took the bucket prefix this log ships to (or the
    /// bucket diverges): this writer refuses every append.
    #[error("fenced: {0}")]
    Fenced(String),

    /// Shipping to the bucket failed or timed out (strict replication).
    #[error("replication: {0}")]
    Replication(String),

    #[error("invalid configuration: {0}")]
    /// Options that cannot work together, named.
    Config(String),

    /// No checkpoint has this id (sharded log).
    #[error("no checkpoint named {0:?}")]
    CheckpointNotFound(String),

    /// A checkpoint id walfs cannot store: empty or over 65535 bytes.
    #[error("invalid checkpoint id: {0}")]
    InvalidCheckpointId(String),

    /// A record of `checkpoints.log` that fails its checks.
    #[error("checkpoints.log is damaged at byte {offset}: {reason}")]
    CheckpointCorrupted {
        /// Byte offset of the record in `checkpoints.log`.
        offset: u64,
        /// What is wrong there, and what to do.
        reason: String,
    },

    /// A sharded log opened with another shard count than it was made with:
    /// keys would route to other shards.
    #[error("shard count mismatch: opened with {expected} shards, but the log was made with {found}; open it with {found} (changing the count needs a migration)")]
    ShardCountMismatch {
        /// The count asked for.
        expected: u16,
        /// The count the log holds.
        found: u16,
    },

    /// A sharded log without any checkpoint.
    #[error("no checkpoints yet")]
    NoCheckpoints,
}

impl Error {
    /// Whether this is a system call's failure with `errno`.
    pub fn errno_is(&self, errno: i32) -> bool {
        matches!(self, Error::Io(e) if e.raw_os_error() == Some(errno))
    }
}
