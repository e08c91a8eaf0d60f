//! `check` finds every kind of damage, names what it affects, and exits with the documented code.

mod common;

use common::*;
use ocvault::backend::Backend;
use ocvault::format::{BlobType, IndexFile};
use ocvault::repository::Repository;
use std::path::{Path, PathBuf};

const DAMAGE: i32 = 4;

struct Fixture {
    repo: TestRepo,
    /// (snapshot id, data packs, tree packs, index files) of snapshots A and B.
    a: Written,
    b: Written,
}

#[derive(Default, Clone)]
struct Written {
    snapshot: String,
    data_packs: Vec<PathBuf>,
    tree_packs: Vec<PathBuf>,
    index_files: Vec<PathBuf>,
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut v: Vec<PathBuf> = walk(dir)
        .into_iter()
        .map(|p| dir.join(p))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn open_lib(repo: &TestRepo) -> Repository {
    Repository::open(
        Backend::open(repo.repo.to_str().unwrap(), false).unwrap(),
        repo.password.as_bytes(),
    )
    .unwrap()
}

fn snapshot_dir(repo: &TestRepo, dir: &Path, extra: &[&str]) -> Written {
    let before_packs = files_under(&repo.repo.join("data"));
    let before_index = files_under(&repo.repo.join("index"));
    let out = repo
        .cmd()
        .args(["--json", "snapshot"])
        .args(extra)
        .arg(dir)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let lib = open_lib(repo);
    let indexed = lib.load_index().unwrap();
    let index = indexed.index();
    let mut w = Written {
        snapshot: v["snapshot_id"].as_str().unwrap().to_string(),
        ..Default::default()
    };
    for p in files_under(&repo.repo.join("data")) {
        if before_packs.contains(&p) {
            continue;
        }
        let name = p.file_name().unwrap().to_str().unwrap();
        let info = index
            .packs()
            .iter()
            .find(|i| i.id.to_hex() == name)
            .expect("new pack is indexed");
        match info.blob_type {
            BlobType::Data => w.data_packs.push(p),
            BlobType::Tree => w.tree_packs.push(p),
        }
    }
    w.index_files = files_under(&repo.repo.join("index"))
        .into_iter()
        .filter(|p| !before_index.contains(p))
        .collect();
    w
}

fn fixture() -> Fixture {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let a = repo.path("a");
    let b = repo.path("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut rng = Rng::new(5);
    let mut data = vec![0u8; 300_000];
    rng.fill(&mut data);
    std::fs::write(a.join("one.bin"), &data).unwrap();
    rng.fill(&mut data);
    std::fs::write(b.join("two.bin"), &data).unwrap();
    let wa = snapshot_dir(&repo, &a, &[]);
    let wb = snapshot_dir(&repo, &b, &[]);
    assert_eq!(wa.data_packs.len(), 1);
    assert_eq!(wa.tree_packs.len(), 1);
    Fixture { repo, a: wa, b: wb }
}

fn check(repo: &TestRepo, args: &[&str]) -> (i32, serde_json::Value) {
    let out = repo
        .cmd()
        .args(["--json", "check"])
        .args(args)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn flip(path: &Path, offset_from_start: Option<u64>, offset_from_end: Option<u64>) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = match (offset_from_start, offset_from_end) {
        (Some(o), _) => o as usize,
        (_, Some(o)) => bytes.len() - o as usize,
        _ => unreachable!(),
    };
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// Asserts damage was found and that it names the snapshot and (when given) the path.
fn assert_affects(v: &serde_json::Value, snapshot: &str, path: Option<&str>) {
    assert_eq!(v["intact"], false, "{v:#}");
    let affected = v["affected"].as_array().unwrap();
    let entry = affected
        .iter()
        .find(|a| a["snapshot"] == snapshot)
        .unwrap_or_else(|| panic!("snapshot {snapshot} not named as affected: {v:#}"));
    if let Some(p) = path {
        assert!(
            entry["paths"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x.as_str().unwrap().ends_with(p)),
            "{p} not named: {v:#}"
        );
    }
}

fn damage_mentions(v: &serde_json::Value, needle: &str) -> bool {
    v["damage"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d.to_string().contains(needle))
}

#[test]
fn clean_repository_passes_both_checks() {
    let f = fixture();
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, 0, "{v:#}");
    let (code, v) = check(&f.repo, &["--read-data"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data_packs_read"], 2);
}

#[test]
fn flipped_byte_in_data_blob_is_found_only_by_read_data() {
    let f = fixture();
    flip(&f.a.data_packs[0], Some(100), None);
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, 0, "structure check reads no data packs: {v:#}");
    let (code, v) = check(&f.repo, &["--read-data"]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert_affects(&v, &f.a.snapshot, Some("/a/one.bin"));
    assert!(
        !v["affected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["snapshot"] == f.b.snapshot.as_str()),
        "{v:#}"
    );
}

#[test]
fn flipped_byte_in_pack_header_is_found() {
    let f = fixture();
    flip(&f.a.data_packs[0], None, Some(10));
    let (code, v) = check(&f.repo, &["--read-data"]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(
        damage_mentions(
            &v,
            &f.a.data_packs[0].file_name().unwrap().to_string_lossy()
        ),
        "{v:#}"
    );
}

#[test]
fn flipped_byte_in_tree_pack_is_found_by_structure_check() {
    let f = fixture();
    flip(&f.a.tree_packs[0], Some(60), None);
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert_affects(&v, &f.a.snapshot, None);
}

#[test]
fn flipped_byte_in_index_snapshot_key_and_config_files() {
    let f = fixture();
    flip(&f.a.index_files[0], Some(50), None);
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(damage_mentions(&v, "index/"), "{v:#}");
    // The snapshot's root tree was in that index: the whole snapshot ("/") is affected.
    assert_affects(&v, &f.a.snapshot, Some("/"));

    let f = fixture();
    let snap = f.repo.repo.join("snapshots").join(&f.b.snapshot);
    flip(&snap, Some(40), None);
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(
        damage_mentions(&v, &format!("snapshots/{}", f.b.snapshot)),
        "{v:#}"
    );

    let f = fixture();
    let key = files_under(&f.repo.repo.join("keys"))[0].clone();
    flip(&key, None, Some(5));
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(damage_mentions(&v, "keys/"), "{v:#}");

    let f = fixture();
    flip(&f.repo.repo.join("config"), None, Some(3));
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(damage_mentions(&v, "config"), "{v:#}");
}

#[test]
fn deleted_and_truncated_packs_are_found() {
    let f = fixture();
    std::fs::remove_file(&f.a.data_packs[0]).unwrap();
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(damage_mentions(&v, "missing"), "{v:#}");
    assert_affects(&v, &f.a.snapshot, Some("/a/one.bin"));

    let f = fixture();
    std::fs::remove_file(&f.b.tree_packs[0]).unwrap();
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert_affects(&v, &f.b.snapshot, None);

    let f = fixture();
    let p = &f.a.data_packs[0];
    let len = std::fs::metadata(p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert_affects(&v, &f.a.snapshot, Some("/a/one.bin"));
}

#[test]
fn index_entry_past_pack_end_and_unknown_file_are_found() {
    let f = fixture();
    let lib = open_lib(&f.repo);
    let old = &f.a.index_files[0];
    let old_id =
        ocvault::IndexFileId::from_hex(old.file_name().unwrap().to_str().unwrap()).unwrap();
    let mut file: IndexFile = lib.load_file::<IndexFile>(&old_id).unwrap();
    let pack = file
        .packs
        .iter_mut()
        .find(|p| p.blob_type == BlobType::Data)
        .unwrap();
    pack.blobs[0].offset = pack.size as u32 + 1000;
    let session = lib.write_session().unwrap();
    session.save_file(&file).unwrap();
    drop(session);
    std::fs::remove_file(old).unwrap();
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(damage_mentions(&v, "past the pack"), "{v:#}");
    assert_affects(&v, &f.a.snapshot, Some("/a/one.bin"));

    let f = fixture();
    std::fs::write(f.repo.repo.join("data/00/not-a-pack.txt"), b"hello").unwrap_or_else(|_| {
        std::fs::create_dir_all(f.repo.repo.join("data/00")).unwrap();
        std::fs::write(f.repo.repo.join("data/00/not-a-pack.txt"), b"hello").unwrap();
    });
    let fake = f.repo.repo.join("data/ab").join("ab".repeat(32));
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::write(&fake, vec![7u8; 5000]).unwrap();
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, DAMAGE, "{v:#}");
    assert!(damage_mentions(&v, "not-a-pack.txt"), "{v:#}");
    assert!(damage_mentions(&v, &"ab".repeat(32)), "{v:#}");
}

/// A real pack of this repository in no index (a backup cut off before its index file) is
/// space prune can reclaim, not damage; files in `data/` are matched to the index by pack id.
#[test]
fn pack_in_no_index_is_reclaimable() {
    let f = fixture();
    let lib = open_lib(&f.repo);
    let raw = b"a blob no index file names".to_vec();
    let id = lib.keys().blob_id(&raw);
    let sealed = ocvault::pack::seal_blob(lib.keys(), BlobType::Data, &id, &raw, 3);
    let mut b = ocvault::pack::PackBuilder::new(BlobType::Data, 1024);
    b.add(id, raw.len() as u32, &sealed);
    let (bytes, entry) = b.finish(lib.keys());
    let path = f
        .repo
        .repo
        .join(ocvault::backend::FileKind::Pack.path(&entry.id));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let (code, v) = check(&f.repo, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["reclaimable"]["unreferenced_packs"], 1, "{v:#}");
    assert_eq!(
        v["reclaimable"]["unreferenced_pack_bytes"],
        bytes.len() as u64,
        "{v:#}"
    );
}

#[test]
fn read_data_subsets_cover_every_pack_exactly_once() {
    let repo = TestRepo::new();
    init_small_packs(&repo, 65536);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; 3_000_000];
    Rng::new(9).fill(&mut data);
    std::fs::write(src.join("big"), &data).unwrap();
    repo.cmd().arg("snapshot").arg(&src).assert().success();
    let (_, all) = check(&repo, &["--read-data"]);
    let mut everything: Vec<String> = all["packs_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    everything.sort();
    assert!(
        everything.len() >= 20,
        "want many packs, got {}",
        everything.len()
    );
    let mut seen = Vec::new();
    for n in 1..=5 {
        let (code, v) = check(&repo, &["--read-data-subset", &format!("{n}/5")]);
        assert_eq!(code, 0);
        seen.extend(
            v["packs_read"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string()),
        );
    }
    seen.sort();
    assert_eq!(seen, everything, "groups must partition the packs");
    let (_, v) = check(&repo, &["--read-data-subset", "50%"]);
    let n = v["packs_read"].as_array().unwrap().len();
    assert!(
        n >= everything.len() / 2 && n <= everything.len() / 2 + 1,
        "{n}"
    );
    // Packs are taken in random order while the total is under the budget, so the last one
    // taken may overshoot it by at most the largest pack (a 64 KiB pack can end with a chunk of
    // up to 256 KiB).
    let (_, v) = check(&repo, &["--read-data-subset", "100K"]);
    let largest_pack = files_under(&repo.repo.join("data"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    let read = v["data_bytes_read"].as_u64().unwrap();
    assert!(read >= 100 * 1024, "{v:#}");
    assert!(read < 100 * 1024 + largest_pack, "{v:#}");
    let out = repo
        .cmd()
        .args(["check", "--read-data-subset", "6/5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn max_age_passes_and_fails() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let old = chrono_like_days_ago(2);
    repo.cmd()
        .args(["snapshot", "--time", &old])
        .arg(&src)
        .assert()
        .success();
    let out = repo
        .cmd()
        .args(["check", "--max-age", "25h"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("too old"));
    let out = repo
        .cmd()
        .args(["check", "--max-age", "3d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    repo.cmd().arg("snapshot").arg(&src).assert().success();
    let out = repo
        .cmd()
        .args(["check", "--max-age", "25h"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

fn chrono_like_days_ago(days: u64) -> String {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86400);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A byte flipped in any kind of stored file (config, key, snapshot, index, data pack, tree
/// pack, log entry, backup marker, prune mark) is found by `check --read-data` (exit 4), which
/// names the file.
#[test]
fn flipped_byte_in_every_kind_of_stored_file_is_found() {
    let f = fixture();
    let repo = &f.repo;
    // A prune mark (packs marked, not yet deleted) and a backup marker.
    repo.cmd()
        .args(["forget", &f.b.snapshot])
        .assert()
        .success();
    repo.cmd()
        .args(["prune", "--grace", "1h"])
        .assert()
        .success();
    let lib = open_lib(repo);
    // Another session's marker, left behind.
    lib.write_session()
        .unwrap()
        .save_file(&ocvault::format::BackupMarker {
            hostname: "h".into(),
            pid: 1,
            started_unix_ns: 1,
            heartbeat_unix_ns: 1,
        })
        .unwrap();
    drop(lib);
    assert_check_passes(repo, &["--read-data"]);
    let first = |dir: &str| {
        files_under(&repo.repo.join(dir))
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no file in {dir}/"))
    };
    let kinds = [
        ("config", repo.repo.join("config")),
        ("keys", first("keys")),
        ("snapshots", first("snapshots")),
        ("index", first("index")),
        ("data pack", f.a.data_packs[0].clone()),
        ("tree pack", f.a.tree_packs[0].clone()),
        ("log", first("log")),
        ("locks", first("locks")),
        ("prune", first("prune")),
    ];
    for (kind, file) in kinds {
        let copy = repo.path(&format!("copy-{}", kind.replace(' ', "-")));
        copy_tree(&repo.repo, &copy);
        let damaged = copy.join(file.strip_prefix(&repo.repo).unwrap());
        let len = std::fs::metadata(&damaged).unwrap().len();
        flip(&damaged, Some(len / 2), None);
        let out = ocvault()
            .arg("--repo")
            .arg(&copy)
            .env("OCVAULT_PASSWORD", &repo.password)
            .args(["--json", "check", "--read-data"])
            .output()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{kind}: {e}: {out:?}"));
        assert_eq!(out.status.code(), Some(DAMAGE), "{kind}: {v:#}");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(damage_mentions(&v, name), "{kind}: {name} not named: {v:#}");
    }
}

/// `check` lists `data/`, then a prune beside it forgets packs and deletes them (a snapshot
/// forgotten, leftovers of a crashed backup): what vanished between listing and reading is
/// not damage. The prune runs in the listing hook, so it lands there every time.
#[test]
fn check_beside_prune_reports_no_damage() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let d = repo.path(&format!("d{i}"));
            std::fs::create_dir_all(&d).unwrap();
            random_file(&d.join("f"), 200_000, 10 + i);
            d
        })
        .collect();
    let _kept = snapshot_dir(&repo, &dirs[0], &[]);
    let forgotten = snapshot_dir(&repo, &dirs[1], &[]);
    let crashed = snapshot_dir(&repo, &dirs[2], &[]);
    repo.cmd()
        .args(["forget", &forgotten.snapshot, &crashed.snapshot])
        .assert()
        .success();
    // The third backup's packs in no index, as a crashed backup leaves them.
    for f in &crashed.index_files {
        std::fs::remove_file(f).unwrap();
    }
    assert_check_passes(&repo, &["--read-data"]);

    let mut backend = Backend::open(repo.repo.to_str().unwrap(), false).unwrap();
    let fired = std::sync::atomic::AtomicBool::new(false);
    let prune = {
        let cmd = std::sync::Mutex::new(repo.cmd_std());
        move |prefix: &str| {
            if prefix == "data/" && !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let out = cmd.lock().unwrap().arg("prune").output().unwrap();
                assert!(out.status.success(), "prune: {out:?}");
            }
        }
    };
    backend.set_list_hook(std::sync::Arc::new(prune));
    let report = ocvault::checker::check(
        &backend,
        repo.password.as_bytes(),
        &ocvault::checker::CheckOptions {
            read_data: ocvault::checker::ReadData::All,
            max_age: None,
            max_wal_age: None,
        },
        &ocvault::checker::CheckProgress::default(),
    )
    .unwrap();
    assert!(
        report.damage.is_empty(),
        "damage reported beside a prune: {:#?}",
        report.damage
    );
    // The prune did delete packs check had listed.
    for p in forgotten.data_packs.iter().chain(&crashed.data_packs) {
        assert!(!p.exists(), "{p:?} was not pruned");
    }
    assert!(!report.notes.is_empty());
    assert_check_passes(&repo, &["--read-data"]);
}

/// `ocvault log` lists every intact entry and names each damaged one (one `DAMAGED` line in
/// text, `damaged[]` in JSON, exit code 4), instead of stopping at the first damaged entry.
#[test]
fn log_lists_intact_entries_and_names_damaged_ones() {
    let f = fixture();
    let repo = &f.repo;
    let entries = files_under(&repo.repo.join("log"));
    assert!(entries.len() >= 3, "{entries:?}");
    for e in &entries[..2] {
        flip(e, Some(10), None);
    }
    let out = repo.cmd().args(["--json", "log"]).output().unwrap();
    assert_eq!(out.status.code(), Some(DAMAGE), "{out:?}");
    let listed = last_json(&out);
    assert_eq!(
        listed["entries"].as_array().unwrap().len(),
        entries.len() - 2
    );
    let mut damaged: Vec<&str> = listed["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    damaged.sort();
    let mut names: Vec<&str> = entries[..2]
        .iter()
        .map(|e| e.file_name().unwrap().to_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(damaged, names, "{listed:#}");
    let text = repo.cmd().arg("log").output().unwrap();
    assert_eq!(text.status.code(), Some(DAMAGE), "{text:?}");
    let stdout = String::from_utf8_lossy(&text.stdout);
    for name in &names {
        let lines: Vec<_> = stdout.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(lines.len(), 1, "{name}: {stdout}");
        assert!(
            lines[0].starts_with(&format!("{name}  DAMAGED: ")),
            "{stdout}"
        );
    }
    let (code, v) = check(repo, &[]);
    assert_eq!(code, DAMAGE);
    for e in &entries[..2] {
        assert!(damage_mentions(
            &v,
            e.file_name().unwrap().to_str().unwrap()
        ));
    }
}

/// One `log/` entry damaged in place (a byte flipped, or cut short): `check` (with and
/// without `--read-data`) exits 4 naming exactly that entry and nothing else, and
/// `ocvault log` lists every other entry and marks that one. On an intact copy `check`
/// counts every entry and exits 0. Each `check` adds its own entry once it is done (reads
/// are logged), so the counts grow by one a check.
#[test]
fn damaged_log_entry_is_named_by_check_and_marked_by_log() {
    let f = fixture();
    let repo = &f.repo;
    let entries = files_under(&repo.repo.join("log"));
    // init and two snapshots.
    assert_eq!(entries.len(), 3, "{entries:?}");
    for (n, args) in [&[][..], &["--read-data"][..]].into_iter().enumerate() {
        let (code, v) = check(repo, args);
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(v["log_entries"], 3 + n, "{v:#}");
        assert_eq!(v["log_damaged"], 0, "{v:#}");
        assert_eq!(v["log_missing"], 0, "{v:#}");
    }
    let text = repo.cmd().arg("check").output().unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(", 5 log entries"),
        "{text:?}"
    );
    // init, two snapshots, three checks.
    let original_entries = files_under(&repo.repo.join("log")).len();
    assert_eq!(original_entries, 6);
    type Damager = fn(&Path);
    let damagers: [(&str, Damager); 2] = [
        ("flipped byte", |p| {
            let len = std::fs::metadata(p).unwrap().len();
            flip(p, Some(len / 2), None)
        }),
        ("truncated", |p| {
            let len = std::fs::metadata(p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 2)
                .unwrap()
        }),
    ];
    for (how, damage) in damagers {
        let copy = repo.path(&format!("copy-{}", how.replace(' ', "-")));
        copy_tree(&repo.repo, &copy);
        let victim = copy.join(entries[1].strip_prefix(&repo.repo).unwrap());
        let name = victim.file_name().unwrap().to_str().unwrap().to_string();
        damage(&victim);
        let copy_cmd = || {
            let mut c = ocvault();
            c.arg("--repo")
                .arg(&copy)
                .env("OCVAULT_PASSWORD", &repo.password);
            c
        };
        for args in [&["check"][..], &["check", "--read-data"][..]] {
            let present = files_under(&copy.join("log")).len();
            let out = copy_cmd().arg("--json").args(args).output().unwrap();
            let v = last_json(&out);
            assert_eq!(out.status.code(), Some(DAMAGE), "{how} {args:?}: {v:#}");
            let damage = v["damage"].as_array().unwrap();
            assert_eq!(damage.len(), 1, "{how} {args:?}: {v:#}");
            assert_eq!(damage[0]["object"], format!("log/{name}"), "{how}: {v:#}");
            assert_eq!(v["log_entries"], present - 1, "{how}: {v:#}");
            assert_eq!(v["log_damaged"], 1, "{how}: {v:#}");
            assert_eq!(v["affected"], serde_json::json!([]), "{how}: {v:#}");
        }
        let text = copy_cmd().arg("check").output().unwrap();
        assert_eq!(text.status.code(), Some(DAMAGE), "{how}: {text:?}");
        let stdout = String::from_utf8_lossy(&text.stdout);
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("damage: "))
            .collect();
        assert_eq!(lines.len(), 1, "{how}: {stdout}");
        assert!(
            lines[0].starts_with(&format!("damage: log/{name}: ")),
            "{how}: {stdout}"
        );

        let present = files_under(&copy.join("log")).len();
        let out = copy_cmd().args(["--json", "log"]).output().unwrap();
        assert_eq!(out.status.code(), Some(DAMAGE), "{how}: {out:?}");
        let listed = last_json(&out);
        let ops: Vec<&str> = listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["operation"].as_str().unwrap())
            .collect();
        assert_eq!(ops.len(), present - 1, "{how}: {listed:#}");
        assert!(
            ops.iter()
                .all(|o| ["init", "snapshot", "check"].contains(o)),
            "{ops:?}"
        );
        let damaged = listed["damaged"].as_array().unwrap();
        assert_eq!(damaged.len(), 1, "{how}: {listed:#}");
        assert_eq!(damaged[0]["id"], name.as_str(), "{how}: {listed:#}");
        assert_eq!(damaged[0]["file"], format!("log/{name}"), "{how}");
        // (Later entries name it as a parent: only its id is looked for.)
        assert!(
            listed["entries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["id"] != name.as_str()),
            "{how}: the damaged entry is listed as intact: {listed:#}"
        );
        let text = copy_cmd().arg("log").output().unwrap();
        assert_eq!(text.status.code(), Some(DAMAGE), "{how}: {text:?}");
        let stdout = String::from_utf8_lossy(&text.stdout);
        assert_eq!(stdout.lines().count(), present, "{how}: {stdout}");
        let marked: Vec<&str> = stdout.lines().filter(|l| l.contains("DAMAGED")).collect();
        assert_eq!(marked.len(), 1, "{how}: {stdout}");
        assert!(
            marked[0].starts_with(&format!("{name}  DAMAGED: ")),
            "{how}: {stdout}"
        );
        let stderr = String::from_utf8_lossy(&text.stderr);
        assert_eq!(stderr.lines().count(), 1, "{how}: {stderr}");
        // Nothing else was touched: the original still passes.
        assert_eq!(files_under(&repo.repo.join("log")).len(), original_entries);
    }
    assert_check_passes(repo, &["--read-data"]);
}
