#![no_main]
//! `index/<id>`: sealed, framed postcard `IndexFile`; then the in-memory index built from it.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::IndexFile;
use ocvault::index::Index;
use ocvault::{BlobId, Id, IndexFileId};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(file) = common::check_sealed::<IndexFile>(SealKind::Index, data) {
        // A pack listed twice counts once, by its first listing (Index::from_files skips the
        // others; a real index never lists a pack twice).
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<BlobId> = file
            .packs
            .iter()
            .filter(|p| seen.insert(p.id))
            .flat_map(|p| p.blobs.iter().map(|b| b.id))
            .collect();
        // Named by the hash of its bytes, as stored index files are: a file can never list
        // itself among the files it supersedes (that would take a hash preimage).
        let index = Index::from_files(vec![(IndexFileId(Id::of_stored_bytes(data)), file)]);
        for id in &ids {
            let loc = index.get(id).expect("an indexed blob is found");
            let _ = index.pack(loc.pack);
        }
        let _ = index.bytes_per_blob();
    }
});
