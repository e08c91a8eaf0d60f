//! Storage tiers without S3: a fake of S3's storage classes (`ocvault::cold::testing`) over
//! the in-memory backend marks packs GLACIER, refuses reads of them until thawed, and counts
//! the listing, HEAD and restore requests a bucket would get. What is asserted: restore and
//! dump refuse cold packs before reading (exit 13's error, with the list), check --read-data
//! reads the hot packs and reports the cold ones, thaw requests each cold pack once and polls
//! until readable, snapshot stores blobs of cold packs again and reads then go to the hot copy,
//! prune never repacks cold packs and keeps young unused ones.

mod common;

use common::*;
use ocvault::archiver::{Progress, SnapshotOptions};
use ocvault::backend::lifecycle::ThawTier;
use ocvault::backend::{Backend, FileKind};
use ocvault::cold::testing::FakeTiers;
use ocvault::commands::thaw::{ThawOptions, ThawProgress};
use ocvault::format::BlobType;
use ocvault::id::PackId;
use ocvault::oplog::CommandLine;
use ocvault::repository::{InitOptions, Repository};
use ocvault::restorer::{self, RestoreOptions, RestoreProgress};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const PW: &[u8] = b"pw";

/// A repository on the in-memory backend with the storage-class fake installed; packs of
/// about 1 MiB so a few MiB of data make several.
fn fixture(thaw_polls: u32) -> (Repository, Arc<FakeTiers>) {
    let mut backend = Backend::open("memory:", true).unwrap();
    let fake = FakeTiers::install(&mut backend, thaw_polls);
    let opts = InitOptions {
        kdf_memory_kib: 1024,
        kdf_iterations: 1,
        pack_target_size: 1 << 20,
        ..InitOptions::default()
    };
    (Repository::init(backend, PW, &opts).unwrap(), fake)
}

/// Incompressible bytes, different for each seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_files(dir: &Path, files: &[(&str, u64, usize)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, seed, len) in files {
        std::fs::write(dir.join(name), noise(*seed, *len)).unwrap();
    }
}

fn snapshot(repo: &Repository, src: &Path) -> ocvault::archiver::SnapshotOutcome {
    let opts = SnapshotOptions {
        paths: vec![src.to_path_buf()],
        ..SnapshotOptions::default()
    };
    ocvault::commands::snapshot::snapshot(
        repo,
        opts,
        &Progress::default(),
        &CommandLine::new(["snapshot"]),
    )
    .unwrap()
}

fn data_packs(repo: &Repository) -> Vec<(PackId, u64)> {
    let indexed = repo.load_index().unwrap();
    let mut packs: Vec<(PackId, u64)> = indexed
        .index()
        .packs()
        .iter()
        .filter(|p| p.blob_type == BlobType::Data)
        .map(|p| (p.id, p.size))
        .collect();
    packs.sort();
    packs
}

fn archive_all(fake: &FakeTiers, packs: &[(PackId, u64)], class: &str, modified_unix_s: i64) {
    for (id, _) in packs {
        fake.archive(&FileKind::Pack.path(&id.0), class, modified_unix_s);
    }
}

fn now_s() -> i64 {
    ocvault::host::now_ns() / 1_000_000_000
}

fn restore(repo: &Repository, tree: &ocvault::id::TreeId, target: &Path) -> ocvault::Result<()> {
    let indexed = repo.load_index_tiered()?;
    restorer::restore(
        &indexed,
        tree,
        target,
        &RestoreOptions::default(),
        &RestoreProgress::default(),
    )
    .map(|_| ())
}

fn thaw_opts(snapshot: &str, wait: bool) -> ThawOptions {
    ThawOptions {
        snapshot: snapshot.to_string(),
        includes: vec![],
        days: 7,
        tier: ThawTier::Bulk,
        wait,
        poll_interval: Duration::from_millis(10),
        timeout: Some(Duration::from_secs(60)),
    }
}

#[test]
fn restore_and_dump_refuse_cold_packs_before_reading_and_list_them() {
    let tmp = scratch_dir("ocvault-tiers-");
    let src = tmp.path().join("src");
    write_files(
        &src,
        &[("a", 1, 3 << 20), ("b", 2, 2 << 20), ("c", 3, 1000)],
    );
    let (repo, fake) = fixture(1);
    let snap = snapshot(&repo, &src);
    let packs = data_packs(&repo);
    assert!(packs.len() >= 4, "{} data packs", packs.len());
    // Every other data pack goes to GLACIER, one to GLACIER_IR (readable, never asked about).
    let glacier: Vec<(PackId, u64)> = packs.iter().step_by(2).copied().collect();
    archive_all(&fake, &glacier, "GLACIER", now_s());
    fake.archive(&FileKind::Pack.path(&packs[1].0 .0), "GLACIER_IR", now_s());

    let target = tmp.path().join("out");
    let before = fake.counts();
    let err = restore(&repo, &snap.snapshot.tree, &target).unwrap_err();
    let (lists, heads, requests, refused) = fake.counts();
    assert_eq!(lists - before.0, 1, "one listing of data/ with classes");
    assert_eq!(
        heads - before.1,
        glacier.len() as u64,
        "HEAD for GLACIER packs only"
    );
    assert_eq!(
        (requests, refused),
        (0, 0),
        "nothing read, nothing requested"
    );
    let ocvault::Error::Cold { packs: cold, .. } = &err else {
        panic!("not a cold-storage error: {err}");
    };
    let mut listed: Vec<String> = cold.iter().map(|p| p.path.clone()).collect();
    listed.sort();
    let mut expected: Vec<String> = glacier
        .iter()
        .map(|(id, _)| FileKind::Pack.path(&id.0))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(cold
        .iter()
        .all(|p| p.state == "cold" && p.storage_class == "GLACIER"));
    let bytes: u64 = glacier.iter().map(|(_, s)| s).sum();
    let msg = err.for_snapshot(&snap.id.short()).to_string();
    assert_eq!(
        msg,
        format!(
            "{} packs ({} MiB) of snapshot {} are in cold storage: run `ocvault thaw {}` (then retry)",
            glacier.len(),
            ocvault::cold::mib(bytes),
            snap.id.short(),
            snap.id.short()
        )
    );
    assert!(!target.exists(), "the refused restore created its target");

    // dump: a small file whose one pack is hot works; a file in a cold pack is refused.
    let indexed = repo.load_index_tiered().unwrap();
    // Each file is dumped, or refused when one of its packs is GLACIER.
    let cold_ids: HashSet<PackId> = glacier.iter().map(|(id, _)| *id).collect();
    let mut refused = 0;
    for (name, seed, len) in [("a", 1, 3 << 20), ("b", 2, 2 << 20), ("c", 3, 1000)] {
        let node = ocvault::tree::find_node(&indexed, &snap.snapshot.tree, &format!("src/{name}"))
            .unwrap();
        let index = indexed.index();
        let in_cold = node
            .content
            .iter()
            .any(|id| cold_ids.contains(&index.pack(index.get(id).unwrap().pack).id));
        let mut out = Vec::new();
        match ocvault::dump::dump(&indexed, &node, &mut out) {
            Ok(_) => {
                assert!(!in_cold, "{name} dumped from a cold pack");
                assert!(out == noise(seed, len), "{name}: dumped bytes differ");
            }
            Err(ocvault::Error::Cold { packs, .. }) => {
                assert!(in_cold && !packs.is_empty(), "{name}");
                refused += 1;
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert!(
        refused >= 1,
        "the 3 MiB file spans several packs, every other one cold"
    );
    assert_eq!(fake.counts().3, 0, "dump read a cold pack");
}

#[test]
fn thaw_requests_each_cold_pack_once_and_polls_until_readable() {
    let tmp = scratch_dir("ocvault-tiers-");
    let src = tmp.path().join("src");
    write_files(&src, &[("a", 11, 3 << 20), ("b", 12, 2 << 20)]);
    let (repo, fake) = fixture(3);
    let snap = snapshot(&repo, &src);
    let packs = data_packs(&repo);
    archive_all(&fake, &packs, "DEEP_ARCHIVE", now_s());
    let id = snap.id.to_hex();
    let cmd = CommandLine::new(["thaw"]);

    // Without --wait: one request per cold pack, all accepted.
    let r =
        ocvault::commands::thaw::thaw(&repo, &thaw_opts(&id, false), &cmd, &mut |_| {}).unwrap();
    assert!(r.complete && r.storage_classes);
    assert_eq!(r.packs_needed, packs.len() as u64);
    assert_eq!(r.packs_cold, packs.len() as u64);
    assert_eq!(r.requests_started, packs.len() as u64);
    assert_eq!(fake.counts().2, packs.len() as u64);
    assert_eq!(r.polls, 0);

    // With --wait: the requests are "already in progress"; the fake finishes each thaw at
    // its third poll after the request, and one HEAD (the finder's) is already counted.
    let mut seen: Vec<ThawProgress> = Vec::new();
    let r =
        ocvault::commands::thaw::thaw(&repo, &thaw_opts(&id, true), &cmd, &mut |p| seen.push(*p))
            .unwrap();
    assert!(r.complete, "{r:?}");
    assert_eq!(r.requests_in_progress, packs.len() as u64);
    assert_eq!(r.requests_started, 0);
    // The finder's HEAD was the thaw's first poll; the wait's second poll is its third.
    assert_eq!(r.polls, 2);
    assert_eq!(r.packs_thawed, packs.len() as u64);
    assert_eq!(r.bytes_thawed, packs.iter().map(|(_, s)| s).sum::<u64>());
    assert!(r.still_cold.is_empty());
    let last = seen.last().expect("progress once a poll");
    assert_eq!(
        (last.packs_thawed, last.packs),
        (r.packs_cold, r.packs_cold)
    );
    assert_eq!(seen.len() as u64, r.polls);

    // Readable now: restore gives the bytes back, no read was refused.
    let target = tmp.path().join("out");
    restore(&repo, &snap.snapshot.tree, &target).unwrap();
    assert_trees_equal(&src, &target.join("src"));
    assert_eq!(fake.counts().3, 0);

    // Thawed already: nothing to request.
    let requests = fake.counts().2;
    let r = ocvault::commands::thaw::thaw(&repo, &thaw_opts(&id, true), &cmd, &mut |_| {}).unwrap();
    assert!(r.complete);
    assert_eq!((r.packs_cold, r.packs_archived), (0, packs.len() as u64));
    assert_eq!(fake.counts().2, requests);
}

#[test]
fn thaw_with_include_asks_only_for_those_paths_and_times_out_with_the_rest_listed() {
    let tmp = scratch_dir("ocvault-tiers-");
    let src = tmp.path().join("src");
    write_files(&src, &[("big", 21, 3 << 20), ("small", 22, 5000)]);
    let (repo, fake) = fixture(1000);
    let snap = snapshot(&repo, &src);
    let packs = data_packs(&repo);
    archive_all(&fake, &packs, "GLACIER", now_s());
    let mut opts = thaw_opts(&snap.id.to_hex(), true);
    opts.includes = vec!["src/small".into()];
    opts.timeout = Some(Duration::from_millis(200));
    let r = ocvault::commands::thaw::thaw(&repo, &opts, &CommandLine::new(["thaw"]), &mut |_| {})
        .unwrap();
    assert_eq!(r.packs_needed, 1, "one pack holds the small file");
    assert_eq!(r.requests_started, 1);
    assert!(!r.complete, "a thaw of 1000 polls cannot finish in 200 ms");
    assert_eq!(r.still_cold.len(), 1);
    assert_eq!(r.still_cold[0].state, "thawing");
    assert!(r.polls >= 5, "polls every 10 ms: {}", r.polls);
}

#[test]
fn check_reads_hot_packs_reports_cold_ones_and_structure_needs_no_data_request() {
    let tmp = scratch_dir("ocvault-tiers-");
    let src = tmp.path().join("src");
    write_files(&src, &[("a", 31, 3 << 20), ("b", 32, 2 << 20)]);
    let (repo, fake) = fixture(1);
    snapshot(&repo, &src);
    let packs = data_packs(&repo);
    let glacier: Vec<(PackId, u64)> = packs.iter().step_by(2).copied().collect();
    archive_all(&fake, &glacier, "GLACIER", now_s());
    let backend = repo.backend().clone();
    let check = |read_data| {
        ocvault::checker::check(
            &backend,
            PW,
            &ocvault::checker::CheckOptions {
                read_data,
                max_age: None,
                max_wal_age: None,
            },
            &ocvault::checker::CheckProgress::default(),
        )
        .unwrap()
    };
    let before = fake.counts();
    let r = check(ocvault::checker::ReadData::None);
    assert!(r.is_intact() && !r.has_cold(), "{:?}", r.damage);
    let after = fake.counts();
    assert_eq!(
        (after.1, after.3),
        (before.1, before.3),
        "no HEAD, no data read"
    );

    let r = check(ocvault::checker::ReadData::All);
    assert!(r.is_intact(), "{:?}", r.damage);
    assert_eq!(r.cold_packs.len(), glacier.len());
    assert_eq!(r.data_packs_read, (packs.len() - glacier.len()) as u64);
    let read: HashSet<String> = r.packs_read.iter().cloned().collect();
    assert!(glacier.iter().all(|(id, _)| !read.contains(&id.0.to_hex())));
    assert_eq!(fake.counts().3, 0, "check tried to read a cold pack");
}

#[test]
fn snapshot_stores_blobs_of_cold_packs_again_and_reads_use_the_hot_copy() {
    let tmp = scratch_dir("ocvault-tiers-");
    let src = tmp.path().join("src");
    write_files(
        &src,
        &[("a", 41, 3 << 20), ("b", 42, 1 << 20), ("c", 43, 100)],
    );
    let (repo, fake) = fixture(1);
    let first = snapshot(&repo, &src);
    assert_eq!(first.restored_blobs, 0);
    let old_packs = data_packs(&repo);
    archive_all(&fake, &old_packs, "GLACIER", now_s());
    let data_blobs = {
        let indexed = repo.load_index().unwrap();
        let index = indexed.index();
        index
            .iter()
            .filter(|(_, l)| index.pack(l.pack).blob_type == BlobType::Data)
            .count() as u64
    };
    let data_bytes: u64 = old_packs.iter().map(|(_, s)| s).sum();

    let before = fake.counts();
    let second = snapshot(&repo, &src);
    let after = fake.counts();
    assert_eq!(
        after.0 - before.0,
        1,
        "one listing with classes for the snapshot"
    );
    assert_eq!(after.1 - before.1, 0, "no HEAD for a snapshot");
    assert_eq!(after.3, 0, "the snapshot read a cold pack");
    let s = &second.snapshot.summary;
    // Every data blob was only in cold packs: all stored again, the files read again.
    assert_eq!(second.restored_blobs, data_blobs);
    assert_eq!(s.bytes_read, s.bytes_total);
    assert_eq!(s.files_unmodified, 0);
    // The same sealed sizes are written again, less the pack headers.
    assert!(second.restored_bytes <= data_bytes && second.restored_bytes > data_bytes * 9 / 10);
    eprintln!(
        "re-stored {} blobs, {} bytes (cold packs: {} bytes)",
        second.restored_blobs, second.restored_bytes, data_bytes
    );

    // The first snapshot (same blobs) restores from the hot copies without a thaw.
    let target = tmp.path().join("out");
    restore(&repo, &first.snapshot.tree, &target).unwrap();
    assert_trees_equal(&src, &target.join("src"));
    assert_eq!(fake.counts().3, 0, "a read went to the cold copy");

    // The next snapshot finds the hot copies: nothing stored again.
    let third = snapshot(&repo, &src);
    assert_eq!(third.restored_blobs, 0);
    assert_eq!(third.snapshot.summary.bytes_read, 0);
    assert_eq!(third.snapshot.summary.files_unmodified, 3);
}

/// `snapshot --reuse-cold-packs`: the user allows references to archived packs, so nothing
/// is stored again and no listing with classes is made; the new snapshot then needs a thaw.
#[test]
fn snapshot_reusing_cold_packs_stores_nothing_again_and_its_restore_needs_a_thaw() {
    let tmp = scratch_dir("ocvault-tiers-");
    let src = tmp.path().join("src");
    write_files(&src, &[("a", 51, 2 << 20), ("b", 52, 100)]);
    let (repo, fake) = fixture(1);
    snapshot(&repo, &src);
    archive_all(&fake, &data_packs(&repo), "DEEP_ARCHIVE", now_s());
    let before = fake.counts();
    let opts = SnapshotOptions {
        paths: vec![src.clone()],
        reuse_cold_packs: true,
        ..SnapshotOptions::default()
    };
    let second = ocvault::commands::snapshot::snapshot(
        &repo,
        opts,
        &Progress::default(),
        &CommandLine::new(["snapshot"]),
    )
    .unwrap();
    let after = fake.counts();
    assert_eq!(second.restored_blobs, 0);
    assert_eq!(second.snapshot.summary.bytes_added, 0);
    assert_eq!(second.snapshot.summary.files_unmodified, 2);
    assert_eq!(after.0 - before.0, 0, "no listing with classes");
    let target = tmp.path().join("out");
    let refused = restore(&repo, &second.snapshot.tree, &target);
    assert!(
        matches!(refused, Err(ocvault::Error::Cold { .. })),
        "{refused:?}"
    );
}

#[test]
fn prune_never_repacks_cold_packs_and_keeps_young_unused_ones() {
    let tmp = scratch_dir("ocvault-tiers-");
    let (src1, src2) = (tmp.path().join("one"), tmp.path().join("two"));
    // 200 KiB files: both in one pack (target 1 MiB), then one of them forgotten.
    write_files(
        &src1,
        &[("kept", 51, 200 << 10), ("dropped", 52, 200 << 10)],
    );
    let (repo, fake) = fixture(1);
    let both = snapshot(&repo, &src1);
    let shared_packs = data_packs(&repo);
    assert_eq!(shared_packs.len(), 1);
    std::fs::remove_file(src1.join("dropped")).unwrap();
    let only_kept = snapshot(&repo, &src1);
    write_files(&src2, &[("gone", 53, 300 << 10)]);
    let gone = snapshot(&repo, &src2);
    let all = data_packs(&repo);
    let gone_packs: Vec<(PackId, u64)> = all
        .iter()
        .filter(|p| !shared_packs.contains(p))
        .copied()
        .collect();
    assert_eq!(gone_packs.len(), 1);
    archive_all(&fake, &all, "GLACIER", now_s() - 86_400);
    {
        let session = repo.write_session().unwrap();
        session
            .delete_file::<ocvault::format::Snapshot>(&both.id)
            .unwrap();
        session
            .delete_file::<ocvault::format::Snapshot>(&gone.id)
            .unwrap();
    }
    let prune = |repo: &Repository| {
        let session = repo.write_session().unwrap();
        ocvault::prune::prune(&session, &ocvault::prune::PruneOptions::default()).unwrap()
    };
    let r = prune(&repo);
    assert_eq!(r.cold_packs_not_repacked, 1, "{r:?}");
    assert_eq!(r.cold_packs_kept, 1);
    assert_eq!(r.cold_bytes_kept, gone_packs[0].1);
    let until = chrono::DateTime::from_timestamp(now_s() - 86_400 + 90 * 86_400, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(r.cold_kept_until.as_deref(), Some(until.as_str()));
    assert_eq!(data_packs(&repo), all, "no pack left the index");
    assert_eq!(fake.counts().3, 0, "prune read a cold pack");

    // 91 days later (by the packs' upload time) the unused one goes.
    archive_all(&fake, &gone_packs, "GLACIER", now_s() - 91 * 86_400);
    let r = prune(&repo);
    assert_eq!(
        (r.cold_packs_kept, r.cold_packs_not_repacked),
        (0, 1),
        "{r:?}"
    );
    assert_eq!(data_packs(&repo), shared_packs);
    assert!(!repo
        .backend()
        .exists(&FileKind::Pack.path(&gone_packs[0].0 .0))
        .unwrap());
    // What stays restores once thawed.
    let target = tmp.path().join("out");
    let refused = restore(&repo, &only_kept.snapshot.tree, &target);
    assert!(
        matches!(refused, Err(ocvault::Error::Cold { .. })),
        "{refused:?}"
    );
    let mut opts = thaw_opts(&only_kept.id.to_hex(), true);
    opts.timeout = None;
    ocvault::commands::thaw::thaw(&repo, &opts, &CommandLine::new(["thaw"]), &mut |_| {}).unwrap();
    restore(&repo, &only_kept.snapshot.tree, &target).unwrap();
    assert_trees_equal(&src1, &target.join("one"));
}
