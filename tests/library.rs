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
    let tmp = tempfile::tempdir().unwrap();
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
        restorer::dump(&index, &node, &mut buf).unwrap();
        assert_eq!(&buf, data);
    }
}

/// One snapshot through the library, as the CLI makes it: index, write session, archiver.
fn backup(repo: &Repository, opts: SnapshotOptions) -> archiver::SnapshotOutcome {
    let mut indexed = repo.load_index().unwrap();
    let session = indexed.write_session().unwrap();
    archiver::snapshot(&session, opts, &Progress::default()).unwrap()
}
