//! The same capabilities through the library, without the CLI, on the in-memory backend.

mod common;

use common::*;
use ocvault::archiver::{self, ParentChoice, Progress, SnapshotOptions, StreamSource};
use ocvault::backend::Backend;
use ocvault::repository::{InitOptions, Repository};
use ocvault::restorer::{self, RestoreOptions, RestoreProgress};

fn small_kdf() -> InitOptions {
    InitOptions {
        kdf_memory_kib: 1024,
        kdf_iterations: 1,
        ..InitOptions::default()
    }
}

#[test]
fn memory_backend_snapshot_restore_and_dedup() {
    let tmp = scratch_dir("ocvault-library-");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    generate_tree(
        &src,
        &TreeSpec {
            small_files: 500,
            big_file_bytes: 8 << 20,
            ..TreeSpec::default()
        },
    );

    let backend = Backend::open("memory:", true).unwrap();
    let repo = Repository::init(backend, b"pw", &small_kdf()).unwrap();
    let opts = || SnapshotOptions {
        paths: vec![src.clone()],
        ..SnapshotOptions::default()
    };
    let first = backup(&repo, opts());
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert!(!first.snapshot.incomplete);
    assert!(first.snapshot.summary.files_new > 500);

    let second = backup(&repo, opts());
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!(second.snapshot.summary.bytes_read, 0);
    assert_eq!(
        second.snapshot.summary.files_unmodified,
        first.snapshot.summary.files_new
    );

    let index = repo.load_index().unwrap();
    let target = tmp.path().join("out");
    restorer::restore(
        &index,
        &second.snapshot.tree,
        &target,
        &RestoreOptions::default(),
        &RestoreProgress::default(),
    )
    .unwrap();
    assert_trees_equal(&src, &target.join("src"));

    // The wrong password cannot open the same storage.
    let again = Repository::open(repo.backend().clone(), b"nope");
    assert!(matches!(again, Err(ocvault::Error::WrongPassword)));
    let ok = Repository::open(repo.backend().clone(), b"pw").unwrap();
    assert_eq!(ok.config(), repo.config());
}

#[test]
fn stream_source_is_always_read_in_full() {
    let backend = Backend::open("memory:", true).unwrap();
    let repo = Repository::init(backend, b"pw", &small_kdf()).unwrap();
    let day1: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut day2 = day1.clone();
    day2[1_500_000] ^= 0xff;
    let mut ids = Vec::new();
    for data in [&day1, &day2] {
        let out = backup(
            &repo,
            SnapshotOptions {
                stream: Some(StreamSource {
                    name: "db.sql".into(),
                    reader: Box::new(std::io::Cursor::new(data.clone())),
                    finish: None,
                }),
                parent: ParentChoice::Auto,
                ..SnapshotOptions::default()
            },
        );
        assert_eq!(out.snapshot.summary.bytes_read, data.len() as u64);
        ids.push(out);
    }
    let index = repo.load_index().unwrap();
    for (out, data) in ids.iter().zip([&day1, &day2]) {
        let node = ocvault::tree::find_node(&index, &out.snapshot.tree, "db.sql").unwrap();
        let mut buf = Vec::new();
        ocvault::dump::dump(&index, &node, &mut buf).unwrap();
        assert_eq!(&buf, data);
    }
}

/// One snapshot through the library, as the CLI makes it: index, write session, archiver.
fn backup(repo: &Repository, opts: SnapshotOptions) -> archiver::SnapshotOutcome {
    let mut indexed = repo.load_index().unwrap();
    let session = indexed.write_session().unwrap();
    archiver::snapshot(&session, opts, &Progress::default()).unwrap()
}

/// The commands' logic through the library: snapshot selection by host, tag, stats, diff,
/// find, ls, forget by policy and the key rules, each with the command line the caller gives
/// recorded in the operations log (never the test harness's own arguments).
#[test]
fn commands_work_without_the_cli() {
    use ocvault::commands::select::{Selection, SnapshotFilter};
    use ocvault::commands::{diff, find, forget, key, ls, stats, tag};
    use ocvault::oplog::CommandLine;

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"one").unwrap();
    std::fs::write(src.join("sub/b.csv"), vec![7u8; 100_000]).unwrap();
    let repo =
        Repository::init(Backend::open("memory:", true).unwrap(), b"pw", &small_kdf()).unwrap();
    let snap = |host: &str, time: i64| {
        let opts = SnapshotOptions {
            paths: vec![src.clone()],
            host: Some(host.into()),
            time_unix_ns: Some(time),
            ..SnapshotOptions::default()
        };
        backup(&repo, opts).id
    };
    let day = 86_400_000_000_000i64;
    let first = snap("db", day);
    std::fs::write(src.join("a.txt"), b"two!").unwrap();
    let second = snap("db", 2 * day);
    let other = snap("web", 2 * day);
    let line = CommandLine::new(["tag", "--all", "https://u:hunter2@example.org/x"]);
    let host = |h: &str| SnapshotFilter {
        hosts: vec![h.into()],
        ..SnapshotFilter::default()
    };

    let tagged = tag::tag(
        &repo,
        &tag::TagOptions {
            selection: Selection::all(host("web")),
            add: vec!["keep".into()],
            remove: vec![],
        },
        &line,
    )
    .unwrap();
    assert!(tagged.warnings.is_empty(), "{:?}", tagged.warnings);
    assert_eq!(tagged.changed.len(), 1);
    assert_eq!(tagged.changed[0].0, other);
    let entries = ocvault::oplog::list(&repo).unwrap().intact;
    let logged = &entries.last().unwrap().1;
    assert_eq!(logged.operation, "tag");
    assert_eq!(
        logged.arguments,
        ["tag", "--all", "https://u:***@example.org/x"]
    );

    let s = stats::stats(&repo, &stats::StatsOptions::default()).unwrap();
    assert_eq!((s.snapshots, s.files), (3, 6));
    assert_eq!(s.logical_bytes, 3 + 4 + 4 + 3 * 100_000);
    assert!(s.dedup_ratio > 2.0, "{s:?}");

    let changes = diff::diff(
        &repo,
        &diff::DiffOptions {
            first: first.to_hex(),
            second: second.to_hex(),
        },
    )
    .unwrap();
    let changed: Vec<_> = changes
        .iter()
        .map(|c| (c.change, c.path.as_str()))
        .collect();
    assert_eq!(changed, [(diff::ChangeKind::Changed, "/src/a.txt")]);

    let found = find::find(
        &repo,
        &find::FindOptions {
            pattern: "*.csv".into(),
            selection: Selection::all(host("db")),
        },
    )
    .unwrap();
    assert_eq!(found.len(), 2);
    assert!(found
        .iter()
        .all(|m| m.path == "/src/sub/b.csv" && m.size == 100_000));

    let mut listed = Vec::new();
    ls::ls(
        &repo,
        &ls::LsOptions {
            snapshot: first.to_hex(),
            path: Some("src/sub".into()),
        },
        |path, _| listed.push(path.to_string()),
    )
    .unwrap();
    assert_eq!(listed, ["/src/sub/b.csv"]);

    let forgot = forget::forget(
        &repo,
        &forget::ForgetOptions {
            selection: Selection::all(host("db")),
            policy: ocvault::retention::Policy {
                last: Some(1),
                ..Default::default()
            },
            ..Default::default()
        },
        &CommandLine::default(),
    )
    .unwrap();
    assert_eq!(forgot.removed, [first]);
    assert_eq!(repo.list_snapshots().unwrap().len(), 2);

    // The last key and the key in use are never removed.
    let only = key::list(&repo).unwrap();
    assert_eq!(only.len(), 1);
    let refused = key::remove(&repo, &only[0].id.to_hex(), &CommandLine::default());
    assert!(matches!(refused, Err(ocvault::Error::Usage(_))));
    let added = key::add(
        &repo,
        &key::NewKey {
            password: b"second",
            kdf_memory_kib: 1024,
            kdf_iterations: 1,
            write_only: false,
        },
        &CommandLine::default(),
    )
    .unwrap();
    let in_use = key::remove(&repo, &only[0].id.to_hex()[..8], &CommandLine::default());
    assert!(matches!(in_use, Err(ocvault::Error::Usage(_))));
    let removed = key::remove(
        &repo,
        &added.added.unwrap().to_hex(),
        &CommandLine::default(),
    )
    .unwrap();
    assert_eq!(removed.removed, added.added);
}

/// A WAL push racing a prune, in the order that matters: the push loads its index and holds
/// its marker; a prune then finds the blocks of forgotten WAL records unused and marks their
/// packs; the push then stores the same contents under new names, deduplicating against those
/// packs, and writes its records. The next prune must see the records (written after its
/// mark) and keep the packs: every file fetches whole.
#[test]
fn wal_push_racing_prune_keeps_the_blocks_it_deduplicated_against() {
    use ocvault::commands::prune::prune;
    use ocvault::oplog::CommandLine;
    use ocvault::prune::PruneOptions;
    use ocvault::wal::fetch::{fetch, Fetched};
    use ocvault::wal::push::{push, WalFile};

    let tmp = scratch_dir("ocvault-library-");
    let repo =
        Repository::init(Backend::open("memory:", true).unwrap(), b"pw", &small_kdf()).unwrap();
    let wal_file = |name: String, seed: u64| {
        let path = tmp.path().join(&name);
        random_file(&path, 2 << 20, seed);
        WalFile { name, path }
    };
    let first: Vec<WalFile> = (1..=4)
        .map(|n| wal_file(format!("0000000100000000000000{n:02X}"), n))
        .collect();
    {
        let mut indexed = repo.load_index().unwrap();
        let session = indexed.write_session().unwrap();
        push(&session, &first).unwrap();
    }
    // Forgotten, as `forget --keep-wal-within` does: their blocks are now unused.
    {
        let catalog = ocvault::wal::catalog::list(&repo).unwrap();
        assert_eq!(catalog.records.len(), 4);
        let session = repo.write_session().unwrap();
        for (id, _) in &catalog.records {
            session.delete_wal_record(id).unwrap();
        }
    }
    let later: Vec<WalFile> = (1..=4)
        .map(|n| wal_file(format!("0000000100000000000000{:02X}", n + 16), n))
        .collect();

    let command_line = CommandLine::new(["prune"]);
    let mut indexed = repo.load_index().unwrap();
    let session = indexed.write_session().unwrap();
    let (marked, _) = prune(&repo, &PruneOptions::default(), &command_line).unwrap();
    assert!(
        marked.packs_to_remove > 0,
        "the first prune marks the unused packs: {marked:?}"
    );
    assert_eq!(
        marked.packs_deleted, 0,
        "a running push protects them: {marked:?}"
    );
    let pushed = push(&session, &later).unwrap();
    assert_eq!(
        pushed.bytes_added, 0,
        "deduplicated against the marked packs"
    );
    drop(session);
    drop(indexed);
    // The next prune puts the marked packs back (a push may have used them); the one after
    // judges them afresh, and only the records keep them.
    let (second, _) = prune(&repo, &PruneOptions::default(), &command_line).unwrap();
    let (third, _) = prune(&repo, &PruneOptions::default(), &command_line).unwrap();
    assert_eq!(third.packs_to_remove, 0, "{third:?}");

    let indexed = repo.load_index().unwrap();
    for f in &later {
        let dest = tmp.path().join(format!("fetched-{}", f.name));
        assert_eq!(
            fetch(&indexed, &f.name, &dest).unwrap(),
            Fetched::Written { size: 2 << 20 },
            "{} after the prunes: {second:?} {third:?}",
            f.name
        );
        assert!(std::fs::read(&dest).unwrap() == std::fs::read(&f.path).unwrap());
    }
}
