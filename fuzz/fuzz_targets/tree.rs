#![no_main]
//! Tree blobs: sealed (kind and id in the AAD), framed postcard `Tree`, checked against the id.

use libfuzzer_sys::fuzz_target;
use ocvault::format::{self, BlobType, Tree};
use ocvault::pack::{open_blob, seal_blob};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    // The raw parser, as `Repository::load_tree` runs it on an opened blob.
    if let Ok(tree) = format::from_postcard::<Tree>(data, "tree") {
        assert_eq!(
            format::from_postcard::<Tree>(&format::to_postcard(&tree), "tree").unwrap(),
            tree
        );
        for n in &tree.nodes {
            let _ = n.name_lossy();
        }
    }
    // Hostile stored bytes under the blob's own id.
    let id = keys.blob_id(data);
    assert!(open_blob(keys, BlobType::Tree, &id, data, data.len() as u32).is_err());
    // A valid seal of the bytes opens to them; claimed length or type must match.
    let sealed = seal_blob(keys, BlobType::Tree, &id, data, 3);
    assert_eq!(
        open_blob(keys, BlobType::Tree, &id, &sealed, data.len() as u32).unwrap(),
        data
    );
    assert!(open_blob(keys, BlobType::Data, &id, &sealed, data.len() as u32).is_err());
    assert!(open_blob(
        keys,
        BlobType::Tree,
        &id,
        &sealed,
        (data.len() as u32).wrapping_add(1)
    )
    .is_err());
    // Hostile framing inside a valid seal: open_blob returns the unframed bytes or fails.
    if let Ok(raw) = format::unframe(data, 1 << 24, "tree") {
        let rid = keys.blob_id(&raw);
        let sealed = keys.seal(ocvault::crypto::SealKind::TreeBlob, &rid.0, data);
        assert_eq!(
            open_blob(keys, BlobType::Tree, &rid, &sealed, raw.len() as u32).unwrap(),
            raw
        );
        let _ = format::from_postcard::<Tree>(&raw, "tree");
    }
});
