//! The mount: a log shown as files. `view` is the tree as plain Rust,
//! `fuse` the thin fuser glue, `daemon` the process around it.

pub mod daemon;
pub mod fuse;
pub mod names;
pub mod view;

pub use daemon::{mount, MountConfig};
pub use view::View;
