//! Storage tiers (issue 18) against moto in server mode, which implements archive storage
//! classes: GET of a GLACIER object answers `InvalidObjectState` until a RestoreObject has
//! finished (moto finishes one at once). A lifecycle transition is simulated by the admin
//! helper (CopyObject onto itself with StorageClass=GLACIER, [`common::s3_admin::S3Admin`]).
//!
//! Features each test needs (design18.md):
//! * `moto_harness_*`: none (pass today).
//! * `glacier_data_packs_restore_after_thaw`: `-o s3.data_storage_class=GLACIER` at init
//!   (stored in the config; data packs PUT with that class and tag `ocvault-pack=data`,
//!   everything else STANDARD), the cold-pack check of `restore` (exit 13, first line "N packs
//!   (X MiB) of this snapshot are in cold storage: run `ocvault thaw ID`", then one pack a
//!   line), `ocvault thaw latest --wait`, `check` never reading data packs.
//! * `snapshot_after_a_transition_writes_cold_blobs_again`: the tag `ocvault-pack=data` on
//!   data packs also without a data class (what a lifecycle rule filters on), `snapshot`
//!   re-storing blobs that live only in cold packs and its summary line "re-stored from cold
//!   packs: N blobs, X MiB", the cold-pack check of `restore` (exit 13 for the old snapshot).

mod common;

use common::s3_admin::{HeadInfo, S3Admin};
use common::servers::{self, Server};
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

const PW: &str = "cold storage test password";
use common::s3_cli::{self, text, tree, LIMIT};
/// `restore`, `dump`, `check --read-data`: packs this snapshot needs are in cold storage.
const EXIT_COLD: i32 = 13;

fn run(s: &Server, args: &[&str]) -> Output {
    s3_cli::run(s, PW, args)
}

fn run_ok(s: &Server, args: &[&str]) -> Output {
    s3_cli::run_ok(s, PW, args)
}

/// `init` with small packs (several data packs from a few MiB); `options` go before it.
fn init(s: &Server, options: &[&str]) -> Output {
    s3_cli::init(s, PW, options, &[])
}

fn snapshot(s: &Server, src: &Path) -> String {
    s3_cli::snapshot(s, PW, src)
}

fn restore_target(s: &Server, name: &str) -> String {
    let target = s.dir.path().join(name);
    let _ = std::fs::remove_dir_all(&target);
    target.to_str().unwrap().to_string()
}

fn restore_equals(s: &Server, id: &str, expected: &Path) {
    let target = restore_target(s, &format!("restore-{id}"));
    run_ok(s, &["restore", id, "--target", &target]);
    assert_trees_equal(expected, &Path::new(&target).join("src"));
    std::fs::remove_dir_all(&target).unwrap();
}

/// HEAD (with tags) of every object under `repo/data/`.
fn data_heads(admin: &S3Admin) -> Vec<HeadInfo> {
    let keys: Vec<String> = admin
        .list("repo/data/")
        .into_iter()
        .map(|o| o.key)
        .collect();
    let heads = admin.head(&keys);
    assert!(heads.iter().all(|h| h.ok), "{heads:?}");
    heads
}

/// The pack id of a key `repo/data/ab/abcdef…`.
fn pack_id(key: &str) -> &str {
    key.rsplit('/').next().unwrap()
}

/// `restore` of `id` exits 13 and names the cold packs: first line "N packs … `ocvault
/// thaw`", then one line per pack.
fn assert_restore_needs_thaw(s: &Server, id: &str, cold: &BTreeSet<String>) {
    let named = restore_names_cold_packs(s, id, cold);
    assert_eq!(named, cold.len(), "not every cold pack is named");
}

/// `restore` of `id` exits 13; its first line says how many packs it needs thawed and names
/// `ocvault thaw`, each later line names one of `cold`. Returns that count.
fn restore_names_cold_packs(s: &Server, id: &str, cold: &BTreeSet<String>) -> usize {
    let target = restore_target(s, "refused-restore");
    let out = run(s, &["restore", id, "--target", &target]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(EXIT_COLD), "{}", text(&out));
    let first = err.lines().next().unwrap_or("");
    assert!(first.starts_with("ocvault: "), "{err}");
    assert!(first.contains("ocvault thaw"), "{first}");
    let listed: Vec<&str> = err.trim_end().lines().skip(1).collect();
    assert!(
        first.contains(&format!("{} packs", listed.len())),
        "first line does not count the {} packs listed: {err}",
        listed.len()
    );
    for line in &listed {
        let names_one = cold.iter().any(|k| line.contains(&pack_id(k)[..8]));
        assert!(names_one, "{line:?} names no cold pack of {cold:?}");
    }
    listed.len()
}

#[test]
fn moto_harness_glacier_objects_are_unreadable_until_restored() {
    let moto = servers::moto();
    moto.create_bucket("harness-cold");
    let s = moto.repo("harness-cold");
    let admin = moto.admin("harness-cold");
    let _ = init(&s, &[]);
    let src = s.dir.path().join("src");
    tree(&src, 1);
    snapshot(&s, &src);
    let keys: Vec<String> = admin
        .list("repo/data/")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(keys.len() >= 2, "{keys:?}");
    let moved = admin.set_storage_class(&keys, "GLACIER");
    assert!(moved.iter().all(|o| o.ok), "{moved:?}");
    let listed = admin.list("repo/data/");
    assert!(
        listed.iter().all(|o| o.storage_class == "GLACIER"),
        "{listed:?}"
    );
    let heads = admin.head(&keys);
    assert!(heads.iter().all(|h| !h.readable()), "{heads:?}");
    // Everything else stays where it was.
    let rest = admin.list("repo/");
    assert!(rest
        .iter()
        .filter(|o| !o.key.starts_with("repo/data/"))
        .all(|o| o.storage_class == "STANDARD"));
    // ocvault cannot read them: the restore fails (today with 1, with the feature 13).
    // Without the local cache, which would serve the tree packs the snapshot wrote.
    let before = moto.requests().len();
    let target = restore_target(&s, "cold");
    let out = run(
        &s,
        &["--no-cache", "restore", "latest", "--target", &target],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let refused = moto.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/repo/data/") && r.status == 403)
        .count();
    assert!(refused > 0, "no GET of a GLACIER pack was refused");
}

#[test]
fn glacier_data_packs_restore_after_thaw() {
    let moto = servers::moto();
    moto.create_bucket("ocvault-glacier");
    let s = moto.repo("ocvault-glacier");
    let admin = moto.admin("ocvault-glacier");
    let out = init(&s, &["-o", "s3.data_storage_class=GLACIER"]);
    // Straight into an archive class: init says what that means for restores.
    assert!(
        text(&out).contains("every restore will need `ocvault thaw` first"),
        "{}",
        text(&out)
    );
    let src = s.dir.path().join("src");
    tree(&src, 13);
    let id = snapshot(&s, &src);

    // Data packs GLACIER; tree packs and everything else STANDARD.
    let listed = admin.list("repo/");
    let cold: BTreeSet<String> = listed
        .iter()
        .filter(|o| o.storage_class == "GLACIER")
        .map(|o| o.key.clone())
        .collect();
    assert!(
        cold.len() >= 2,
        "want several GLACIER data packs: {listed:?}"
    );
    for o in &listed {
        let hot = !cold.contains(&o.key);
        assert!(
            hot || o.key.starts_with("repo/data/"),
            "only data packs may be cold: {o:?}"
        );
        assert!(!hot || o.storage_class == "STANDARD", "{o:?}");
    }
    let tree_packs: Vec<String> = listed
        .iter()
        .filter(|o| o.key.starts_with("repo/data/") && !cold.contains(&o.key))
        .map(|o| o.key.clone())
        .collect();
    assert!(!tree_packs.is_empty(), "no tree pack: {listed:?}");
    for h in admin.head(&tree_packs) {
        assert!(
            h.ok && !h.is_data_pack(),
            "a tree pack is tagged as data: {h:?}"
        );
    }

    // Structure check reads no data pack.
    run_ok(&s, &["check"]);
    // Restore without thawing: exit 13 with the packs to thaw.
    assert_restore_needs_thaw(&s, "latest", &cold);
    // check --read-data reads the hot packs and reports the cold ones, no damage.
    let out = run(&s, &["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(EXIT_COLD), "{}", text(&out));
    // copy has no check before it reads: its first read of a cold pack stops it, exit 13.
    let pw_file = s.dir.path().join("copy-pw");
    std::fs::write(&pw_file, PW).unwrap();
    let dst = s.dir.path().join("copy-dst");
    let init = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"))
        .arg("--repo")
        .arg(&dst)
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .env("OCVAULT_PASSWORD", PW)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    let out = s
        .cmd(PW)
        .args(["copy", "--all", "--to"])
        .arg(&dst)
        .arg("--to-password-file")
        .arg(&pw_file)
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_COLD), "{}", text(&out));
    assert!(text(&out).contains("is in cold storage"), "{}", text(&out));

    let before = moto.requests().len();
    run_ok(
        &s,
        &[
            "thaw",
            "latest",
            "--wait",
            "--poll-interval",
            "1s",
            "--days",
            "2",
        ],
    );
    // One RestoreObject (POST ?restore) per cold pack, none for anything else.
    let restores: Vec<String> = moto.requests()[before..]
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("restore"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(restores.len(), cold.len(), "{restores:?}");
    let thawed = admin.head(&cold.iter().cloned().collect::<Vec<_>>());
    assert!(thawed.iter().all(|h| h.readable()), "{thawed:?}");
    // Tagged for a lifecycle rule (moto shows a GLACIER object's tags once it is restored).
    assert!(thawed.iter().all(|h| h.is_data_pack()), "{thawed:?}");

    restore_equals(&s, &id, &src);
    run_ok(&s, &["check", "--read-data"]);
}

/// The number N in the summary line "re-stored from cold packs: N blobs, X MiB".
fn restored_from_cold(summary: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.contains("re-stored from cold packs:"))
        .unwrap_or_else(|| panic!("no re-stored line in: {summary}"));
    let after = line.split("re-stored from cold packs:").nth(1).unwrap();
    let count = after.trim().split(' ').next().unwrap();
    assert!(line.contains("MiB"), "{line}");
    count
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {count}: {e}"))
}

#[test]
fn snapshot_after_a_transition_writes_cold_blobs_again() {
    let moto = servers::moto();
    moto.create_versioned_bucket("ocvault-lifecycle");
    let s = moto.repo("ocvault-lifecycle");
    let admin = moto.admin("ocvault-lifecycle");
    // A data class, even the standard one, makes data packs carry the tag a lifecycle rule
    // filters on.
    let _ = init(&s, &["-o", "s3.data_storage_class=STANDARD"]);
    let src = s.dir.path().join("src");
    tree(&src, 17);
    let a = snapshot(&s, &src);

    // The lifecycle rule: every object tagged ocvault-pack=data goes to GLACIER.
    let heads = data_heads(&admin);
    let cold: BTreeSet<String> = heads
        .iter()
        .filter(|h| h.is_data_pack())
        .map(|h| h.key.clone())
        .collect();
    assert!(
        cold.len() >= 2,
        "no tagged data packs to transition: {heads:?}"
    );
    let moved = admin.set_storage_class(&cold.iter().cloned().collect::<Vec<_>>(), "GLACIER");
    assert!(moved.iter().all(|o| o.ok), "{moved:?}");

    // B: most files unchanged (their blobs only in cold packs), some changed.
    mutate_tree(&src, 0.1, 99);
    let out = run_ok(&s, &["snapshot", src.to_str().unwrap()]);
    let restored = restored_from_cold(&text(&out));
    assert!(restored > 0, "{}", text(&out));
    let out = run_ok(&s, &["--json", "snapshots"]);
    let list = last_json(&out);
    let b = list.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a, b);

    // B's restore reads only hot packs: count the pack GETs it makes.
    let before = moto.requests().len();
    restore_equals(&s, &b, &src);
    let pack_gets: Vec<String> = moto.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/repo/data/"))
        .map(|r| r.path.split('?').next().unwrap().to_string())
        .collect();
    assert!(!pack_gets.is_empty());
    let cold_read: Vec<&String> = pack_gets
        .iter()
        .filter(|p| cold.iter().any(|k| p.ends_with(k.as_str())))
        .collect();
    assert!(
        cold_read.is_empty(),
        "B's restore read cold packs {cold_read:?}"
    );
    // Every data pack written since is hot; the cold ones are still cold.
    for o in admin.list("repo/data/") {
        let want = if cold.contains(&o.key) {
            "GLACIER"
        } else {
            "STANDARD"
        };
        assert_eq!(o.storage_class, want, "{o:?}");
    }
    // A still needs the cold packs of the files B changed (the others' blobs may now be
    // read from B's hot packs).
    let a_needs = restore_names_cold_packs(&s, &a, &cold);
    assert!(a_needs >= 1 && a_needs <= cold.len(), "{a_needs}");
    run_ok(&s, &["check"]);
}
