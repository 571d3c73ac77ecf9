//! `walfs append`: entries from arguments or standard input.

use super::{write_options, Common, Failure, WriteOpts};
use clap::Args;
use std::io::{self, BufRead};
use walfs::{Error, Wal};

#[derive(Args)]
pub struct AppendArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    write: WriteOpts,
    /// Do not add a newline to each ARG.
    #[arg(short = 'n')]
    no_newline: bool,
    /// Print the id range given to the entries (`FIRST-LAST`).
    #[arg(long)]
    ids: bool,
    /// Entries; read lines from standard input when none are given.
    entries: Vec<String>,
}

pub fn run(a: AppendArgs) -> Result<i32, Failure> {
    // Checked before the data directory is made: a refused append leaves
    // no trace.
    if !walfs::format::validate_stream_name(&a.common.stream) {
        return Err(Error::InvalidStreamName(a.common.stream.clone()).into());
    }
    let s = &a.common.stream;
    let exists = a.common.data.join(s).is_dir();
    if let Some(why) = walfs::format::refuse_new_stream_name(s).filter(|_| !exists) {
        return Err(super::fail(why));
    }
    let wal = Wal::new(write_options(&a.common.data, &a.write))?;
    let report = |r: std::ops::Range<u64>| {
        if a.ids && !r.is_empty() {
            println!("{}-{}", r.start, r.end - 1);
        }
    };
    if !a.entries.is_empty() {
        let owned: Vec<Vec<u8>> = a
            .entries
            .iter()
            .map(|e| {
                let mut v = e.clone().into_bytes();
                if !a.no_newline {
                    v.push(b'\n');
                }
                v
            })
            .collect();
        let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        report(wal.append_batch(s, &refs)?);
    } else {
        // Lines are committed in batches of what one read brings.
        let mut input = io::BufReader::with_capacity(1 << 20, io::stdin().lock());
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        loop {
            let mut line = Vec::new();
            let n = input.read_until(b'\n', &mut line)?;
            if n > 0 {
                bytes += n;
                pending.push(line);
            }
            if (n == 0 || bytes >= 1 << 20 || input.buffer().is_empty()) && !pending.is_empty() {
                let refs: Vec<&[u8]> = pending.iter().map(Vec::as_slice).collect();
                report(wal.append_batch(s, &refs)?);
                pending.clear();
                bytes = 0;
            }
            if n == 0 {
                break;
            }
        }
    }
    wal.close()?;
    Ok(0)
}
