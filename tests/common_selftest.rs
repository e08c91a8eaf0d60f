//! Self-test of the shared helpers in tests/common.
mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

/// Run `assert_trees_equal` and return its panic message (None if it passed).
fn compare_err(a: &Path, b: &Path) -> Option<String> {
    let r = catch_unwind(AssertUnwindSafe(|| assert_trees_equal(a, b)));
    r.err().map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn two_trees(spec: &TreeSpec) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = scratch_dir("ocvault-selftest-");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate_tree(&a, spec);
    generate_tree(&b, spec);
    (tmp, a, b)
}

#[test]
fn same_seed_gives_equal_trees() {
    let spec = TreeSpec::default();
    let (tmp, a, b) = two_trees(&spec);
    assert_trees_equal(&a, &b);
    assert_eq!(tree_digest(&a), tree_digest(&b));
    assert!(dir_size(&a) > spec.big_file_bytes + spec.sparse_file_bytes);
    assert!(walk(&a).len() > 300, "tree too small: {}", walk(&a).len());
    // Hard links, odd names and symlinks really exist.
    let m = std::fs::symlink_metadata(a.join("hard/b/link.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&m), 2);
    assert!(a
        .join("odd")
        .join(OsStr::from_bytes(b"bad\xff\xfename"))
        .exists());
    assert!(std::fs::symlink_metadata(a.join("links/dangling"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(allocated_bytes(&a.join("sparse.img")) < spec.sparse_file_bytes / 2);

    let c = tmp.path().join("c");
    generate_tree(
        &c,
        &TreeSpec {
            seed: 43,
            ..TreeSpec::default()
        },
    );
    assert_ne!(tree_digest(&a), tree_digest(&c));
}

#[test]
fn mutation_is_detected_and_deterministic() {
    let (_tmp, a, b) = two_trees(&TreeSpec::default());
    let before = tree_digest(&b);
    mutate_tree(&b, 0.1, 7);
    assert_ne!(before, tree_digest(&b));
    let msg = compare_err(&a, &b).expect("mutated tree must not compare equal");
    assert!(
        msg.contains("differ") || msg.contains("missing") || msg.contains("extra"),
        "{msg}"
    );
    mutate_tree(&a, 0.1, 7);
    assert_trees_equal(&a, &b);
}

#[test]
fn small_differences_are_detected() {
    let (_tmp, a, b) = two_trees(&TreeSpec::default());

    // 1 ns mtime difference on a non-UTF-8 name.
    let p = b.join("odd").join(OsStr::from_bytes(b"bad\xff\xfename"));
    let m = std::fs::symlink_metadata(&p).unwrap();
    let t = filetime::FileTime::from_last_modification_time(&m);
    let t2 =
        filetime::FileTime::from_unix_time(t.unix_seconds(), (t.nanoseconds() + 1) % 1_000_000_000);
    filetime::set_file_times(&p, t2, t2).unwrap();
    let msg = compare_err(&a, &b).unwrap();
    assert!(
        msg.contains("mtime") && msg.contains("bad\\xFF\\xFEname"),
        "{msg}"
    );
    filetime::set_file_times(&p, t, t).unwrap();
    assert_trees_equal(&a, &b);

    // Broken hard link (same contents, mode and mtime, separate inode).
    let l = b.join("hard/b/link.txt");
    let m = std::fs::symlink_metadata(&l).unwrap();
    let data = std::fs::read(&l).unwrap();
    std::fs::remove_file(&l).unwrap();
    std::fs::write(&l, &data).unwrap();
    std::fs::set_permissions(&l, m.permissions()).unwrap();
    let t = filetime::FileTime::from_last_modification_time(&m);
    filetime::set_file_times(&l, t, t).unwrap();
    let parent_t = filetime::FileTime::from_last_modification_time(
        &std::fs::symlink_metadata(a.join("hard/b")).unwrap(),
    );
    filetime::set_file_times(b.join("hard/b"), parent_t, parent_t).unwrap();
    let msg = compare_err(&a, &b).unwrap();
    assert!(
        msg.contains("hard links differ") && !msg.contains("mtime"),
        "{msg}"
    );

    // Symlink target, mode and single-byte content changes.
    let (_tmp, a, b) = two_trees(&TreeSpec::default());
    let s = b.join("links/to_file");
    std::fs::remove_file(&s).unwrap();
    std::os::unix::fs::symlink("target_dir", &s).unwrap();
    std::fs::set_permissions(
        b.join("modes/script.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o744),
    )
    .unwrap();
    let big = b.join("big.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    std::os::unix::fs::FileExt::write_at(
        &f,
        &[0xAB ^ std::fs::read(&big).unwrap()[500_000]],
        500_000,
    )
    .unwrap();
    let msg = compare_err(&a, &b).unwrap();
    assert!(msg.contains("symlink target differs"), "{msg}");
    assert!(
        msg.contains("mode differs: expected 0755, actual 0744"),
        "{msg}"
    );
    assert!(
        msg.contains("first difference at byte Some(500000)"),
        "{msg}"
    );
}

/// Split a dump into (non-row lines, rows per table).
fn parse_dump(data: &[u8]) -> (Vec<&[u8]>, Vec<Vec<&[u8]>>) {
    let mut other = Vec::new();
    let mut tables: Vec<Vec<&[u8]>> = Vec::new();
    let mut in_copy = false;
    for line in data.split(|&b| b == b'\n') {
        if in_copy {
            if line == b"\\." {
                in_copy = false;
                other.push(line);
            } else {
                tables.last_mut().unwrap().push(line);
            }
        } else {
            if line.starts_with(b"COPY public.t") {
                in_copy = true;
                tables.push(Vec::new());
            }
            other.push(line);
        }
    }
    (other, tables)
}

#[test]
fn sql_dump_day2_changes_only_expected_rows() {
    let tmp = scratch_dir("ocvault-selftest-");
    let (p1, p1b, p2) = (
        tmp.path().join("d1.sql"),
        tmp.path().join("d1b.sql"),
        tmp.path().join("d2.sql"),
    );
    let target = 4_000_000;
    sql_dump(&p1, target, 9, 1);
    sql_dump(&p1b, target, 9, 1);
    sql_dump(&p2, target, 9, 2);
    let (d1, d1b, d2) = (
        std::fs::read(&p1).unwrap(),
        std::fs::read(&p1b).unwrap(),
        std::fs::read(&p2).unwrap(),
    );
    assert_eq!(d1, d1b, "sql_dump is not deterministic");
    let (s1, s2) = (d1.len() as f64, d2.len() as f64);
    assert!(
        (s1 - target as f64).abs() / (target as f64) < 0.1,
        "size {s1} vs target {target}"
    );
    assert!(s2 > s1 && s2 < s1 * 1.02, "day1 {s1}, day2 {s2}");
    assert!(d1.starts_with(b"--\n-- PostgreSQL database dump\n"));

    let plan = sql_plan(target, 9);
    let (o1, t1) = parse_dump(&d1);
    let (o2, t2) = parse_dump(&d2);
    assert_eq!(o1, o2, "non-row lines differ");
    assert_eq!(t1.len(), 50);
    for (i, p) in plan.iter().enumerate() {
        let (a, b) = (&t1[i], &t2[i]);
        assert_eq!(a.len() as u64, p.rows);
        assert_eq!(b.len() as u64, p.rows + p.appended, "table {i}");
        let differing: Vec<u64> = (0..a.len())
            .filter(|&r| a[r] != b[r])
            .map(|r| r as u64)
            .collect();
        if SQL_UPDATED_TABLES.contains(&(i as u32)) {
            assert_eq!(
                differing,
                p.updated.clone().collect::<Vec<_>>(),
                "table {i}"
            );
            assert!(p.updated.start > p.rows / 4 && p.updated.end < p.rows * 3 / 4);
            assert!(!differing.is_empty() && differing.len() as u64 <= p.rows / 40 + 1);
            for &r in &differing {
                let (fa, fb): (Vec<&[u8]>, Vec<&[u8]>) = (
                    a[r as usize].split(|&c| c == b'\t').collect(),
                    b[r as usize].split(|&c| c == b'\t').collect(),
                );
                assert_eq!(fa.len(), 6);
                assert_eq!(fa[..3], fb[..3], "id/name/email must not change");
                assert_eq!(fa[4], fb[4], "created_at must not change");
            }
        } else {
            assert!(
                differing.is_empty(),
                "table {i} rows changed: {differing:?}"
            );
        }
        if SQL_APPENDED_TABLES.contains(&(i as u32)) {
            assert!(p.appended >= 1 && p.appended <= p.rows / 100 + 1);
        } else {
            assert_eq!(p.appended, 0);
        }
    }
}

#[test]
fn test_repo_layout() {
    let r = TestRepo::new();
    assert!(r.repo.starts_with(r.dir.path()));
    assert!(!r.repo.exists());
    assert!(!r.password.is_empty());
}

/// Every test writes under the one scratch folder, and its own folder is gone when it ends,
/// also when it panics (unless `OCVAULT_KEEP_TMP` asks to keep it).
#[test]
fn scratch_space_is_under_one_folder_and_removed() {
    let keep = std::env::var_os("OCVAULT_KEEP_TMP").is_some();
    let r = TestRepo::new();
    assert!(
        r.dir.path().starts_with(scratch_root()),
        "{:?}",
        r.dir.path()
    );
    let dir = r.dir.path().to_path_buf();
    std::fs::write(r.path("f"), b"x").unwrap();
    drop(r);
    assert_eq!(dir.exists(), keep);
    let mut kept = None;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let r = TestRepo::new();
        kept = Some(r.dir.path().to_path_buf());
        panic!("a failing test");
    }));
    assert!(panicked.is_err());
    assert_eq!(kept.unwrap().exists(), keep);
}

/// Generation speed check: `cargo test --release --test common_selftest -- --ignored --nocapture`.
#[test]
#[ignore]
fn generation_speed() {
    let tmp = scratch_dir("ocvault-selftest-");
    let t = Instant::now();
    generate_tree(
        &tmp.path().join("t"),
        &TreeSpec {
            big_file_bytes: 300 << 20,
            small_files: 2000,
            ..TreeSpec::default()
        },
    );
    let tree = t.elapsed();
    let t = Instant::now();
    let p = tmp.path().join("dump.sql");
    sql_dump(&p, 1 << 30, 1, 1);
    let sql = t.elapsed();
    let len = std::fs::metadata(&p).unwrap().len();
    eprintln!(
        "tree with 300 MiB big file: {tree:?}; sql_dump {len} bytes: {sql:?} ({:.0} MB/s)",
        len as f64 / 1e6 / sql.as_secs_f64()
    );
}
