//! Sparse files: holes found with SEEK_DATA/SEEK_HOLE are never read. The chunks are exactly
//! those of reading the zeros (the format does not know about holes): a chunk's cut depends
//! only on the at most `max` bytes from its start, so wherever a chunk starts with at least
//! `max` zeros ahead it has the length of the first chunk of `max` zeros, and the same id. Runs
//! of such chunks are counted instead of read, cut and hashed; the edges of a hole (less than
//! `max` zeros ahead) are filled with zeros in memory and cut as usual.

use crate::chunker::{Batch, Chunker};
use nix::unistd::{lseek, Whence};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// The holes of `file` (below `size`) of at least `min_len` bytes; shorter ones are read as
/// data (they would only be filled with zeros again). Empty where the file system does not
/// say (it then reports the whole file as data). Leaves the file's offset at its start, for a
/// caller that then reads it from there.
pub fn holes(file: &File, size: u64, min_len: u64) -> std::io::Result<Vec<Range<u64>>> {
    let found = find_holes(file, size, min_len);
    lseek(file, 0, Whence::SeekSet)?;
    found
}

fn find_holes(file: &File, size: u64, min_len: u64) -> std::io::Result<Vec<Range<u64>>> {
    let mut holes = Vec::new();
    let mut off = 0u64;
    while off < size {
        let data = match lseek(file, off as i64, Whence::SeekData) {
            Ok(d) => (d as u64).min(size),
            // No data after `off`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if data - off >= min_len {
            holes.push(off..data);
        }
        if data >= size {
            break;
        }
        off = match lseek(file, data as i64, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(e) => return Err(e.into()),
        };
    }
    Ok(holes)
}

/// What a sparse file yields, in order.
pub enum Piece {
    /// Bytes read (holes shorter than `max` filled with zeros) and their chunks.
    Data(Batch),
    /// `count` chunks of `len` zero bytes each, inside a hole.
    Zeros { len: usize, count: u64 },
}

/// Cuts a file with holes into the chunks reading it whole would give.
pub struct SparseChunks<'f> {
    file: &'f File,
    holes: Vec<Range<u64>>,
    size: u64,
    chunker: Chunker,
    batch_size: usize,
    /// The file offset of the next chunk.
    pos: u64,
    /// The length of a chunk that starts with at least `max` zeros.
    zero_len: usize,
}

impl<'f> SparseChunks<'f> {
    /// `holes` as from [`holes`] with `min_len` at least the chunker's maximum.
    pub fn new(
        file: &'f File,
        holes: Vec<Range<u64>>,
        size: u64,
        chunker: Chunker,
        batch_size: usize,
    ) -> Self {
        let zero_len = chunker.cut(&vec![0u8; chunker.max_size()]);
        SparseChunks {
            file,
            holes,
            size,
            chunker,
            batch_size,
            pos: 0,
            zero_len,
        }
    }

    /// Bytes of the file covered so far (all of it at the end, unless it shrank meanwhile).
    pub fn bytes_done(&self) -> u64 {
        self.pos
    }

    /// Zeros ahead of `off` when it lies in a hole.
    fn zeros_ahead(&self, off: u64) -> u64 {
        let i = self.holes.partition_point(|h| h.end <= off);
        match self.holes.get(i) {
            Some(h) if h.start <= off => h.end - off,
            _ => 0,
        }
    }

    /// The next piece, or `None` at the end of the file.
    pub fn next_piece(&mut self) -> std::io::Result<Option<Piece>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let max = self.chunker.max_size() as u64;
        let zeros = self.zeros_ahead(self.pos);
        if zeros >= max {
            let count = (zeros - max) / self.zero_len as u64 + 1;
            self.pos += count * self.zero_len as u64;
            return Ok(Some(Piece::Zeros {
                len: self.zero_len,
                count,
            }));
        }
        // Read up to a batch, but only `max` bytes into the next long hole: a chunk starting
        // before it ends within those, and one starting inside it is counted, not read.
        let mut end = self.size.min(self.pos + self.batch_size as u64 + max);
        let i = self.holes.partition_point(|h| h.end <= self.pos);
        if let Some(h) = self.holes[i..]
            .iter()
            .find(|h| h.end - h.start.max(self.pos) >= max)
        {
            end = end.min(h.start.max(self.pos) + max);
        }
        let buf = self.read_range(self.pos..end)?;
        let at_end = self.pos + buf.len() as u64 >= self.size;
        let mut chunks = Vec::new();
        let mut p = 0usize;
        while p < buf.len() {
            let off = self.pos + p as u64;
            if p > 0 && self.zeros_ahead(off) >= max {
                break;
            }
            if !at_end && ((buf.len() - p) as u64) < max {
                break;
            }
            let n = self.chunker.cut(&buf[p..]);
            chunks.push(p..p + n);
            p += n;
        }
        let mut buf = buf;
        buf.truncate(p);
        self.pos += p as u64;
        Ok(Some(Piece::Data(Batch { buf, chunks })))
    }

    /// The bytes of `range`: data read, long holes' edges as zeros. A file that ends early
    /// (shrank while read) ends here: `size` follows it.
    fn read_range(&mut self, range: Range<u64>) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        let mut off = range.start;
        while off < range.end {
            let zeros = self.zeros_ahead(off);
            if zeros > 0 {
                off = range.end.min(off + zeros);
                continue;
            }
            let i = self.holes.partition_point(|h| h.end <= off);
            let data_end = self
                .holes
                .get(i)
                .map_or(range.end, |h| h.start.min(range.end));
            let at = (off - range.start) as usize;
            let want = (data_end - off) as usize;
            match self.file.read_at(&mut buf[at..at + want], off) {
                Ok(0) => {
                    self.size = off;
                    buf.truncate(at);
                    return Ok(buf);
                }
                Ok(n) => off += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkStream;
    use crate::format::ChunkerParams;
    use std::io::Write;

    /// Every chunk (as bytes) of a file, read whole or through its holes.
    fn chunks_whole(c: &Chunker, f: &File) -> Vec<Vec<u8>> {
        let mut s = ChunkStream::new(f, c.clone(), 1 << 20);
        let mut out = Vec::new();
        while let Some(b) = s.next_batch().unwrap() {
            out.extend(b.chunks.into_iter().map(|r| b.buf[r].to_vec()));
        }
        out
    }

    fn chunks_sparse(c: &Chunker, f: &File, size: u64) -> Vec<Vec<u8>> {
        let holes = holes(f, size, c.max_size() as u64).unwrap();
        assert!(!holes.is_empty(), "the file system reports no holes");
        let mut s = SparseChunks::new(f, holes, size, c.clone(), 1 << 20);
        let mut out = Vec::new();
        while let Some(p) = s.next_piece().unwrap() {
            match p {
                Piece::Data(b) => out.extend(b.chunks.into_iter().map(|r| b.buf[r].to_vec())),
                Piece::Zeros { len, count } => {
                    out.extend((0..count).map(|_| vec![0u8; len]));
                }
            }
        }
        assert_eq!(s.bytes_done(), size);
        out
    }

    #[test]
    fn holes_give_the_chunks_of_reading_the_zeros() {
        let c = Chunker::new(
            ChunkerParams {
                min_size: 2048,
                avg_size: 8192,
                max_size: 32768,
            },
            7,
        );
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        // (offset, length) of data; the rest is holes of many sizes around `max`.
        let layout: &[(u64, usize)] = &[
            (0, 5000),
            (40_000, 100),
            (1 << 20, 70_000),
            ((1 << 20) + 70_000 + 32_768, 3),
            (3 << 20, 1 << 20),
            (6 << 20, 10),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let mut f = File::create(&path).unwrap();
        for &(off, len) in layout {
            f.write_all_at(&noise(len), off).unwrap();
        }
        let size = (9 << 20) + 12_345;
        f.set_len(size).unwrap();
        f.flush().unwrap();
        let f = File::open(&path).unwrap();
        // Lengths and hashes: a failure prints lines, not megabytes.
        let digest = |v: Vec<Vec<u8>>| -> Vec<(usize, String)> {
            v.iter()
                .map(|c| (c.len(), blake3::hash(c).to_hex()[..8].to_string()))
                .collect()
        };
        assert_eq!(
            digest(chunks_sparse(&c, &f, size)),
            digest(chunks_whole(&c, &f))
        );
    }
}
