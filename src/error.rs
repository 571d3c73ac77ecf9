//! The one error type of the engine. Corruption always carries where it is.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

/// Where a fault sits: stream, segment file and byte offset inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub stream: String,
    pub segment: String,
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
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// Bytes on disk that are not a valid log: a bad magic, crc, length or id.
    #[error("corruption in {location}: {reason}")]
    Corruption { location: Location, reason: String },

    /// Structural damage that is not tied to one frame (a missing segment,
    /// an unreadable segments.idx or head.state).
    #[error("damaged stream {stream}: {reason}")]
    Damaged { stream: String, reason: String },

    #[error("invalid stream name {0:?}: use 1-255 bytes of [A-Za-z0-9._-], not \".\" or \"..\"")]
    InvalidStreamName(String),

    #[error("no such stream: {0}")]
    NoSuchStream(String),

    #[error("stream already exists: {0}")]
    StreamExists(String),

    #[error("record too large: {size} bytes (limit {limit})")]
    TooLarge { size: u64, limit: u64 },

    #[error("the data directory {path} is locked by another process{}", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, holder: Option<u32> },

    /// A write or fsync failed earlier: the stream refuses writes until the
    /// log is reopened, because the kernel may have dropped the dirty pages.
    #[error(
        "stream {stream} refuses writes after an earlier I/O failure ({cause}); reopen the log"
    )]
    Poisoned { stream: String, cause: String },

    #[error("the log is open read-only")]
    ReadOnly,

    #[error("invalid configuration: {0}")]
    Config(String),
}
