#![no_main]
//! Key files: `KEY_MAGIC` then postcard `KeyFile`; the payload is sealed under a password key.
//! Version 1 holds the master key, version 2 a write-only key's sub-keys and public key.

use libfuzzer_sys::fuzz_target;
use ocvault::format::{self, KeyPayload, WriteOnlyKeyPayload, KEY_MAGIC};
use ocvault::{crypto, repository};

const WRAP_KEY: [u8; 32] = [7; 32];

fn key_file(bytes: &[u8]) {
    if let Ok(kf) = repository::decode_key_file(bytes) {
        // Run Argon2id only with tiny parameters, so each input stays fast.
        if kf.kdf.memory_kib <= 64 && kf.kdf.iterations <= 2 && kf.kdf.parallelism <= 2 {
            let _ = repository::try_key_file(bytes, b"password");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The stored file, and the same bytes behind a valid magic.
    key_file(data);
    if !data.starts_with(KEY_MAGIC) {
        let mut with_magic = KEY_MAGIC.to_vec();
        with_magic.extend_from_slice(data);
        key_file(&with_magic);
    }
    // Unwrapping hostile bytes, and the payload parser after unwrapping.
    assert!(!matches!(
        crypto::unwrap_with_password_key(&WRAP_KEY, data),
        Ok(Some(_))
    ));
    let _ = format::from_postcard::<KeyPayload>(data, "key payload");
    // A write-only payload: decoding, then building keys from it (a low-order public key,
    // a blob key or a missing kind must be refused, never panic).
    if let Ok(p) = format::from_postcard::<WriteOnlyKeyPayload>(data, "key payload") {
        let _ = crypto::Keys::from_write_only(&p.keys);
    }
    // A valid wrap of the same bytes opens to them.
    let wrapped = crypto::wrap_with_password_key(&WRAP_KEY, data);
    match crypto::unwrap_with_password_key(&WRAP_KEY, &wrapped) {
        Ok(Some(p)) => assert_eq!(&p[..], data),
        _ => panic!("a fresh wrap does not open"),
    }
});
