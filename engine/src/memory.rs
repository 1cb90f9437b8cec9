//! The backend of a store held in memory: the database "file" in fixed-size chunks.
//!
//! redb's own memory backend is one `Vec<u8>`: each growth may copy the whole database and the
//! vector's spare capacity can reach its length. Chunks grow without copying and waste at most
//! one chunk; a chunk is allocated when first written, so the room redb reserves as a store grows
//! costs neither memory nor the clearing of it until it is used (reads of it see zeros). Used by
//! [`crate::Store::in_memory`] (the simulator runs a hundred such stores).

use std::io;
use std::sync::RwLock;

/// Bytes per chunk.
const CHUNK: usize = 64 << 10;

/// The database bytes, chunk by chunk; the last chunk may be partly beyond `len`; a chunk never
/// written is `None` and reads as zeros.
#[derive(Default)]
pub(crate) struct ChunkedMemory {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    len: u64,
    chunks: Vec<Option<Box<[u8]>>>,
}

impl std::fmt::Debug for ChunkedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkedMemory")
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "beyond the end of the memory store",
    )
}

fn poisoned() -> io::Error {
    io::Error::other("the memory store's lock is poisoned")
}

/// Splits `[offset, offset + n)` into (chunk index, offset in chunk, length) pieces.
fn pieces(offset: u64, n: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut at = offset;
    let end = offset + n as u64;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let chunk = (at / CHUNK as u64) as usize;
        let within = (at % CHUNK as u64) as usize;
        let take = (CHUNK - within).min((end - at) as usize);
        at += take as u64;
        Some((chunk, within, take))
    })
}

impl redb::StorageBackend for ChunkedMemory {
    fn len(&self) -> io::Result<u64> {
        Ok(self.inner.read().map_err(|_| poisoned())?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let inner = self.inner.read().map_err(|_| poisoned())?;
        if offset + out.len() as u64 > inner.len {
            return Err(out_of_range());
        }
        let mut done = 0;
        for (chunk, within, take) in pieces(offset, out.len()) {
            let dst = out.get_mut(done..done + take).ok_or_else(out_of_range)?;
            match inner.chunks.get(chunk).ok_or_else(out_of_range)? {
                Some(c) => {
                    dst.copy_from_slice(c.get(within..within + take).ok_or_else(out_of_range)?)
                }
                None => dst.fill(0),
            }
            done += take;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        let chunks = len.div_ceil(CHUNK as u64) as usize;
        if len < inner.len {
            inner.chunks.truncate(chunks);
            // Bytes past the new end read as zero if the store grows again.
            let tail = (len % CHUNK as u64) as usize;
            if tail > 0
                && let Some(Some(last)) = inner.chunks.last_mut()
                && let Some(rest) = last.get_mut(tail..)
            {
                rest.fill(0);
            }
        }
        inner.chunks.resize_with(chunks, || None);
        inner.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        if offset + data.len() as u64 > inner.len {
            return Err(out_of_range());
        }
        let mut done = 0;
        for (chunk, within, take) in pieces(offset, data.len()) {
            let dst = inner
                .chunks
                .get_mut(chunk)
                .ok_or_else(out_of_range)?
                .get_or_insert_with(|| vec![0u8; CHUNK].into_boxed_slice())
                .get_mut(within..within + take)
                .ok_or_else(out_of_range)?;
            dst.copy_from_slice(data.get(done..done + take).ok_or_else(out_of_range)?);
            done += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use redb::StorageBackend;

    use super::*;

    #[test]
    fn reads_back_writes_across_chunks_and_zeroes_what_grows_again() {
        let m = ChunkedMemory::default();
        m.set_len(3 * CHUNK as u64).unwrap();
        let data: Vec<u8> = (0..CHUNK + 100).map(|i| (i % 251) as u8 + 1).collect();
        let at = CHUNK as u64 - 50;
        m.write(at, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        m.read(at, &mut back).unwrap();
        assert_eq!(back, data);
        // Shrink into the written range, grow again: the cut-off bytes read as zero.
        m.set_len(CHUNK as u64 + 10).unwrap();
        m.set_len(2 * CHUNK as u64).unwrap();
        let mut after = vec![0u8; 20];
        m.read(CHUNK as u64, &mut after).unwrap();
        assert_eq!(&after[..10], &data[50..60]);
        assert!(after[10..].iter().all(|b| *b == 0));
        assert!(m.read(2 * CHUNK as u64 - 1, &mut [0u8; 2]).is_err());
        assert!(m.write(2 * CHUNK as u64, &[1]).is_err());
    }

    #[test]
    fn room_grown_and_not_written_holds_no_memory_and_reads_as_zeros() {
        let m = ChunkedMemory::default();
        m.set_len(100 * CHUNK as u64).unwrap();
        let held = |m: &ChunkedMemory| {
            let inner = m.inner.read().unwrap();
            inner.chunks.iter().filter(|c| c.is_some()).count()
        };
        assert_eq!(held(&m), 0);
        let mut back = vec![1u8; 3 * CHUNK];
        m.read(10 * CHUNK as u64 + 7, &mut back).unwrap();
        assert!(back.iter().all(|b| *b == 0));
        m.write(50 * CHUNK as u64 - 2, &[9, 9, 9, 9]).unwrap();
        assert_eq!(held(&m), 2, "the two chunks the write spans");
        let mut four = [0u8; 6];
        m.read(50 * CHUNK as u64 - 3, &mut four).unwrap();
        assert_eq!(four, [0, 9, 9, 9, 9, 0]);
        // Cut inside the written chunk and grow again: the cut-off bytes read as zero.
        m.set_len(50 * CHUNK as u64 + 1).unwrap();
        m.set_len(60 * CHUNK as u64).unwrap();
        m.read(50 * CHUNK as u64 - 3, &mut four).unwrap();
        assert_eq!(four, [0, 9, 9, 9, 0, 0]);
        assert_eq!(m.len().unwrap(), 60 * CHUNK as u64);
    }
}
