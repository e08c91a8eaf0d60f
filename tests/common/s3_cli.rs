//! The CLI against a moto S3 server: the steps `tests/object_lock.rs` and
//! `tests/cold_storage.rs` share (each passes its own password).

use super::servers::Server;
use super::*;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Every command of those tests runs within this.
pub const LIMIT: Duration = Duration::from_secs(300);

/// Runs ocvault on `s` with `args`, within [`LIMIT`].
pub fn run(s: &Server, pw: &str, args: &[&str]) -> Output {
    s.cmd(pw).args(args).timeout(LIMIT).output().unwrap()
}

/// Standard output then standard error, for messages and searches.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run_ok(s: &Server, pw: &str, args: &[&str]) -> Output {
    let out = run(s, pw, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    out
}

/// `init` with a cheap key and 512 KiB packs (several data packs from a few MiB);
/// `before` goes before the command (`-o ...`), `after` after it (`--lock-mode ...`).
pub fn init(s: &Server, pw: &str, before: &[&str], after: &[&str]) -> Output {
    let mut args: Vec<&str> = before.to_vec();
    args.extend([
        "init",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "524288",
    ]);
    args.extend(after);
    run_ok(s, pw, &args)
}

/// A source tree of a few MiB: small files, a big and a sparse file, deep folders.
pub fn tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root).unwrap();
    generate_tree(
        root,
        &TreeSpec {
            small_files: 60,
            big_file_bytes: 3 << 20,
            sparse_file_bytes: 2 << 20,
            deep_nesting: 6,
            seed,
            ..TreeSpec::default()
        },
    );
}

/// `snapshot` of `src`; returns the snapshot id.
pub fn snapshot(s: &Server, pw: &str, src: &Path) -> String {
    let out = run_ok(s, pw, &["--json", "snapshot", src.to_str().unwrap()]);
    last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
}
