//! Packs: many sealed blobs of one type, then a sealed header listing them, then the header's
//! length (u32 LE). A pack's name is the BLAKE3 hash of all its bytes.

use crate::backend::{Backend, FileKind, ObjectClass};
use crate::crypto::{Keys, SealKind};
use crate::error::{Error, Result};
use crate::format::{self, BlobType, IndexPack, PackHeader, PackedBlob};
use crate::id::{BlobId, Id, PackId};

/// Bytes a spilling pack builder holds before it appends them to its file.
const SPILL_BYTES: usize = 1 << 20;

/// Assembles one pack: in memory, or on a local repository straight into a temporary file
/// (then a pack being filled holds about 1 MiB, not the whole pack).
pub struct PackBuilder {
    blob_type: BlobType,
    buf: Vec<u8>,
    blobs: Vec<PackedBlob>,
    spill: Option<Spill>,
}

struct Spill {
    /// The temporary file, or the error that stopped writing it (reported by `write`).
    file: Result<crate::backend::LocalWrite>,
    hasher: blake3::Hasher,
    /// Bytes already in the file.
    written: u64,
    /// When the file was last written or touched.
    touched: std::time::Instant,
}

/// How often a pack file being filled is touched, as often as the backup marker is refreshed
/// (well inside `locks::stale_after()`): a backup that finds little new data may leave it
/// unwritten for long, and a concurrent `prune` must not take it for a crashed write's remains.
pub fn touch_every() -> std::time::Duration {
    crate::locks::heartbeat()
}

impl PackBuilder {
    pub fn new(blob_type: BlobType, capacity: usize) -> Self {
        PackBuilder {
            blob_type,
            buf: Vec::with_capacity(capacity),
            blobs: Vec::new(),
            spill: None,
        }
    }

    /// A builder that writes into a temporary file where `backend` is a local repository,
    /// and otherwise one that holds the pack in memory (up to `capacity` without growing).
    pub fn for_backend(backend: &Backend, blob_type: BlobType, capacity: usize) -> Self {
        match backend.local_file() {
            Some(file) => PackBuilder {
                blob_type,
                buf: Vec::with_capacity(SPILL_BYTES + (1 << 18)),
                blobs: Vec::new(),
                spill: Some(Spill {
                    file,
                    hasher: blake3::Hasher::new(),
                    written: 0,
                    touched: std::time::Instant::now(),
                }),
            },
            None => PackBuilder::new(blob_type, capacity),
        }
    }

    pub fn add(&mut self, id: Id, raw_length: u32, sealed: &[u8]) {
        self.blobs.push(PackedBlob {
            id: BlobId(id),
            offset: self.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(sealed);
        if self.buf.len() >= SPILL_BYTES {
            self.spill_buffer();
        }
        self.keep_alive();
    }

    /// Touches the pack's temporary file if that has not happened for `touch_every()`; call it
    /// at least that often while the builder lives.
    pub fn keep_alive(&mut self) {
        if let Some(spill) = &mut self.spill {
            if spill.touched.elapsed() >= touch_every() {
                if let Ok(f) = &spill.file {
                    f.touch();
                }
                spill.touched = std::time::Instant::now();
            }
        }
    }

    /// Moves the buffered bytes to the file, if this builder has one.
    fn spill_buffer(&mut self) {
        let Some(spill) = &mut self.spill else {
            return;
        };
        spill.hasher.update(&self.buf);
        spill.written += self.buf.len() as u64;
        spill.touched = std::time::Instant::now();
        if let Ok(f) = &mut spill.file {
            if let Err(e) = f.append(&self.buf) {
                spill.file = Err(e);
            }
        }
        self.buf.clear();
    }

    /// Bytes added so far.
    pub fn len(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.written as usize) + self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Finishes the pack and starts storing it: an in-memory pack is handed to
    /// `Backend::spawn_write`, a spilled one is completed, fsynced and renamed in the
    /// background. Returns the write's handle, the pack's index entry and its size.
    pub fn write(
        mut self,
        keys: &Keys,
        backend: &Backend,
    ) -> (tokio::task::JoinHandle<Result<()>>, IndexPack) {
        let Some(mut spill) = self.spill.take() else {
            let (bytes, entry) = self.finish(keys);
            return (
                backend.spawn_write(
                    FileKind::Pack.path(&entry.id),
                    bytes,
                    pack_class(entry.blob_type),
                ),
                entry,
            );
        };
        let trailer = self.trailer(keys);
        spill.hasher.update(&self.buf);
        spill.hasher.update(&trailer);
        let id = PackId(Id(*spill.hasher.finalize().as_bytes()));
        let size = spill.written + (self.buf.len() + trailer.len()) as u64;
        let entry = IndexPack {
            id,
            blob_type: self.blob_type,
            size,
            blobs: self.blobs,
        };
        let handle = match spill.file.and_then(|mut f| {
            f.append(&self.buf)?;
            f.append(&trailer)?;
            Ok(f)
        }) {
            Ok(f) => {
                backend.spawn_finish_local(f, FileKind::Pack.path(&id), pack_class(entry.blob_type))
            }
            Err(e) => backend.failed_write(e),
        };
        (handle, entry)
    }

    /// The sealed header and its length, which end a pack.
    fn trailer(&self, keys: &Keys) -> Vec<u8> {
        let header = PackHeader {
            blob_type: self.blob_type,
            blobs: self.blobs.clone(),
        };
        let mut sealed = keys.seal(
            SealKind::PackHeader,
            &[],
            &format::frame(&format::to_postcard(&header), 3),
        );
        let len = sealed.len() as u32;
        sealed.extend_from_slice(&len.to_le_bytes());
        sealed
    }

    /// Appends the sealed header and trailer; returns the pack's bytes and its index entry.
    /// For a builder made by `new` (a spilling one is finished by `write`).
    pub fn finish(mut self, keys: &Keys) -> (Vec<u8>, IndexPack) {
        debug_assert!(self.spill.is_none(), "a spilling pack is finished by write");
        let trailer = self.trailer(keys);
        self.buf.extend_from_slice(&trailer);
        let id = PackId(Id::of_stored_bytes(&self.buf));
        let size = self.buf.len() as u64;
        (
            self.buf,
            IndexPack {
                id,
                blob_type: self.blob_type,
                size,
                blobs: self.blobs,
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

/// Bytes of a pack header entry at most: id, then offset, length and raw length as varints.
const MAX_HEADER_ENTRY: u64 = 32 + 3 * 5;

/// The longest sealed pack header a repository whose packs close at `pack_target_size` bytes
/// can hold (format-spec §7). A pack is closed once its blobs reach the target, and a sealed
/// blob is at least 42 bytes (41 of sealing, 1 of framing), so it holds at most
/// `target / 42 + 2` blobs; each takes at most `MAX_HEADER_ENTRY` bytes in the header, plus
/// the blob type and count, the frame byte (zstd is used only when it is shorter) and the
/// 41 bytes of sealing. A stored length above this is junk, refused before it is read.
pub fn max_header_len(pack_target_size: u32) -> u64 {
    let blobs = pack_target_size as u64 / 42 + 2;
    41 + 1 + 1 + 5 + blobs * MAX_HEADER_ENTRY
}

/// The header length a pack's last 4 bytes claim, refused when above `max_len`.
pub fn claimed_header_len(tail: &[u8], max_len: u64) -> Result<u64> {
    if tail.len() < 4 {
        return Err(Error::corrupt("pack", "too short for a header"));
    }
    let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().unwrap()) as u64;
    if hlen > max_len {
        return Err(Error::corrupt(
            "pack header",
            format!("length {hlen} exceeds the longest the format allows ({max_len})"),
        ));
    }
    Ok(hlen)
}

/// Reads and decodes a pack's header with one or two ranged reads, never more than
/// `max_len` (see [`max_header_len`]) plus 64 KiB.
pub fn read_header(
    backend: &Backend,
    keys: &Keys,
    id: &Id,
    pack_size: u64,
    max_len: u64,
) -> Result<PackHeader> {
    let path = FileKind::Pack.path(id);
    let first = pack_size.min(64 * 1024);
    let tail = backend.read_range(&path, pack_size - first, first)?;
    let hlen = claimed_header_len(&tail, max_len)?;
    if let Some(h) = parse_header_from_tail(keys, &tail, pack_size)? {
        return Ok(h);
    }
    drop(tail);
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
    let mut raw = Vec::new();
    open_blob_into(keys, blob_type, id, sealed, raw_length, &mut raw)?;
    Ok(raw)
}

/// [`open_blob`] appending the plaintext to `out` (left as it was on an error).
pub fn open_blob_into(
    keys: &Keys,
    blob_type: BlobType,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let framed = open_frame(keys, blob_type, id, sealed)?;
    unframe_checked(keys, id, &framed, raw_length, out)
}

/// [`open_blob_into`] decrypting `sealed` where it lies (its bytes are left decrypted, or
/// scrambled on an error): no copy of the framed plaintext.
pub fn open_blob_in_place_into(
    keys: &Keys,
    blob_type: BlobType,
    id: &Id,
    sealed: &mut [u8],
    raw_length: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut spill = Vec::new();
    let framed = keys
        .open_in_place(seal_kind(blob_type), &id.0, sealed, &mut spill)
        .map_err(|e| open_error(e, id))?;
    unframe_checked(keys, id, framed, raw_length, out)
}

/// [`open_blob`] that also returns the framed (compressed) plaintext, checked like the
/// plaintext: `copy` seals it again under other keys ([`seal_framed`]) rather than compress
/// the plaintext a second time.
pub fn open_blob_framed(
    keys: &Keys,
    blob_type: BlobType,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let framed = open_frame(keys, blob_type, id, sealed)?;
    let mut raw = Vec::new();
    unframe_checked(keys, id, &framed, raw_length, &mut raw)?;
    Ok((framed, raw))
}

fn seal_kind(blob_type: BlobType) -> SealKind {
    match blob_type {
        BlobType::Data => SealKind::DataBlob,
        BlobType::Tree => SealKind::TreeBlob,
    }
}

fn open_frame(keys: &Keys, blob_type: BlobType, id: &Id, sealed: &[u8]) -> Result<Vec<u8>> {
    keys.open(seal_kind(blob_type), &id.0, sealed)
        .map_err(|e| open_error(e, id))
}

fn open_error(e: Error, id: &Id) -> Error {
    match e {
        e @ Error::WriteOnly(_) => e,
        _ => Error::corrupt(format!("blob {}", id.short()), "authentication failed"),
    }
}

/// Unframes `framed` onto `out` and checks length and id (`out` left as it was on an error).
fn unframe_checked(
    keys: &Keys,
    id: &Id,
    framed: &[u8],
    raw_length: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let start = out.len();
    format::unframe_into(
        framed,
        raw_length as usize,
        &format!("blob {}", id.short()),
        out,
    )?;
    let raw = &out[start..];
    if raw.len() != raw_length as usize || keys.blob_id(raw) != *id {
        out.truncate(start);
        return Err(Error::corrupt(
            format!("blob {}", id.short()),
            "content does not match its id",
        ));
    }
    Ok(())
}

/// How storage keeps a pack of this type: data packs may go to a colder storage class, tree
/// packs are read by every listing and stay with the metadata.
pub fn pack_class(blob_type: BlobType) -> ObjectClass {
    match blob_type {
        BlobType::Data => ObjectClass::DataPack,
        BlobType::Tree => ObjectClass::Metadata,
    }
}

/// Frames (compressing when it helps) and seals one blob.
pub fn seal_blob(keys: &Keys, blob_type: BlobType, id: &Id, raw: &[u8], level: i32) -> Vec<u8> {
    // [scheme][nonce] prefix first (a write-only key's is longer), framed plaintext after
    // it, sealed in place.
    let mut buf = Vec::with_capacity(raw.len() / 2 + 96);
    buf.resize(keys.blob_prefix_len(), 0);
    format::frame_into(raw, level, &mut buf);
    keys.seal_blob_in_place(seal_kind(blob_type), &id.0, &mut buf);
    buf
}

/// Seals a blob framed already (by [`open_blob_framed`], under other keys).
pub fn seal_framed(keys: &Keys, blob_type: BlobType, id: &Id, framed: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(framed.len() + 96);
    buf.resize(keys.blob_prefix_len(), 0);
    buf.extend_from_slice(framed);
    keys.seal_blob_in_place(seal_kind(blob_type), &id.0, &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn blobs(n: usize, len: usize) -> Vec<(Id, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let mut data = vec![0u8; len];
                let mut x = i as u64 + 1;
                for b in data.iter_mut() {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    *b = (x >> 56) as u8;
                }
                (Id(*blake3::hash(&data).as_bytes()), data)
            })
            .collect()
    }

    #[test]
    fn in_place_and_framed_opening_agree_with_open_blob_and_catch_tampering() {
        let keys = MasterKey::generate().derive();
        let other = MasterKey::generate().derive();
        for (_, raw) in blobs(3, 5000).into_iter().chain(blobs(1, 10)) {
            let id = keys.blob_id(&raw);
            let sealed = seal_blob(&keys, BlobType::Data, &id, &raw, 3);
            let n = raw.len() as u32;
            let mut copy = sealed.clone();
            let mut out = vec![7u8];
            open_blob_in_place_into(&keys, BlobType::Data, &id, &mut copy, n, &mut out).unwrap();
            assert_eq!(out[0], 7);
            assert_eq!(&out[1..], &raw[..]);
            // The frame resealed under other keys opens there to the same bytes.
            let (framed, plain) = open_blob_framed(&keys, BlobType::Data, &id, &sealed, n).unwrap();
            assert_eq!(plain, raw);
            let oid = other.blob_id(&raw);
            let resealed = seal_framed(&other, BlobType::Data, &oid, &framed);
            assert_eq!(
                open_blob(&other, BlobType::Data, &oid, &resealed, n).unwrap(),
                raw
            );
            // One flipped byte: refused, and `out` unchanged.
            let mut bad = sealed.clone();
            let k = bad.len() / 2;
            bad[k] ^= 1;
            let mut out = Vec::new();
            assert!(
                open_blob_in_place_into(&keys, BlobType::Data, &id, &mut bad, n, &mut out).is_err()
            );
            assert!(out.is_empty());
            // The wrong id (another blob's): refused.
            let mut copy = sealed.clone();
            assert!(
                open_blob_in_place_into(&keys, BlobType::Data, &oid, &mut copy, n, &mut out)
                    .is_err()
            );
        }
    }

    #[test]
    fn spilled_pack_is_named_by_its_bytes_and_its_header_matches() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path().to_str().unwrap(), true).unwrap();
        let keys = MasterKey::generate().derive();
        let mut b = PackBuilder::for_backend(&backend, BlobType::Data, 1 << 20);
        assert!(b.spill.is_some(), "a local repository spills");
        // Several MiB, so most bytes go to the file before the pack is finished.
        let input = blobs(12, 300 << 10);
        for (id, data) in &input {
            b.add(*id, data.len() as u32, data);
        }
        assert!(b.buf.len() < SPILL_BYTES);
        let (handle, entry) = b.write(&keys, &backend);
        backend.runtime().block_on(handle).unwrap().unwrap();

        let stored = backend.read(&FileKind::Pack.path(&entry.id)).unwrap();
        assert_eq!(Id::of_stored_bytes(&stored), *entry.id);
        assert_eq!(stored.len() as u64, entry.size);
        let header = parse_header_from_tail(&keys, &stored, entry.size)
            .unwrap()
            .unwrap();
        assert_eq!(header.blobs, entry.blobs);
        for ((id, data), blob) in input.iter().zip(&entry.blobs) {
            assert_eq!(*blob.id, *id);
            let at = blob.offset as usize;
            assert_eq!(&stored[at..at + blob.length as usize], &data[..]);
        }
        let tmp = dir.path().join("tmp");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "tmp/ is left empty"
        );

        // A builder dropped unused leaves no file behind either.
        drop(PackBuilder::for_backend(&backend, BlobType::Tree, 1 << 20));
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
