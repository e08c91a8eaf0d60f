#![no_main]
//! `snapshots/<id>`: sealed, framed postcard `Snapshot`.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::Snapshot;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(snap) = common::check_sealed::<Snapshot>(SealKind::Snapshot, data) {
        let _ = ocvault::snapshot::rfc3339(snap.time_unix_ns);
        let _ = ocvault::snapshot::format_time(snap.time_unix_ns);
    }
});
