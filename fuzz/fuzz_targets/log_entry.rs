#![no_main]
//! `log/<id>`: sealed, framed postcard `LogEntry` (the operations log), in both layouts:
//! format versions 1 to 3 (without `parents`, `key_id`, `approvals`) and version 4 (with
//! them); the repository's version picks the layout.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::{self, LogEntry};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The version 4 layout is the struct as postcard: the shared sealed path covers it.
    if let Some(entry) = common::check_sealed::<LogEntry>(SealKind::Log, data) {
        // What `ocvault log` does with an entry: format its time, print its fields.
        let _ = ocvault::snapshot::rfc3339(entry.time_unix_ns);
        let _ = ocvault::snapshot::format_time(entry.time_unix_ns);
        for s in &entry.snapshots {
            let _ = s.short();
        }
        for p in &entry.parents {
            let _ = p.short();
        }
        let again = LogEntry::decode(&entry.encode(4), 4, "log").expect("re-encoding");
        assert_eq!(again, entry);
    }
    for version in [3, 4] {
        let Ok(entry) = LogEntry::decode(data, version, "log") else {
            continue;
        };
        if version < 4 {
            assert!(entry.parents.is_empty() && entry.approvals.is_empty());
        }
        let again = LogEntry::decode(&entry.encode(version), version, "log").unwrap();
        assert_eq!(again, entry);
        let _ = format::to_postcard(&entry);
    }
    // Masking secrets in hostile arguments must not panic.
    let _ = ocvault::oplog::redact(&String::from_utf8_lossy(data));
});
