//! The host this process runs on: its clock, its name, its user, and uid/gid to name lookups
//! (NSS). A leaf module: snapshots, trees, markers and log entries all ask it, and it asks
//! nothing of the repository.

use nix::unistd::{Gid, Group, Uid, User};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The host clock, in nanoseconds since the Unix epoch (0 if it is out of range).
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// `$USER`, else the name of the real uid, else empty.
pub fn username() -> String {
    std::env::var("USER")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| user_name(nix::unistd::getuid().as_raw()))
        .unwrap_or_default()
}

/// The name of a uid, or `None` when NSS knows none.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The name of a gid, or `None` when NSS knows none.
pub fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// Caches uid/gid to name lookups (NSS calls are slow).
#[derive(Default)]
pub struct NameCache {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl NameCache {
    pub fn user(&self, uid: u32) -> String {
        self.users
            .lock()
            .unwrap()
            .entry(uid)
            .or_insert_with(|| user_name(uid).unwrap_or_default())
            .clone()
    }
    pub fn group(&self, gid: u32) -> String {
        self.groups
            .lock()
            .unwrap()
            .entry(gid)
            .or_insert_with(|| group_name(gid).unwrap_or_default())
            .clone()
    }
}

/// The root of ocvault's local cache: `$OCVAULT_CACHE_DIR`, else `$XDG_CACHE_HOME/ocvault`,
/// else `$HOME/.cache/ocvault`.
pub fn cache_root() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = nonempty("OCVAULT_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = nonempty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("ocvault"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".cache").join("ocvault"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_root_and_of_an_unknown_id() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_name(0).as_deref(), Some("root"));
        // No NSS entry: no name, and the cache stores the empty name.
        assert_eq!(user_name(3_999_999_999), None);
        let cache = NameCache::default();
        assert_eq!(cache.user(3_999_999_999), "");
        assert_eq!(cache.group(0), "root");
    }
}
