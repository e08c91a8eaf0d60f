use super::{GlobalOptions, Outcome};
use ocvault::commands::init;
use ocvault::error::Result;
use ocvault::format::{ChunkerParams, LockMode, ObjectLock, StoragePolicy};
use ocvault::repository::InitOptions;

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
    /// S3 Object Lock: write every file a restore needs with this retention mode (the bucket
    /// must have Object Lock enabled)
    #[arg(long, value_enum)]
    lock_mode: Option<LockModeArg>,
    /// S3 Object Lock: days each file stays locked after it is written (extended while a kept
    /// snapshot needs it)
    #[arg(long, default_value_t = 30, requires = "lock_mode", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    lock_days: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LockModeArg {
    /// Nobody can shorten or remove a retention, not even the account's root user
    Compliance,
    /// Users with s3:BypassGovernanceRetention can shorten or remove a retention
    Governance,
}

impl From<LockModeArg> for LockMode {
    fn from(m: LockModeArg) -> LockMode {
        match m {
            LockModeArg::Compliance => LockMode::Compliance,
            LockModeArg::Governance => LockMode::Governance,
        }
    }
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: a.chunk_min,
            avg_size: a.chunk_avg,
            max_size: a.chunk_max,
        },
        compression_level: a.compression,
        kdf_memory_kib: a.kdf_memory_kib,
        kdf_iterations: a.kdf_iterations,
        pack_target_size: a.pack_size,
        storage: StoragePolicy {
            lock: a.lock_mode.map(|mode| ObjectLock {
                mode: mode.into(),
                days: a.lock_days,
            }),
            // From `-o s3.data_storage_class`, read by `init::init`.
            data_storage_class: None,
        },
    };
    init::check_settings(&opts)?;
    let pw = g.password()?;
    // Refused before anything is created.
    init::check_password(&pw)?;
    let backend = g.backend(true)?;
    let (repo, warnings) = init::init(backend, &pw, &opts, &super::command_line())?;
    super::warn_all(warnings);
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
    Ok(Outcome::Success)
}
