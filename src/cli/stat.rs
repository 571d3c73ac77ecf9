//! `walfs stat`: a stream's state.

use super::{fail, need_stream, open_read, Common, Failure};
use clap::Args;

#[derive(Args)]
pub struct StatArgs {
    #[command(flatten)]
    common: Common,
    /// Also show what the bucket the log ships to holds of the stream
    /// (s3://BUCKET/PREFIX): replicated_id, and how far it is behind.
    #[arg(long, value_name = "URL")]
    replicate: Option<String>,
}

pub fn run(a: StatArgs) -> Result<i32, Failure> {
    if let Some(url) = super::bucket_url(&a.common.data) {
        use walfs::source::LogSource;
        let b = super::open_bucket(&url)?;
        super::need_bucket_stream(&b, &url, &a.common.stream)?;
        let info = b.stream_info(&a.common.stream).expect("checked");
        print!("{}", info.to_text(None));
        return Ok(0);
    }
    let wal = open_read(&a.common.data)?;
    need_stream(&wal, &a.common.stream)?;
    let mut info = wal.stream_info(&a.common.stream).expect("checked");
    if let Some(url) = &a.replicate {
        let m = walfs::replica::read_manifest(&walfs::ReplicaOptions::new(url.clone()))
            .map_err(|e| fail(e.to_string()))?;
        let (replicated_id, updated_ms) = m.as_ref().map_or((0, 0), |m| {
            (
                m.streams.get(&a.common.stream).map_or(0, |s| s.next_id),
                m.updated_ms,
            )
        });
        let behind = info.durable_id.saturating_sub(replicated_id);
        info.replication = Some(walfs::ReplicaInfo {
            replicated_id,
            state: match (&m, behind) {
                (None, _) => "not shipped (the bucket holds no manifest)".into(),
                (Some(_), 0) => "ok".into(),
                (Some(_), n) => format!("behind by {n} entries"),
            },
            lag_ms: if behind == 0 || m.is_none() {
                0
            } else {
                walfs::replica::manifest::now_ms().saturating_sub(updated_ms)
            },
            url: url.clone(),
            role: "offline".into(),
            lease_age_ms: None,
        });
    }
    print!("{}", info.to_text(None));
    Ok(0)
}
