//! The seam between the mounted tree and the log behind it.
//!
//! The file kinds read and write only through [`LogSource`]: streams, ids,
//! sizes, ranges of entry bytes and of segment bytes, appends, and waiting
//! for new entries. The local [`Wal`] implements it; a read-only source
//! (a log in a bucket) implements the reads and answers every write with
//! [`Error::ReadOnly`], and the file kinds need no change.

use crate::{CompressionType, Result, SegmentInfo, StreamInfo, SyncMode, Wal};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// Random access to the bytes of one segment, as served by `segments/`.
pub trait SegmentBytes: Send + Sync {
    /// Reads at most `buf.len()` bytes at `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    /// The local file holding the bytes, if there is one (the kernel may
    /// then read a sealed segment itself: FUSE passthrough).
    fn file(&self) -> Option<&std::fs::File> {
        None
    }
}

impl SegmentBytes for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn file(&self) -> Option<&std::fs::File> {
        Some(self)
    }
}

/// What the mounted tree needs of a log.
pub trait LogSource: Send + Sync {
    /// The names of all streams, sorted.
    fn streams(&self) -> Vec<String>;
    /// Whether `stream` exists.
    fn has_stream(&self, stream: &str) -> bool;
    /// A summary of `stream` (what `stat` shows).
    fn stream_info(&self, stream: &str) -> Option<StreamInfo>;
    /// The first retained id.
    fn first_id(&self, stream: &str) -> u64;
    /// One past the last readable id.
    fn next_id(&self, stream: &str) -> u64;
    /// One past the last id already published to readers, with no side
    /// effect (next_id may first make buffered entries readable).
    fn published_id(&self, stream: &str) -> u64 {
        self.next_id(stream)
    }
    /// When `stream`'s entries last changed (None: not known; the mount's
    /// start is shown).
    fn modified(&self, _stream: &str) -> Option<std::time::SystemTime> {
        None
    }
    /// When a segment's bytes last changed.
    fn segment_modified(
        &self,
        _stream: &str,
        _segment: &SegmentInfo,
    ) -> Option<std::time::SystemTime> {
        None
    }
    /// The sync mode and compression of the process writing, for `stat`.
    fn modes(&self) -> Option<(SyncMode, CompressionType)>;
    /// The size of entry `id`, None if it is not retained or not yet written.
    fn entry_len(&self, stream: &str, id: u64) -> Result<Option<u64>>;
    /// Bytes `[offset, offset + size)` of entry `id`, clipped to its end.
    fn read_entry(
        &self,
        stream: &str,
        id: u64,
        offset: u64,
        size: usize,
    ) -> Result<Option<Vec<u8>>>;
    /// The retained segments of `stream`.
    fn segments(&self, stream: &str) -> Vec<SegmentInfo>;
    /// Opens a segment's bytes for reading.
    fn open_segment(&self, stream: &str, segment: &SegmentInfo) -> Result<Box<dyn SegmentBytes>>;
    /// (segment start id, entry bytes) of every retained segment: the layout
    /// of the concatenated entries (`log`).
    fn segment_payloads(&self, stream: &str) -> Result<Vec<(u64, u64)>>;
    /// Appends to `out`, up to `max` bytes, the entry bytes of the segment
    /// starting at `segment`, from its entry byte `from` on.
    fn read_payload(
        &self,
        stream: &str,
        segment: u64,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()>;
    /// Blocks until anything changes in any stream past `seen`, or
    /// `timeout` passes; returns the new change counter.
    fn wait_any(&self, seen: u64, timeout: Duration) -> u64;
    /// The local directory the log lives in, for `statfs` (None if remote).
    fn local_root(&self) -> Option<&Path>;

    /// Appends entries atomically; durable on return unless async.
    fn append_batch(&self, stream: &str, entries: &[&[u8]]) -> Result<Range<u64>>;
    /// Makes everything appended to `stream` durable.
    fn sync(&self, stream: &str) -> Result<()>;
    /// Creates an empty stream.
    fn create_stream(&self, stream: &str) -> Result<()>;
    /// Deletes a stream and all its entries.
    fn delete_stream(&self, stream: &str) -> Result<()>;
    /// Frees whole sealed segments below the one holding `safe_id`.
    fn truncate(&self, stream: &str, safe_id: u64) -> Result<usize>;
}

impl LogSource for Wal {
    fn streams(&self) -> Vec<String> {
        Wal::streams(self)
    }
    fn modified(&self, stream: &str) -> Option<std::time::SystemTime> {
        Wal::modified(self, stream)
    }
    fn segment_modified(
        &self,
        stream: &str,
        segment: &SegmentInfo,
    ) -> Option<std::time::SystemTime> {
        if segment.sealed {
            self.storage().modified(&segment.path)
        } else {
            Wal::modified(self, stream)
        }
    }
    fn has_stream(&self, stream: &str) -> bool {
        Wal::has_stream(self, stream)
    }
    fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        Wal::stream_info(self, stream)
    }
    fn first_id(&self, stream: &str) -> u64 {
        Wal::first_id(self, stream)
    }
    fn next_id(&self, stream: &str) -> u64 {
        Wal::next_id(self, stream)
    }
    fn published_id(&self, stream: &str) -> u64 {
        Wal::published_id(self, stream)
    }
    fn modes(&self) -> Option<(SyncMode, CompressionType)> {
        let o = self.options();
        Some((o.sync_mode, o.compression))
    }
    fn entry_len(&self, stream: &str, id: u64) -> Result<Option<u64>> {
        Wal::entry_len(self, stream, id)
    }
    fn read_entry(
        &self,
        stream: &str,
        id: u64,
        offset: u64,
        size: usize,
    ) -> Result<Option<Vec<u8>>> {
        Wal::read_entry_range(self, stream, id, offset, size)
    }
    fn segments(&self, stream: &str) -> Vec<SegmentInfo> {
        Wal::segments(self, stream)
    }
    fn open_segment(&self, _stream: &str, segment: &SegmentInfo) -> Result<Box<dyn SegmentBytes>> {
        Ok(Box::new(std::fs::File::open(&segment.path)?))
    }
    fn segment_payloads(&self, stream: &str) -> Result<Vec<(u64, u64)>> {
        Wal::segment_payloads(self, stream)
    }
    fn read_payload(
        &self,
        stream: &str,
        segment: u64,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        Wal::read_payload(self, stream, segment, from, max, out)
    }
    fn wait_any(&self, seen: u64, timeout: Duration) -> u64 {
        Wal::wait_any(self, seen, timeout)
    }
    fn local_root(&self) -> Option<&Path> {
        Some(self.root())
    }
    fn append_batch(&self, stream: &str, entries: &[&[u8]]) -> Result<Range<u64>> {
        Wal::append_batch(self, stream, entries)
    }
    fn sync(&self, stream: &str) -> Result<()> {
        Wal::sync(self, stream)
    }
    fn create_stream(&self, stream: &str) -> Result<()> {
        Wal::create_stream(self, stream)
    }
    fn delete_stream(&self, stream: &str) -> Result<()> {
        Wal::delete_stream(self, stream)
    }
    fn truncate(&self, stream: &str, safe_id: u64) -> Result<usize> {
        Wal::truncate(self, stream, safe_id)
    }
}
