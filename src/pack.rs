//! Packs: many sealed blobs of one type, then a sealed header listing them, then the header's
//! length (u32 LE). A pack's name is the BLAKE3 hash of all its bytes.

use crate::backend::{Backend, FileKind};
use crate::crypto::{Keys, SealKind};
use crate::error::{Error, Result};
use crate::format::{self, BlobType, IndexFile, IndexPack, PackHeader, PackedBlob, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::repository::Repository;
use std::collections::{HashSet, VecDeque};

/// Assembles one pack in memory.
pub struct PackBuilder {
    blob_type: BlobType,
    buf: Vec<u8>,
    blobs: Vec<PackedBlob>,
}

impl PackBuilder {
    pub fn new(blob_type: BlobType, capacity: usize) -> Self {
        PackBuilder {
            blob_type,
            buf: Vec::with_capacity(capacity),
            blobs: Vec::new(),
        }
    }

    pub fn add(&mut self, id: Id, raw_length: u32, sealed: &[u8]) {
        self.blobs.push(PackedBlob {
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(sealed);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends the sealed header and trailer; returns the pack's bytes and its index entry.
    pub fn finish(mut self, keys: &Keys) -> (Vec<u8>, IndexPack) {
        let header = PackHeader {
            blob_type: self.blob_type,
            blobs: self.blobs,
        };
        let sealed = keys.seal(
            SealKind::PackHeader,
            &[],
            &format::frame(&format::to_postcard(&header), 3),
        );
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let id = Id::of_stored_bytes(&self.buf);
        let size = self.buf.len() as u64;
        (
            self.buf,
            IndexPack {
                id,
                blob_type: header.blob_type,
                size,
                blobs: header.blobs,
            },
        )
    }
}

/// Decodes a pack header from the pack's last bytes (`tail` ends where the pack ends).
/// Returns `Err(needed)` via `Ok(None)` when `tail` is too short to hold the whole header.
pub fn parse_header_from_tail(
    keys: &Keys,
    tail: &[u8],
    pack_size: u64,
) -> Result<Option<PackHeader>> {
    if tail.len() < 4 {
        return Err(Error::corrupt("pack", "too short for a header"));
    }
    let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().unwrap()) as u64;
    if hlen + 4 > pack_size {
        return Err(Error::corrupt(
            "pack header",
            format!("length {hlen} exceeds the pack ({pack_size} bytes)"),
        ));
    }
    if (hlen + 4) as usize > tail.len() {
        return Ok(None);
    }
    let sealed = &tail[tail.len() - 4 - hlen as usize..tail.len() - 4];
    let framed = keys.open(SealKind::PackHeader, &[], sealed)?;
    let header: PackHeader = format::from_postcard(
        &format::unframe(&framed, format::MAX_OBJECT_SIZE, "pack header")?,
        "pack header",
    )?;
    let data_end = pack_size - hlen - 4;
    for b in &header.blobs {
        if b.offset as u64 + b.length as u64 > data_end {
            return Err(Error::corrupt(
                "pack header",
                format!("blob {} lies outside the pack", b.id.short()),
            ));
        }
    }
    Ok(Some(header))
}

/// Reads and decodes a pack's header with one or two ranged reads.
pub fn read_header(backend: &Backend, keys: &Keys, id: &Id, pack_size: u64) -> Result<PackHeader> {
    let path = FileKind::Pack.path(id);
    let first = pack_size.min(64 * 1024);
    let tail = backend.read_range(&path, pack_size - first, first)?;
    if let Some(h) = parse_header_from_tail(keys, &tail, pack_size)? {
        return Ok(h);
    }
    let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().unwrap()) as u64;
    let tail = backend.read_range(&path, pack_size - hlen - 4, hlen + 4)?;
    parse_header_from_tail(keys, &tail, pack_size)?
        .ok_or_else(|| Error::corrupt("pack header", "inconsistent length"))
}

/// Opens one stored blob and checks that its plaintext hashes to its id.
pub fn open_blob(
    keys: &Keys,
    blob_type: BlobType,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
) -> Result<Vec<u8>> {
    let kind = match blob_type {
        BlobType::Data => SealKind::DataBlob,
        BlobType::Tree => SealKind::TreeBlob,
    };
    let framed = keys
        .open(kind, &id.0, sealed)
        .map_err(|_| Error::corrupt(format!("blob {}", id.short()), "authentication failed"))?;
    let raw = format::unframe(
        &framed,
        raw_length as usize,
        &format!("blob {}", id.short()),
    )?;
    if raw.len() != raw_length as usize || keys.blob_id(&raw) != *id {
        return Err(Error::corrupt(
            format!("blob {}", id.short()),
            "content does not match its id",
        ));
    }
    Ok(raw)
}

/// Frames (compressing when it helps) and seals one blob.
pub fn seal_blob(keys: &Keys, blob_type: BlobType, id: &Id, raw: &[u8], level: i32) -> Vec<u8> {
    let kind = match blob_type {
        BlobType::Data => SealKind::DataBlob,
        BlobType::Tree => SealKind::TreeBlob,
    };
    // [scheme][nonce] prefix first, framed plaintext after it, sealed in place.
    let mut buf = Vec::with_capacity(raw.len() / 2 + 64);
    buf.resize(1 + crate::crypto::NONCE_LEN, 0);
    format::frame_into(raw, level, &mut buf);
    keys.seal_in_place(kind, &id.0, &mut buf);
    buf
}

/// Writes blobs of one type into packs, deduplicated against an index and against what it
/// wrote itself; uploads run in the background, two at a time. `finish` indexes them.
pub struct BlobWriter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    blob_type: BlobType,
    pending: HashSet<Id>,
    builder: PackBuilder,
    uploads: VecDeque<(tokio::task::JoinHandle<Result<()>>, IndexPack)>,
    written: Vec<IndexPack>,
    /// Blobs and stored bytes this writer added.
    pub blobs_added: u64,
    pub bytes_added: u64,
}

impl<'a> BlobWriter<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index, blob_type: BlobType) -> Self {
        BlobWriter {
            repo,
            index,
            blob_type,
            pending: HashSet::new(),
            builder: PackBuilder::new(blob_type, 1 << 20),
            uploads: VecDeque::new(),
            written: Vec::new(),
            blobs_added: 0,
            bytes_added: 0,
        }
    }

    /// Whether the repository has, or this writer will store, the blob.
    pub fn has(&self, id: &Id) -> bool {
        self.index.contains(id) || self.pending.contains(id)
    }

    /// Stores a blob whose id the caller computed from `raw`; returns whether it was new.
    pub fn save(&mut self, id: Id, raw: &[u8]) -> Result<bool> {
        if self.has(&id) {
            return Ok(false);
        }
        self.pending.insert(id);
        let sealed = seal_blob(
            &self.repo.keys,
            self.blob_type,
            &id,
            raw,
            self.repo.config.compression_level,
        );
        self.builder.add(id, raw.len() as u32, &sealed);
        self.blobs_added += 1;
        if self.builder.len() >= self.repo.config.pack_target_size as usize {
            self.flush_pack()?;
        }
        Ok(true)
    }

    /// Encodes and stores a tree; returns its id.
    pub fn save_tree(&mut self, tree: &Tree) -> Result<Id> {
        let raw = format::to_postcard(tree);
        let id = self.repo.keys.blob_id(&raw);
        self.save(id, &raw)?;
        Ok(id)
    }

    fn flush_pack(&mut self) -> Result<()> {
        let b = std::mem::replace(&mut self.builder, PackBuilder::new(self.blob_type, 1 << 20));
        if b.is_empty() {
            return Ok(());
        }
        let (bytes, entry) = b.finish(&self.repo.keys);
        self.bytes_added += bytes.len() as u64;
        let h = self
            .repo
            .backend
            .spawn_write(FileKind::Pack.path(&entry.id), bytes);
        self.uploads.push_back((h, entry));
        while self.uploads.len() > 2 {
            self.wait_one()?;
        }
        Ok(())
    }

    fn wait_one(&mut self) -> Result<()> {
        if let Some((h, entry)) = self.uploads.pop_front() {
            self.repo
                .backend
                .runtime()
                .block_on(h)
                .map_err(|e| Error::other(format!("upload task failed: {e}")))??;
            self.written.push(entry);
        }
        Ok(())
    }

    /// Uploads the last pack, waits for every upload, and indexes everything written.
    pub fn finish(mut self) -> Result<()> {
        self.flush_pack()?;
        while !self.uploads.is_empty() {
            self.wait_one()?;
        }
        if !self.written.is_empty() {
            self.repo.save_index(&IndexFile {
                supersedes: vec![],
                packs: std::mem::take(&mut self.written),
            })?;
        }
        Ok(())
    }
}
