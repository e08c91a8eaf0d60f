use super::GlobalOptions;
use crate::error::Result;
use crate::format::ChunkerParams;
use crate::repository::{InitOptions, Repository};

#[derive(clap::Args)]
pub struct Args {
    /// Smallest chunk, bytes
    #[arg(long, default_value_t = InitOptions::default().chunker.min_size)]
    chunk_min: u32,
    /// Average chunk, bytes (a power of two)
    #[arg(long, default_value_t = InitOptions::default().chunker.avg_size)]
    chunk_avg: u32,
    /// Largest chunk, bytes
    #[arg(long, default_value_t = InitOptions::default().chunker.max_size)]
    chunk_max: u32,
    /// zstd level (0 = no compression)
    #[arg(long, default_value_t = InitOptions::default().compression_level, value_parser = clap::value_parser!(i32).range(0..=19))]
    compression: i32,
    /// Target size of a pack file in bytes
    #[arg(long, default_value_t = InitOptions::default().pack_target_size, value_parser = clap::value_parser!(u32).range(65_536..=1_073_741_824))]
    pack_size: u32,
    /// Argon2id memory in KiB for the key file
    #[arg(long, default_value_t = InitOptions::default().kdf_memory_kib, value_parser = clap::value_parser!(u32).range(8..=2_097_152))]
    kdf_memory_kib: u32,
    /// Argon2id iterations for the key file
    #[arg(long, default_value_t = InitOptions::default().kdf_iterations, value_parser = clap::value_parser!(u32).range(1..=100))]
    kdf_iterations: u32,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let c = ChunkerParams {
        min_size: a.chunk_min,
        avg_size: a.chunk_avg,
        max_size: a.chunk_max,
    };
    let valid = (64..=1 << 20).contains(&c.min_size)
        && (256..=1 << 22).contains(&c.avg_size)
        && c.avg_size.is_power_of_two()
        && (1024..=1 << 24).contains(&c.max_size)
        && c.min_size < c.avg_size
        && c.avg_size < c.max_size;
    if !valid {
        return Err(crate::Error::usage(
            "chunk sizes must satisfy 64 <= min < avg < max <= 16 MiB, avg a power of two",
        ));
    }
    let opts = InitOptions {
        chunker: c,
        compression_level: a.compression,
        kdf_memory_kib: a.kdf_memory_kib,
        kdf_iterations: a.kdf_iterations,
        pack_target_size: a.pack_size,
    };
    let pw = g.password()?;
    // An empty password protects nothing; refused before anything is created.
    if pw.is_empty() {
        return Err(crate::Error::usage(
            "the password is empty: an empty password would let anyone read the repository",
        ));
    }
    let backend = g.backend(true)?;
    let repo = Repository::init(backend, &pw, &opts)?;
    crate::oplog::record(&repo.write_session()?, "init", "ok", vec![]);
    if g.json {
        super::print_json(&serde_json::json!({
            "repository": repo.backend().location(),
            "repository_id": repo.config().repository_id.to_hex(),
            "key_id": repo.key_id().to_hex(),
        }));
    } else {
        println!(
            "created repository {} at {}",
            repo.config().repository_id.short(),
            repo.backend().location()
        );
    }
    Ok(0)
}
