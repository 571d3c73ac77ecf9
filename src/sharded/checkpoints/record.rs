//! The bytes of `checkpoints.log` and `HEAD` (see the module above):
//! a record's encoding and checks, and a scan of a whole log.

use super::*;

pub(super) const MAGIC: &[u8; 4] = b"CKPT";
pub(super) const VERSION: u8 = 1;
pub(super) const HEADER: usize = 12;

/// A checkpoint as stored: its id, when it was made, and one offset (the
/// next id to read) per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The user's id.
    pub id: Vec<u8>,
    /// Unix time in nanoseconds.
    pub timestamp: u64,
    /// One offset per shard.
    pub offsets: Vec<u64>,
}

impl Record {
    /// The record's bytes, framed.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(13 + self.id.len() + 8 * self.offsets.len());
        payload.push(VERSION);
        payload.extend_from_slice(&(self.id.len() as u16).to_le_bytes());
        payload.extend_from_slice(&self.id);
        payload.extend_from_slice(&self.timestamp.to_le_bytes());
        payload.extend_from_slice(&(self.offsets.len() as u16).to_le_bytes());
        for o in &self.offsets {
            payload.extend_from_slice(&o.to_le_bytes());
        }
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes the record at the start of `buf`: the record and its framed
    /// length, or why it is not one (`Err(None)`: `buf` ends inside it).
    pub fn decode(buf: &[u8]) -> std::result::Result<(Record, usize), Option<String>> {
        if buf.len() < HEADER {
            return Err(if buf.len() >= 4 && &buf[..4] != MAGIC {
                Some("bad magic".into())
            } else {
                None
            });
        }
        if &buf[..4] != MAGIC {
            return Err(Some("bad magic".into()));
        }
        let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")) as usize;
        let Some(payload) = buf.get(HEADER..HEADER + len) else {
            return Err(None);
        };
        if crc32fast::hash(payload) != crc {
            return Err(Some(format!("crc mismatch (stored {crc:#010x})")));
        }
        let bad = |what: &str| Some(format!("{what} in a record whose crc matches"));
        let mut p = payload;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (a, b) = p.split_at_checked(n)?;
            p = b;
            Some(a)
        };
        let version = take(1).ok_or_else(|| bad("no version"))?[0];
        if version != VERSION {
            return Err(Some(format!("unknown record version {version}")));
        }
        let id_len = u16::from_le_bytes(
            take(2)
                .ok_or_else(|| bad("no id length"))?
                .try_into()
                .expect("2"),
        );
        let id = take(id_len as usize)
            .ok_or_else(|| bad("short id"))?
            .to_vec();
        let timestamp = u64::from_le_bytes(
            take(8)
                .ok_or_else(|| bad("no timestamp"))?
                .try_into()
                .expect("8"),
        );
        let shards = u16::from_le_bytes(
            take(2)
                .ok_or_else(|| bad("no shard count"))?
                .try_into()
                .expect("2"),
        );
        let mut offsets = Vec::with_capacity(shards as usize);
        for _ in 0..shards {
            let o = take(8).ok_or_else(|| bad("short offsets"))?;
            offsets.push(u64::from_le_bytes(o.try_into().expect("8")));
        }
        Ok((
            Record {
                id,
                timestamp,
                offsets,
            },
            HEADER + len,
        ))
    }
}

/// HEAD's bytes for `id`.
pub fn encode_head(id: &[u8]) -> Vec<u8> {
    let mut v = (id.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(id);
    v
}

/// The id HEAD names, if it is whole.
pub fn decode_head(bytes: &[u8]) -> Option<Vec<u8>> {
    let len = u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
    if len == 0 {
        return None;
    }
    bytes.get(2..2 + len).map(<[u8]>::to_vec)
}

/// What one pass over the log's bytes found.
#[derive(Debug, Default)]
pub struct Scan {
    /// (offset, framed length, record), in file order.
    pub records: Vec<(u64, usize, Record)>,
    /// (start, end, why) of every damaged run of bytes.
    pub damage: Vec<(u64, u64, String)>,
    /// Where a torn tail starts, if the bytes end inside a record or with
    /// damage that no intact record follows.
    pub torn_at: Option<u64>,
}

impl Scan {
    /// The checkpoints the bytes list, in order, the latest record of an id
    /// replacing its earlier ones.
    pub fn listed(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for (offset, len, r) in &self.records {
            out.retain(|e| e.id != r.id);
            out.push(Entry {
                id: r.id.clone(),
                offset: *offset,
                len: *len,
                timestamp: r.timestamp,
                offsets: r.offsets.clone(),
            });
        }
        out
    }
}

/// The shard count of the first record of the log at `path`, reading that
/// record alone (or, if it is damaged, the first intact one).
pub fn first_shard_count(storage: &dyn Storage, path: &Path) -> Result<Option<u16>> {
    let f = storage.open(path, false)?;
    let len = f.len()?;
    let mut head = [0u8; HEADER];
    if len >= HEADER as u64 {
        f.read_exact_at(&mut head, 0)?;
        let payload = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as u64;
        if &head[..4] == MAGIC && HEADER as u64 + payload <= len {
            let mut buf = vec![0u8; HEADER + payload as usize];
            f.read_exact_at(&mut buf, 0)?;
            if let Ok((r, _)) = Record::decode(&buf) {
                return Ok(Some(r.offsets.len() as u16));
            }
        }
    }
    let s = scan(&storage.read_file(path)?);
    Ok(s.records.first().map(|(_, _, r)| r.offsets.len() as u16))
}

/// Reads `buf` record by record; after damage, resynchronizes on the next
/// offset where an intact record starts.
pub fn scan(buf: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut pos = 0usize;
    while pos < buf.len() {
        match Record::decode(&buf[pos..]) {
            Ok((r, n)) => {
                s.records.push((pos as u64, n, r));
                pos += n;
            }
            Err(why) => {
                let next = memchr::memmem::find_iter(&buf[pos + 1..], MAGIC)
                    .map(|i| pos + 1 + i)
                    .find(|&q| Record::decode(&buf[q..]).is_ok());
                match next {
                    Some(q) => {
                        let why = why.unwrap_or_else(|| "a record cut short".into());
                        s.damage.push((pos as u64, q as u64, why));
                        pos = q;
                    }
                    None => {
                        s.torn_at = Some(pos as u64);
                        let why = why.unwrap_or_else(|| "a record cut short".into());
                        s.damage.push((pos as u64, buf.len() as u64, why));
                        break;
                    }
                }
            }
        }
    }
    s
}
