//! `walfs mount`: parses the mount options and runs the daemon.

use super::{fail, CompressionArg, Failure, WriteOpts};
use clap::Args;
use std::path::PathBuf;
use walfs::CompressionType;

#[derive(Args)]
pub struct MountArgs {
    /// The data directory (created if missing).
    data: PathBuf,
    /// An empty directory to mount on.
    mountpoint: PathBuf,
    /// The stream shown at the root of the mount.
    #[arg(long, short = 's', default_value = "default")]
    stream: String,
    #[command(flatten)]
    write: WriteOpts,
    /// Serve reads only.
    #[arg(long)]
    read_only: bool,
    /// FUSE worker threads (concurrent writers are group-committed).
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Let other users use the mount (kernel permission checks apply).
    #[arg(long)]
    allow_other: bool,
    /// Bytes of decoded frames cached for reads.
    #[arg(long, default_value_t = 64 << 20)]
    block_cache: u64,
}

pub fn run(a: MountArgs) -> Result<i32, Failure> {
    let cfg = walfs::mount::MountConfig {
        data: a.data,
        mountpoint: a.mountpoint,
        stream: a.stream,
        sync: a.write.sync.into(),
        compression: match a.write.compression {
            CompressionArg::None => CompressionType::None,
            CompressionArg::Lz4 => CompressionType::Lz4,
        },
        segment_size: a.write.segment_size,
        read_only: a.read_only,
        threads: a.threads,
        allow_other: a.allow_other,
        block_cache: a.block_cache,
    };
    walfs::mount::mount(cfg).map_err(|e| fail(e.0))?;
    Ok(0)
}
