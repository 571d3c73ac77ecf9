//! walfs.times: when ids were acknowledged, to within a second (see
//! [`format::TIMES`]): what `walfs cat --since/--until TIME` asks.

use super::{Ctx, Stream};
use crate::format;
use format::unix_ms;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

const EVERY_MS: u64 = format::TIME_EVERY_MS;

impl Stream {
    /// An append of ids from `start` on was acknowledged. The first one a
    /// second or more after the last record is recorded as (now, `start`):
    /// so every id from a record's id to the next record's was acknowledged
    /// within a second of the first record's time. A failure to record
    /// costs precision only (logged).
    pub fn note_time(&self, ctx: &Ctx, start: u64) {
        let now = unix_ms(SystemTime::now());
        let last = self.time_mark.load(Ordering::Acquire);
        if now < last.saturating_add(EVERY_MS)
            || self
                .time_mark
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.append_time_records(ctx, &format::time_record_encode(now, start)) {
            log::warn!(
                "stream {}: could not record when ids were acknowledged: {e}",
                self.name
            );
        }
    }

    /// A standby's apply: the primary's marks `(unix ms, first id)` of the
    /// ids applied, added to walfs.times (those above the highest id it
    /// names), so that the copy, and the primary it may become, answers
    /// times as the log it copies. A failure costs precision only.
    pub fn record_marks(&self, ctx: &Ctx, marks: &[(u64, u64)]) {
        let mut last = self.times_last.lock();
        let known =
            *last.get_or_insert_with(|| self.time_records(ctx).iter().map(|&(_, id)| id).max());
        let new: Vec<(u64, u64)> = marks
            .iter()
            .copied()
            .filter(|&(_, id)| known.is_none_or(|k| id > k))
            .collect();
        let Some(&(_, top)) = new.iter().max_by_key(|&&(_, id)| id) else {
            return;
        };
        let b: Vec<u8> = new
            .iter()
            .flat_map(|&(ms, id)| format::time_record_encode(ms, id))
            .collect();
        match self.append_time_records(ctx, &b) {
            Ok(()) => {
                *last = Some(Some(top));
                let ms = new.iter().map(|&(ms, _)| ms).max().unwrap_or(0);
                self.time_mark.fetch_max(ms, Ordering::AcqRel);
                *self.first_time.lock() = None;
            }
            Err(e) => log::warn!(
                "stream {}: could not record when applied ids were shipped: {e}",
                self.name
            ),
        }
    }

    /// Appends whole records to walfs.times, after its last whole record
    /// (a torn one is written over).
    fn append_time_records(&self, ctx: &Ctx, records: &[u8]) -> std::io::Result<()> {
        let f = ctx.storage.open(&self.dir.join(format::TIMES), true)?;
        let at = f.len()? / format::TIME_RECORD as u64 * format::TIME_RECORD as u64;
        f.write_all_at(records, at)
    }

    /// The records of walfs.times, in the order written.
    pub fn time_records(&self, ctx: &Ctx) -> Vec<(u64, u64)> {
        ctx.storage
            .read_file(&self.dir.join(format::TIMES))
            .map(|b| format::time_records_decode(&b))
            .unwrap_or_default()
    }

    /// The first id not acknowledged before `t`, to within a second: every
    /// id below it was acknowledged before `t`, and those from it on at `t`
    /// or after, or less than a second before. Ids older than the records
    /// count as acknowledged at or after `t` (the first retained id).
    pub fn id_at_time(&self, ctx: &Ctx, t: SystemTime) -> u64 {
        let (first, next) = (self.first_id(), self.appended());
        format::id_at_time(&mut self.time_records(ctx), unix_ms(t), first, next)
    }

    /// When the first retained id was acknowledged (the start of the
    /// second that holds it), if walfs.times says: read from the file's
    /// first records only (truncation keeps the one that holds it first).
    pub fn first_time(&self, ctx: &Ctx) -> Option<SystemTime> {
        let first = self.first_id();
        let mut cached = self.first_time.lock();
        if let Some((id, t)) = *cached {
            if id == first {
                return t;
            }
        }
        let t = self.read_first_time(ctx, first);
        *cached = Some((first, t));
        t
    }

    fn read_first_time(&self, ctx: &Ctx, first: u64) -> Option<SystemTime> {
        let f = ctx
            .storage
            .open(&self.dir.join(format::TIMES), false)
            .ok()?;
        let n = f.len().ok()?.min(64 * format::TIME_RECORD as u64) as usize;
        let mut b = vec![0u8; n];
        f.read_exact_at(&mut b, 0).ok()?;
        let recs = format::time_records_decode(&b);
        let (ms, _) = recs.iter().rev().find(|&&(_, id)| id <= first)?;
        // Past every record read: not the one that holds it.
        if recs.len() * format::TIME_RECORD == n
            && n == 64 * format::TIME_RECORD
            && recs.last().is_some_and(|&(_, id)| id <= first)
        {
            return None;
        }
        Some(UNIX_EPOCH + std::time::Duration::from_millis(*ms))
    }

    /// Drops the records no retained id needs (after a truncation): those
    /// below `first`, but the last of them.
    pub(super) fn trim_times(&self, ctx: &Ctx, first: u64) {
        let recs = self.time_records(ctx);
        // The record whose window holds `first` stays.
        let keep_from = recs.iter().rposition(|&(_, id)| id <= first).unwrap_or(0);
        if keep_from == 0 {
            return;
        }
        let mut b = Vec::with_capacity((recs.len() - keep_from) * format::TIME_RECORD);
        for &(ms, id) in &recs[keep_from..] {
            b.extend_from_slice(&format::time_record_encode(ms, id));
        }
        *self.first_time.lock() = None;
        if let Err(e) = ctx.storage.write_atomic(&self.dir.join(format::TIMES), &b) {
            log::warn!("stream {}: could not trim walfs.times: {e}", self.name);
        }
    }
}
