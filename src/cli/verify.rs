//! `walfs verify`: every frame checked; exit 0 only for a sound log.

use super::{fail, Failure};
use clap::Args;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use walfs::RealStorage;

#[derive(Args)]
pub struct VerifyArgs {
    /// The data directory.
    data: PathBuf,
    /// Show progress on standard error (default: when it is a terminal).
    #[arg(long)]
    progress: bool,
}

pub fn run(a: VerifyArgs) -> Result<i32, Failure> {
    if !a.data.is_dir() {
        return Err(fail(format!(
            "{}: no such data directory",
            a.data.display()
        )));
    }
    let show = a.progress || io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut progress = |done: u64, total: u64| {
        if show && (last.elapsed() > Duration::from_millis(500) || done == total) {
            last = Instant::now();
            eprint!("\rverifying: {} of {} MiB", done >> 20, total >> 20);
        }
    };
    let report = walfs::verify(&RealStorage, &a.data, &mut progress)?;
    if show {
        eprintln!();
    }
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
