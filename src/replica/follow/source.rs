//! A followed log as the mount sees it: the reads of [`LogSource`], every
//! write refused.

use super::*;

impl LogSource for BucketLog {
    fn streams(&self) -> Vec<String> {
        self.inner
            .state
            .read()
            .manifest
            .streams
            .keys()
            .cloned()
            .collect()
    }
    fn has_stream(&self, stream: &str) -> bool {
        self.inner
            .state
            .read()
            .manifest
            .streams
            .contains_key(stream)
    }
    fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        let st = self.inner.state.read();
        let s = st.manifest.streams.get(stream)?;
        Some(StreamInfo {
            name: stream.to_owned(),
            first_id: s.segments.first().map_or(s.next_id, |g| g.start_id),
            next_id: s.next_id,
            durable_id: s.next_id,
            segments: s.segments.len(),
            bytes: s.segments.iter().map(|g| g.len).sum(),
            active_segment: s.segments.last().map_or(0, |g| g.start_id),
            damaged: None,
            retention: None,
            // When the first segment's first ids were shipped, if the
            // manifest marks it (to within a second).
            first_time: s
                .segments
                .first()
                .and_then(|g| g.times.first())
                .map(|&(ms, _)| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
            replication: Some(ReplicaInfo {
                replicated_id: s.next_id,
                state: match &st.failure {
                    Some(f) => format!("unreachable ({f})"),
                    None => format!(
                        "following (epoch {}, manifest read {} ms ago)",
                        st.manifest.epoch,
                        st.fetched.elapsed().as_millis()
                    ),
                },
                // How stale this view may be beyond the writer's own lag.
                lag_ms: st.fetched.elapsed().as_millis() as u64,
                url: self.inner.url.clone(),
                role: "follower".into(),
                lease_age_ms: None,
            }),
        })
    }
    fn first_id(&self, stream: &str) -> u64 {
        let st = self.inner.state.read();
        st.manifest
            .streams
            .get(stream)
            .map_or(0, |s| s.segments.first().map_or(s.next_id, |g| g.start_id))
    }
    fn next_id(&self, stream: &str) -> u64 {
        let st = self.inner.state.read();
        st.manifest.streams.get(stream).map_or(0, |s| s.next_id)
    }
    fn modes(&self) -> Option<(SyncMode, CompressionType)> {
        None
    }
    fn entry_len(&self, stream: &str, id: u64) -> Result<Option<u64>> {
        Ok(self
            .inner
            .entry(stream, id)?
            .and_then(|d| d.entry(id).map(|e| e.len() as u64)))
    }
    fn read_entry(
        &self,
        stream: &str,
        id: u64,
        offset: u64,
        size: usize,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.entry(stream, id)?.and_then(|d| {
            d.entry(id).map(|e| {
                let a = (offset as usize).min(e.len());
                let b = a.saturating_add(size).min(e.len());
                e[a..b].to_vec()
            })
        }))
    }
    fn segments(&self, stream: &str) -> Vec<SegmentInfo> {
        let st = self.inner.state.read();
        st.manifest
            .streams
            .get(stream)
            .map(|s| {
                s.segments
                    .iter()
                    .map(|g| SegmentInfo {
                        start_id: g.start_id,
                        end_id: g.end_id,
                        path: PathBuf::from(crate::format::segment_name(g.start_id)),
                        len: g.len,
                        sealed: g.sealed,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn open_segment(&self, stream: &str, segment: &SegmentInfo) -> Result<Box<dyn SegmentBytes>> {
        let g = self
            .inner
            .segment(stream, segment.start_id)
            .ok_or_else(|| Error::NoSuchStream(stream.to_owned()))?;
        Ok(Box::new(Remote {
            inner: self.inner.clone(),
            stream: stream.to_owned(),
            g,
        }))
    }
    fn segment_payloads(&self, stream: &str) -> Result<Vec<(u64, u64)>> {
        let st = self.inner.state.read();
        Ok(st
            .manifest
            .streams
            .get(stream)
            .map(|s| s.segments.iter().map(|g| (g.start_id, g.payload)).collect())
            .unwrap_or_default())
    }
    fn read_payload(
        &self,
        stream: &str,
        segment: u64,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(g) = self.inner.segment(stream, segment) else {
            return Ok(());
        };
        self.inner.payload(stream, &g, from, max, out)
    }
    fn wait_any(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.changed_lock.lock();
        loop {
            let now = self.inner.state.read().changes;
            if now != seen {
                return now;
            }
            if self.inner.changed.wait_until(&mut g, deadline).timed_out() {
                return self.inner.state.read().changes;
            }
        }
    }
    fn local_root(&self) -> Option<&Path> {
        None
    }
    fn append_batch(&self, _: &str, _: &[&[u8]]) -> Result<Range<u64>> {
        Err(Error::ReadOnly)
    }
    fn sync(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn create_stream(&self, _: &str) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn delete_stream(&self, _: &str) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn truncate(&self, _: &str, _: u64) -> Result<usize> {
        Err(Error::ReadOnly)
    }
}

/// A segment's bytes in the bucket, for `segments/`.
struct Remote {
    inner: Arc<Inner>,
    stream: String,
    g: SegmentManifest,
}

impl SegmentBytes for Remote {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let b = self
            .inner
            .read(&self.stream, &self.g, offset, buf.len() as u64)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EIO))?;
        buf[..b.len()].copy_from_slice(&b);
        Ok(b.len())
    }
}
