#![no_main]
//! Pack headers: `[blobs][sealed framed postcard PackHeader][header length u32 LE]`, read from
//! the pack's tail. Input: 8 bytes of pack size, then the tail.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::SealKind;
use ocvault::format::PackHeader;
use ocvault::pack::parse_header_from_tail;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let (size, tail) = data.split_at(data.len().min(8));
    let mut size_bytes = [0u8; 8];
    size_bytes[..size.len()].copy_from_slice(size);
    let pack_size = u64::from_le_bytes(size_bytes);

    // Hostile tails, with an arbitrary pack size and with the tail as the whole pack.
    let _ = parse_header_from_tail(keys, tail, pack_size);
    assert!(!matches!(
        parse_header_from_tail(keys, tail, tail.len() as u64),
        Ok(Some(_))
    ));

    // The parser after unsealing, and the same bytes sealed into a valid tail behind
    // `extra` bytes of blob data.
    let plain = common::decode_framed::<PackHeader>(tail);
    let sealed = keys.seal(SealKind::PackHeader, &[], tail);
    let mut t = sealed.clone();
    t.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    let extra = pack_size % (1 << 33);
    let full = parse_header_from_tail(keys, &t, t.len() as u64 + extra);
    match &full {
        Ok(Some(h)) => {
            assert_eq!(Some(h), plain.as_ref().ok());
            for b in &h.blobs {
                assert!(b.offset as u64 + b.length as u64 <= extra);
            }
        }
        Ok(None) => panic!("the whole header was there"),
        Err(_) => {}
    }
    if plain.is_err() {
        assert!(full.is_err());
    }
    // A tail cut short asks for more (or fails), never panics.
    let cut = (pack_size as usize) % (t.len() + 1);
    let _ = parse_header_from_tail(keys, &t[cut..], t.len() as u64 + extra);
});
