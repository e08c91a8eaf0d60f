//! Keys and sealing: Argon2id key files wrap a random master key; sub-keys come from the master
//! key by BLAKE3 `derive_key`; every stored object is sealed with XChaCha20-Poly1305. A
//! write-only key (format version 4) holds the sub-keys it needs instead of the master key,
//! and seals blobs to the repository's X25519 public key, so it cannot open any blob.

use crate::error::{Error, Result};
use crate::format::{KdfParams, WriteOnlyKeys};
use crate::id::Id;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The only sealing scheme of format v1: symmetric, sub-keys of the master key.
pub const SCHEME_SYMMETRIC_V1: u8 = 1;
/// Format v4, blobs only: sealed to the repository's X25519 public key with an ephemeral key
/// (`scheme ‖ ephemeral public key ‖ nonce ‖ ciphertext ‖ tag`).
pub const SCHEME_PUBLIC_V4: u8 = 2;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
pub const X25519_LEN: usize = 32;
/// Bytes a sealed object adds to its plaintext: scheme id, nonce, tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// What a sealed object is; each kind has its own sub-key and is bound into the AAD,
/// so an object of one kind can never be passed off as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SealKind {
    Config = 1,
    Index = 2,
    Snapshot = 3,
    PackHeader = 4,
    DataBlob = 5,
    TreeBlob = 6,
    Log = 7,
    Lock = 8,
    PruneMark = 9,
    /// Format version 2: `wal/` records.
    Wal = 10,
    /// Format version 3: `retention/` ledgers of Object Lock extensions.
    Retention = 11,
}

impl SealKind {
    /// Every kind, so tests and fuzz targets cover each one.
    pub const ALL: [SealKind; 11] = [
        SealKind::Config,
        SealKind::Index,
        SealKind::Snapshot,
        SealKind::PackHeader,
        SealKind::DataBlob,
        SealKind::TreeBlob,
        SealKind::Log,
        SealKind::Lock,
        SealKind::PruneMark,
        SealKind::Wal,
        SealKind::Retention,
    ];

    /// Blobs: the kinds a write-only key can seal (to the public key) but never open.
    pub fn is_blob(self) -> bool {
        matches!(self, SealKind::DataBlob | SealKind::TreeBlob)
    }

    fn from_u8(b: u8) -> Option<SealKind> {
        SealKind::ALL.into_iter().find(|k| *k as u8 == b)
    }

    fn context(self) -> &'static str {
        match self {
            SealKind::Config => "ocvault v1 seal config",
            SealKind::Index => "ocvault v1 seal index",
            SealKind::Snapshot => "ocvault v1 seal snapshot",
            SealKind::PackHeader => "ocvault v1 seal pack header",
            SealKind::DataBlob => "ocvault v1 seal data blob",
            SealKind::TreeBlob => "ocvault v1 seal tree blob",
            SealKind::Log => "ocvault v1 seal log",
            SealKind::Lock => "ocvault v1 seal lock",
            SealKind::PruneMark => "ocvault v1 seal prune mark",
            SealKind::Wal => "ocvault v2 seal wal",
            SealKind::Retention => "ocvault v3 seal retention",
        }
    }
}

const CONTEXT_BLOB_ID: &str = "ocvault v1 blob id";
const CONTEXT_CHUNKER_SEED: &str = "ocvault v1 chunker seed";
const CONTEXT_WAL_NAME: &str = "ocvault v2 wal name";
const CONTEXT_BLOB_PRIVATE_KEY: &str = "ocvault v4 blob private key";
const CONTEXT_PUBLIC_SEAL: &str = "ocvault v4 blob sealed to public key";

/// The repository's master key: 32 random bytes, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn derive(&self) -> Keys {
        let mut seal = [[0u8; 32]; SealKind::ALL.len()];
        for kind in SealKind::ALL {
            seal[kind as usize - 1] = blake3::derive_key(kind.context(), &self.0);
        }
        let seed_bytes = blake3::derive_key(CONTEXT_CHUNKER_SEED, &self.0);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_bytes[..8]);
        let blob_secret = blake3::derive_key(CONTEXT_BLOB_PRIVATE_KEY, &self.0);
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(blob_secret));
        Keys {
            blob_id: blake3::derive_key(CONTEXT_BLOB_ID, &self.0),
            wal_name: blake3::derive_key(CONTEXT_WAL_NAME, &self.0),
            seal,
            chunker_seed: u64::from_le_bytes(seed),
            blob_secret: Some(blob_secret),
            blob_public: public.to_bytes(),
            public_sealer: None,
            opened_senders: Arc::default(),
        }
    }

    /// The sub-keys a write-only key holds (`key add --write-only`): everything but the two
    /// blob keys and the blob private key; `local_key` seals the host's own tree store.
    pub fn write_only_keys(&self) -> WriteOnlyKeys {
        let full = self.derive();
        WriteOnlyKeys {
            blob_id: full.blob_id,
            wal_name: full.wal_name,
            chunker_seed: full.chunker_seed,
            seal: SealKind::ALL
                .into_iter()
                .filter(|k| !k.is_blob())
                .map(|k| (k as u8, full.seal[k as usize - 1]))
                .collect(),
            blob_public_key: full.blob_public,
            local_key: random_bytes(),
        }
    }
}

impl Keys {
    /// A write-only key's keys; refuses a payload that lacks a kind or carries a blob key.
    pub fn from_write_only(w: &WriteOnlyKeys) -> Result<Keys> {
        let bad = |why: &str| Error::corrupt("write-only key", why.to_string());
        let mut seal = [[0u8; 32]; SealKind::ALL.len()];
        let mut have = [false; SealKind::ALL.len()];
        for (kind, key) in &w.seal {
            let kind = SealKind::from_u8(*kind).ok_or_else(|| bad("unknown sub-key kind"))?;
            if kind.is_blob() {
                return Err(bad("holds a blob key"));
            }
            seal[kind as usize - 1] = *key;
            have[kind as usize - 1] = true;
        }
        if SealKind::ALL
            .into_iter()
            .any(|k| !k.is_blob() && !have[k as usize - 1])
        {
            return Err(bad("lacks a sub-key"));
        }
        Ok(Keys {
            blob_id: w.blob_id,
            wal_name: w.wal_name,
            seal,
            chunker_seed: w.chunker_seed,
            blob_secret: None,
            blob_public: w.blob_public_key,
            public_sealer: Some(Arc::new(PublicSealer::new(&w.blob_public_key)?)),
            opened_senders: Arc::default(),
        })
    }
}

/// A write-only key's sealing state: one ephemeral X25519 key per process, and the
/// XChaCha20-Poly1305 key it agrees with the repository's public key. Blobs sealed with it
/// carry the ephemeral public key; only the repository's private key opens them.
struct PublicSealer {
    ephemeral_public: [u8; 32],
    key: Zeroizing<[u8; 32]>,
}

impl PublicSealer {
    fn new(recipient: &[u8; 32]) -> Result<PublicSealer> {
        let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
        let key = agreed_key(&ephemeral, recipient, &ephemeral_public, recipient)
            .ok_or_else(|| Error::corrupt("write-only key", "invalid repository public key"))?;
        Ok(PublicSealer {
            ephemeral_public,
            key,
        })
    }
}

/// The sealing key both sides agree on (format-spec §4b): X25519 of `secret` (the writer's
/// ephemeral key, or the repository's private key) and the other side's public key, hashed
/// with both public keys. `None` for a low-order point.
fn agreed_key(
    secret: &x25519_dalek::StaticSecret,
    peer_public: &[u8; 32],
    ephemeral_public: &[u8; 32],
    recipient_public: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return None;
    }
    let mut material = Zeroizing::new([0u8; 96]);
    material[..32].copy_from_slice(shared.as_bytes());
    material[32..64].copy_from_slice(ephemeral_public);
    material[64..].copy_from_slice(recipient_public);
    Some(Zeroizing::new(blake3::derive_key(
        CONTEXT_PUBLIC_SEAL,
        &*material,
    )))
}

/// Agreed blob-sealing keys by the writer's ephemeral public key.
type SenderKeys = Arc<Mutex<HashMap<[u8; 32], Zeroizing<[u8; 32]>>>>;

/// Sub-keys derived from the master key (or held by a write-only key); zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Keys {
    blob_id: [u8; 32],
    wal_name: [u8; 32],
    /// A write-only key's entries for the blob kinds are zero and never used.
    seal: [[u8; 32]; SealKind::ALL.len()],
    chunker_seed: u64,
    /// The X25519 private key blobs sealed to the public key open with; `None` for a
    /// write-only key.
    blob_secret: Option<[u8; 32]>,
    blob_public: [u8; 32],
    /// Write-only keys: how blobs are sealed.
    #[zeroize(skip)]
    public_sealer: Option<Arc<PublicSealer>>,
    /// Full keys: agreed keys by ephemeral public key, so each writer's key is derived once.
    #[zeroize(skip)]
    opened_senders: SenderKeys,
}

impl Keys {
    /// Blob id: keyed BLAKE3 of the plaintext, so equal data dedups but the storage holder
    /// cannot test for a known file.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.blob_id, plaintext).as_bytes())
    }

    /// The name of a `wal/` record: keyed BLAKE3 of the WAL file's name, so a reader finds
    /// one name with one read and the storage holder learns nothing from the listing.
    pub fn wal_record_id(&self, wal_name: &str) -> Id {
        Id(*blake3::keyed_hash(&self.wal_name, wal_name.as_bytes()).as_bytes())
    }

    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Whether these are a write-only key's: blobs can be sealed but not opened.
    pub fn is_write_only(&self) -> bool {
        self.blob_secret.is_none()
    }

    /// The repository's X25519 public key (format version 4; derived in every repository).
    pub fn blob_public_key(&self) -> [u8; 32] {
        self.blob_public
    }

    /// Bytes a sealed blob has before its ciphertext: scheme and nonce, and for a write-only
    /// key the ephemeral public key between them.
    pub fn blob_prefix_len(&self) -> usize {
        match self.public_sealer {
            Some(_) => 1 + X25519_LEN + NONCE_LEN,
            None => 1 + NONCE_LEN,
        }
    }

    /// Seals a blob laid out as `[prefix space of blob_prefix_len()][plaintext]` in place:
    /// symmetric (scheme 1) with a full key, to the public key (scheme 2) with a write-only
    /// one. The AAD is the same in both schemes: kind, then `aad_extra` (the blob id).
    pub fn seal_blob_in_place(&self, kind: SealKind, aad_extra: &[u8], buf: &mut Vec<u8>) {
        debug_assert!(kind.is_blob());
        let Some(sealer) = &self.public_sealer else {
            return self.seal_in_place(kind, aad_extra, buf);
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        buf[0] = SCHEME_PUBLIC_V4;
        buf[1..1 + X25519_LEN].copy_from_slice(&sealer.ephemeral_public);
        let body = 1 + X25519_LEN;
        buf[body..body + NONCE_LEN].copy_from_slice(&nonce);
        let tag = XChaCha20Poly1305::new((&*sealer.key).into())
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &aad(kind, aad_extra),
                &mut buf[body + NONCE_LEN..],
            )
            .expect("XChaCha20-Poly1305 encrypts any length below 256 GiB");
        buf.extend_from_slice(&tag);
    }

    /// Opens a blob sealed to the public key (scheme 2).
    fn open_public(&self, kind: SealKind, aad_extra: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let Some(secret) = &self.blob_secret else {
            return Err(Error::WriteOnly("read file contents or names".into()));
        };
        let bad = || Error::corrupt(format!("{kind:?}"), "authentication failed");
        if sealed.len() < 1 + X25519_LEN + NONCE_LEN + TAG_LEN {
            return Err(Error::corrupt("sealed object", "too short"));
        }
        let mut ephemeral = [0u8; X25519_LEN];
        ephemeral.copy_from_slice(&sealed[1..1 + X25519_LEN]);
        let key = {
            let mut cache = self.opened_senders.lock().unwrap();
            match cache.get(&ephemeral) {
                Some(k) => k.clone(),
                None => {
                    let secret = x25519_dalek::StaticSecret::from(*secret);
                    let k = agreed_key(&secret, &ephemeral, &ephemeral, &self.blob_public)
                        .ok_or_else(bad)?;
                    // Writers use one ephemeral key per process: few distinct ones per read.
                    if cache.len() >= 4096 {
                        cache.clear();
                    }
                    cache.insert(ephemeral, k.clone());
                    k
                }
            }
        };
        let body = 1 + X25519_LEN;
        let nonce = &sealed[body..body + NONCE_LEN];
        let mut buf = sealed[body + NONCE_LEN..sealed.len() - TAG_LEN].to_vec();
        XChaCha20Poly1305::new((&*key).into())
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad(kind, aad_extra),
                &mut buf,
                Tag::from_slice(&sealed[sealed.len() - TAG_LEN..]),
            )
            .map_err(|_| bad())?;
        Ok(buf)
    }

    fn cipher(&self, kind: SealKind) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.seal[kind as usize - 1]).into())
    }

    /// Seals `plaintext` into `scheme ‖ nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, kind: SealKind, aad_extra: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(SCHEME_SYMMETRIC_V1);
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        self.seal_in_place(kind, aad_extra, &mut out);
        out
    }

    /// Seals a buffer laid out as `[scheme][nonce space][plaintext]`: fills in nonce and
    /// scheme, encrypts the plaintext in place and appends the tag. Saves a copy per blob.
    pub fn seal_in_place(&self, kind: SealKind, aad_extra: &[u8], buf: &mut Vec<u8>) {
        assert!(
            !(kind.is_blob() && self.is_write_only()),
            "a write-only key seals blobs with seal_blob_in_place"
        );
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        buf[0] = SCHEME_SYMMETRIC_V1;
        buf[1..1 + NONCE_LEN].copy_from_slice(&nonce);
        let aad = aad(kind, aad_extra);
        let tag = self
            .cipher(kind)
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut buf[1 + NONCE_LEN..])
            .expect("XChaCha20-Poly1305 encrypts any length below 256 GiB");
        buf.extend_from_slice(&tag);
    }

    /// Opens a sealed object; fails on any tampering, wrong key or wrong kind. A blob may be
    /// sealed either way (scheme 1 or 2); a write-only key opens neither.
    pub fn open(&self, kind: SealKind, aad_extra: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if kind.is_blob() {
            if sealed.first() == Some(&SCHEME_PUBLIC_V4) {
                return self.open_public(kind, aad_extra, sealed);
            }
            if self.is_write_only() {
                return Err(Error::WriteOnly("read file contents or names".into()));
            }
        }
        let (nonce, body, tag) = split_sealed(sealed)?;
        let mut buf = body.to_vec();
        self.cipher(kind)
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad(kind, aad_extra),
                &mut buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| Error::corrupt(format!("{kind:?}"), "authentication failed"))?;
        Ok(buf)
    }

    /// [`Keys::open`] decrypting where the bytes lie (no copy of the body: dump and restore
    /// open hundreds of MiB a second); the plaintext is a slice of `sealed`, or, for a blob
    /// sealed with scheme 2, of `spill`.
    pub fn open_in_place<'a>(
        &self,
        kind: SealKind,
        aad_extra: &[u8],
        sealed: &'a mut [u8],
        spill: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        if kind.is_blob() && (sealed.first() == Some(&SCHEME_PUBLIC_V4) || self.is_write_only()) {
            *spill = self.open(kind, aad_extra, sealed)?;
            return Ok(spill);
        }
        split_sealed(sealed)?;
        let (head, rest) = sealed.split_at_mut(1 + NONCE_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        self.cipher(kind)
            .decrypt_in_place_detached(
                XNonce::from_slice(&head[1..]),
                &aad(kind, aad_extra),
                body,
                Tag::from_slice(tag),
            )
            .map_err(|_| Error::corrupt(format!("{kind:?}"), "authentication failed"))?;
        Ok(body)
    }
}

fn aad(kind: SealKind, extra: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(1 + extra.len());
    a.push(kind as u8);
    a.extend_from_slice(extra);
    a
}

fn split_sealed(sealed: &[u8]) -> Result<(&[u8], &[u8], &[u8])> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Error::corrupt("sealed object", "too short"));
    }
    if sealed[0] != SCHEME_SYMMETRIC_V1 {
        return Err(Error::corrupt(
            "sealed object",
            format!("unknown sealing scheme {}", sealed[0]),
        ));
    }
    let nonce = &sealed[1..1 + NONCE_LEN];
    let body = &sealed[1 + NONCE_LEN..sealed.len() - TAG_LEN];
    let tag = &sealed[sealed.len() - TAG_LEN..];
    Ok((nonce, body, tag))
}

/// Derives the key-wrapping key from a password with Argon2id.
pub fn password_key(password: &[u8], kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| Error::corrupt("key file", format!("bad Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, &kdf.salt, &mut *out)
        .map_err(|e| Error::corrupt("key file", format!("Argon2id failed: {e}")))?;
    Ok(out)
}

/// Seals the key-file payload under a password-derived key (AAD: "ocvault key v1").
pub fn wrap_with_password_key(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut buf = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    buf.push(SCHEME_SYMMETRIC_V1);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            KEY_AAD,
            &mut buf[1 + NONCE_LEN..],
        )
        .expect("small payload");
    buf.extend_from_slice(&tag);
    buf
}

/// Opens a key-file payload; `None` means the password does not fit this key.
pub fn unwrap_with_password_key(
    key: &[u8; 32],
    sealed: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let (nonce, body, tag) = split_sealed(sealed)?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut buf = Zeroizing::new(body.to_vec());
    match cipher.decrypt_in_place_detached(
        XNonce::from_slice(nonce),
        KEY_AAD,
        &mut buf,
        Tag::from_slice(tag),
    ) {
        Ok(()) => Ok(Some(buf)),
        Err(_) => Ok(None),
    }
}

const KEY_AAD: &[u8] = b"ocvault key v1";

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_kind_binding() {
        let keys = MasterKey::generate().derive();
        let s = keys.seal(SealKind::Index, b"", b"hello");
        assert_eq!(keys.open(SealKind::Index, b"", &s).unwrap(), b"hello");
        assert!(keys.open(SealKind::Snapshot, b"", &s).is_err());
        let mut bad = s.clone();
        bad[30] ^= 1;
        assert!(keys.open(SealKind::Index, b"", &bad).is_err());
    }

    #[test]
    fn distinct_masters_give_distinct_blob_ids() {
        let a = MasterKey::generate().derive();
        let b = MasterKey::generate().derive();
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
    }

    /// Seals `plain` as a blob the way the packer does: prefix space, then the plaintext.
    fn seal_blob(keys: &Keys, kind: SealKind, id: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; keys.blob_prefix_len()];
        buf.extend_from_slice(plain);
        keys.seal_blob_in_place(kind, id, &mut buf);
        buf
    }

    fn write_only(master: &MasterKey) -> Keys {
        Keys::from_write_only(&master.write_only_keys()).unwrap()
    }

    #[test]
    fn scheme_2_round_trip_full_key_opens_write_only_key_cannot() {
        let master = MasterKey::generate();
        let full = master.derive();
        let wo = write_only(&master);
        assert!(wo.is_write_only() && !full.is_write_only());
        assert_eq!(wo.blob_public_key(), full.blob_public_key());
        let id = [9u8; 32];
        for kind in [SealKind::DataBlob, SealKind::TreeBlob] {
            let sealed = seal_blob(&wo, kind, &id, b"file contents");
            assert_eq!(sealed[0], SCHEME_PUBLIC_V4);
            assert_eq!(sealed.len(), 13 + 1 + X25519_LEN + NONCE_LEN + TAG_LEN);
            assert_eq!(full.open(kind, &id, &sealed).unwrap(), b"file contents");
            assert!(matches!(
                wo.open(kind, &id, &sealed),
                Err(Error::WriteOnly(_))
            ));
            // Bound to its kind and its id (the AAD) like scheme 1.
            let other = match kind {
                SealKind::DataBlob => SealKind::TreeBlob,
                _ => SealKind::DataBlob,
            };
            assert!(full.open(other, &id, &sealed).is_err());
            assert!(full.open(kind, &[8u8; 32], &sealed).is_err());
            // A full key's blobs (scheme 1) are closed to the write-only key too.
            let symmetric = seal_blob(&full, kind, &id, b"file contents");
            assert_eq!(symmetric[0], SCHEME_SYMMETRIC_V1);
            assert!(matches!(
                wo.open(kind, &id, &symmetric),
                Err(Error::WriteOnly(_))
            ));
        }
        // Everything but blobs: both keys seal and open each other's.
        for kind in SealKind::ALL.into_iter().filter(|k| !k.is_blob()) {
            let s = wo.seal(kind, b"", b"metadata");
            assert_eq!(full.open(kind, b"", &s).unwrap(), b"metadata");
            let s = full.seal(kind, b"", b"metadata");
            assert_eq!(wo.open(kind, b"", &s).unwrap(), b"metadata");
        }
        // One ephemeral key per process (per `Keys`), another in the next.
        let a = seal_blob(&wo, SealKind::DataBlob, &id, b"x");
        let b = seal_blob(&wo, SealKind::DataBlob, &id, b"y");
        let c = seal_blob(&write_only(&master), SealKind::DataBlob, &id, b"x");
        assert_eq!(a[1..33], b[1..33]);
        assert_ne!(a[1..33], c[1..33]);
        assert_eq!(full.open(SealKind::DataBlob, &id, &c).unwrap(), b"x");
    }

    #[test]
    fn scheme_2_any_flipped_byte_or_cut_fails() {
        let master = MasterKey::generate();
        let full = master.derive();
        let id = [3u8; 32];
        let sealed = seal_blob(
            &write_only(&master),
            SealKind::DataBlob,
            &id,
            b"sealed to the key",
        );
        // Ephemeral public key, nonce, ciphertext and tag: every byte, every region.
        for pos in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[pos] ^= 0x20;
            let e = full.open(SealKind::DataBlob, &id, &bad).unwrap_err();
            assert!(!matches!(e, Error::WriteOnly(_)), "byte {pos}: {e}");
        }
        for len in 0..sealed.len() {
            assert!(full.open(SealKind::DataBlob, &id, &sealed[..len]).is_err());
        }
        // The scheme byte turned to 1 makes it a (failing) symmetric seal.
        let mut bad = sealed.clone();
        bad[0] = SCHEME_SYMMETRIC_V1;
        assert!(full.open(SealKind::DataBlob, &id, &bad).is_err());
        // A low-order ephemeral key (all zero) is refused, not used.
        let mut zero = sealed.clone();
        zero[1..1 + X25519_LEN].fill(0);
        assert!(full.open(SealKind::DataBlob, &id, &zero).is_err());
        assert_eq!(
            full.open(SealKind::DataBlob, &id, &sealed).unwrap(),
            b"sealed to the key"
        );
    }

    #[test]
    fn scheme_2_blob_of_another_repository_does_not_open() {
        let ours = MasterKey::generate();
        let theirs = MasterKey::generate();
        let id = [5u8; 32];
        let sealed = seal_blob(&write_only(&theirs), SealKind::TreeBlob, &id, b"their tree");
        assert!(ours
            .derive()
            .open(SealKind::TreeBlob, &id, &sealed)
            .is_err());
        assert_eq!(
            theirs
                .derive()
                .open(SealKind::TreeBlob, &id, &sealed)
                .unwrap(),
            b"their tree"
        );
    }

    #[test]
    fn write_only_payload_holds_no_blob_key_and_malformed_ones_are_refused() {
        let master = MasterKey::generate();
        let full = master.derive();
        let w = master.write_only_keys();
        // What a key file stores holds neither blob sub-key nor the blob private key.
        let stored = crate::format::to_postcard(&w);
        let secrets = [
            full.seal[SealKind::DataBlob as usize - 1],
            full.seal[SealKind::TreeBlob as usize - 1],
            full.blob_secret.unwrap(),
            *master.as_bytes(),
        ];
        for secret in secrets {
            assert!(!stored.windows(32).any(|win| win == secret));
        }
        assert_eq!(w.seal.len(), SealKind::ALL.len() - 2);

        // A blob key smuggled in, a kind missing, an unknown kind: each refused.
        let mut with_blob_key = w.clone();
        with_blob_key.seal.push((
            SealKind::DataBlob as u8,
            full.seal[SealKind::DataBlob as usize - 1],
        ));
        let mut missing = w.clone();
        missing.seal.remove(0);
        let mut unknown = w.clone();
        unknown.seal.push((99, [1; 32]));
        for (what, bad) in [
            ("blob key", with_blob_key),
            ("missing", missing),
            ("unknown", unknown),
        ] {
            let e = Keys::from_write_only(&bad)
                .err()
                .unwrap_or_else(|| panic!("{what} accepted"));
            assert!(e.to_string().contains("write-only key"), "{what}: {e}");
        }
        // A low-order public key cannot be sealed to.
        let mut low = w.clone();
        low.blob_public_key = [0; 32];
        assert!(Keys::from_write_only(&low).is_err());
    }
}
