#![no_main]
//! `log/<id>`: sealed, framed postcard `LogEntry` (the operations log).

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::{self, LogEntry};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(entry) = common::check_sealed::<LogEntry>(SealKind::Log, data) {
        // What `ocvault log` does with an entry: format its time, print its fields.
        let _ = ocvault::snapshot::rfc3339(entry.time_unix_ns);
        let _ = ocvault::snapshot::format_time(entry.time_unix_ns);
        for s in &entry.snapshots {
            let _ = s.short();
        }
        let again: LogEntry =
            format::from_postcard(&format::to_postcard(&entry), "log").expect("re-encoding");
        assert_eq!(again, entry);
    }
    // Masking secrets in hostile arguments must not panic.
    let _ = ocvault::oplog::redact(&String::from_utf8_lossy(data));
});
