//! A followed sharded log's checkpoints, read from the bucket's copy of
//! its checkpoint log.

use super::*;

/// The checkpoints of a sharded log followed in a bucket, for the
/// follower's `checkpoints/` (read-only). Serial numbers stay with a
/// checkpoint (its id and time) across manifest updates.
pub struct BucketCheckpoints {
    log: Arc<BucketLog>,
    state: Mutex<Listed>,
}

#[derive(Default)]
struct Listed {
    /// The object the list was read from.
    key: Option<String>,
    list: Arc<Vec<(u64, crate::sharded::checkpoints::Entry)>>,
    serials: HashMap<(Vec<u8>, u64), u64>,
}

impl BucketCheckpoints {
    /// The checkpoints of `log`: shown once its manifest names a
    /// checkpoint log or a shard count.
    pub fn of(log: Arc<BucketLog>) -> BucketCheckpoints {
        BucketCheckpoints {
            log,
            state: Mutex::default(),
        }
    }

    /// The list as the manifest last read names it (kept as it was when the
    /// bucket cannot be read).
    fn current(&self) -> Arc<Vec<(u64, crate::sharded::checkpoints::Entry)>> {
        let key = self
            .log
            .manifest()
            .files
            .get(crate::sharded::checkpoints::LOG_FILE)
            .map(|o| o.key.clone());
        let mut st = self.state.lock();
        if st.key != key {
            let bytes = match self.log.root_file(crate::sharded::checkpoints::LOG_FILE) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("checkpoints: {e}");
                    return st.list.clone();
                }
            };
            let scan = crate::sharded::checkpoints::scan(bytes.as_deref().map_or(&[][..], |b| b));
            let st = &mut *st;
            let mut list = Vec::new();
            for e in scan.listed() {
                let next = st.serials.len() as u64 + 1;
                let serial = *st
                    .serials
                    .entry((e.id.clone(), e.timestamp))
                    .or_insert(next);
                list.push((serial, e));
            }
            st.list = Arc::new(list);
            st.key = key;
        }
        st.list.clone()
    }
}

impl crate::sharded::CheckpointSource for BucketCheckpoints {
    fn shown(&self) -> bool {
        let st = self.log.inner.state.read();
        let f = &st.manifest.files;
        f.contains_key(crate::sharded::checkpoints::LOG_FILE)
            || f.contains_key(crate::sharded::SHARDS_FILE)
    }

    fn checkpoints(&self) -> Vec<(u64, crate::sharded::checkpoints::Entry)> {
        self.current().to_vec()
    }

    fn by_serial(&self, serial: u64) -> Option<crate::sharded::checkpoints::Entry> {
        self.current()
            .iter()
            .find(|(s, _)| *s == serial)
            .map(|(_, e)| e.clone())
    }

    fn latest_id(&self) -> Option<Vec<u8>> {
        self.current().last().map(|(_, e)| e.id.clone())
    }

    fn serial_of(&self, id: &[u8]) -> Option<u64> {
        self.current()
            .iter()
            .find(|(_, e)| e.id == id)
            .map(|(s, _)| *s)
    }

    fn check(&self, _id: &[u8]) -> Result<()> {
        // The object was checked against the manifest when fetched, and
        // every listed record's crc when it was read.
        Ok(())
    }

    fn make(&self, _id: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }
}
