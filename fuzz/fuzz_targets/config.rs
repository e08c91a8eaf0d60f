#![no_main]
//! `config`: `CONFIG_MAGIC`, version (u32 LE), then the sealed, framed postcard `Config`.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::{CONFIG_MAGIC, FORMAT_VERSION};
use ocvault::repository::read_config_version;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let mut header = CONFIG_MAGIC.to_vec();
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());

    // The stored file as is, and behind a valid header: unsealing must fail cleanly.
    let _ = read_config_version(data);
    let _ = common::decode_config(keys, data);
    let mut file = header.clone();
    file.extend_from_slice(data);
    assert!(common::decode_config(keys, &file).is_err());

    // The parser after unsealing, and the same bytes under a valid seal.
    let plain = common::config_plain(data);
    let mut file = header;
    file.extend_from_slice(&keys.seal(SealKind::Config, &FORMAT_VERSION.to_le_bytes(), data));
    let full = common::decode_config(keys, &file);
    if plain.is_err() {
        assert!(full.is_err());
    }
    if let Ok(c) = full {
        assert_eq!(c.version, FORMAT_VERSION);
    }
});
