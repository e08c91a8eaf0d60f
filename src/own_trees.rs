//! A write-only key's local store of the trees it wrote. Such a key seals every blob to the
//! repository's public key and cannot open one again, so for change detection (a file whose
//! size and times match the parent snapshot's is not read again) the host keeps its own
//! trees: one file per tree under the cache folder, sealed under the key file's `local_key`
//! and checked against the tree id when read. Nothing here is needed to restore, and losing
//! the folder only costs re-reading the files once.
//!
//! Layout under `<cache>/<repository id>/write-only/<key id>/`: `trees/<hh>/<tree id>` and
//! `snapshots/<snapshot id>` (the paths, time and tree ids of each snapshot taken). After each
//! snapshot only the newest snapshot of each set of paths keeps its trees.

use crate::crypto::Keys;
use crate::format::{self, WriteOnlyKeys};
use crate::id::Id;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Tree files younger than this are never collected: another snapshot with this key may be
/// running and not have recorded them yet.
const KEEP_RECENT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

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

pub struct OwnTrees {
    dir: PathBuf,
    key: Zeroizing<[u8; 32]>,
}

/// `snapshots/<id>`: what one snapshot taken with this key used.
#[derive(Serialize, Deserialize)]
struct Manifest {
    paths: Vec<String>,
    time_unix_ns: i64,
    trees: Vec<Id>,
}

impl OwnTrees {
    /// The store of key `key_id` in repository `repository_id`; `None` without a cache root.
    pub fn open(repository_id: &Id, key_id: &Id, keys: &WriteOnlyKeys) -> Option<OwnTrees> {
        let dir = cache_root()?
            .join(repository_id.to_hex())
            .join("write-only")
            .join(key_id.to_hex());
        Some(OwnTrees {
            dir,
            key: Zeroizing::new(keys.local_key),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tree_path(&self, id: &Id) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join("trees").join(&hex[..2]).join(hex)
    }

    /// Keeps a tree just stored (best effort: a failure only costs change detection).
    pub fn put(&self, id: &Id, raw: &[u8]) {
        let path = self.tree_path(id);
        if path.exists() {
            return;
        }
        let _ = self.write_sealed(&path, id, &format::frame(raw, 3));
    }

    /// A tree this key stored, checked against its id; `None` when not kept or not intact.
    pub fn get(&self, keys: &Keys, id: &Id) -> Option<Vec<u8>> {
        let framed = self.read_sealed(&self.tree_path(id), id)?;
        let raw = format::unframe(&framed, format::MAX_OBJECT_SIZE, "tree").ok()?;
        (keys.blob_id(&raw) == *id).then_some(raw)
    }

    /// Records the trees of a snapshot just saved, then drops what no newest snapshot of a
    /// set of paths uses. Errors are ignored, as for [`Self::put`].
    pub fn record_snapshot(
        &self,
        snapshot: &Id,
        paths: &[String],
        time_unix_ns: i64,
        trees: Vec<Id>,
    ) {
        let manifest = Manifest {
            paths: paths.to_vec(),
            time_unix_ns,
            trees,
        };
        let path = self.dir.join("snapshots").join(snapshot.to_hex());
        if self
            .write_sealed(&path, snapshot, &format::to_postcard(&manifest))
            .is_ok()
        {
            let _ = self.collect();
        }
    }

    fn collect(&self) -> std::io::Result<()> {
        let mut newest: HashMap<Vec<String>, (i64, PathBuf, Manifest)> = HashMap::new();
        for entry in std::fs::read_dir(self.dir.join("snapshots"))? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Id::from_hex)
            else {
                continue;
            };
            let Some(m) = self
                .read_sealed(&path, &id)
                .and_then(|b| format::from_postcard::<Manifest>(&b, "manifest").ok())
            else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let older = match newest.get(&m.paths) {
                Some((t, _, _)) if *t >= m.time_unix_ns => Some(path),
                _ => newest
                    .insert(m.paths.clone(), (m.time_unix_ns, path, m))
                    .map(|(_, p, _)| p),
            };
            if let Some(p) = older {
                let _ = std::fs::remove_file(p);
            }
        }
        let keep: HashSet<Id> = newest
            .values()
            .flat_map(|(_, _, m)| m.trees.iter().copied())
            .collect();
        for shard in std::fs::read_dir(self.dir.join("trees"))? {
            for entry in std::fs::read_dir(shard?.path())? {
                let entry = entry?;
                let id = entry.file_name().to_str().and_then(Id::from_hex);
                let recent = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() < KEEP_RECENT)
                    .unwrap_or(true);
                if !recent && !id.is_some_and(|id| keep.contains(&id)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.key).into())
    }

    /// `nonce ‖ ciphertext ‖ tag`, AAD "ocvault own tree" ‖ id; written to a temporary file
    /// and renamed, so readers never see half a file.
    fn write_sealed(&self, path: &Path, id: &Id, plain: &[u8]) -> std::io::Result<()> {
        let nonce: [u8; 24] = crate::crypto::random_bytes();
        let mut buf = plain.to_vec();
        let tag = self
            .cipher()
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad(id), &mut buf)
            .map_err(|_| std::io::Error::other("seal failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        let parent = path.parent().expect("store paths have a parent");
        std::fs::create_dir_all(parent)?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        std::io::Write::write_all(&mut tmp, &out)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    fn read_sealed(&self, path: &Path, id: &Id) -> Option<Vec<u8>> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() < 24 + 16 {
            return None;
        }
        let (nonce, rest) = bytes.split_at(24);
        let (body, tag) = rest.split_at(rest.len() - 16);
        let mut buf = body.to_vec();
        self.cipher()
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad(id),
                &mut buf,
                Tag::from_slice(tag),
            )
            .ok()?;
        Some(buf)
    }
}

fn aad(id: &Id) -> Vec<u8> {
    let mut a = b"ocvault own tree".to_vec();
    a.extend_from_slice(&id.0);
    a
}
