//! `walfs repair`: cut torn tails, rebuild metadata, verify; never drop an
//! intact entry unless asked.

use super::{Failure, Progress};
use clap::Args;
use std::path::PathBuf;
use walfs::{CorruptionPolicy, RealStorage, Wal, WalOptions};

#[derive(Args)]
pub struct RepairArgs {
    /// The data directory.
    data: PathBuf,
    /// Also cut each active segment at its first damaged frame, dropping the
    /// intact entries after it (their ids are then given to new entries).
    /// The whole segment is first copied aside to `<segment>.damaged`.
    /// Without this flag, repair never drops an intact entry.
    #[arg(long)]
    discard_damaged: bool,
}

pub fn run(a: RepairArgs) -> Result<i32, Failure> {
    super::need_log(&a.data)?;
    let mut o = WalOptions::new(&a.data);
    o.on_corruption = CorruptionPolicy::Truncate;
    // A writable open cuts torn tails and rebuilds metadata; it keeps
    // corruption that intact frames follow.
    Wal::new(o.clone())?.close()?;
    let mut progress = Progress::new("checking", false);
    let mut report = walfs::verify(&RealStorage, &a.data, &mut |d, t| progress.update(d, t))?;
    progress.finish();
    if a.discard_damaged && !report.is_sound() {
        let mut ro = o.clone();
        ro.read_only = true;
        let wal = Wal::new(ro)?;
        let mut cuts: Vec<(PathBuf, u64)> = Vec::new();
        for f in &report.faults {
            let Some(active) = wal.segments(&f.location.stream).pop() else {
                continue;
            };
            let is_active = active.path.file_name().and_then(|n| n.to_str())
                == Some(f.location.segment.as_str());
            if is_active && !cuts.iter().any(|(p, _)| *p == active.path) {
                cuts.push((active.path, f.location.offset));
            }
        }
        drop(wal);
        for (path, at) in &cuts {
            let aside = path.with_extension("wal.damaged");
            std::fs::copy(path, &aside)?;
            std::fs::File::open(&aside)?.sync_all()?;
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.set_len(*at)?;
            f.sync_all()?;
            // walfs.synced spoke of bytes past the cut: the open below
            // records the segment as it is now.
            if let Some(dir) = path.parent() {
                match std::fs::remove_file(dir.join(walfs::format::SYNCED)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            eprintln!(
                "cut {} at byte {at}; the whole segment was kept as {}",
                path.display(),
                aside.display()
            );
        }
        Wal::new(o)?.close()?;
        let mut progress = Progress::new("checking again", false);
        report = walfs::verify(&RealStorage, &a.data, &mut |d, t| progress.update(d, t))?;
        progress.finish();
    }
    for f in &report.faults {
        println!("{f}");
    }
    if report.is_sound() {
        eprintln!("repaired: the log is sound");
        Ok(0)
    } else {
        let sealed = report.faults.iter().any(|f| {
            let active = walfs::format::parse_segment_name(&f.location.segment).is_some_and(|s| {
                std::fs::read_dir(a.data.join(&f.location.stream)).is_ok_and(|d| {
                    !d.flatten().any(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(walfs::format::parse_segment_name)
                            .is_some_and(|o| o > s)
                    })
                })
            });
            !active
        });
        let restore = "the damaged entries can only come back from a copy: `walfs restore s3://BUCKET/PREFIX DIR` if the log ships to a bucket (or a follower's segments/), else a backup of the segment files; put the segment file back with the log unmounted";
        eprintln!(
            "{} remain{}: the damaged entries read as errors and every other entry is intact; {}",
            super::count(report.faults.len() as u64, "fault", "faults"),
            if report.faults.len() == 1 { "s" } else { "" },
            match (sealed, a.discard_damaged) {
                (true, _) => restore.to_string(),
                (false, true) => restore.to_string(),
                (false, false) => format!("`walfs repair --discard-damaged` cuts active segments at their damage, dropping the intact entries after it (their ids then go to new entries); or {restore}"),
            }
        );
        Ok(1)
    }
}
