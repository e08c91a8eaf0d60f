//! forget, prune and rewrite: space is reclaimed, kept snapshots stay whole, erased data is
//! gone from storage, and prune is safe beside running backups and when killed.

mod common;

use common::*;
use ocvault::backend::{Backend, FileKind};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn forget_half_and_prune_shrinks_by_what_only_they_held() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("shared"), 1 << 20, 1);
    let mut ids = Vec::new();
    let mut states = Vec::new();
    for i in 0..6u64 {
        let _ = std::fs::remove_file(src.join(format!("unique{}", i.wrapping_sub(1))));
        random_file(&src.join(format!("unique{i}")), 2 << 20, 100 + i);
        ids.push(snapshot_id(
            &repo,
            &["--time", &format!("2026-01-0{}T00:00:00Z", i + 1)],
            &src,
        ));
        let state = repo.path(&format!("state{i}"));
        copy_tree(&src, &state);
        states.push(state);
    }
    let before = dir_size(&repo.repo);
    let forget: Vec<&str> = ids.iter().step_by(2).map(|s| s.as_str()).collect();
    repo.cmd()
        .arg("forget")
        .args(&forget)
        .args(["--prune"])
        .assert()
        .success();
    let after = dir_size(&repo.repo);
    let freed = before - after;
    let expected = 3.0 * (2 << 20) as f64; // the three unique files only those snapshots held
    eprintln!("freed {freed} bytes, expected about {expected}");
    assert!(
        (freed as f64 - expected).abs() < expected * 0.10,
        "freed {freed}, expected {expected}"
    );
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    for i in [1usize, 3, 5] {
        restore_and_compare(&repo, &ids[i], &states[i], "src");
    }
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
}

#[test]
fn forget_policy_dry_run_and_empty_group_guard() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    for d in 1..=9 {
        snapshot_id(&repo, &["--time", &format!("2026-03-0{d}T12:00:00Z")], &src);
    }
    let out = repo
        .cmd()
        .args(["--json", "forget", "--keep-daily", "3", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &v["groups"][0];
    assert_eq!(g["keep"].as_array().unwrap().len(), 3);
    assert_eq!(g["remove"].as_array().unwrap().len(), 6);
    assert_eq!(g["keep"][0]["time"], "2026-03-09T12:00:00Z");
    assert_eq!(g["keep"][0]["reasons"][0], "daily 3");
    // Nothing changed in a dry run.
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        9
    );
    // A policy that keeps nothing of a group is refused without the explicit flag.
    let out = repo
        .cmd()
        .args(["forget", "--keep-tag", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    repo.cmd()
        .args(["forget", "--keep-daily", "3"])
        .assert()
        .success();
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// Opens every blob of every pack in the repository and returns the plaintexts.
fn all_plaintexts(repo: &TestRepo) -> Vec<Vec<u8>> {
    let lib = ocvault::repository::Repository::open(
        Backend::open(repo.repo.to_str().unwrap(), false).unwrap(),
        repo.password.as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    for (id, size) in lib.backend().list_ids(FileKind::Pack).unwrap() {
        let bytes = lib.backend().read(&FileKind::Pack.path(&id)).unwrap();
        let header = ocvault::pack::parse_header_from_tail(lib.keys(), &bytes, size)
            .unwrap()
            .unwrap();
        for b in header.blobs {
            let sealed = &bytes[b.offset as usize..(b.offset + b.length) as usize];
            out.push(
                ocvault::pack::open_blob(lib.keys(), header.blob_type, &b.id, sealed, b.raw_length)
                    .unwrap(),
            );
        }
    }
    out
}

#[test]
fn gdpr_erase_removes_every_copy_of_the_data() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("people")).unwrap();
    let marker = b"GDPR-MARKER-7f3a9c-Jane-Doe-born-1970";
    let mut states = Vec::new();
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let mut content = Vec::new();
        for _ in 0..100 {
            content.extend_from_slice(marker);
            content.extend_from_slice(format!(" record {i}\n").as_bytes());
        }
        std::fs::write(src.join("people/jane.csv"), &content).unwrap();
        random_file(&src.join(format!("other{i}.bin")), 200_000, i);
        ids.push(snapshot_id(&repo, &[], &src));
        let state = repo.path(&format!("state{i}"));
        copy_tree(&src, &state);
        std::fs::remove_file(state.join("people/jane.csv")).unwrap();
        // Removing the file touched the folder; the snapshot holds the folder's original times.
        let m = std::fs::metadata(src.join("people")).unwrap();
        filetime::set_file_times(
            state.join("people"),
            filetime::FileTime::from_last_access_time(&m),
            filetime::FileTime::from_last_modification_time(&m),
        )
        .unwrap();
        states.push(state);
    }
    let contains = |blobs: &[Vec<u8>]| {
        blobs
            .iter()
            .any(|b| b.windows(marker.len()).any(|w| w == marker))
    };
    assert!(
        contains(&all_plaintexts(&repo)),
        "the marker must be stored before the erase"
    );
    repo.cmd()
        .args(["rewrite", "--all", "--exclude", "jane.csv"])
        .assert()
        .success();
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    assert!(
        !contains(&all_plaintexts(&repo)),
        "a blob still decrypts to the marker"
    );
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 5);
    for (i, snap) in list.as_array().unwrap().iter().enumerate() {
        restore_and_compare(&repo, snap["id"].as_str().unwrap(), &states[i], "src");
    }
}

/// Backup threads loop snapshots of changing trees while another thread loops forget +
/// prune. Each backup thread has its own folder, and all start from the same tree and change
/// it the same way, so concurrent backups store the same blobs (two packs holding one blob).
/// `OCVAULT_STRESS_SECS` sets the duration of each run (default 60), `OCVAULT_STRESS_SEEDS`
/// a comma-separated list of seeds, one run each (default `1`; the seed sets the tree, its
/// changes and the pauses between prunes), and `OCVAULT_STRESS_BACKUPS` the number of
/// backup threads (default 2).
#[test]
fn prune_beside_running_backups() {
    let secs = env_num("OCVAULT_STRESS_SECS", 60);
    let backups = env_num("OCVAULT_STRESS_BACKUPS", 2).max(1) as usize;
    let seeds: Vec<u64> = std::env::var("OCVAULT_STRESS_SEEDS")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .map(|s| s.trim().parse().expect("OCVAULT_STRESS_SEEDS: numbers"))
        .collect();
    for seed in seeds {
        let started = Instant::now();
        stress_run(seed, secs, backups);
        eprintln!(
            "seed {seed}: passed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
}

fn stress_run(seed: u64, secs: u64, backups: usize) {
    let repo = TestRepo::new();
    init_small_packs(&repo, 262_144);
    let sources: Vec<PathBuf> = (0..backups)
        .map(|k| repo.path(&format!("src{k}")))
        .collect();
    for src in &sources {
        std::fs::create_dir_all(src).unwrap();
        generate_tree(
            src,
            &TreeSpec {
                small_files: 100,
                big_file_bytes: 2 << 20,
                sparse_file_bytes: 0,
                deep_nesting: 5,
                seed,
                ..TreeSpec::default()
            },
        );
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let states = repo.path("states");
    std::fs::create_dir_all(&states).unwrap();
    let (snapshots, prunes) = std::thread::scope(|s| {
        let threads: Vec<_> = sources
            .iter()
            .map(|src| {
                let (repo, states) = (&repo, &states);
                s.spawn(move || {
                    let mut n = 0u64;
                    // Only the newest snapshots of each folder survive `--keep-last 2`:
                    // keep their sources, not hundreds of copies (deleting those would take
                    // longer than the test).
                    let mut kept = std::collections::VecDeque::new();
                    while Instant::now() < deadline {
                        mutate_tree(src, 0.2, mix(seed, n));
                        let id = snapshot_id(repo, &[], src);
                        copy_tree(src, &states.join(&id));
                        kept.push_back(id);
                        // Room for what a slow forget+prune on a busy machine leaves: the
                        // two it keeps plus every snapshot made while it and its pause ran.
                        if kept.len() > 20 {
                            let old = kept.pop_front().unwrap();
                            std::fs::remove_dir_all(states.join(old)).unwrap();
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let p = s.spawn(|| {
            let mut rng = Rng::new(seed);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let out = repo
                    .cmd()
                    .args([
                        "forget",
                        "--keep-last",
                        "2",
                        "--prune",
                        "--max-unused",
                        "0%",
                    ])
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                // Before the first snapshot there is nothing to forget.
                assert!(
                    out.status.success()
                        || err.contains("needs snapshot")
                        || err.contains("no snapshot"),
                    "seed {seed}: prune failed: {err}"
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(rng.range(50, 400)));
            }
            n
        });
        let snapshots: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (snapshots, p.join().unwrap())
    });
    eprintln!("seed {seed}: snapshots {snapshots:?} and {prunes} forget+prune runs in {secs}s");
    assert!(snapshots.iter().all(|n| *n >= 3) && prunes >= 3);
    // Finish pending deletions now that nothing runs.
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    let out = repo.cmd().args(["check", "--read-data"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed {seed}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_no_blob_stored_twice_in_a_pack(&repo);
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!list.as_array().unwrap().is_empty());
    for snap in list.as_array().unwrap() {
        let id = snap["id"].as_str().unwrap();
        let path = snap["paths"][0].as_str().unwrap();
        let name = path.rsplit('/').next().unwrap();
        assert!(
            states.join(id).exists(),
            "seed {seed}: snapshot {id} survived forget --keep-last 2 but is not among the newest"
        );
        restore_and_compare(&repo, id, &states.join(id), name);
    }
}

/// Every pack's header lists each blob id once.
fn assert_no_blob_stored_twice_in_a_pack(repo: &TestRepo) {
    let lib = ocvault::repository::Repository::open(
        Backend::open(repo.repo.to_str().unwrap(), false).unwrap(),
        repo.password.as_bytes(),
    )
    .unwrap();
    for (id, size) in lib.backend().list_ids(FileKind::Pack).unwrap() {
        let bytes = lib.backend().read(&FileKind::Pack.path(&id)).unwrap();
        let header = ocvault::pack::parse_header_from_tail(lib.keys(), &bytes, size)
            .unwrap()
            .unwrap();
        let mut ids: Vec<_> = header.blobs.iter().map(|b| b.id).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "pack {} holds a blob twice", id.to_hex());
    }
}

/// Moves every file of `from` into `to` (both folders of the repository).
fn move_files(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Two backups that ran at once both stored a file (neither saw the other's index): two packs
/// hold its blobs. Repacking both must copy each blob once, or the new pack's header lists a
/// blob twice and `check --read-data` reports "pack header disagrees with the index".
#[test]
fn repack_copies_a_blob_stored_in_two_packs_once() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let make = |name: &str, files: &[(&str, u64)]| {
        let dir = repo.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, seed) in files {
            random_file(&dir.join(file), 300_000, *seed);
        }
        dir
    };
    let first = make("first", &[("shared", 1), ("a", 2), ("gone1", 3)]);
    let second = make("second", &[("shared", 1), ("b", 4), ("gone2", 5)]);
    let keep = make("keep", &[("shared", 1), ("a", 2), ("b", 4)]);
    let s1 = snapshot_id(&repo, &[], &first);
    // The second backup does not see the first one's index or snapshot, as if both ran at
    // once: it stores `shared` again, in a pack of its own.
    let hidden = repo.path("hidden");
    for dir in ["index", "snapshots"] {
        move_files(&repo.repo.join(dir), &hidden.join(dir));
    }
    let s2 = snapshot_id(&repo, &[], &second);
    for dir in ["index", "snapshots"] {
        move_files(&hidden.join(dir), &repo.repo.join(dir));
    }
    let s3 = snapshot_id(&repo, &[], &keep);
    // Both data packs now hold used and unused blobs, so both are repacked.
    repo.cmd().args(["forget", &s1, &s2]).assert().success();
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    assert_check_passes(&repo, &["--read-data"]);
    assert_no_blob_stored_twice_in_a_pack(&repo);
    restore_and_compare(&repo, &s3, &keep, "keep");
}

/// A repository where an earlier prune already wrote a pack holding a blob twice (with its
/// index file listing both copies) is healed by `prune --max-unused 0%`.
#[test]
fn prune_heals_a_pack_holding_a_blob_twice() {
    use ocvault::format::{IndexFile, PackHeader};
    use ocvault::pack::PackBuilder;
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("f"), 400_000, 7);
    let id = snapshot_id(&repo, &[], &src);

    // Rewrite the data pack with every blob twice, and index the copy in place of the
    // original.
    let lib = ocvault::repository::Repository::open(
        Backend::open(repo.repo.to_str().unwrap(), false).unwrap(),
        repo.password.as_bytes(),
    )
    .unwrap();
    let files = lib.load_index_files().unwrap();
    let (old_index, file) = files
        .iter()
        .find(|(_, f)| {
            f.packs
                .iter()
                .any(|p| p.blob_type == ocvault::format::BlobType::Data)
        })
        .unwrap();
    let mut packs = file.packs.clone();
    let data = packs
        .iter_mut()
        .find(|p| p.blob_type == ocvault::format::BlobType::Data)
        .unwrap();
    let bytes = lib.backend().read(&FileKind::Pack.path(&data.id)).unwrap();
    let mut builder = PackBuilder::new(data.blob_type, bytes.len() * 2);
    for _ in 0..2 {
        for b in &data.blobs {
            let sealed = &bytes[b.offset as usize..(b.offset + b.length) as usize];
            builder.add(b.id.0, b.raw_length, sealed);
        }
    }
    let (doubled, entry) = builder.finish(lib.keys());
    lib.backend()
        .write(
            &FileKind::Pack.path(&entry.id),
            doubled,
            ocvault::pack::pack_class(entry.blob_type),
        )
        .unwrap();
    lib.backend()
        .delete(&FileKind::Pack.path(&data.id))
        .unwrap();
    let stored = lib.backend().read(&FileKind::Pack.path(&entry.id)).unwrap();
    let header: PackHeader = ocvault::pack::parse_header_from_tail(lib.keys(), &stored, entry.size)
        .unwrap()
        .unwrap();
    assert_eq!(header.blobs.len(), 2 * data.blobs.len());
    *data = entry;
    let session = lib.write_session().unwrap();
    session
        .save_file(&IndexFile {
            supersedes: vec![*old_index],
            packs,
        })
        .unwrap();
    drop(session);
    lib.backend()
        .delete(&FileKind::Index.path(old_index))
        .unwrap();
    drop(lib);

    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    assert_check_passes(&repo, &["--read-data"]);
    assert_no_blob_stored_twice_in_a_pack(&repo);
    restore_and_compare(&repo, &id, &src, "src");
}

/// Prune killed with SIGKILL at random points never damages the repository.
#[test]
fn prune_killed_at_random_points() {
    let runs = env_num("OCVAULT_KILL_RUNS", 20);
    let repo = TestRepo::new();
    init_small_packs(&repo, 131_072);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut kept: Vec<(String, PathBuf)> = Vec::new();
    let mut rng = Rng::new(2026);
    let mut interrupted = 0;
    for run in 0..runs {
        // Two snapshots a round, one of which is forgotten, so every prune has work to do.
        for k in 0..2 {
            random_file(
                &src.join(format!("f{}", rng.below(6))),
                300_000 + rng.below(300_000) as usize,
                run * 10 + k,
            );
            let id = snapshot_id(&repo, &[], &src);
            let state = repo.path(&format!("state-{id}"));
            copy_tree(&src, &state);
            kept.push((id, state));
        }
        let (gone, _) = kept.remove(kept.len() - 2);
        repo.cmd().args(["forget", &gone]).assert().success();
        let mut child = repo
            .cmd_std()
            .args(["prune", "--max-unused", "0%"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let out = repo.cmd().arg("check").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: check after a killed prune: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!("{interrupted} of {runs} prunes were killed while running");
    assert!(
        interrupted * 2 >= runs,
        "most kills must land while prune runs: {interrupted} of {runs}"
    );
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    for (id, state) in &kept {
        restore_and_compare(&repo, id, state, "src");
    }
}
