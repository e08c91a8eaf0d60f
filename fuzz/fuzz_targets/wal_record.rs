#![no_main]
//! `wal/<id>` (format version 2): a sealed, framed postcard `WalRecord` whose AAD extra is the
//! file id, which must be the keyed hash of the record's own `name`
//! (`wal::catalog::decode`).

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::{self, WalRecord};
use ocvault::wal::catalog;
use ocvault::Id;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    // Hostile stored bytes under any name: unsealing must fail cleanly.
    assert!(catalog::decode(keys, &Id([1; 32]), data).is_err());
    // The same bytes as the framed plaintext after unsealing.
    let plain: Option<WalRecord> = common::decode_framed(data).ok();
    let named = plain
        .as_ref()
        .map(|r| keys.wal_record_id(&r.name))
        .unwrap_or(Id([2; 32]));
    // Sealed properly under the id of the name inside: accepted exactly when it parses.
    let sealed = keys.seal(SealKind::Wal, &named.0, data);
    let decoded = catalog::decode(keys, &named, &sealed);
    assert_eq!(decoded.as_ref().ok(), plain.as_ref());
    // Stored under another name's id (sealed for it, or moved there): always refused.
    let other = Id([3; 32]);
    assert!(catalog::decode(keys, &other, &keys.seal(SealKind::Wal, &other.0, data)).is_err());
    assert!(catalog::decode(keys, &other, &sealed).is_err());
    if let Some(rec) = plain {
        // What a writer stores for it reads back the same, at any compression level.
        for level in [0, 1, 3] {
            let (id, bytes) = catalog::encode(keys, level, &rec);
            assert_eq!(id, named);
            assert_eq!(catalog::decode(keys, &id, &bytes).unwrap(), rec);
        }
        let _ = format::to_postcard(&rec);
    }
});
