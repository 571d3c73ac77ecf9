//! `walfs cat`: entries concatenated, from an id on, optionally following.

use super::{broken_pipe, need_stream, open_read, Common, Failure};
use clap::Args;
use std::io::{self, Write};
use std::time::Duration;

#[derive(Args)]
pub struct CatArgs {
    #[command(flatten)]
    common: Common,
    /// First id to print (ids below the first retained one start there).
    #[arg(long, default_value = "0", value_parser = super::entry_id)]
    from: u64,
    /// Print only entries acknowledged at or after TIME (RFC 3339:
    /// 2026-12-06T16:00:00Z; without a zone, UTC), to within a second (on
    /// a bucket, the manifest's marks: to within a second or a round).
    #[arg(long, value_name = "TIME", value_parser = time)]
    since: Option<std::time::SystemTime>,
    /// Stop before this id, or before the entries acknowledged at TIME or
    /// later (as --since): with --follow, follow until then and end.
    #[arg(long, value_name = "ID|TIME", value_parser = point)]
    until: Option<Point>,
    /// Keep printing entries as they are appended (by any process).
    #[arg(long, short = 'f')]
    follow: bool,
}

/// Where --until stops.
#[derive(Clone, Copy)]
pub enum Point {
    Id(u64),
    Time(std::time::SystemTime),
}

pub(super) fn time(s: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?} is not a time ({e}): write RFC 3339, as in 2026-12-06T16:00:00Z")
    })
}

fn point(s: &str) -> Result<Point, String> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        super::entry_id(s).map(Point::Id)
    } else {
        time(s).map(Point::Time)
    }
}

pub fn run(a: CatArgs) -> Result<i32, Failure> {
    if let Some(url) = super::bucket_url(&a.common.data) {
        return from_bucket(&url, &a);
    }
    let data = &a.common.data;
    let s = &a.common.stream;
    // Where --until stops: a time still to come stops nothing yet.
    let until_in = |wal: &walfs::Wal| match a.until {
        Some(Point::Id(id)) => id,
        Some(Point::Time(t)) if std::time::SystemTime::now() < t => u64::MAX,
        Some(Point::Time(t)) => wal.id_at_time(s, t),
        None => u64::MAX,
    };
    let (mut next, mut until) = {
        let wal = open_read(data)?;
        let since = a.since.map_or(0, |t| wal.id_at_time(s, t));
        (a.from.max(since), until_in(&wal))
    };
    let mut out = io::stdout().lock();
    let mut seen = None;
    let mut damaged = 0u64;
    loop {
        // A time to stop at has come: resolve it (below) even if nothing
        // changed.
        if let Some(Point::Time(t)) = a.until {
            if until == u64::MAX && std::time::SystemTime::now() >= t {
                seen = None;
            }
        }
        // Another process may be writing: reopen (read-only, a scan of the
        // active segment) only when the stream's files changed.
        let now = fingerprint(&data.join(s));
        if seen.as_ref() != Some(&now) {
            seen = Some(now);
            let wal = open_read(data)?;
            until = until_in(&wal);
            if !a.follow {
                need_stream(&wal, s)?;
            }
            let mut it = wal.iter_with_ids(s, next)?;
            loop {
                let want = it.next_id();
                if want >= until {
                    break;
                }
                let e = match it.next_ref() {
                    None => break,
                    Some(Ok((id, _))) if id >= until => break,
                    Some(Ok((id, e))) => {
                        if let Err(e) = out.write_all(e) {
                            return broken_pipe(e);
                        }
                        next = id + 1;
                        continue;
                    }
                    Some(Err(e)) => e,
                };
                // Damaged entries: named, stepped over; the rest print.
                let after = it.next_id();
                if after <= want {
                    return Err(e.into());
                }
                let ids = if after - want == 1 {
                    format!("id {want}")
                } else {
                    format!("ids {want}..{after}")
                };
                eprintln!("walfs: cat: {ids} unreadable, skipped: {e}");
                damaged += after.min(until) - want;
                next = after;
            }
            if let Err(e) = out.flush() {
                return broken_pipe(e);
            }
        }
        if !a.follow || next >= until {
            if damaged > 0 {
                eprintln!(
                    "walfs: cat: {damaged} damaged entries were skipped (`walfs verify` names the damage)"
                );
                return Ok(1);
            }
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Names and sizes of a stream directory's files: what changes when
/// anything is appended, rotated or truncated.
fn fingerprint(dir: &std::path::Path) -> Vec<(std::ffi::OsString, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| (e.file_name(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `walfs cat s3://BUCKET/PREFIX`: entries read from the bucket; with
/// --follow, new ones as the writer ships them.
fn from_bucket(url: &str, a: &CatArgs) -> Result<i32, Failure> {
    use walfs::source::LogSource;
    let b = super::open_bucket(url)?;
    let s = &a.common.stream;
    if !a.follow {
        super::need_bucket_stream(&b, url, s)?;
    }
    let mut out = io::stdout().lock();
    // Where --until stops: a time still to come stops nothing yet.
    let until_in = |b: &walfs::replica::follow::BucketLog| -> Result<u64, Failure> {
        Ok(match a.until {
            Some(Point::Id(id)) => id,
            Some(Point::Time(t)) if std::time::SystemTime::now() < t => u64::MAX,
            Some(Point::Time(t)) => b.id_at_time(s, t)?,
            None => u64::MAX,
        })
    };
    let since = match a.since {
        Some(t) => b.id_at_time(s, t)?,
        None => 0,
    };
    let mut next = a.from.max(since).max(b.first_id(s));
    let mut seen = 0;
    let mut until = until_in(&b)?;
    loop {
        if until == u64::MAX && matches!(a.until, Some(Point::Time(_))) {
            until = until_in(&b)?;
        }
        let end = b.next_id(s).min(until);
        next = next.max(b.first_id(s));
        while next < end {
            if let Some(e) = b.read_entry(s, next, 0, usize::MAX)? {
                if let Err(e) = out.write_all(&e) {
                    return broken_pipe(e);
                }
            }
            next += 1;
        }
        if let Err(e) = out.flush() {
            return broken_pipe(e);
        }
        if !a.follow || next >= until {
            return Ok(0);
        }
        seen = b.wait_any(seen, Duration::from_secs(1));
    }
}
