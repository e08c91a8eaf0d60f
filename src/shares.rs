//! Key shares for dual approval (M of N): `key split` cuts the 32-byte master key into N
//! share files with Shamir's secret sharing, any M of which open the repository again.
//! Share files live outside the repository; nothing in the repository format changes.
//!
//! The threshold scheme is hand-written (about 60 lines) rather than taken from a crate: the
//! Shamir crates on crates.io (`sharks`, `blahaj`) choose their own x values and share
//! encoding, which format-spec must pin down for an independent reader, and the arithmetic
//! is small enough to check by hand (see the FIPS-197 vectors in the tests). Field:
//! GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1 (0x11b); each byte of the secret
//! is the constant term of its own random polynomial of degree M-1; share i is the 32
//! evaluations at x = i (1..=N).

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::format::{self, KdfParams};
use crate::id::Id;
use crate::repository::{self, Repository};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The first 8 bytes of a share file.
pub const SHARE_MAGIC: &[u8; 8] = b"OCVSHARE";
/// The share file version this ocvault writes and reads.
pub const SHARE_FILE_VERSION: u32 = 1;

/// A share file after the magic: postcard of this.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareFile {
    pub version: u32,
    /// The repository (config `repository_id`) whose master key this is a share of.
    pub repository_id: Id,
    /// x of this share, 1..=count.
    pub index: u8,
    pub threshold: u8,
    pub count: u8,
    pub kdf: KdfParams,
    /// Sealed [`SharePayload`] under the custodian's Argon2id-derived key, as in a key file.
    pub sealed_share: Vec<u8>,
}

/// The secret part of a share file; repeats the clear fields so an edited header is caught.
#[derive(Serialize, Deserialize)]
struct SharePayload {
    repository_id: Id,
    index: u8,
    threshold: u8,
    count: u8,
    share: [u8; 32],
}

/// One unsealed share.
pub struct OpenedShare {
    pub repository_id: Id,
    pub index: u8,
    pub threshold: u8,
    pub count: u8,
    share: Zeroizing<[u8; 32]>,
}

// ---------------------------------------------------------------- GF(256) and Shamir

/// exp and log tables of GF(2^8) mod 0x11b with generator 3.
struct Tables {
    exp: [u8; 512],
    log: [u8; 256],
}

fn tables() -> &'static Tables {
    static TABLES: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = Tables {
            exp: [0; 512],
            log: [0; 256],
        };
        let mut x: u8 = 1;
        for i in 0..255 {
            t.exp[i] = x;
            t.exp[i + 255] = x;
            t.log[x as usize] = i as u8;
            // x * 3 = x * 2 + x, reducing by 0x11b when x * 2 overflows.
            let double = (x << 1) ^ if x & 0x80 != 0 { 0x1b } else { 0 };
            x ^= double;
        }
        t
    })
}

/// Product in GF(2^8) mod 0x11b.
pub fn gf_mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    let t = tables();
    t.exp[t.log[a as usize] as usize + t.log[b as usize] as usize]
}

/// Quotient in GF(2^8); `b` must not be 0.
fn gf_div(a: u8, b: u8) -> u8 {
    if a == 0 {
        return 0;
    }
    let t = tables();
    t.exp[t.log[a as usize] as usize + 255 - t.log[b as usize] as usize]
}

/// The polynomial with coefficients `coeffs` (constant term first) at `x` (Horner).
pub fn gf_eval(coeffs: &[u8], x: u8) -> u8 {
    coeffs.iter().rev().fold(0, |acc, &c| gf_mul(acc, x) ^ c)
}

/// Splits `secret` into `count` shares (x = 1..=count), any `threshold` of which give it back.
pub fn split_secret(
    secret: &[u8; 32],
    threshold: u8,
    count: u8,
    rng: &mut dyn RngCore,
) -> Vec<(u8, Zeroizing<[u8; 32]>)> {
    let mut shares: Vec<(u8, Zeroizing<[u8; 32]>)> = (1..=count)
        .map(|x| (x, Zeroizing::new([0u8; 32])))
        .collect();
    let mut coeffs = Zeroizing::new(vec![0u8; threshold as usize]);
    for (j, &byte) in secret.iter().enumerate() {
        coeffs[0] = byte;
        rng.fill_bytes(&mut coeffs[1..]);
        for (x, share) in shares.iter_mut() {
            share[j] = gf_eval(&coeffs, *x);
        }
    }
    shares
}

/// The secret from shares with distinct nonzero x (Lagrange interpolation at 0). With fewer
/// shares than the threshold the result is some other value, not an error.
pub fn combine_secret(shares: &[(u8, &[u8; 32])]) -> [u8; 32] {
    let mut secret = [0u8; 32];
    for (i, (xi, yi)) in shares.iter().enumerate() {
        // Lagrange basis at 0: product over k != i of x_k / (x_k - x_i); minus is xor.
        let mut basis = 1u8;
        for (k, (xk, _)) in shares.iter().enumerate() {
            if k != i {
                basis = gf_mul(basis, gf_div(*xk, xk ^ xi));
            }
        }
        for (s, y) in secret.iter_mut().zip(yi.iter()) {
            *s ^= gf_mul(*y, basis);
        }
    }
    secret
}

// ---------------------------------------------------------------- share files

/// What `key split` writes.
pub struct SplitOptions<'a> {
    pub threshold: u8,
    pub count: u8,
    /// One per share, in order.
    pub passwords: &'a [Zeroizing<Vec<u8>>],
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    pub out_dir: &'a Path,
}

/// The share file name of share `index` of `count`.
pub fn share_file_name(index: u8, count: u8) -> String {
    format!("share-{index}-of-{count}.ocvshare")
}

/// Checks M and N as `key split` accepts them.
pub fn check_split_counts(threshold: u32, count: u32) -> Result<(u8, u8)> {
    if threshold < 2 {
        return Err(Error::usage(
            "--threshold must be at least 2 (one share would be a full key)",
        ));
    }
    if count > 255 {
        return Err(Error::usage("--shares must be at most 255"));
    }
    if threshold > count {
        return Err(Error::usage(format!(
            "--threshold {threshold} is more than --shares {count}"
        )));
    }
    Ok((threshold as u8, count as u8))
}

/// Splits the repository's master key into share files in `out_dir` (never overwriting one);
/// returns their paths.
pub fn split(repo: &Repository, opts: &SplitOptions) -> Result<Vec<PathBuf>> {
    check_split_counts(opts.threshold as u32, opts.count as u32)?;
    if opts.passwords.len() != opts.count as usize {
        return Err(Error::usage(format!(
            "{} share passwords given for {} shares",
            opts.passwords.len(),
            opts.count
        )));
    }
    if opts.passwords.iter().any(|p| p.is_empty()) {
        return Err(Error::usage("a share password is empty"));
    }
    std::fs::create_dir_all(opts.out_dir).map_err(|e| Error::io(opts.out_dir, e))?;
    let repository_id = repo.config().repository_id;
    let shares = split_secret(
        repo.master("split the key into shares")?.as_bytes(),
        opts.threshold,
        opts.count,
        &mut rand::rngs::OsRng,
    );
    let mut paths = Vec::new();
    for ((index, share), password) in shares.into_iter().zip(opts.passwords) {
        let payload = SharePayload {
            repository_id,
            index,
            threshold: opts.threshold,
            count: opts.count,
            share: *share,
        };
        let bytes = seal_share_file(&payload, password, opts)?;
        let path = opts.out_dir.join(share_file_name(index, opts.count));
        write_new_private(&path, &bytes)?;
        paths.push(path);
    }
    Ok(paths)
}

fn seal_share_file(
    payload: &SharePayload,
    password: &[u8],
    opts: &SplitOptions,
) -> Result<Vec<u8>> {
    let kdf = KdfParams {
        memory_kib: opts.kdf_memory_kib,
        iterations: opts.kdf_iterations,
        parallelism: 1,
        salt: crypto::random_bytes(),
    };
    if !repository::kdf_within_limits(&kdf) {
        return Err(Error::usage("Argon2id parameters too large"));
    }
    let wrap = crypto::password_key(password, &kdf)?;
    let plain = Zeroizing::new(format::to_postcard(payload));
    let file = ShareFile {
        version: SHARE_FILE_VERSION,
        repository_id: payload.repository_id,
        index: payload.index,
        threshold: payload.threshold,
        count: payload.count,
        kdf,
        sealed_share: crypto::wrap_with_password_key(&wrap, &plain),
    };
    let mut bytes = SHARE_MAGIC.to_vec();
    bytes.extend_from_slice(&format::to_postcard(&file));
    Ok(bytes)
}

/// Creates `path` readable by its owner only; refuses an existing file.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Parses a share file's clear part; never panics on hostile bytes.
pub fn decode_share_file(bytes: &[u8]) -> Result<ShareFile> {
    if bytes.len() < 8 || &bytes[..8] != SHARE_MAGIC {
        return Err(Error::corrupt("share file", "not an ocvault share file"));
    }
    let sf: ShareFile = format::from_postcard(&bytes[8..], "share file")?;
    if sf.version != SHARE_FILE_VERSION {
        return Err(Error::corrupt(
            "share file",
            format!(
                "version {} is not supported (this ocvault reads 1)",
                sf.version
            ),
        ));
    }
    if !repository::kdf_within_limits(&sf.kdf) {
        return Err(Error::corrupt(
            "share file",
            "Argon2id parameters out of range",
        ));
    }
    if sf.index == 0 || sf.index > sf.count || sf.threshold < 2 || sf.threshold > sf.count {
        return Err(Error::corrupt(
            "share file",
            "index, threshold and share count out of range",
        ));
    }
    Ok(sf)
}

/// Reads and unseals the share file at `path` with its custodian's password.
pub fn open_share_file(path: &Path, password: &[u8]) -> Result<OpenedShare> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sf = decode_share_file(&bytes).map_err(|e| Error::other(format!("{name}: {e}")))?;
    let wrap = crypto::password_key(password, &sf.kdf)?;
    let Some(plain) = crypto::unwrap_with_password_key(&wrap, &sf.sealed_share)? else {
        return Err(Error::ShareRefused(format!(
            "wrong password for share file {name}"
        )));
    };
    let payload: SharePayload = format::from_postcard(&plain, "share payload")?;
    let payload = Zeroizing::new(payload);
    if (
        payload.repository_id,
        payload.index,
        payload.threshold,
        payload.count,
    ) != (sf.repository_id, sf.index, sf.threshold, sf.count)
    {
        return Err(Error::corrupt(
            "share file",
            format!("{name}: clear header differs from its sealed content"),
        ));
    }
    Ok(OpenedShare {
        repository_id: sf.repository_id,
        index: sf.index,
        threshold: sf.threshold,
        count: sf.count,
        share: Zeroizing::new(payload.share),
    })
}

impl zeroize::Zeroize for SharePayload {
    fn zeroize(&mut self) {
        self.share.zeroize();
    }
}

/// Combines opened shares into the master key: all of one split (same repository,
/// threshold and count), distinct indexes, at least the threshold.
pub fn combine(shares: &[OpenedShare]) -> Result<MasterKey> {
    let Some(first) = shares.first() else {
        return Err(Error::usage("no share given"));
    };
    if shares.iter().any(|s| {
        (s.repository_id, s.threshold, s.count)
            != (first.repository_id, first.threshold, first.count)
    }) {
        return Err(Error::ShareRefused(
            "the shares come from different splits (repository, threshold or count differ)".into(),
        ));
    }
    let mut indexes: Vec<u8> = shares.iter().map(|s| s.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.len() != shares.len() {
        return Err(Error::ShareRefused("the same share is given twice".into()));
    }
    if shares.len() < first.threshold as usize {
        return Err(Error::ShareRefused(format!(
            "{} shares given, {} needed",
            shares.len(),
            first.threshold
        )));
    }
    let points: Vec<(u8, &[u8; 32])> = shares.iter().map(|s| (s.index, &*s.share)).collect();
    Ok(MasterKey::from_bytes(combine_secret(&points)))
}

/// Opens the repository with the master key the shares combine to; the shares must be of
/// this repository (its config opens and its id matches).
pub fn open_with_shares(
    backend: crate::backend::Backend,
    shares: &[OpenedShare],
) -> Result<Repository> {
    let master = combine(shares)?;
    let mut repo = match Repository::open_with_master(backend, master) {
        Ok(r) => r,
        Err(Error::Corrupt { .. }) => {
            return Err(Error::ShareRefused(
                "the shares do not open this repository (shares of another repository?)".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    if repo.config().repository_id != shares[0].repository_id {
        return Err(Error::ShareRefused(
            "the shares belong to another repository".into(),
        ));
    }
    repo.set_approvals(approvals(shares));
    Ok(repo)
}

/// What the operations log records of the shares that opened a repository.
pub fn approvals(shares: &[OpenedShare]) -> Vec<crate::format::ShareApproval> {
    shares
        .iter()
        .map(|s| crate::format::ShareApproval {
            index: s.index,
            threshold: s.threshold,
            count: s.count,
        })
        .collect()
}

/// The master key the shares combine to, verified to open this repository (for `check`,
/// which opens the repository its own way).
pub fn master_key_for(
    backend: &crate::backend::Backend,
    shares: &[OpenedShare],
) -> Result<MasterKey> {
    let repo = open_with_shares(backend.clone(), shares)?;
    Ok(repo.master("combine key shares")?.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// FIPS-197 section 4.2: {57} x {83} = {c1}, and {57} x {13} = {fe}.
    #[test]
    fn multiplication_matches_fips_197() {
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
        assert_eq!(gf_mul(0x57, 0x02), 0xae);
        assert_eq!(gf_mul(0x57, 0x04), 0x47);
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_div(1, a)), 1, "inverse of {a:#x}");
        }
    }

    /// By hand: f(x) = 0x2a + 1·x. f(1) = 0x2b, f(2) = 0x28, f(3) = 0x29. From (1, 0x2b) and
    /// (2, 0x28): 0x2b·2/3 + 0x28·1/3 = (0x56 ^ 0x28)/3 = 0x7e/3 = 0x2a, since 3·0x2a =
    /// 0x54 ^ 0x2a = 0x7e. And f(x) = 0 + 0x57·x at x = 0x13 is 0xfe (FIPS-197).
    #[test]
    fn hand_computed_vector() {
        assert_eq!(gf_eval(&[0x2a, 0x01], 1), 0x2b);
        assert_eq!(gf_eval(&[0x2a, 0x01], 2), 0x28);
        assert_eq!(gf_eval(&[0x2a, 0x01], 3), 0x29);
        assert_eq!(gf_eval(&[0x00, 0x57], 0x13), 0xfe);
        // x^2 term: 0x02·3^2 = 0x02·0x05 = 0x0a, plus 0x01 + 0x01·3 = 0x01 ^ 0x03 ^ 0x0a.
        assert_eq!(gf_eval(&[0x01, 0x01, 0x02], 3), 0x01 ^ 0x03 ^ 0x0a);
        let y1 = [0x2bu8; 32];
        let y2 = [0x28u8; 32];
        let y3 = [0x29u8; 32];
        assert_eq!(combine_secret(&[(1, &y1), (2, &y2)]), [0x2a; 32]);
        assert_eq!(combine_secret(&[(3, &y3), (1, &y1)]), [0x2a; 32]);
        assert_eq!(combine_secret(&[(2, &y2), (3, &y3)]), [0x2a; 32]);
    }

    /// Every M-subset gives the secret back; every (M-1)-subset gives something else.
    #[test]
    fn every_threshold_subset_combines_and_fewer_do_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        for (m, n) in [(2u8, 3u8), (3, 5), (2, 2), (4, 6)] {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            let shares = split_secret(&secret, m, n, &mut rng);
            for mask in 0u32..(1 << n) {
                let subset: Vec<(u8, &[u8; 32])> = shares
                    .iter()
                    .filter(|(x, _)| mask & (1 << (x - 1)) != 0)
                    .map(|(x, s)| (*x, &**s))
                    .collect();
                let got = combine_secret(&subset);
                if subset.len() >= m as usize {
                    assert_eq!(got, secret, "{m} of {n}, subset {mask:#b}");
                } else if !subset.is_empty() {
                    assert_ne!(got, secret, "{m} of {n}, subset {mask:#b}");
                }
            }
        }
    }

    #[test]
    fn hostile_share_files_are_errors_not_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in 0..200 {
            let mut b = SHARE_MAGIC.to_vec();
            b.resize(8 + len, 0);
            rng.fill_bytes(&mut b[8..]);
            let _ = decode_share_file(&b);
        }
        assert!(decode_share_file(b"OCVKEY00").is_err());
    }

    #[test]
    fn split_counts_are_checked() {
        assert!(check_split_counts(1, 3).is_err());
        assert!(check_split_counts(4, 3).is_err());
        assert!(check_split_counts(2, 256).is_err());
        assert_eq!(check_split_counts(2, 3).unwrap(), (2, 3));
        assert_eq!(check_split_counts(255, 255).unwrap(), (255, 255));
    }
}
