//! `walfs restore`: a data directory rebuilt from a bucket.

use super::{fail, Failure, Progress};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct RestoreArgs {
    /// The bucket address the log was shipped to (s3://BUCKET/PREFIX).
    url: String,
    /// The data directory to create (absent or empty).
    data: PathBuf,
    /// Print progress lines on standard error even when it is not a
    /// terminal (on a terminal a progress bar is always shown).
    #[arg(long)]
    progress: bool,
    /// How long each request may take, retries included (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = super::mount::seconds)]
    timeout: f64,
    /// Restore the log as it stood when ID was its next id: ids below ID
    /// (ID must start a batch). One stream: --stream, or the only one.
    /// The result is a new history: ship it to another prefix.
    #[arg(long, value_name = "ID", value_parser = super::entry_id, conflicts_with = "to_time")]
    to_id: Option<u64>,
    /// Restore the log as it stood at TIME (RFC 3339: 2026-12-06T16:00:00Z;
    /// without a zone, UTC): the ids shipped before it, by the times the
    /// manifest keeps of its rounds (to within a second, or a round when
    /// rounds are slower). One stream, as --to-id; the id is printed.
    #[arg(long, value_name = "TIME", value_parser = super::cat::time)]
    to_time: Option<std::time::SystemTime>,
    /// With --to-id or --to-time: the stream to restore (the only one if
    /// omitted).
    #[arg(long, short = 's', allow_hyphen_values = true)]
    stream: Option<String>,
}

pub fn run(a: RestoreArgs) -> Result<i32, Failure> {
    walfs::replica::BucketUrl::parse(&a.url).map_err(fail)?;
    let started = Instant::now();
    let mut progress = Progress::new("restoring", a.progress);
    let mut opts = walfs::ReplicaOptions::new(a.url.clone());
    opts.timeout = std::time::Duration::from_secs_f64(a.timeout);
    use walfs::replica::{RestorePoint, RestoreTo};
    let to = match (a.to_id, a.to_time) {
        (Some(id), _) => Some(RestoreTo::Id(id)),
        (None, Some(t)) => Some(RestoreTo::Time(t)),
        (None, None) if a.stream.is_some() => {
            return Err(fail(
                "--stream names the stream to cut: give --to-id or --to-time with it (a whole restore takes every stream)",
            ))
        }
        (None, None) => None,
    };
    let point = to.map(|to| RestorePoint {
        stream: a.stream.clone(),
        to,
    });
    let r = walfs::replica::restore_to(&opts, &a.data, point.as_ref(), &mut |d, t| {
        progress.update(d, t)
    })?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "restored {}, {}, {}{} ({} from {}, epoch {}) into {} in {secs:.1}s ({}/s); `walfs verify` finds it sound",
        super::count(r.streams as u64, "stream", "streams"),
        super::count(r.segments as u64, "segment", "segments"),
        super::count(r.entries, "entry", "entries"),
        r.to_id
            .map(|id| format!(
                " up to id {id}{} (a new history: ship it to another prefix)",
                a.to_time
                    .map(|t| format!(", the first shipped at or after {}", humantime::format_rfc3339_seconds(t)))
                    .unwrap_or_default()
            ))
            .unwrap_or_default(),
        super::count(r.bytes, "byte", "bytes"),
        super::count(r.objects as u64, "object", "objects"),
        r.epoch,
        a.data.display(),
        indicatif::HumanBytes((r.bytes as f64 / secs.max(1e-3)) as u64),
    );
    Ok(0)
}
