//! The mount: a log shown as files.
//!
//! - `tree`: the layout and inode numbering;
//! - `files/`: one module per kind of file (`append`, `record`, `log`,
//!   `stat`, `entries/`, `segments/`, `streams/`, the stream directory);
//! - `view`: dispatch from an operation to a kind, open handles, stopping;
//!   testable without FUSE;
//! - `source`: the seam to the log behind the view (the local `Wal` today);
//! - `errno`: the one mapping from engine errors to errnos;
//! - `fuse`: the thin fuser glue; `daemon`: the process around it.

mod backend;
mod config;
pub mod daemon;
pub mod errno;
mod files;
pub mod fuse;
mod http;
mod invalidate;
pub mod names;
mod passthrough;
mod retain;
pub mod slots;
/// The seam below the mount and the replica layer (`crate::source`).
pub use crate::source;
pub mod tree;
pub mod view;

pub use daemon::{mount, MountConfig};
pub use source::LogSource;
pub use view::View;
