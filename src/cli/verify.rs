//! `walfs verify`: every frame checked; exit 0 only for a sound log.

use super::{fail, Failure, Progress};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use walfs::RealStorage;

#[derive(Args)]
pub struct VerifyArgs {
    /// The data directory, or s3://BUCKET/PREFIX: every object checked
    /// against the manifest, every frame's crc.
    data: PathBuf,
    /// Print progress lines on standard error even when it is not a
    /// terminal (on a terminal a progress bar is always shown).
    #[arg(long)]
    progress: bool,
}

pub fn run(a: VerifyArgs) -> Result<i32, Failure> {
    let bucket = super::bucket_url(&a.data);
    if bucket.is_none() && !a.data.is_dir() {
        return Err(fail(format!(
            "{}: no such data directory",
            a.data.display()
        )));
    }
    let started = Instant::now();
    let mut progress = Progress::new("verifying", a.progress);
    let report = match &bucket {
        Some(url) => {
            walfs::replica::BucketUrl::parse(url).map_err(super::fail)?;
            walfs::replica::check::verify_bucket(
                &walfs::ReplicaOptions::new(url.clone()),
                &mut |d, t| progress.update(d, t),
            )?
        }
        None => walfs::verify(&RealStorage, &a.data, &mut |d, t| progress.update(d, t))?,
    };
    progress.finish();
    for f in &report.faults {
        println!("{f}");
    }
    eprintln!(
        "{} streams, {} segments, {} frames, {} entries, {} bytes checked in {:.1}s: {}",
        report.streams,
        report.segments,
        report.frames,
        report.entries,
        report.bytes,
        started.elapsed().as_secs_f64(),
        if report.is_sound() {
            "sound".to_string()
        } else {
            format!("{} fault(s)", report.faults.len())
        }
    );
    Ok(if report.is_sound() { 0 } else { 1 })
}
