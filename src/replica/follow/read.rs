//! Reading a followed log: blocks of immutable objects through the
//! caches, frames located by id, entry bytes for `log`, and a manifest
//! read again when an object is gone.

use super::*;

impl Inner {
    pub(super) fn refresh(&self) {
        let _one = self.refreshing.lock();
        match crate::replica::fetch_manifest(&self.bucket) {
            Ok(Some(m)) if m.epoch < self.state.read().manifest.epoch => {
                log::warn!(
                    "{}: ignoring a manifest of an older epoch ({})",
                    self.url,
                    m.epoch
                );
            }
            Ok(Some(m)) => {
                let mut st = self.state.write();
                st.fetched = Instant::now();
                if st.failure.take().is_some() {
                    log::info!("{}: reachable again", self.url);
                }
                // Never go back: a manifest is only ever replaced by one
                // that holds as much (or truncated history).
                if m != st.manifest {
                    st.manifest = m;
                    st.changes += 1;
                    drop(st);
                    let _g = self.changed_lock.lock();
                    self.changed.notify_all();
                }
            }
            Ok(None) => {
                self.state.write().failure = Some("the manifest is gone".into());
            }
            Err(e) => {
                let mut st = self.state.write();
                if st.failure.is_none() {
                    log::warn!("{e}; serving what is cached, retrying");
                }
                st.failure = Some(e.to_string());
            }
        }
    }

    pub(super) fn segment(&self, stream: &str, start: u64) -> Option<SegmentManifest> {
        let st = self.state.read();
        let s = st.manifest.streams.get(stream)?;
        s.segments.iter().find(|g| g.start_id == start).cloned()
    }

    pub(super) fn segment_for(&self, stream: &str, id: u64) -> Option<SegmentManifest> {
        let st = self.state.read();
        let s = st.manifest.streams.get(stream)?;
        if id >= s.next_id {
            return None;
        }
        let i = s.segments.partition_point(|g| g.start_id <= id);
        let g = s.segments.get(i.checked_sub(1)?)?;
        (id < g.end_id).then(|| g.clone())
    }

    /// One block of an object: from memory, the disk cache or the bucket.
    pub(super) fn block(&self, key: &str, obj_len: u64, b: u64) -> Result<Arc<Vec<u8>>> {
        let k = (key.to_owned(), b);
        {
            // A read-ahead already fetching it: wait for that.
            let mut inflight = self.inflight.lock();
            while inflight.contains(&k) {
                self.landed.wait(&mut inflight);
            }
        }
        if let Some(v) = self.hot.lock().get(&k) {
            return Ok(v);
        }
        let v = match self.cache.get(key, b) {
            Some(v) => Arc::new(v),
            None => {
                let range = b * BLOCK..((b + 1) * BLOCK).min(obj_len);
                self.requests.fetch_add(1, Ordering::Relaxed);
                let bytes = self.bucket.get_range(key, range).map_err(|f| match f {
                    // Retired by the writer (merged into a larger part):
                    // the caller reads the manifest again.
                    crate::replica::store::Fault::NotFound => Error::Io(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("object {key}"),
                    )),
                    f => eio(format!("{}/{key}: {f}", self.url)),
                })?;
                self.cache.put(key, b, &bytes);
                Arc::new(bytes.to_vec())
            }
        };
        let w = v.len() as u64;
        self.hot.lock().insert(k, v.clone(), w);
        Ok(v)
    }

    /// Starts fetching blocks `first..first + n` of an object that are
    /// neither cached nor being fetched, in one request on a thread of its
    /// own: a sequential reader's read-ahead, overlapping the network with
    /// the parsing of the blocks before.
    pub(super) fn prefetch(self: &Arc<Self>, key: &str, obj_len: u64, first: u64, n: u64) {
        let last = obj_len.div_ceil(BLOCK).min(first + n);
        let want: Vec<u64> = {
            let mut inflight = self.inflight.lock();
            let want: Vec<u64> = (first..last)
                .filter(|b| {
                    let k = (key.to_owned(), *b);
                    !inflight.contains(&k) && self.hot.lock().get(&k).is_none()
                })
                .collect();
            for b in &want {
                inflight.insert((key.to_owned(), *b));
            }
            want
        };
        if want.is_empty() {
            return;
        }
        let (me, owned) = (self.clone(), key.to_owned());
        let fetch = move || {
            let key = owned;
            let ranges: Vec<Range<u64>> = want
                .iter()
                .map(|b| b * BLOCK..((b + 1) * BLOCK).min(obj_len))
                .collect();
            me.requests.fetch_add(1, Ordering::Relaxed);
            if let Ok(got) = me.bucket.get_ranges(&key, &ranges) {
                for (b, bytes) in want.iter().zip(got) {
                    me.cache.put(&key, *b, &bytes);
                    let w = bytes.len() as u64;
                    me.hot
                        .lock()
                        .insert((key.clone(), *b), Arc::new(bytes.to_vec()), w);
                }
            }
            let mut inflight = me.inflight.lock();
            for b in &want {
                inflight.remove(&(key.clone(), *b));
            }
            me.landed.notify_all();
        };
        if std::thread::Builder::new()
            .name("walfs-readahead".into())
            .spawn(fetch)
            .is_err()
        {
            // No thread: readers fetch what they need themselves.
            let mut inflight = self.inflight.lock();
            inflight.retain(|(k, b)| !(k == key && (first..last).contains(b)));
            self.landed.notify_all();
        }
    }

    /// Bytes `off..off + len` of segment `g` of `stream` (clipped to its
    /// length). An object gone from the bucket (the writer merged it into
    /// a larger one after this manifest was read) sends the read to the
    /// manifest again, which names what holds those bytes now: a reader
    /// never fails because the writer compacted (bounded: three tries).
    pub(super) fn read(
        &self,
        stream: &str,
        g: &SegmentManifest,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let mut g = std::borrow::Cow::Borrowed(g);
        let mut tries = 0;
        loop {
            match self.read_once(&g, off, len) {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    tries += 1;
                    self.refresh();
                    match self.segment(stream, g.start_id) {
                        Some(n) if tries <= 3 && n.len >= (off + len).min(g.len) => {
                            log::debug!("{}: {e} is gone; reading it from the manifest's newer objects", self.url);
                            g = std::borrow::Cow::Owned(n);
                        }
                        _ => {
                            return Err(eio(format!(
                                "{}: stream {stream} segment {}: {e} is gone and the manifest names nothing in its place",
                                self.url, g.start_id
                            )))
                        }
                    }
                }
                r => return r,
            }
        }
    }

    pub(super) fn read_once(&self, g: &SegmentManifest, off: u64, len: u64) -> Result<Vec<u8>> {
        let end = (off + len).min(g.len);
        let mut out = Vec::with_capacity(end.saturating_sub(off) as usize);
        let mut at = off;
        while at < end {
            let i = g.objects.partition_point(|o| o.offset <= at) - 1;
            let o = &g.objects[i];
            let rel = at - o.offset;
            let b = rel / BLOCK;
            let block = self.block(&o.key, o.len, b)?;
            let from = (rel - b * BLOCK) as usize;
            let take = ((end - at) as usize).min(block.len().saturating_sub(from));
            if take == 0 {
                // A block shorter than its place (a cache file cut short):
                // never wait for bytes that will not come.
                return Err(eio(format!(
                    "{}: object {} block {b}: {} bytes where {} were expected",
                    self.url,
                    o.key,
                    block.len(),
                    ((b + 1) * BLOCK).min(o.len) - b * BLOCK
                )));
            }
            out.extend_from_slice(&block[from..from + take]);
            at += take as u64;
        }
        Ok(out)
    }

    pub(super) fn header(
        &self,
        stream: &str,
        g: &SegmentManifest,
        off: u64,
    ) -> Result<FrameHeader> {
        let b = self.read(stream, g, off, HEADER_SIZE as u64)?;
        let h = FrameHeader::decode(&b).map_err(|e| {
            eio(format!(
                "{}: stream {stream} segment {} at byte {off}: {e}",
                self.url, g.start_id
            ))
        })?;
        if off + h.frame_len() > g.len {
            return Err(eio(format!(
                "{}: stream {stream} segment {} at byte {off}: a frame runs past the segment's end",
                self.url, g.start_id
            )));
        }
        Ok(h)
    }

    /// The decoded frame at `off`, crc-checked.
    pub(super) fn frame(
        &self,
        stream: &str,
        g: &SegmentManifest,
        f: Found,
    ) -> Result<Arc<DecodedFrame>> {
        let k = (stream.to_owned(), g.start_id, f.off);
        if let Some(d) = self.frames.lock().get(&k) {
            return Ok(d);
        }
        let p = self.read(stream, g, f.off + HEADER_SIZE as u64, f.h.disk_size as u64)?;
        let d = Arc::new(decode_batch(&f.h, &p).map_err(|e| {
            eio(format!(
                "{}: stream {stream} segment {} at byte {}: {e}",
                self.url, g.start_id, f.off
            ))
        })?);
        let w = d.weight();
        self.frames.lock().insert(k, d.clone(), w);
        Ok(d)
    }

    /// The first whole, crc-valid frame at or after `from` starting at id
    /// `min_start` or later, below `limit`.
    pub(super) fn resync(
        &self,
        stream: &str,
        g: &SegmentManifest,
        from: u64,
        limit: u64,
        min_start: u64,
    ) -> Result<Option<Found>> {
        let magic = MAGIC.to_le_bytes();
        let mut at = from;
        while at + HEADER_SIZE as u64 <= limit {
            let n = (limit - at).min(BLOCK);
            let buf = self.read(stream, g, at, n)?;
            let mut i = 0;
            while let Some(p) = buf[i..].windows(4).position(|w| w == magic) {
                let cand = at + (i + p) as u64;
                if let Ok(hb) = self.read(stream, g, cand, HEADER_SIZE as u64) {
                    if let Ok(h) = FrameHeader::decode(&hb) {
                        if h.start_id >= min_start && cand + h.frame_len() <= g.len {
                            let payload = self.read(
                                stream,
                                g,
                                cand + HEADER_SIZE as u64,
                                h.disk_size as u64,
                            )?;
                            if h.expected_crc(&payload) == h.crc {
                                return Ok(Some(Found { off: cand, h }));
                            }
                        }
                    }
                }
                i += p + 1;
            }
            at += (n).saturating_sub(3).max(1);
        }
        Ok(None)
    }

    /// The frame holding `id` in segment `g`.
    pub(super) fn locate(&self, stream: &str, g: &SegmentManifest, id: u64) -> Result<Found> {
        let key = (stream.to_owned(), g.start_id);
        let (mut lo, mut hi) = {
            let mut l = self.learned.lock();
            let l = l.entry(key.clone()).or_default();
            if let Some((_, f)) = l.by_id.range(..=id).next_back() {
                if f.h.contains(id) {
                    return Ok(*f);
                }
            }
            let lo = l.by_id.range(..=id).next_back().map(|(_, f)| *f);
            let hi = l.by_id.range(id + 1..).next().map_or(g.len, |(_, f)| f.off);
            (lo, hi)
        };
        let learn = |f: Found| {
            self.learned
                .lock()
                .entry(key.clone())
                .or_default()
                .by_id
                .insert(f.h.start_id, f);
        };
        let first = match lo {
            Some(f) => f,
            None => {
                let h = self.header(stream, g, 0)?;
                let f = Found { off: 0, h };
                learn(f);
                f
            }
        };
        lo = Some(first);
        loop {
            let cur = lo.expect("set");
            if cur.h.contains(id) {
                return Ok(cur);
            }
            let next = cur.off + cur.h.frame_len();
            if hi <= next + 2 * BLOCK {
                // Close: walk frame by frame.
                let mut at = next;
                while at < g.len {
                    let h = self.header(stream, g, at)?;
                    let f = Found { off: at, h };
                    learn(f);
                    if h.contains(id) {
                        return Ok(f);
                    }
                    at += h.frame_len();
                }
                return Err(eio(format!(
                    "{}: stream {stream} segment {}: no frame holds id {id}",
                    self.url, g.start_id
                )));
            }
            let mid = next + (hi - next) / 2;
            match self.resync(stream, g, mid, hi, cur.h.end_id())? {
                Some(f) if f.h.start_id <= id => {
                    learn(f);
                    lo = Some(f);
                }
                Some(f) => {
                    learn(f);
                    hi = mid;
                }
                None => hi = mid,
            }
        }
    }

    pub(super) fn entry(&self, stream: &str, id: u64) -> Result<Option<Arc<DecodedFrame>>> {
        let Some(g) = self.segment_for(stream, id) else {
            return Ok(None);
        };
        let f = self.locate(stream, &g, id)?;
        self.frame(stream, &g, f).map(Some)
    }

    /// Entry bytes of segment `g` from its entry byte `from`, up to `max`.
    /// Frames inside one cached block are parsed in place; a miss reads
    /// ahead 8 blocks in one request.
    pub(super) fn payload(
        self: &Arc<Self>,
        stream: &str,
        g: &SegmentManifest,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let key = (stream.to_owned(), g.start_id);
        let (mut pos, mut off) = {
            let mut l = self.learned.lock();
            let l = l.entry(key.clone()).or_default();
            l.by_payload
                .range(..=from)
                .next_back()
                .map_or((0, 0), |(p, o)| (*p, *o))
        };
        let want_end = out.len() + max;
        let mut last_mark = pos;
        // Copies the part of a frame's entries (the first at entry byte
        // `pos`) that lies at `from` or later, up to `want_end`.
        let emit = |entries: &mut dyn Iterator<Item = &[u8]>, pos: u64, out: &mut Vec<u8>| {
            let mut at = pos;
            for e in entries {
                let (s, t) = (at, at + e.len() as u64);
                if t > from && out.len() < want_end {
                    let a = (from.max(s) - s) as usize;
                    let take = (e.len() - a).min(want_end - out.len());
                    out.extend_from_slice(&e[a..a + take]);
                }
                at = t;
            }
        };
        while off < g.len && out.len() < want_end {
            let i = g.objects.partition_point(|o| o.offset <= off) - 1;
            let o = &g.objects[i];
            let rel = off - o.offset;
            let b = rel / BLOCK;
            let block = self.block(&o.key, o.len, b)?;
            // Keep 8 to 16 blocks ahead of the reader in flight.
            if b % 8 == 0 {
                self.prefetch(&o.key, o.len, b + 1, 16);
            }
            let mut p = (rel - b * BLOCK) as usize;
            let mut progressed = false;
            while p + HEADER_SIZE <= block.len() && out.len() < want_end && off < g.len {
                let Ok(h) = FrameHeader::decode(&block[p..p + HEADER_SIZE]) else {
                    break;
                };
                let fl = h.frame_len() as usize;
                if p + fl > block.len() || off + fl as u64 > g.len {
                    break;
                }
                let plen = h.payload_len();
                if pos + plen > from {
                    let payload = &block[p + HEADER_SIZE..p + fl];
                    let bad = |e: String| {
                        eio(format!(
                            "{}: stream {stream} segment {} at byte {off}: {e}",
                            self.url, g.start_id
                        ))
                    };
                    if h.frame_type == FrameType::Raw {
                        // In place: entries copied once, straight to `out`.
                        let spans = raw_spans(&h, payload).map_err(bad)?;
                        let mut entries = spans
                            .iter()
                            .map(|r| &payload[r.start as usize..r.end as usize]);
                        emit(&mut entries, pos, out);
                    } else {
                        let d = decode_batch(&h, payload).map_err(bad)?;
                        emit(&mut d.entries(), pos, out);
                    }
                }
                pos += plen;
                off += fl as u64;
                p += fl;
                progressed = true;
                if pos - last_mark >= 64 << 10 {
                    last_mark = pos;
                    self.learned
                        .lock()
                        .entry(key.clone())
                        .or_default()
                        .by_payload
                        .insert(pos, off);
                }
            }
            if !progressed {
                // A frame across blocks (or damage, which header() names).
                let h = self.header(stream, g, off)?;
                let plen = h.payload_len();
                if pos + plen > from {
                    let d = self.frame(stream, g, Found { off, h })?;
                    emit(&mut d.entries(), pos, out);
                }
                pos += plen;
                off += h.frame_len();
            }
        }
        Ok(())
    }
}
