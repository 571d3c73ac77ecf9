//! `walfs truncate`: free sealed segments below an id.

use super::{fail, need_stream, Common, Failure};
use clap::Args;
use walfs::sharded::{self, ShardCount};
use walfs::{Wal, WalOptions};

#[derive(Args)]
pub struct TruncateArgs {
    #[command(flatten)]
    common: Common,
    /// Free segments holding only ids below the segment of this id.
    #[arg(long, value_parser = super::entry_id)]
    before: u64,
}

pub fn run(a: TruncateArgs) -> Result<i32, Failure> {
    if let Some(url) = super::bucket_url(&a.common.data) {
        walfs::replica::BucketUrl::parse(&url).map_err(fail)?;
        let n = walfs::replica::check::truncate_bucket(
            &walfs::ReplicaOptions::new(url.clone()),
            &a.common.stream,
            a.before,
        )?;
        println!(
            "removed {n} segment(s) of stream {} from {url}",
            a.common.stream
        );
        return Ok(0);
    }
    super::need_log(&a.common.data)?;
    let wal = Wal::new(WalOptions::new(&a.common.data))?;
    need_stream(&wal, &a.common.stream)?;
    // A shard of a sharded log keeps what its checkpoints name.
    let count = match sharded::detect(&a.common.data)? {
        Some(ShardCount::Exact(n)) if sharded::shard_number(&a.common.stream).is_some() => Some(n),
        _ => None,
    };
    let Some(count) = count else {
        let n = wal.truncate(&a.common.stream, a.before)?;
        let info = wal.stream_info(&a.common.stream).expect("checked");
        println!("freed {n} segment(s); first id is now {}", info.first_id);
        wal.close()?;
        return Ok(0);
    };
    let sw = sharded::ShardedWal::from_wal(wal, count)?;
    let (n, held) = sw.truncate_shard(&a.common.stream, a.before)?;
    let info = sw.inner().stream_info(&a.common.stream).expect("checked");
    println!("freed {n} segment(s); first id is now {}", info.first_id);
    if let Some(id) = held {
        println!(
            "held back by checkpoint {:?}, which names ids from there on: `walfs checkpoint compact` releases it",
            sharded::show_id(&id)
        );
    }
    sw.inner().sync_all()?;
    Ok(0)
}
