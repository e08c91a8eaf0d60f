//! Content-defined chunking: FastCDC (v2020) with gear tables seeded from the master key, so
//! chunk boundaries are secret. Data is read in large batches whose chunks are then processed
//! in parallel.

use crate::format::ChunkerParams;
use fastcdc::v2020::{cut_gear, get_gear_with_seed, logarithm2, Normalization, MASKS};
use std::io::Read;
use std::ops::Range;

#[derive(Clone)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Chunker {
    pub fn new(p: ChunkerParams, seed: u64) -> Chunker {
        let bits = logarithm2(p.avg_size);
        let norm = Normalization::Level1.bits();
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            mask_s: MASKS[(bits + norm) as usize],
            mask_l: MASKS[(bits - norm) as usize],
            gear,
            gear_ls,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the first chunk of `data`; `data` must hold `max` bytes unless it is the end.
    pub fn cut(&self, data: &[u8]) -> usize {
        let (_, n) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n.max(1).min(data.len())
    }

    /// Splits a whole in-memory buffer into chunks.
    pub fn split_all(&self, data: &[u8]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = self.cut(&data[pos..]);
            out.push(pos..pos + n);
            pos += n;
        }
        out
    }
}

/// A batch of chunks: one buffer and the ranges of the chunks in it.
pub struct Batch {
    pub buf: Vec<u8>,
    pub chunks: Vec<Range<usize>>,
}

/// Reads a stream in batches of about `batch_size` bytes, each cut into whole chunks.
pub struct ChunkStream<R: Read> {
    reader: R,
    chunker: Chunker,
    batch_size: usize,
    carry: Vec<u8>,
    eof: bool,
    pub bytes_read: u64,
}

impl<R: Read> ChunkStream<R> {
    pub fn new(reader: R, chunker: Chunker, batch_size: usize) -> Self {
        ChunkStream {
            reader,
            chunker,
            batch_size: batch_size.max(chunker_min_batch()),
            carry: Vec::new(),
            eof: false,
            bytes_read: 0,
        }
    }

    /// The next batch, or `None` at the end of the stream.
    pub fn next_batch(&mut self) -> std::io::Result<Option<Batch>> {
        let max = self.chunker.max_size();
        if self.eof && self.carry.is_empty() {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.carry);
        let want = self.batch_size + max;
        let mut filled = buf.len();
        // Zero the buffer once per batch, not once per read: pipes deliver 64 KiB at a time.
        buf.resize(want.max(filled), 0);
        while !self.eof && filled < want {
            match self.reader.read(&mut buf[filled..want]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    filled += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        if buf.is_empty() {
            return Ok(None);
        }
        let mut chunks = Vec::new();
        let mut pos = 0;
        // Cut while a full window is available; at the end of the stream, cut everything.
        while pos < buf.len() && (self.eof || buf.len() - pos >= max) {
            let n = self.chunker.cut(&buf[pos..]);
            chunks.push(pos..pos + n);
            pos += n;
        }
        if pos < buf.len() {
            self.carry = buf[pos..].to_vec();
            buf.truncate(pos);
        }
        Ok(Some(Batch { buf, chunks }))
    }
}

fn chunker_min_batch() -> usize {
    1 << 20
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        }
    }

    #[test]
    fn stream_and_whole_buffer_cut_alike() {
        let mut data = vec![0u8; 3_000_000];
        let mut x = 0x1234_5678_9abc_def0u64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let c = Chunker::new(params(), 42);
        let whole: Vec<_> = c
            .split_all(&data)
            .into_iter()
            .map(|r| data[r].to_vec())
            .collect();
        let mut s = ChunkStream::new(&data[..], c.clone(), 1 << 20);
        let mut streamed = Vec::new();
        while let Some(b) = s.next_batch().unwrap() {
            for r in b.chunks {
                streamed.push(b.buf[r].to_vec());
            }
        }
        assert_eq!(whole, streamed);
        assert!(whole.iter().all(|c| c.len() <= 32768));
        // A different seed gives different boundaries.
        let other = Chunker::new(params(), 43).split_all(&data);
        assert_ne!(other.len(), 0);
        assert_ne!(other, c.split_all(&data));
    }
}
