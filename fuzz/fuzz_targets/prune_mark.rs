#![no_main]
//! `prune/<id>`: sealed, framed postcard `PruneMark`, which prune reads from storage; then the
//! index prune builds from the marks' packs (the index for reading, and the packs it recovers).

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::PruneMark;
use ocvault::index::Index;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(mark) = common::check_sealed::<PruneMark>(SealKind::PruneMark, data) {
        let _ = ocvault::snapshot::rfc3339(mark.marked_unix_ns);
        // A pack listed twice counts by its first listing, as in `Index::build`.
        let read = Index::build(&[], &mark.packs);
        let mut seen = std::collections::HashSet::new();
        for p in mark.packs.iter().filter(|p| seen.insert(p.id)) {
            for b in &p.blobs {
                let loc = read.get(&b.id).expect("a marked pack's blob is found");
                let _ = read.pack(loc.pack);
            }
        }
        let _ = read.bytes_per_blob();
    }
});
