//! What the environment of a test run sets: where scratch space goes, whether it is kept,
//! and test durations and counts.

use std::path::PathBuf;

/// The one folder under which every test writes (repositories, sources, restores, servers'
/// data): `$OCVAULT_TEST_TMP` if set, else `ocvault-tests` in the temporary folder (`$TMPDIR`
/// or /tmp: open to the users some tests switch to, wherever the checkout is). Each test
/// takes its own folder inside ([`scratch_dir`]), removed when the test ends, pass or fail.
pub fn scratch_root() -> PathBuf {
    let root = std::env::var_os("OCVAULT_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ocvault-tests"));
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("cannot create the test scratch folder {root:?}: {e}"));
    root
}

/// A fresh folder under [`scratch_root`], deleted on drop unless `OCVAULT_KEEP_TMP` is set
/// (then kept for a post-mortem).
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(std::env::var_os("OCVAULT_KEEP_TMP").is_some())
        .tempdir_in(scratch_root())
        .unwrap()
}

/// A number from the environment (test durations and counts), or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
