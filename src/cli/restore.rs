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
}

pub fn run(a: RestoreArgs) -> Result<i32, Failure> {
    walfs::replica::BucketUrl::parse(&a.url).map_err(fail)?;
    let started = Instant::now();
    let mut progress = Progress::new("restoring", a.progress);
    let mut opts = walfs::ReplicaOptions::new(a.url.clone());
    opts.timeout = std::time::Duration::from_secs_f64(a.timeout);
    let r = walfs::replica::restore(&opts, &a.data, &mut |d, t| progress.update(d, t))?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "restored {}, {}, {} ({} from {}, epoch {}) into {} in {secs:.1}s ({}/s); `walfs verify` finds it sound",
        super::count(r.streams as u64, "stream", "streams"),
        super::count(r.segments as u64, "segment", "segments"),
        super::count(r.entries, "entry", "entries"),
        super::count(r.bytes, "byte", "bytes"),
        super::count(r.objects as u64, "object", "objects"),
        r.epoch,
        a.data.display(),
        indicatif::HumanBytes((r.bytes as f64 / secs.max(1e-3)) as u64),
    );
    Ok(0)
}
