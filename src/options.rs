//! Options and their defaults (the same names and defaults as ironwal 0.6).

use std::path::PathBuf;

/// When an append is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every `append` and `append_batch` returns only once its entries are
    /// on disk. Concurrent appenders share one fdatasync (group commit).
    Strict,
    /// `append_batch` (and a committed transaction) is durable on return;
    /// single `append`s are handed to the kernel only.
    BatchOnly,
    /// Nothing is synced automatically; `Wal::sync` forces it.
    Async,
}

/// How sealed segments are read. The growing active segment is always read
/// with pread, never mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStrategy {
    /// pread into a buffer.
    StandardIo,
    /// A read-only mapping of each sealed segment.
    Mmap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How new frames are stored.
pub enum CompressionType {
    /// Raw frames only.
    None,
    /// LZ4 frame format; batches under `min_compression_size`, or that do not
    /// shrink, are stored raw.
    Lz4,
}

/// What opening does with damage in the active segment that is followed by
/// valid frames. A torn tail (damage with nothing valid after it, the only
/// thing a crash leaves) is cut by a writable open under both policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptionPolicy {
    /// Open anyway: the damaged bytes are kept, every intact entry before
    /// and after them stays readable, the damaged ids answer with
    /// [`Error::Corruption`](crate::Error::Corruption), and appends continue
    /// after the last valid frame. Nothing intact is ever dropped. (The name
    /// is ironwal's; only a torn tail is truncated.)
    Truncate,
    /// Refuse to open with the corruption's location; `walfs verify` names
    /// it, `walfs repair --discard-damaged` is the explicit way past it.
    Error,
}

#[derive(Debug, Clone)]
/// How a log is opened and written.
pub struct WalOptions {
    /// The data directory; one subdirectory per stream.
    pub root_path: PathBuf,
    /// A segment is sealed once a batch would take it past this size.
    pub max_segment_size: u64,
    /// A segment is sealed once it holds this many entries.
    pub max_entries_per_segment: u64,
    /// Open write descriptors kept across streams (LRU).
    pub max_open_segments: usize,
    /// Open read descriptors of sealed segments kept (LRU).
    pub max_open_read_segments: usize,
    /// Async mode: appends collect in memory and go to the kernel in writes
    /// of this size (or every 10 ms, or when read, followed or synced); a
    /// frame at least this large is written by the flusher thread while its
    /// append returns. Other modes write each frame with one pwrite.
    pub write_buffer_size: usize,
    /// Size of the reads used by iterators and scans.
    pub read_buffer_size: usize,
    /// Bytes of decoded frames to keep (LRU); None disables the cache.
    pub block_cache_size: Option<u64>,
    /// When appends are durable.
    pub sync_mode: SyncMode,
    /// How new frames are stored.
    pub compression: CompressionType,
    /// How sealed segments are read.
    pub read_strategy: ReadStrategy,
    /// What opening does with corruption in the active segment.
    pub on_corruption: CorruptionPolicy,
    /// Batches smaller than this are stored raw even with `Lz4`.
    pub min_compression_size: usize,
    /// Where `truncate` moves freed segments (`{archive_path}/{stream}/`)
    /// instead of deleting them; `restore_archived` moves them back.
    pub archive_path: Option<PathBuf>,
    /// Open without the directory lock and never write: recovery reports
    /// but does not cut, appends fail with `Error::ReadOnly`.
    pub read_only: bool,
    /// Ship every stream to an S3-compatible bucket (ignored read-only).
    pub replicate: Option<crate::shipping::ReplicaOptions>,
    /// Open as a standby: appends fail with `Error::ReadOnly` and nothing
    /// ships until the standby (`replica::standby`, a layer above) promotes
    /// the log; meanwhile it applies the bucket's bytes to it.
    pub standby: bool,
    /// Retention: sealed segments are freed, oldest first, while a stream
    /// holds more bytes than this ([`Wal::apply_retention`](crate::Wal::apply_retention)).
    pub retain_bytes: Option<u64>,
    /// Retention: sealed segments last written longer ago than this are
    /// freed ([`Wal::apply_retention`](crate::Wal::apply_retention)).
    pub retain_age: Option<std::time::Duration>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            root_path: PathBuf::from("./wal_data"),
            max_segment_size: 64 * 1024 * 1024,
            max_entries_per_segment: u64::MAX,
            max_open_segments: 128,
            max_open_read_segments: 128,
            write_buffer_size: 64 * 1024,
            read_buffer_size: 128 * 1024,
            block_cache_size: None,
            sync_mode: SyncMode::Strict,
            compression: CompressionType::None,
            read_strategy: ReadStrategy::StandardIo,
            on_corruption: CorruptionPolicy::Truncate,
            min_compression_size: 1024,
            archive_path: None,
            read_only: false,
            replicate: None,
            standby: false,
            retain_bytes: None,
            retain_age: None,
        }
    }
}

impl WalOptions {
    /// The defaults, with the data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        WalOptions {
            root_path: root.into(),
            ..Default::default()
        }
    }
}
