#![no_main]
//! `snapshots/<id>`: sealed, framed postcard `Snapshot`, in every layout: format version 1
//! (without `postgres`), versions 2 and 3 (with it) and version 4 (with `log_heads`); the
//! repository's version picks the layout.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::{self, Snapshot};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    // Hostile stored bytes: unsealing must fail cleanly.
    assert!(keys.open(SealKind::Snapshot, &[], data).is_err());
    let sealed = keys.seal(SealKind::Snapshot, &[], data);
    for version in [1, 2, 4] {
        let decode = |framed: &[u8]| {
            Snapshot::decode(
                &format::unframe(framed, format::MAX_OBJECT_SIZE, "snapshot")?,
                version,
                "snapshot",
            )
        };
        let _ = Snapshot::decode(data, version, "snapshot");
        let plain = decode(data);
        // The same bytes under a valid seal reach the same parser with the same verdict.
        let opened = keys.open(SealKind::Snapshot, &[], &sealed).unwrap();
        assert_eq!(decode(&opened).ok(), plain.as_ref().ok().cloned());
        let Ok(snap) = plain else { continue };
        if version == 1 {
            assert!(snap.postgres.is_none());
        }
        if version < 4 {
            assert!(snap.log_heads.is_empty());
        }
        // Re-encoded in its version's layout, it decodes to the same value.
        let again = Snapshot::decode(&snap.encode(version), version, "snapshot").unwrap();
        assert_eq!(again, snap);
        let _ = ocvault::snapshot::rfc3339(snap.time_unix_ns);
        let _ = ocvault::snapshot::format_time(snap.time_unix_ns);
    }
});
