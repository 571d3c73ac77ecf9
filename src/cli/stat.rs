//! `walfs stat`: a stream's state.

use super::{need_stream, open_read, Common, Failure};
use clap::Args;

#[derive(Args)]
pub struct StatArgs {
    #[command(flatten)]
    common: Common,
}

pub fn run(a: StatArgs) -> Result<i32, Failure> {
    let wal = open_read(&a.common.data)?;
    need_stream(&wal, &a.common.stream)?;
    let info = wal.stream_info(&a.common.stream).expect("checked");
    print!("{}", info.to_text(None));
    Ok(0)
}
