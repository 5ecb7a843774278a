//! The bytes of one chunk (see the module notes in `mod.rs`): entries sorted by key,
//! LZ4-compressed.

use super::super::StoreError;

/// The first byte of every chunk this build writes.
pub(super) const FORMAT: u8 = 1;
/// Largest chunk this build will decompress (a corrupt length must not allocate gigabytes).
const MAX_RAW: usize = 1 << 30;

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Item key.
    pub key: String,
    /// `codec::encode_item` bytes.
    pub state: Vec<u8>,
    /// The item's JSON.
    pub data: Option<Vec<u8>>,
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: "item chunk",
        detail: detail.into(),
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Lengths of keys, states and item JSON are far below 4 GiB (bodies are capped).
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// Encodes entries (sorted by key) as a stored chunk.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut raw = Vec::new();
    for e in entries {
        put_u32(&mut raw, e.key.len());
        raw.extend_from_slice(e.key.as_bytes());
        put_u32(&mut raw, e.state.len());
        raw.extend_from_slice(&e.state);
        match &e.data {
            Some(d) => {
                put_u32(&mut raw, d.len() + 1);
                raw.extend_from_slice(d);
            }
            None => put_u32(&mut raw, 0),
        }
    }
    let mut out = Vec::with_capacity(5 + raw.len() / 2);
    out.push(FORMAT);
    put_u32(&mut out, raw.len());
    out.extend_from_slice(&lz4_flex::block::compress(&raw));
    out
}

/// Inverse of [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, StoreError> {
    let mut entries = Vec::new();
    visit(bytes, &mut |key, state, data| {
        entries.push(Entry {
            key: key.to_owned(),
            state: state.to_vec(),
            data: data.map(<[u8]>::to_vec),
        });
        Ok(())
    })?;
    Ok(entries)
}

thread_local! {
    /// The decompressed bytes of the chunk being read (reused: a start-up reads every chunk).
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What [`visit`] calls with each entry: key, state, data.
pub(super) type Visitor<'f> = dyn FnMut(&str, &[u8], Option<&[u8]>) -> Result<(), StoreError> + 'f;

/// Calls `f` with each entry of a stored chunk, borrowed: readers that need a few fields copy
/// only those.
pub(super) fn visit(bytes: &[u8], f: &mut Visitor<'_>) -> Result<(), StoreError> {
    if bytes.first() != Some(&FORMAT) {
        return Err(corrupt("unknown chunk format"));
    }
    let len = bytes
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt("short chunk"))? as usize;
    if len > MAX_RAW {
        return Err(corrupt(format!("chunk claims {len} bytes")));
    }
    RAW.with_borrow_mut(|raw| {
        raw.clear();
        raw.resize(len, 0);
        let n = lz4_flex::block::decompress_into(&bytes[5..], raw)
            .map_err(|e| corrupt(e.to_string()))?;
        if n != len {
            return Err(corrupt(format!("chunk holds {n} bytes, not {len}")));
        }
        let mut r = Reader(raw);
        let result = (|| {
            while !r.0.is_empty() {
                let n = r.len()?;
                let key =
                    std::str::from_utf8(r.take(n)?).map_err(|_| corrupt("key is not UTF-8"))?;
                let n = r.len()?;
                let state = r.take(n)?;
                let data = match r.len()? {
                    0 => None,
                    n => Some(r.take(n - 1)?),
                };
                f(key, state, data)?;
            }
            Ok(())
        })();
        // A rare large chunk does not keep its buffer for the life of the thread.
        if raw.capacity() > 1 << 20 {
            *raw = Vec::new();
        }
        result
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt("truncated entry"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| corrupt("length"))?;
        Ok(u32::from_le_bytes(b) as usize)
    }
}
