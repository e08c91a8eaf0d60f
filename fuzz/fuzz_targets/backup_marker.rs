#![no_main]
//! `locks/<id>`: sealed, framed postcard `BackupMarker`, which prune reads from storage to
//! learn which backups are running; then the judgement prune makes of the marker's session.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::BackupMarker;
use ocvault::locks::MarkerSession;
use ocvault::Id;

#[path = "common.rs"]
mod common;

/// A plausible storage time (2026); the times inside the marker are the hostile part.
const STORAGE_NOW: i64 = 1_780_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Some(m) = common::check_sealed::<BackupMarker>(SealKind::Lock, data) {
        // Grouped as `locks::list_sessions` does: a first marker has heartbeat == start.
        let first = m.heartbeat_unix_ns == m.started_unix_ns;
        let session = MarkerSession {
            files: vec![Id([1; 32])],
            first: first.then_some(Id([1; 32])),
            hostname: m.hostname.clone(),
            pid: m.pid,
            started: first.then_some(STORAGE_NOW),
            newest: Some(STORAGE_NOW),
            heartbeat_unix_ns: m.heartbeat_unix_ns,
        };
        assert!(!session.is_stale(Some(STORAGE_NOW)));
        // Without storage times: the host clock against the heartbeat inside the file.
        let _ = session.is_stale(None);
        let _ = session.may_predate(Some(m.started_unix_ns));
        assert!(session.may_predate(None));
        let _ = ocvault::snapshot::rfc3339(m.heartbeat_unix_ns);
    }
});
