//! Write-only keys (issue 19): a backup host's key that stores snapshots but cannot read any
//! back. A full key and key shares restore what it stored byte for byte; with it alone every
//! command that reads contents or names, or deletes, exits 14 and changes nothing; everything
//! it can decrypt holds no file name and no 16-byte run of another host's files; and its
//! snapshots deduplicate like a full key's.

mod common;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use common::*;
use ocvault::backend::Backend;
use ocvault::crypto::{Keys, SealKind};
use ocvault::id::Id;
use ocvault::repository::{KeySecret, Repository};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every command here is small; one that takes longer has hung.
const LIMIT: Duration = Duration::from_secs(120);
const WRITE_ONLY: i32 = 14;
const DAMAGE: i32 = 4;
const WRITE_ONLY_PASSWORD: &str = "backup host B only writes";

/// Host A's files: names that appear nowhere else (not in paths, hosts, tags or arguments).
const A_NAMES: [&str; 4] = [
    "zanzibar-payroll.txt",
    "quokka-ledger.bin",
    "marmoset-plans",
    "okapi-blueprint.dat",
];
/// Host B's files, which B's own tree store must hold.
const B_NAMES: [&str; 3] = ["wombat-notes.txt", "narwhal-archive.bin", "ibis-dir"];

/// A repository with a full key (host A's) and a write-only key (host B's): A snapshotted
/// its tree once, B its own twice.
struct Scene {
    repo: TestRepo,
    cache: PathBuf,
    a_root: PathBuf,
    a_snapshot: String,
    b_root: PathBuf,
    b_snapshots: Vec<String>,
    /// `snapshot --json` summaries of B's two snapshots.
    b_summaries: Vec<serde_json::Value>,
}

fn write_random(path: &Path, len: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(path, bytes).unwrap();
}

fn make_a_tree(root: &Path) {
    std::fs::create_dir_all(root.join("marmoset-plans")).unwrap();
    let text: String = (0..200)
        .map(|i| {
            format!(
                "employee {i:04}: salary {} EUR, grade {}\n",
                41_000 + i * 37,
                i % 7
            )
        })
        .collect();
    std::fs::write(root.join("zanzibar-payroll.txt"), text).unwrap();
    write_random(&root.join("quokka-ledger.bin"), 40 << 10, 1);
    write_random(
        &root.join("marmoset-plans/okapi-blueprint.dat"),
        24 << 10,
        2,
    );
}

fn make_b_tree(root: &Path) {
    std::fs::create_dir_all(root.join("ibis-dir")).unwrap();
    std::fs::write(root.join("wombat-notes.txt"), "host B's notes\n".repeat(50)).unwrap();
    write_random(&root.join("narwhal-archive.bin"), 700 << 10, 3);
    write_random(&root.join("ibis-dir/ibis-data.bin"), 300 << 10, 4);
}

impl Scene {
    fn new() -> Scene {
        let repo = TestRepo::new();
        init_small(&repo, &[]);
        let cache = repo.path("cache");
        let pw = repo.path("write-only.pw");
        std::fs::write(&pw, format!("{WRITE_ONLY_PASSWORD}\n")).unwrap();
        let out = repo
            .cmd()
            .args(["key", "add", "--write-only", "--kdf-memory-kib", "1024"])
            .args(["--kdf-iterations", "1", "--new-password-file"])
            .arg(&pw)
            .timeout(LIMIT)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("added write-only key"));
        let a_root = repo.path("a-root");
        make_a_tree(&a_root);
        let b_root = repo.path("b-root");
        make_b_tree(&b_root);
        let mut scene = Scene {
            repo,
            cache,
            a_root,
            a_snapshot: String::new(),
            b_root,
            b_snapshots: Vec::new(),
            b_summaries: Vec::new(),
        };
        scene.a_snapshot = snapshot_id(&scene.repo, &["--host", "hostA"], &scene.a_root);
        for _ in 0..2 {
            let summary = scene.b_snapshot(&scene.b_root.clone());
            let id = summary["snapshot_id"].as_str().unwrap().to_string();
            scene.b_snapshots.push(id);
            scene.b_summaries.push(summary);
        }
        scene
    }

    /// `ocvault` with the write-only password and the scene's cache folder.
    fn write_only(&self) -> assert_cmd::Command {
        let mut c = self.repo.cmd();
        c.env("OCVAULT_PASSWORD", WRITE_ONLY_PASSWORD)
            .env("OCVAULT_CACHE_DIR", &self.cache)
            .timeout(LIMIT);
        c
    }

    /// `ocvault` with the full key (the same cache folder, which it does not use).
    fn full(&self) -> assert_cmd::Command {
        let mut c = self.repo.cmd();
        c.env("OCVAULT_CACHE_DIR", &self.cache).timeout(LIMIT);
        c
    }

    /// A snapshot of `dir` with the write-only key as host B; returns its JSON summary.
    fn b_snapshot(&self, dir: &Path) -> serde_json::Value {
        let out = self
            .write_only()
            .args(["--json", "snapshot", "--host", "hostB"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        last_json(&out)
    }

    /// The write-only key's local tree store: `<cache>/<repository id>/write-only/<key id>`.
    fn own_tree_store(&self) -> PathBuf {
        let repos: Vec<_> = std::fs::read_dir(&self.cache).unwrap().collect();
        assert_eq!(repos.len(), 1, "one repository in the cache");
        let keys_dir = repos[0].as_ref().unwrap().path().join("write-only");
        let keys: Vec<_> = std::fs::read_dir(&keys_dir).unwrap().collect();
        assert_eq!(keys.len(), 1, "one write-only key in the cache");
        keys[0].as_ref().unwrap().path()
    }
}

#[test]
fn full_key_and_two_shares_restore_what_the_write_only_key_stored() {
    let scene = Scene::new();
    for (i, id) in scene.b_snapshots.iter().enumerate() {
        let target = scene.repo.path(&format!("restore-b{i}"));
        let out = scene
            .full()
            .args(["restore", id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_trees_equal(&scene.b_root, &target.join("b-root"));
    }

    // Two of three key shares restore it too.
    let shares = SplitShares::two_of_three(scene.full(), &scene.repo.path(""));
    let target = scene.repo.path("restore-shares");
    let mut restore = ocvault();
    restore.arg("--repo").arg(&scene.repo.repo).timeout(LIMIT);
    restore.args(shares.args(&[1, 3]));
    let out = restore
        .args(["restore", &scene.b_snapshots[1], "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_trees_equal(&scene.b_root, &target.join("b-root"));

    // `key list` marks the write-only key, whichever key lists.
    for cmd in [scene.full(), scene.write_only()] {
        let mut cmd = cmd;
        let out = cmd.args(["--json", "key", "list"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let keys = last_json(&out);
        let flags: Vec<bool> = keys
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["write_only"].as_bool().unwrap())
            .collect();
        assert_eq!(flags.iter().filter(|w| **w).count(), 1, "{keys}");
        assert_eq!(flags.len(), 2, "{keys}");
    }
    let out = scene.full().args(["key", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.ends_with("write-only")).count(),
        1,
        "{text}"
    );
}

#[test]
fn write_only_key_cannot_read_or_delete_and_changes_nothing() {
    let scene = Scene::new();
    let dest = TestRepo::new();
    init_small(&dest, &[]);
    let dest_pw = scene.repo.path("dest.pw");
    std::fs::write(&dest_pw, format!("{}\n", dest.password)).unwrap();
    let new_pw = scene.repo.path("new.pw");
    std::fs::write(&new_pw, "another password\n").unwrap();
    let target = scene.repo.path("restore-target");
    let (b1, b2) = (&scene.b_snapshots[0], &scene.b_snapshots[1]);
    let a = &scene.a_snapshot;
    let target_s = target.to_str().unwrap();
    let dest_s = dest.repo.to_str().unwrap();
    let dest_pw_s = dest_pw.to_str().unwrap();
    let new_pw_s = new_pw.to_str().unwrap();
    let shares_s = scene.repo.path("shares");
    let shares_s = shares_s.to_str().unwrap();
    let refused: Vec<Vec<&str>> = vec![
        vec!["restore", a, "--target", target_s],
        vec!["restore", b1, "--target", target_s],
        vec!["dump", a, "/zanzibar-payroll.txt"],
        vec!["ls", a],
        vec!["ls", b1],
        vec!["diff", b1, b2],
        vec!["find", "*"],
        vec![
            "copy",
            "--all",
            "--to",
            dest_s,
            "--to-password-file",
            dest_pw_s,
        ],
        vec!["forget", a],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["check", "--read-data"],
        vec!["check", "--read-data-subset", "50%"],
        vec!["stats"],
        vec!["tag", "--all", "--add", "x"],
        vec!["rewrite", "--exclude", "*.bin", "--all"],
        vec!["repair", "snapshots"],
        vec!["repair", "packs", "00000000"],
        vec!["key", "add", "--new-password-file", new_pw_s],
        vec!["key", "passwd", "--new-password-file", new_pw_s],
        vec!["key", "remove", "FULL-KEY-ID"],
        vec![
            "key",
            "split",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out-dir",
            shares_s,
        ],
    ];
    // Every run of a read command adds its operations-log entry, refused ones included (the
    // audit shows the attempt); nothing else may change, and nothing for the other commands.
    let log_dir = scene.repo.repo.join("log");
    let outside_log = || {
        let mut fp = fingerprint(&scene.repo.repo);
        fp.retain(|(p, _)| !p.starts_with(&log_dir));
        fp
    };
    let log_entries = || std::fs::read_dir(&log_dir).unwrap().count();
    let logged_reads = ["restore", "dump", "ls", "diff", "find", "copy", "check"];
    let before = outside_log();
    let mut entries = log_entries();
    let dest_before = fingerprint(&dest.repo);
    for args in &refused {
        // `key remove` needs an id: the full key's, from the listing.
        let args: Vec<String> = match args.as_slice() {
            ["key", "remove", _] => vec!["key".into(), "remove".into(), full_key_id(&scene)],
            _ => args.iter().map(|s| s.to_string()).collect(),
        };
        let out = scene.write_only().args(&args).output().unwrap();
        assert_one_line_error(&out, WRITE_ONLY, "this key is write-only: it cannot");
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "{args:?} printed {out:?}"
        );
        assert_eq!(outside_log(), before, "{args:?} changed it");
        let added = log_entries() - entries;
        let want = usize::from(logged_reads.contains(&args[0].as_str()));
        assert_eq!(added, want, "{args:?} added {added} log entries");
        entries += added;
    }
    assert_eq!(fingerprint(&dest.repo), dest_before);
    assert!(!target.exists(), "a refused restore created its target");
    assert!(
        !Path::new(shares_s).exists(),
        "a refused split wrote shares"
    );
    // What it may do still works afterwards: list snapshots (metadata) and snapshot.
    let out = scene
        .write_only()
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(last_json(&out).as_array().unwrap().len(), 3);
}

fn full_key_id(scene: &Scene) -> String {
    let out = scene
        .full()
        .args(["--json", "key", "list"])
        .output()
        .unwrap();
    let keys = last_json(&out);
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| !k["write_only"].as_bool().unwrap())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn write_only_check_passes_and_finds_a_flipped_pack_byte() {
    let scene = Scene::new();
    let out = scene.write_only().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no damage found"),
        "{out:?}"
    );
    // Flip one byte in the middle of a tree pack: `check` without --read-data reads tree
    // packs whole (checking their hash and header) and data packs not at all, with any key.
    let backend = Backend::open(scene.repo.repo.to_str().unwrap(), false).unwrap();
    let repo = Repository::open(backend, WRITE_ONLY_PASSWORD.as_bytes()).unwrap();
    let tree_pack = repo
        .load_index_files()
        .unwrap()
        .into_iter()
        .flat_map(|(_, f)| f.packs)
        .find(|p| p.blob_type == ocvault::format::BlobType::Tree)
        .expect("a tree pack");
    let pack = &scene
        .repo
        .repo
        .join(ocvault::backend::FileKind::Pack.path(&tree_pack.id.into()));
    let mut bytes = std::fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(pack, &bytes).unwrap();
    let out = scene.write_only().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(DAMAGE), "{out:?}");
    let name = pack.file_name().unwrap().to_str().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&name[..8]),
        "the damaged pack is named: {report}"
    );
}

#[test]
fn write_only_key_repairs_a_lost_index() {
    // Pack headers are sealed with a key the write-only key holds: it can rebuild the index,
    // and the full key then restores both hosts' snapshots byte for byte.
    let scene = Scene::new();
    for f in std::fs::read_dir(scene.repo.repo.join("index")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = scene.full().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(DAMAGE), "{out:?}");
    let out = scene
        .write_only()
        .args(["--json", "repair", "index"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = last_json(&out);
    assert_eq!(v["new_index"], true, "{v}");
    assert_eq!(
        v["packs_indexed"].as_array().unwrap().len() as u64,
        v["packs"].as_u64().unwrap()
    );
    let out = scene
        .full()
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let a_name = scene.a_root.file_name().unwrap().to_str().unwrap();
    restore_and_compare(&scene.repo, &scene.a_snapshot, &scene.a_root, a_name);
    let b_name = scene.b_root.file_name().unwrap().to_str().unwrap();
    restore_and_compare(&scene.repo, &scene.b_snapshots[1], &scene.b_root, b_name);
}

/// Every file under `dir`, recursively.
fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The plaintexts a key opened: each as opened, and unframed when it is framed.
#[derive(Default)]
struct Opened {
    plaintexts: Vec<(String, Vec<u8>)>,
    objects: usize,
}

impl Opened {
    fn add(&mut self, what: String, plain: Vec<u8>) {
        self.objects += 1;
        if let Ok(raw) = ocvault::format::unframe(&plain, 1 << 30, "search") {
            self.plaintexts.push((format!("{what} (unframed)"), raw));
        }
        self.plaintexts.push((what, plain));
    }

    /// Tries every seal kind with each associated data on `sealed`; keeps what opens.
    fn try_all(&mut self, keys: &Keys, what: &str, sealed: &[u8], aads: &[&[u8]]) {
        for kind in SealKind::ALL {
            for aad in aads {
                if let Ok(plain) = keys.open(kind, aad, sealed) {
                    self.add(format!("{what} as {kind:?}"), plain);
                }
            }
        }
    }
}

/// Everything the write-only key opens in the repository: every file with every seal kind,
/// pack headers, and every blob in every pack (located by the index and by the headers).
fn open_repository(repo: &Repository, root: &Path, opened: &mut Opened) {
    let keys = repo.keys();
    let mut files = Vec::new();
    walk_files(root, &mut files);
    let mut blobs: Vec<(PathBuf, Id, u32, u32)> = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let bytes = std::fs::read(file).unwrap();
        if rel.starts_with("keys/") {
            continue; // wrapped under passwords, not under the repository's sub-keys
        }
        if rel == "config" {
            opened.try_all(keys, &rel, &bytes[12..], &[&bytes[8..12], &[]]);
            continue;
        }
        let name_id = Id::from_hex(file.file_name().unwrap().to_str().unwrap());
        let name_aad: Vec<u8> = name_id.map(|id| id.0.to_vec()).unwrap_or_default();
        opened.try_all(keys, &rel, &bytes, &[&[], &name_aad]);
        if rel.starts_with("data/") && bytes.len() >= 4 {
            let hlen = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
            if hlen + 4 <= bytes.len() {
                let sealed = &bytes[bytes.len() - 4 - hlen..bytes.len() - 4];
                opened.try_all(keys, &format!("{rel} header"), sealed, &[&[]]);
            }
            if let Ok(Some(h)) =
                ocvault::pack::parse_header_from_tail(keys, &bytes, bytes.len() as u64)
            {
                for b in h.blobs {
                    blobs.push((file.clone(), b.id.into(), b.offset, b.length));
                }
            }
        }
    }
    for (_, index) in repo.load_index_files().unwrap() {
        for pack in index.packs {
            let path = root.join(ocvault::backend::FileKind::Pack.path(&pack.id.into()));
            for b in pack.blobs {
                blobs.push((path.clone(), b.id.into(), b.offset, b.length));
            }
        }
    }
    assert!(!blobs.is_empty(), "the search found no blob to try");
    for (pack, id, offset, length) in blobs {
        let bytes = std::fs::read(&pack).unwrap();
        let sealed = &bytes[offset as usize..(offset + length) as usize];
        opened.try_all(keys, &format!("blob {}", id.short()), sealed, &[&id.0, &[]]);
    }
}

/// Everything in the write-only key's own tree store, opened with the key file's local key
/// (trees and snapshot manifests alike), and the trees again through the library.
fn open_own_tree_store(repo: &Repository, store: &Path, local_key: &[u8; 32], opened: &mut Opened) {
    let mut files = Vec::new();
    walk_files(store, &mut files);
    assert!(!files.is_empty(), "the own-tree store is empty");
    let cipher = XChaCha20Poly1305::new(local_key.into());
    let own = repo
        .own_trees()
        .expect("a write-only key has an own-tree store");
    assert_eq!(own.dir(), store);
    for file in files {
        let Some(id) = Id::from_hex(file.file_name().unwrap().to_str().unwrap()) else {
            continue;
        };
        let bytes = std::fs::read(&file).unwrap();
        let (nonce, rest) = bytes.split_at(24);
        let (body, tag) = rest.split_at(rest.len() - 16);
        let mut aad = b"ocvault own tree".to_vec();
        aad.extend_from_slice(&id.0);
        let mut buf = body.to_vec();
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad,
                &mut buf,
                Tag::from_slice(tag),
            )
            .expect("every file in the store opens with the local key");
        opened.add(format!("own store {}", file.display()), buf);
        if let Some(tree) = own.get(repo.keys(), &id) {
            opened.add(format!("own tree {}", id.short()), tree);
        }
    }
}

/// The write-only key file's local key (it seals the host's own-tree store).
fn local_key(root: &Path) -> [u8; 32] {
    let mut keys = Vec::new();
    walk_files(&root.join("keys"), &mut keys);
    for file in keys {
        let bytes = std::fs::read(file).unwrap();
        if let Some(k) =
            ocvault::repository::try_key_file(&bytes, WRITE_ONLY_PASSWORD.as_bytes()).unwrap()
        {
            match k.secret {
                KeySecret::WriteOnly(w) => return w.local_key,
                KeySecret::Master(_) => panic!("the write-only password opened a full key"),
            }
        }
    }
    panic!("no key file opens with the write-only password")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn write_only_key_decrypts_nothing_of_another_hosts_files() {
    let scene = Scene::new();
    // The library finds the own-tree store through the environment, as the CLI does. Every
    // command the tests spawn sets OCVAULT_CACHE_DIR itself, so this leaks into none of them.
    std::env::set_var("OCVAULT_CACHE_DIR", &scene.cache);
    let backend = Backend::open(scene.repo.repo.to_str().unwrap(), false).unwrap();
    let repo = Repository::open(backend, WRITE_ONLY_PASSWORD.as_bytes()).unwrap();
    assert!(repo.is_write_only());
    let mut opened = Opened::default();
    open_repository(&repo, &scene.repo.repo, &mut opened);
    let repo_objects = opened.objects;
    let store = scene.own_tree_store();
    open_own_tree_store(&repo, &store, &local_key(&scene.repo.repo), &mut opened);
    // Not vacuous: config, snapshots, index files, log entries and pack headers opened...
    assert!(repo_objects >= 10, "only {repo_objects} objects opened");
    for kind in [
        "config as Config",
        "snapshots/",
        "index/",
        "log/",
        "header as PackHeader",
    ] {
        assert!(
            opened.plaintexts.iter().any(|(w, _)| w.contains(kind)),
            "nothing opened as {kind}"
        );
    }
    // ... but no blob of any pack (contents and trees are sealed to the public key).
    assert!(
        !opened
            .plaintexts
            .iter()
            .any(|(w, _)| w.starts_with("blob ")),
        "the write-only key opened a blob"
    );
    // B's own file names are in its own-tree store: the search finds names where they are.
    for name in B_NAMES {
        assert!(
            opened
                .plaintexts
                .iter()
                .any(|(w, p)| w.starts_with("own ") && contains(p, name.as_bytes())),
            "{name} not found in B's own-tree store"
        );
    }

    // Host A's file names: none anywhere. A's root path is in A's snapshot (`paths`) and in
    // the log entry's arguments by design (metadata a write-only key reads); the root's own
    // name "a-root" is not among the names searched for.
    for name in A_NAMES {
        for (what, plain) in &opened.plaintexts {
            assert!(!contains(plain, name.as_bytes()), "{name} found in {what}");
        }
    }
    // Host A's contents: no 16-byte window anywhere.
    let mut windows: HashSet<[u8; 16]> = HashSet::new();
    let mut a_files = Vec::new();
    walk_files(&scene.a_root, &mut a_files);
    let mut a_bytes = 0;
    for f in a_files {
        let bytes = std::fs::read(f).unwrap();
        a_bytes += bytes.len();
        for w in bytes.windows(16) {
            windows.insert(w.try_into().unwrap());
        }
    }
    assert!(a_bytes > 64 << 10, "A's tree is {a_bytes} bytes");
    let mut searched = 0;
    for (what, plain) in &opened.plaintexts {
        searched += plain.len();
        for w in plain.windows(16) {
            assert!(!windows.contains(w), "16 bytes of host A's files in {what}");
        }
    }
    assert!(searched > 0);
    eprintln!(
        "searched {} objects ({} plaintexts, {searched} bytes) against {} windows of A's {a_bytes} bytes",
        opened.objects,
        opened.plaintexts.len(),
        windows.len()
    );
}

#[test]
fn write_only_host_deduplicates_like_a_full_key() {
    let scene = Scene::new();
    let b_size: u64 = (700 + 300) << 10;
    // B's second snapshot of its unchanged tree: nothing read, (almost) nothing added.
    let first = &scene.b_summaries[0];
    assert!(first["bytes_read"].as_u64().unwrap() >= b_size, "{first}");
    let second = &scene.b_summaries[1];
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["files_unmodified"], 3, "{second}");
    assert!(
        second["bytes_added"].as_u64().unwrap() * 1000 < b_size,
        "{second}"
    );
    // Without the own-tree store B re-reads every file, yet stores nothing new: blob ids.
    std::fs::remove_dir_all(scene.own_tree_store()).unwrap();
    let third = scene.b_snapshot(&scene.b_root);
    assert!(third["bytes_read"].as_u64().unwrap() >= b_size, "{third}");
    assert!(
        third["bytes_added"].as_u64().unwrap() * 1000 < b_size,
        "{third}"
    );
    // And after that the store is back: the next snapshot reads nothing again.
    let fourth = scene.b_snapshot(&scene.b_root);
    assert_eq!(fourth["bytes_read"], 0, "{fourth}");

    // Contents host A stored first cost host B almost nothing (blob ids are shared).
    let shared = scene.repo.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    write_random(&shared.join("common-image.bin"), 4 << 20, 9);
    snapshot_id(&scene.repo, &["--host", "hostA"], &shared);
    let b_copy = scene.repo.path("b-copy");
    copy_tree(&shared, &b_copy);
    let summary = scene.b_snapshot(&b_copy);
    let added = summary["bytes_added"].as_u64().unwrap();
    assert!(added * 1000 < 4 << 20, "{summary}");
    eprintln!(
        "write-only dedup: 2nd read {} added {}; without store read {} added {}; A's 4 MiB by B added {added}",
        second["bytes_read"], second["bytes_added"], third["bytes_read"], third["bytes_added"]
    );
}

#[test]
fn write_only_key_backs_up_standard_input_and_appends_to_the_log() {
    let scene = Scene::new();
    let mut rng = Rng::new(77);
    let dump: Vec<u8> = (0..200_000).map(|_| rng.next_u64() as u8).collect();
    let out = scene
        .write_only()
        .args([
            "--json",
            "snapshot",
            "--host",
            "hostB",
            "--stdin",
            "--stdin-filename",
            "db.sql",
        ])
        .write_stdin(dump.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
    // Only a full key reads it back, byte for byte.
    let out = scene
        .write_only()
        .args(["dump", &id, "db.sql"])
        .output()
        .unwrap();
    assert_one_line_error(&out, WRITE_ONLY, "this key is write-only: it cannot");
    let out = scene.full().args(["dump", &id, "db.sql"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout == dump, "dump differs from standard input");
    // The write-only key reads the log, which names its snapshots.
    let out = scene.write_only().arg("log").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("snapshot") && log.contains(&id[..8]), "{log}");
}

/// The PostgreSQL path of a backup host: `wal-push` with the write-only key archives WAL
/// segments (sealed to the public key), the full key's `wal-fetch` writes them back byte for
/// byte, the write-only key's `wal-fetch` fails at once with exit 200 (no retrying a key that
/// can never read), its `check` sees the archive, and `snapshot --command` works too.
#[test]
fn write_only_key_pushes_wal_and_runs_commands() {
    let scene = Scene::new();
    let wal = scene.repo.path("pg_wal");
    std::fs::create_dir_all(&wal).unwrap();
    let names = ["000000010000000000000001", "000000010000000000000002"];
    for (i, name) in names.iter().enumerate() {
        write_random(&wal.join(name), 16 << 20, 100 + i as u64);
        scene
            .write_only()
            .arg("wal-push")
            .arg(wal.join(name))
            .assert()
            .success();
    }
    for name in names {
        let dest = scene.repo.path(&format!("fetched-{name}"));
        scene
            .full()
            .args(["wal-fetch", name])
            .arg(&dest)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(wal.join(name)).unwrap(),
            "{name}"
        );
    }
    let started = std::time::Instant::now();
    let out = scene
        .write_only()
        .args(["wal-fetch", names[0]])
        .arg(scene.repo.path("refused"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(200), "{out:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "wal-fetch retried a write-only key"
    );
    assert!(!scene.repo.path("refused").exists());
    let out = scene
        .write_only()
        .args(["--json", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(last_json(&out)["wal"]["files"], 2, "{out:?}");
    // A dump command's output, stored by the write-only key, restored by the full key.
    let out = scene
        .write_only()
        .args([
            "--json",
            "snapshot",
            "--command-shell",
            "--command",
            "printf 'nightly dump %s\\n' 42",
            "--stdin-filename",
            "dump.sql",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
    let out = scene
        .full()
        .args(["dump", &id, "dump.sql"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"nightly dump 42\n");
}
