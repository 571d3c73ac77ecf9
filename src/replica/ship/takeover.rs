//! Taking the prefix: a live holder's lease respected (unless
//! `--takeover`), the bucket checked against the local log, the epoch
//! advanced by a conditional write, and what an earlier writer left
//! unreferenced removed.

use super::*;

/// Who writes the manifest, for people: host and pid.
pub(in crate::replica) fn writer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host} pid {}", std::process::id())
}

/// The refusal of a plain start on a prefix whose holder is alive.
pub(crate) fn live_holder_message(url: &BucketUrl, holder: &Manifest) -> String {
    format!(
        "{url} is held by {} (epoch {}), whose lease is live: it renewed within the last {:?}. Mount with --standby to follow it and take over when its lease lapses, or with --takeover to take the prefix now (the holder is fenced)",
        holder.writer,
        holder.epoch,
        Duration::from_millis(holder.lease_ms)
    )
}

fn ahead_message(url: &BucketUrl, what: String) -> String {
    format!(
        "{what}: the bucket at {url} is ahead of, or diverges from, this data directory (another writer took the prefix?); mount with --standby to follow it (what this directory holds that the bucket lacks is moved aside), rebuild a data directory with `walfs restore {url} NEW_DATA`, or ship to another prefix"
    )
}

impl Shipper {
    pub(super) fn take_over(&mut self) -> std::result::Result<(), Takeover> {
        let url = self.bucket.url.clone();
        let classify = |f: Fault| match f {
            Fault::Refused(m) => Takeover::Fatal(format!("{url}: {m}")),
            Fault::Conflict => {
                Takeover::Fatal("another writer took the prefix at the same moment".into())
            }
            f => Takeover::Retry(f.to_string()),
        };
        let (current, expected) = match self.bucket.get_manifest().map_err(classify)? {
            None => {
                // A GET of a missing bucket is also "not found": listing
                // tells the two apart.
                self.bucket.list().map_err(classify)?;
                (Manifest::empty(0), None)
            }
            Some((bytes, v)) => (
                Manifest::decode(&bytes)
                    .map_err(|m| Takeover::Fatal(format!("{url}/{}: {m}", manifest::MANIFEST)))?,
                Some(v),
            ),
        };
        if let Some(v) = &expected {
            self.respect_lease(&current, v)?;
        }
        self.check_against_local(&current)
            .map_err(|m| Takeover::Fatal(ahead_message(&url, m)))?;
        self.know_incarnations(&current);
        let mut next = current.clone();
        next.epoch += 1;
        next.writer = writer_name();
        next.updated_ms = manifest::now_ms();
        next.lease_ms = self.lease_ms();
        next.released = false;
        let sent = Instant::now();
        let version = self
            .bucket
            .put_manifest(next.encode(), expected)
            .map_err(|f| match f {
                Fault::Conflict => Takeover::Fatal(format!(
                    "another writer took {url} at the same moment (epoch {}); this one stands down",
                    current.epoch + 1
                )),
                f => classify(f),
            })?;
        // Objects no manifest references are leftovers of a writer killed
        // mid-round or fenced: nobody will ever reference them.
        let referenced: std::collections::HashSet<&str> = next.keys().collect();
        if let Ok(all) = self.bucket.list() {
            let orphans: Vec<String> = all
                .into_iter()
                .filter(|k| k != manifest::MANIFEST && !referenced.contains(k.as_str()))
                .filter(|k| {
                    [".wal", ".part", ".file", ".times"]
                        .iter()
                        .any(|end| k.ends_with(end))
                })
                .collect();
            if !orphans.is_empty() {
                log::info!(
                    "replication: removing {} unreferenced objects left by an earlier writer",
                    orphans.len()
                );
                if let Err(f) = self.bucket.delete_all(orphans) {
                    log::warn!("replication: removing unreferenced objects failed: {f}");
                }
            }
        }
        self.link.renewed(sent);
        self.last_put = sent;
        crate::metrics::global().role.set(1);
        {
            let mut st = self.link.state.lock();
            for (name, s) in &next.streams {
                st.shipped.insert(name.clone(), s.next_id);
            }
            st.phase = Phase::Ok;
        }
        self.link.progress.notify_all();
        log::info!(
            "replication: took {url} at epoch {} ({} streams in the bucket)",
            next.epoch,
            next.streams.len()
        );
        self.manifest = Some((next, version));
        Ok(())
    }

    pub(super) fn lease_ms(&self) -> u64 {
        self.link.opts.lease.map_or(0, |l| l.as_millis() as u64)
    }

    /// A holder whose lease may be live keeps the prefix: watch its
    /// manifest for one lease by this machine's clock. A change means it is
    /// alive: refused, naming `--standby` and `--takeover`. No change: the
    /// lease lapsed, and the prefix is taken. `--takeover` skips the wait.
    fn respect_lease(
        &self,
        current: &Manifest,
        seen: &UpdateVersion,
    ) -> std::result::Result<(), Takeover> {
        if current.lease_ms == 0 || current.released {
            return Ok(());
        }
        let url = &self.bucket.url;
        if self.link.opts.takeover {
            log::warn!(
                "replication: taking {url} from {} (epoch {}) by --takeover, whatever its lease: it is fenced and stops acknowledging",
                current.writer,
                current.epoch
            );
            return Ok(());
        }
        let lease = Duration::from_millis(current.lease_ms);
        log::info!(
            "replication: {url} was last held by {} (epoch {}) with a {lease:?} lease: watching the manifest for that long before taking it",
            current.writer,
            current.epoch
        );
        let watched = Instant::now();
        let poll = (lease / 8).clamp(Duration::from_millis(50), Duration::from_millis(500));
        while watched.elapsed() < lease {
            std::thread::sleep(poll.min(lease.saturating_sub(watched.elapsed())));
            let now = self.bucket.get_manifest().map_err(|f| match f {
                Fault::Refused(m) => Takeover::Fatal(format!("{url}: {m}")),
                f => Takeover::Retry(f.to_string()),
            })?;
            let alive = match &now {
                Some((_, v)) => v != seen,
                None => true,
            };
            if alive {
                return Err(Takeover::Fatal(live_holder_message(url, current)));
            }
        }
        log::info!(
            "replication: the lease of {} on {url} lapsed ({lease:?} without a renewal): taking the prefix",
            current.writer
        );
        Ok(())
    }

    /// The manifest must describe a prefix of what this directory holds.
    /// The local streams the bucket's history was just checked against
    /// are the ones it continues: one deleted and made again after this
    /// (even before the first round) never ships over that history.
    pub(super) fn know_incarnations(&mut self, m: &Manifest) {
        for name in m.streams.keys() {
            if let Some(s) = self.core.stream(name) {
                self.incarnations.entry(name.clone()).or_insert(s.uid);
            }
        }
    }

    fn check_against_local(&self, m: &Manifest) -> std::result::Result<(), String> {
        for (name, sm) in &m.streams {
            if sm.next_id == 0 {
                continue;
            }
            let Some(s) = self.core.stream(name) else {
                return Err(format!(
                    "the bucket holds stream {name} up to id {}, this directory has no such stream",
                    sm.next_id
                ));
            };
            let view = s.ship_view();
            if view.durable_id < sm.next_id {
                return Err(format!(
                    "the bucket holds stream {name} up to id {}, this directory only up to {}",
                    sm.next_id, view.durable_id
                ));
            }
            let first_local = view.segments.first().map_or(u64::MAX, |g| g.start_id);
            for (i, mseg) in sm.segments.iter().enumerate() {
                let Some(local) = view.segments.iter().find(|g| g.start_id == mseg.start_id) else {
                    if mseg.start_id < first_local {
                        continue; // truncated here, kept in the bucket
                    }
                    return Err(format!(
                        "stream {name}: the bucket has segment {} that this directory lacks",
                        mseg.start_id
                    ));
                };
                if local.len < mseg.len || (mseg.sealed && local.len != mseg.len) {
                    return Err(format!(
                        "stream {name}: segment {} holds {} bytes here and {} in the bucket",
                        mseg.start_id, local.len, mseg.len
                    ));
                }
                // The newest segment is where a diverging writer would
                // differ: compare its bytes.
                if i + 1 == sm.segments.len() {
                    for o in &mseg.objects {
                        let bytes =
                            super::round::read_range(&local.path, o.offset, o.offset + o.len)
                                .map_err(|e| format!("reading {}: {e}", local.path.display()))?;
                        if crc32fast::hash(&bytes) != o.crc32 {
                            return Err(format!(
                                "stream {name}: bytes {}..{} of segment {} differ from the bucket's",
                                o.offset,
                                o.offset + o.len,
                                mseg.start_id
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
