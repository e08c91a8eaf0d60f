//! Helpers shared by the fuzz targets: a fixed key, and the decode paths of the library
//! spelled out step by step (as `Repository::open` and `Repository::decode_file` run them).
#![allow(dead_code)]

use ocvault::crypto::{Keys, MasterKey, SealKind};
use ocvault::format::{self, Config};
use ocvault::Result;
use serde::de::DeserializeOwned;
use std::sync::OnceLock;

/// Sub-keys of the fixed master key `[7; 32]`.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| MasterKey::from_bytes([7; 32]).derive())
}

/// The `config` file as `Repository::open` (and `check`) reads it once the master key is known.
pub fn decode_config(keys: &Keys, bytes: &[u8]) -> Result<Config> {
    ocvault::repository::decode_config(keys, bytes)
}

/// The config parser after unsealing.
pub fn config_plain(framed: &[u8]) -> Result<Config> {
    format::from_postcard(&format::unframe(framed, 1 << 20, "config")?, "config")
}

/// A write-only key of the same repository (one ephemeral X25519 key for the process).
pub fn write_only_keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        Keys::from_write_only(&MasterKey::from_bytes([7; 32]).write_only_keys()).unwrap()
    })
}

/// A sealed structured file (index, snapshot) as `Repository::decode_file` reads it.
pub fn decode_sealed<T: DeserializeOwned>(keys: &Keys, kind: SealKind, sealed: &[u8]) -> Result<T> {
    let framed = keys.open(kind, &[], sealed)?;
    decode_framed(&framed)
}

/// The parser after unsealing: unframe, then postcard.
pub fn decode_framed<T: DeserializeOwned>(framed: &[u8]) -> Result<T> {
    format::from_postcard(
        &format::unframe(framed, format::MAX_OBJECT_SIZE, "file")?,
        "file",
    )
}

/// Runs every layer of a sealed structured file on `data`: `data` as the stored (sealed) bytes,
/// as the framed plaintext after unsealing, and as postcard; then seals `data` properly and
/// checks the full path agrees with the plaintext parser. Returns the decoded value, if any.
pub fn check_sealed<T: DeserializeOwned>(kind: SealKind, data: &[u8]) -> Option<T> {
    let keys = keys();
    // Hostile stored bytes: unsealing must fail cleanly.
    assert!(decode_sealed::<T>(keys, kind, data).is_err());
    let _ = format::from_postcard::<T>(data, "file");
    let plain = decode_framed::<T>(data);
    // The same bytes under a valid seal reach the same parser with the same verdict.
    let sealed = keys.seal(kind, &[], data);
    assert_eq!(
        decode_sealed::<T>(keys, kind, &sealed).is_ok(),
        plain.is_ok()
    );
    plain.ok()
}
