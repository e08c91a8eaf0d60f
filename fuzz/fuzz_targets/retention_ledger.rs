#![no_main]
//! `retention/<id>` (format v3): sealed, framed postcard `RetentionLedger`, which `forget`
//! reads from storage on a repository with Object Lock; then the plan it makes from it.

use libfuzzer_sys::fuzz_target;
use ocvault::backend::lifecycle::ClassedObject;
use ocvault::crypto::SealKind;
use ocvault::format::RetentionLedger;
use ocvault::retention_lock::{plan, Needs};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(ledger) = common::check_sealed::<RetentionLedger>(SealKind::Retention, data) {
        // Hostile dates in the ledger must not panic the planner.
        let listing: Vec<ClassedObject> = ["config", "index/aa", "log/bb", "wal/cc", "data/dd/dd"]
            .iter()
            .map(|p| ClassedObject {
                path: p.to_string(),
                size: 1,
                storage_class: None,
                modified_unix_s: ledger.metadata_extended_at_unix_s,
            })
            .collect();
        let needs = Needs {
            metadata_until_s: ledger.metadata_locked_until_unix_s,
            wal_until_s: ledger.wal_locked_until_unix_s,
            ..Needs::default()
        };
        for lock_days in [1, 36_500] {
            let _ = plan(&listing, &needs, Some(&ledger), lock_days);
        }
    }
});
