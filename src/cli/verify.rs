//! `walfs verify`: every frame checked; exit 0 only for a sound log.

use super::{Failure, Progress};
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
    if bucket.is_none() {
        super::need_log(&a.data)?;
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
    let checkpoint_faults = match &bucket {
        Some(_) => 0,
        None => verify_checkpoints(&a.data)?,
    };
    eprintln!(
        "{}, {}, {}, {}, {} checked in {:.1}s: {}",
        super::count(report.streams as u64, "stream", "streams"),
        super::count(report.segments as u64, "segment", "segments"),
        super::count(report.frames, "frame", "frames"),
        super::count(report.entries, "entry", "entries"),
        super::count(report.bytes, "byte", "bytes"),
        started.elapsed().as_secs_f64(),
        if report.is_sound() && checkpoint_faults == 0 {
            "sound".to_string()
        } else {
            super::count(
                (report.faults.len() + checkpoint_faults) as u64,
                "fault",
                "faults",
            )
        }
    );
    Ok(if report.is_sound() && checkpoint_faults == 0 {
        0
    } else {
        1
    })
}

/// The checkpoint log of a sharded log: every record's magic, crc and
/// shard count. Prints each fault; returns how many.
fn verify_checkpoints(data: &std::path::Path) -> Result<usize, Failure> {
    use walfs::sharded::checkpoints::{scan, LOG_FILE};
    let path = data.join(LOG_FILE);
    if !path.exists() {
        return Ok(0);
    }
    let s = scan(&std::fs::read(&path)?);
    let mut faults = 0;
    for (start, end, why) in &s.damage {
        let what = if Some(*start) == s.torn_at {
            "a torn last record (a checkpoint whose create never returned; the next writable open cuts it)"
        } else {
            "damaged bytes (the checkpoints in them are lost; every other one stays listed)"
        };
        println!(
            "{LOG_FILE} at byte {start}: {why}, {} bytes: {what}",
            end - start
        );
        faults += 1;
    }
    if let Some((_, _, first)) = s.records.first() {
        for (offset, _, r) in &s.records {
            if r.offsets.len() != first.offsets.len() {
                println!(
                    "{LOG_FILE} at byte {offset}: checkpoint {:?} has {} shards, the first one {}",
                    walfs::sharded::show_id(&r.id),
                    r.offsets.len(),
                    first.offsets.len()
                );
                faults += 1;
            }
        }
    }
    eprintln!(
        "{LOG_FILE}: {} checkpoint record(s), {}",
        s.records.len(),
        if faults == 0 {
            "sound".to_string()
        } else {
            format!("{faults} fault(s)")
        }
    );
    Ok(faults)
}
