//! `repair index|snapshots|packs` after the damage `check` finds: lost index files, a deleted
//! data pack, flipped bytes inside a pack. Each ends with `check` passing and every intact
//! file restoring byte for byte; each `--dry-run` leaves the repository unchanged.

mod common;

use common::*;
use ocvault::backend::Backend;
use ocvault::format::{BlobType, Tree};
use ocvault::id::{Id, PackId, TreeId};
use ocvault::repository::{IndexedRepository, Repository};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const DAMAGE: i32 = 4;

/// A source folder `root/src` of files from 1 KB to 200 KB (several chunks each with 16 KiB
/// average chunks), in a subfolder too; `variant` changes one file and adds one, the rest is
/// shared with variant 0 (dedup across snapshots).
fn make_source(root: &Path, variant: u64) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..12u64 {
        let seed = if i == 0 { 1000 + variant } else { i };
        let mut rng = Rng::new(seed);
        let mut data = vec![0u8; rng.range(1_000, 200_000) as usize];
        rng.fill(&mut data);
        let dir = if i % 3 == 0 {
            src.join("sub")
        } else {
            src.clone()
        };
        fs::write(dir.join(format!("f{i}")), data).unwrap();
    }
    if variant > 0 {
        fs::write(
            src.join("added"),
            format!("variant {variant}\n").repeat(5000),
        )
        .unwrap();
    }
    fs::write(src.join("empty"), b"").unwrap();
    src
}

/// A repository with small packs and chunks, and two snapshots: (id, source folder) each.
fn fixture() -> (TestRepo, Vec<(String, PathBuf)>) {
    let repo = TestRepo::new();
    init_small_packs(&repo, 65_536);
    let mut snaps = Vec::new();
    for variant in 0..2 {
        let root = repo.path(&format!("source{variant}"));
        let src = make_source(&root, variant);
        snaps.push((snapshot_id(&repo, &[], &src), src));
    }
    (repo, snaps)
}

fn open_lib(repo: &TestRepo) -> Repository {
    Repository::open(
        Backend::open(repo.repo.to_str().unwrap(), false).unwrap(),
        repo.password.as_bytes(),
    )
    .unwrap()
}

/// Every file of every snapshot: snapshot id -> path ("/src/sub/f0") -> its data blobs.
type Files = BTreeMap<String, BTreeMap<String, Vec<Id>>>;

fn files_of(indexed: &IndexedRepository) -> Files {
    fn walk(ix: &IndexedRepository, id: TreeId, path: &str, out: &mut BTreeMap<String, Vec<Id>>) {
        let tree: Tree = ix.load_tree(&id).unwrap();
        for n in tree.nodes {
            let p = format!("{path}/{}", n.name_lossy());
            match n.subtree {
                Some(sub) => walk(ix, sub, &p, out),
                None => {
                    out.insert(p, n.content.iter().map(|b| b.0).collect());
                }
            }
        }
    }
    let mut all = Files::new();
    for (id, snap) in indexed.list_snapshots().unwrap() {
        let mut files = BTreeMap::new();
        walk(indexed, snap.tree, "", &mut files);
        all.insert(id.to_hex(), files);
    }
    all
}

/// The path of a pack in the repository.
fn pack_path(repo: &TestRepo, id: &PackId) -> PathBuf {
    let h = id.to_hex();
    repo.repo.join("data").join(&h[..2]).join(&h)
}

/// Runs `ocvault` with `args`, asserting exit code `code`; returns standard output.
fn run(repo: &TestRepo, args: &[&str], code: i32) -> String {
    let out = repo.cmd().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `args` (a `--dry-run`) and asserts that the repository's files are unchanged.
fn assert_dry_run_changes_nothing(repo: &TestRepo, args: &[&str], code: i32) -> String {
    let before = fingerprint(&repo.repo);
    let out = run(repo, args, code);
    assert_eq!(
        before,
        fingerprint(&repo.repo),
        "{args:?} changed the repository"
    );
    out
}

/// The operations log's entries of `operation`.
fn logged(repo: &TestRepo, operation: &str) -> usize {
    let v = last_json(&repo.cmd().args(["--json", "log"]).output().unwrap());
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == operation)
        .count()
}

#[test]
fn repair_index_after_every_index_file_is_deleted() {
    let (repo, snaps) = fixture();
    for f in fs::read_dir(repo.repo.join("index")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    run(&repo, &["check"], DAMAGE);

    let dry = assert_dry_run_changes_nothing(&repo, &["--json", "repair", "index", "--dry-run"], 0);
    let dry: serde_json::Value = serde_json::from_str(dry.trim()).unwrap();
    assert_eq!(dry["new_index"], true);
    let packs = dry["packs"].as_u64().unwrap();
    assert!(packs > 5, "{dry}");
    assert_eq!(dry["packs_indexed"].as_array().unwrap().len() as u64, packs);

    let out = run(&repo, &["--json", "repair", "index"], 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["packs_indexed"].as_array().unwrap().len() as u64, packs);
    assert_eq!(v["unreadable"].as_array().unwrap().len(), 0);
    assert_eq!(logged(&repo, "repair index"), 1);

    assert_check_passes(&repo, &["--read-data"]);
    for (id, src) in &snaps {
        restore_and_compare(&repo, id, src, "src");
    }
    // A second run finds nothing to do, and its dry run changes nothing either.
    let again = run(&repo, &["--json", "repair", "index", "--read-all-packs"], 0);
    let again: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(again["new_index"], false, "{again}");
    assert_eq!(again["headers_read"].as_u64(), Some(packs));
}

#[test]
fn repair_index_replaces_a_damaged_index_file() {
    let (repo, snaps) = fixture();
    let files: Vec<PathBuf> = fs::read_dir(repo.repo.join("index"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert!(files.len() >= 2);
    let mut bytes = fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&files[0], bytes).unwrap();
    run(&repo, &["check"], DAMAGE);

    let v = run(&repo, &["--json", "repair", "index"], 0);
    let v: serde_json::Value = serde_json::from_str(v.trim()).unwrap();
    assert_eq!(v["damaged_index_files"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["index_files_replaced"].as_u64(), Some(files.len() as u64));
    assert!(
        !files[0].exists(),
        "the damaged index file is superseded and deleted"
    );
    assert_check_passes(&repo, &["--read-data"]);
    for (id, src) in &snaps {
        restore_and_compare(&repo, id, src, "src");
    }
}

#[test]
fn repair_snapshots_after_a_data_pack_is_deleted() {
    let (repo, snaps) = fixture();
    let lib = open_lib(&repo);
    let indexed = lib.load_index().unwrap();
    let files = files_of(&indexed);
    // The data pack holding the most file blobs; which files lose a blob with it.
    let index = indexed.index();
    let pack_of = |b: &Id| index.pack(index.get(b).unwrap().pack).id;
    let mut uses: BTreeMap<PackId, usize> = BTreeMap::new();
    for f in files.values().flat_map(|f| f.values()) {
        for b in f {
            *uses.entry(pack_of(b)).or_default() += 1;
        }
    }
    let (victim, _) = uses.iter().max_by_key(|(_, n)| **n).unwrap();
    let victim = *victim;
    assert_eq!(
        index
            .packs()
            .iter()
            .find(|p| p.id == victim)
            .unwrap()
            .blob_type,
        BlobType::Data
    );
    let damaged: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|(snap, f)| {
            let lost = f
                .iter()
                .filter(|(_, blobs)| blobs.iter().any(|b| pack_of(b) == victim))
                .map(|(p, _)| p.clone())
                .collect();
            (snap.clone(), lost)
        })
        .collect();
    assert!(damaged.values().any(|d| !d.is_empty()));
    drop(indexed);
    fs::remove_file(pack_path(&repo, &victim)).unwrap();
    run(&repo, &["check"], DAMAGE);

    let v = run(&repo, &["--json", "repair", "index"], 0);
    let v: serde_json::Value = serde_json::from_str(v.trim()).unwrap();
    assert_eq!(v["packs_missing"], serde_json::json!([victim.to_hex()]));

    let dry = assert_dry_run_changes_nothing(
        &repo,
        &["--json", "repair", "snapshots", "--forget", "--dry-run"],
        DAMAGE,
    );
    let out = run(&repo, &["--json", "repair", "snapshots", "--forget"], 0);
    assert_eq!(
        listed(&dry, "dropped_files"),
        listed(&out, "dropped_files"),
        "the dry run lists what the repair cuts"
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut repaired = BTreeMap::new();
    for s in report.as_array().unwrap() {
        let old = s["old"].as_str().unwrap().to_string();
        let dropped: BTreeSet<String> = s["dropped_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(dropped, damaged[&old], "snapshot {old}: the files dropped");
        assert_eq!(s["emptied_dirs"].as_array().unwrap().len(), 0);
        match s["new"].as_str() {
            Some(new) => {
                assert_eq!(s["forgotten"], true);
                repaired.insert(old, new.to_string());
            }
            None => assert!(dropped.is_empty()),
        }
    }
    assert_eq!(logged(&repo, "repair snapshots"), 1);
    assert_check_passes(&repo, &[]);
    assert_check_passes(&repo, &["--read-data"]);

    // Every file not in the deleted pack restores byte for byte; the dropped ones are gone.
    for (old, src) in &snaps {
        let id = repaired.get(old).unwrap_or(old);
        assert_restores_except(&repo, id, src, &files[old], &damaged[old]);
    }
    let tags = run(&repo, &["--json", "snapshots"], 0);
    assert!(tags.contains("\"repaired\""), "{tags}");
}

/// Restores `id` and compares each of `files` (paths as in the snapshot) with its original in
/// `src`'s parent byte for byte, except `dropped`, which must be absent.
fn assert_restores_except(
    repo: &TestRepo,
    id: &str,
    src: &Path,
    files: &BTreeMap<String, Vec<Id>>,
    dropped: &BTreeSet<String>,
) {
    let target = repo.path(&format!("restore-{id}"));
    restore_into(repo, id, &target);
    for path in files.keys() {
        let original = src.parent().unwrap().join(&path[1..]);
        let restored = target.join(&path[1..]);
        if dropped.contains(path) {
            assert!(!restored.exists(), "{path} was dropped");
        } else {
            assert_eq!(
                fs::read(&original).unwrap(),
                fs::read(&restored).unwrap(),
                "{path}"
            );
        }
    }
    fs::remove_dir_all(&target).unwrap();
}

/// The sorted strings under `key` in every element of a JSON array report.
fn listed(json: &str, key: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s[key].as_array().unwrap().clone())
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn repair_packs_keeps_the_intact_blobs_of_a_damaged_pack() {
    let (repo, snaps) = fixture();
    let lib = open_lib(&repo);
    let indexed = lib.load_index().unwrap();
    // A data pack with several blobs; flip bytes inside its second blob only.
    let pack = lib
        .load_index_files()
        .unwrap()
        .into_iter()
        .flat_map(|(_, f)| f.packs)
        .filter(|p| p.blob_type == BlobType::Data)
        .max_by_key(|p| p.blobs.len())
        .unwrap();
    assert!(pack.blobs.len() >= 3, "{} blobs", pack.blobs.len());
    let hit = pack.blobs[1];
    let files = files_of(&indexed);
    drop(indexed);
    let path = pack_path(&repo, &pack.id);
    let mut bytes = fs::read(&path).unwrap();
    let at = (hit.offset + hit.length / 2) as usize;
    bytes[at] ^= 0x55;
    bytes[at + 1] ^= 0xaa;
    fs::write(&path, bytes).unwrap();
    run(&repo, &["check", "--read-data"], DAMAGE);

    for (bad, why) in [
        ("zz12", "hex digits"),
        ("ab", "hex digits"),
        ("0000000000", "no pack"),
    ] {
        let out = repo.cmd().args(["repair", "packs", bad]).output().unwrap();
        assert_one_line_error(&out, 2, why);
    }
    let short = &pack.id.to_hex()[..12];
    let dry = assert_dry_run_changes_nothing(
        &repo,
        &["--json", "repair", "packs", short, "--dry-run"],
        DAMAGE,
    );
    let out = run(&repo, &["--json", "repair", "packs", short], DAMAGE);
    for report in [&dry, &out] {
        let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
        let p = &v["packs"][0];
        assert_eq!(p["blobs"].as_u64(), Some(pack.blobs.len() as u64));
        assert_eq!(p["kept"].as_u64(), Some(pack.blobs.len() as u64 - 1), "{v}");
        assert_eq!(p["lost"], serde_json::json!([hit.id.to_hex()]));
    }
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["new_packs"].as_u64().unwrap() >= 1);
    assert!(v["blobs_stored"].as_u64().unwrap() >= 1);
    assert!(path.exists(), "repair packs deletes no pack: prune does");
    assert_eq!(logged(&repo, "repair packs"), 1);

    // The kept blobs are readable from their new packs.
    let lib = open_lib(&repo);
    let indexed = lib.load_index().unwrap();
    assert!(!indexed.live_index().packs().iter().any(|p| p.id == pack.id));
    for b in pack.blobs.iter().filter(|b| b.id != hit.id) {
        indexed.read_blob(&b.id.0).unwrap();
    }
    drop(indexed);

    let out = run(&repo, &["--json", "repair", "snapshots", "--forget"], 0);
    assert!(!listed(&out, "dropped_files").is_empty());
    run(&repo, &["prune"], 0);
    assert!(!path.exists(), "prune deleted the damaged pack");
    assert_check_passes(&repo, &["--read-data"]);
    // Exactly the files holding the flipped blob were dropped; the rest restores exactly.
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for (old, src) in &snaps {
        let entry = report
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["old"] == old.as_str())
            .unwrap();
        let dropped: BTreeSet<String> = entry["dropped_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        let expected: BTreeSet<String> = files[old]
            .iter()
            .filter(|(_, blobs)| blobs.contains(&hit.id.0))
            .map(|(p, _)| p.clone())
            .collect();
        assert_eq!(dropped, expected, "snapshot {old}");
        let id = entry["new"].as_str().unwrap_or(old);
        assert_restores_except(&repo, id, src, &files[old], &dropped);
    }
}

#[test]
fn repair_snapshots_keeps_a_folder_whose_tree_is_lost_as_an_empty_folder() {
    let (repo, snaps) = fixture();
    // A third snapshot that changes a file outside `src/sub` only: its root and `src` trees
    // are new (in a new tree pack), its `sub` tree is the first snapshot's (an older pack).
    let src = &snaps[0].1;
    fs::write(src.join("f1"), b"changed outside sub\n").unwrap();
    let third = snapshot_id(&repo, &[], src);
    let lib = open_lib(&repo);
    let indexed = lib.load_index().unwrap();
    let files = files_of(&indexed);
    let snap = indexed.find_snapshot(&third).unwrap().1;
    let root = indexed.load_tree(&snap.tree).unwrap();
    let src_tree = indexed.load_tree(&root.nodes[0].subtree.unwrap()).unwrap();
    let sub = src_tree
        .nodes
        .iter()
        .find(|n| n.name == b"sub")
        .unwrap()
        .subtree
        .unwrap();
    let index = indexed.index();
    let pack = index.pack(index.get(&sub.0).unwrap().pack).id;
    let in_pack = |t: &TreeId| {
        index
            .get(&t.0)
            .is_some_and(|l| index.pack(l.pack).id == pack)
    };
    assert!(
        !in_pack(&snap.tree) && !in_pack(&root.nodes[0].subtree.unwrap()),
        "the third snapshot's root and src trees are in a newer pack than its sub tree"
    );
    drop(indexed);
    fs::remove_file(pack_path(&repo, &pack)).unwrap();
    run(&repo, &["repair", "index"], 0);

    let out = run(
        &repo,
        &["--json", "repair", "snapshots", &third, "--forget"],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["emptied_dirs"], serde_json::json!(["/src/sub"]), "{v}");
    assert_eq!(v[0]["dropped_files"], serde_json::json!([]), "{v}");
    let new = v[0]["new"].as_str().unwrap();
    let target = repo.path("restore-emptied");
    restore_into(&repo, new, &target);
    assert_eq!(fs::read_dir(target.join("src/sub")).unwrap().count(), 0);
    let outside_sub: BTreeMap<String, Vec<Id>> = files[&third]
        .iter()
        .filter(|(p, _)| !p.starts_with("/src/sub/"))
        .map(|(p, b)| (p.clone(), b.clone()))
        .collect();
    assert_restores_except(&repo, new, src, &outside_sub, &BTreeSet::new());
}

#[test]
fn repair_index_reports_a_pack_whose_header_does_not_open() {
    let (repo, _) = fixture();
    for f in fs::read_dir(repo.repo.join("index")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    // Flip a byte in the sealed header at the end of one pack.
    let lib = open_lib(&repo);
    let (pack, _) = lib
        .backend()
        .list_ids(ocvault::backend::FileKind::Pack)
        .unwrap()[0];
    let path = pack_path(&repo, &PackId(pack));
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    fs::write(&path, bytes).unwrap();

    let out = run(&repo, &["--json", "repair", "index"], DAMAGE);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let unreadable = v["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{v}");
    assert_eq!(unreadable[0]["pack"], pack.to_hex());
    let packs = v["packs"].as_u64().unwrap();
    assert_eq!(
        v["packs_indexed"].as_array().unwrap().len() as u64,
        packs - 1
    );
    assert!(path.exists(), "repair deletes no pack");
    // The others are indexed: a second run reads only the unreadable header again.
    let again = run(&repo, &["--json", "repair", "index"], DAMAGE);
    let again: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(again["headers_read"].as_u64(), Some(1), "{again}");
    assert_eq!(again["new_index"], false, "{again}");
}

#[test]
fn repair_packs_salvages_an_indexed_pack_whose_header_does_not_open() {
    let (repo, snaps) = fixture();
    let lib = open_lib(&repo);
    let pack = lib
        .load_index_files()
        .unwrap()
        .into_iter()
        .flat_map(|(_, f)| f.packs)
        .find(|p| p.blob_type == BlobType::Data)
        .unwrap();
    let path = pack_path(&repo, &pack.id);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    fs::write(&path, bytes).unwrap();

    // The index keeps the pack's entry; --read-all-packs finds its header damaged.
    let out = run(
        &repo,
        &["--json", "repair", "index", "--read-all-packs"],
        DAMAGE,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["unreadable"][0]["pack"], pack.id.to_hex(), "{v}");
    assert_eq!(v["new_index"], false, "{v}");

    let out = run(&repo, &["--json", "repair", "packs", &pack.id.to_hex()], 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["packs"][0]["listed_by"], "index");
    assert_eq!(
        v["packs"][0]["kept"].as_u64(),
        Some(pack.blobs.len() as u64)
    );
    assert_eq!(v["packs"][0]["lost"], serde_json::json!([]));
    run(&repo, &["prune"], 0);
    assert!(!path.exists(), "prune deleted the damaged pack");
    assert_check_passes(&repo, &["--read-data"]);
    for (id, src) in &snaps {
        restore_and_compare(&repo, id, src, "src");
    }
}
