//! `walfs get`: one entry.

use super::{broken_pipe, fail, need_stream, open_read, Common, Failure};
use clap::Args;
use std::io::{self, Write};

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    common: Common,
    /// The entry's id.
    #[arg(value_parser = super::entry_id)]
    id: u64,
}

pub fn run(a: GetArgs) -> Result<i32, Failure> {
    let entry = match super::bucket_url(&a.common.data) {
        Some(url) => {
            use walfs::source::LogSource;
            let b = super::open_bucket(&url)?;
            super::need_bucket_stream(&b, &url, &a.common.stream)?;
            b.read_entry(&a.common.stream, a.id, 0, usize::MAX)?
        }
        None => {
            let wal = open_read(&a.common.data)?;
            need_stream(&wal, &a.common.stream)?;
            wal.get(&a.common.stream, a.id)?
        }
    };
    match entry {
        Some(e) => {
            io::stdout()
                .lock()
                .write_all(&e)
                .or_else(|e| broken_pipe(e).map(|_| ()))?;
            Ok(0)
        }
        None => Err(fail(format!(
            "no entry {} in stream '{}'",
            a.id, a.common.stream
        ))),
    }
}
