#![no_main]
//! Unsealing: hostile sealed bytes under every kind, and seal/open round trips with
//! tampering. First input byte selects kind and tamper position. Blobs are also sealed to the
//! repository's public key by a write-only key (scheme 2), and hostile bytes whose first byte
//! is 2 reach the full key's public-key opening.

use libfuzzer_sys::fuzz_target;
use ocvault::crypto::{self, SealKind};
use ocvault::format::{self, BlobType};
use ocvault::pack::open_blob;
use ocvault::Id;

#[path = "common.rs"]
mod common;

const KINDS: [SealKind; SealKind::ALL.len()] = SealKind::ALL;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    // Hostile sealed bytes: every kind, with and without AAD, and as blobs.
    for kind in KINDS {
        assert!(keys.open(kind, &[], data).is_err());
        assert!(keys.open(kind, &[1; 32], data).is_err());
    }
    for t in [BlobType::Data, BlobType::Tree] {
        assert!(open_blob(keys, t, &Id([1; 32]), data, data.len() as u32).is_err());
    }
    // A write-only key opens every kind but blobs, and refuses those (never panics).
    let wo = common::write_only_keys();
    for kind in KINDS {
        match wo.open(kind, &[], data) {
            Err(ocvault::Error::WriteOnly(_)) => assert!(kind.is_blob()),
            other => assert!(other.is_err()),
        }
    }
    let _ = crypto::unwrap_with_password_key(&[7; 32], data);
    let _ = format::unframe(data, format::MAX_OBJECT_SIZE, "framed");

    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let kind = KINDS[sel as usize % KINDS.len()];
    let aad = &body[..body.len().min(sel as usize % 40)];
    let sealed = keys.seal(kind, aad, body);
    assert_eq!(sealed.len(), body.len() + crypto::SEAL_OVERHEAD);
    assert_eq!(keys.open(kind, aad, &sealed).unwrap(), body);
    for other in KINDS {
        if other != kind {
            assert!(keys.open(other, aad, &sealed).is_err());
        }
    }
    // Any flipped bit, a cut or an extra byte must fail.
    let pos = (sel as usize).wrapping_mul(7919) % sealed.len();
    let mut bad = sealed.clone();
    bad[pos] ^= 1 << (sel % 8);
    assert!(keys.open(kind, aad, &bad).is_err());
    assert!(keys.open(kind, aad, &sealed[..pos]).is_err());
    let mut longer = sealed.clone();
    longer.insert(pos, sel);
    assert!(keys.open(kind, aad, &longer).is_err());
    let mut other_aad = aad.to_vec();
    other_aad.push(0);
    assert!(keys.open(kind, &other_aad, &sealed).is_err());
    // Scheme 2: a write-only key seals a blob the full key opens; any flipped bit fails.
    let blob_kind = [SealKind::DataBlob, SealKind::TreeBlob][sel as usize % 2];
    let mut buf = vec![0u8; wo.blob_prefix_len()];
    buf.extend_from_slice(body);
    wo.seal_blob_in_place(blob_kind, aad, &mut buf);
    assert_eq!(buf[0], crypto::SCHEME_PUBLIC_V4);
    assert_eq!(keys.open(blob_kind, aad, &buf).unwrap(), body);
    assert!(matches!(
        wo.open(blob_kind, aad, &buf),
        Err(ocvault::Error::WriteOnly(_))
    ));
    let pos = (sel as usize).wrapping_mul(104_729) % buf.len();
    let mut bad = buf.clone();
    bad[pos] ^= 1 << (sel % 8);
    assert!(keys.open(blob_kind, aad, &bad).is_err());
    assert!(keys.open(blob_kind, aad, &buf[..pos]).is_err());
    // Framing round trip.
    let framed = format::frame(body, (sel % 20) as i32);
    assert_eq!(
        format::unframe(&framed, body.len(), "framed").unwrap(),
        body
    );
});
