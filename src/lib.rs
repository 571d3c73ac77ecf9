//! walfs: a durable, checksummed write-ahead log, byte-compatible with the
//! data directories of ironwal 0.6, with group commit, indexed reads, a
//! follow API and a verifier.
//!
//! ```no_run
//! use walfs::{Wal, WalOptions};
//! let wal = Wal::new(WalOptions::new("./data"))?;
//! let id = wal.append("orders", b"order 42 created")?; // durable on return
//! assert_eq!(wal.get("orders", id)?.as_deref(), Some(&b"order 42 created"[..]));
//! # Ok::<(), walfs::Error>(())
//! ```

mod bufpool;
pub mod cache;
mod commit;
mod error;
pub mod format;
pub mod index;
mod iter;
pub mod metrics;
pub mod mount;
mod open;
mod options;
pub mod recovery;
pub mod replica;
mod retain;
pub mod segment;
pub mod sharded;
pub mod shipping;
pub mod source;
pub mod storage;
mod stream;
mod verify;
mod wal;

pub use error::{Error, Location, Result};
pub use iter::{WalIdIterator, WalIterator};
pub use options::{CompressionType, CorruptionPolicy, ReadStrategy, SyncMode, WalOptions};
pub use retain::Retention;
pub use shipping::{ReplicaInfo, ReplicaMode, ReplicaOptions};
pub use storage::sim::{CrashMode, SimDisk};
pub use storage::{RealStorage, Storage};
pub use stream::StreamInfo;
pub use verify::{verify, FaultKind, VerifyFault, VerifyReport};
pub use wal::{SegmentInfo, TxnWriter, Wal};

/// The README's examples compile.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
