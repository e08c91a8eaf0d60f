use super::args::SelectionArgs;
use super::{GlobalOptions, Outcome};
use indicatif::HumanBytes;
use ocvault::commands::stats::{self, StatsOptions};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to measure (default: all)
    #[command(flatten)]
    selection: SelectionArgs,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = StatsOptions {
        selection: a.selection.selection(),
    };
    opts.selection.validate("stats", false)?;
    let repo = g.open_full("read snapshots' trees")?;
    let s = stats::stats(&repo, &opts)?;
    if g.json {
        super::print_json(&serde_json::json!({
            "snapshots": s.snapshots,
            "files": s.files,
            "logical_bytes": s.logical_bytes,
            "unique_raw_bytes": s.unique_raw_bytes,
            "stored_bytes": s.stored_bytes,
            "dedup_ratio": s.dedup_ratio,
            "compression_ratio": s.compression_ratio,
            "data_blobs": s.data_blobs,
            "trees": s.trees,
            "packs": s.packs,
            "repository_pack_bytes": s.repository_pack_bytes,
            "repository_blobs": s.repository_blobs,
            "repository_packs": s.repository_packs,
        }));
        return Ok(Outcome::Success);
    }
    println!("snapshots: {}, files: {}", s.snapshots, s.files);
    println!("logical size: {}", HumanBytes(s.logical_bytes));
    println!(
        "unique data: {} in {} blobs ({} trees) across {} packs",
        HumanBytes(s.unique_raw_bytes),
        s.data_blobs,
        s.trees,
        s.packs
    );
    println!("stored size: {}", HumanBytes(s.stored_bytes));
    println!(
        "dedup ratio: {:.2}x, compression ratio: {:.2}x",
        s.dedup_ratio, s.compression_ratio
    );
    println!(
        "whole repository: {} in {} packs, {} blobs",
        HumanBytes(s.repository_pack_bytes),
        s.repository_packs,
        s.repository_blobs
    );
    Ok(Outcome::Success)
}
