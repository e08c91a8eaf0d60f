use super::GlobalOptions;
use crate::error::Result;
use crate::format::NodeKind;
use crate::id::{DataId, TreeId};
use std::collections::HashSet;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to measure (default: all)
    ids: Vec<String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let snaps = repo.list_snapshots()?;
    let chosen: Vec<_> = if a.ids.is_empty() {
        snaps.clone()
    } else {
        a.ids
            .iter()
            .map(|s| crate::snapshot::resolve(&snaps, s).cloned())
            .collect::<Result<_>>()?
    };
    let repo = repo.load_index()?;
    let index = repo.index();
    let (mut logical, mut files) = (0u64, 0u64);
    let mut blobs: HashSet<DataId> = HashSet::new();
    let mut seen_trees: HashSet<TreeId> = HashSet::new();
    for (_, s) in &chosen {
        // Logical size counts every file of every snapshot; trees are walked once per snapshot.
        let mut stack = vec![s.tree];
        while let Some(t) = stack.pop() {
            seen_trees.insert(t);
            for n in repo.load_tree(&t)?.nodes {
                if n.kind == NodeKind::File {
                    logical += n.size;
                    files += 1;
                    blobs.extend(n.content.iter().copied());
                }
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
            }
        }
    }
    // Ratios are over file data; tree blobs are counted in packs and stored size.
    let (mut raw, mut stored) = (0u64, 0u64);
    let mut packs = HashSet::new();
    for id in &blobs {
        if let Some(loc) = index.get(id) {
            raw += loc.raw_length as u64;
            stored += loc.length as u64;
            packs.insert(loc.pack);
        }
    }
    for id in &seen_trees {
        if let Some(loc) = index.get(id) {
            packs.insert(loc.pack);
        }
    }
    let dedup = if raw > 0 {
        logical as f64 / raw as f64
    } else {
        0.0
    };
    let compression = if stored > 0 {
        raw as f64 / stored as f64
    } else {
        0.0
    };
    let repo_bytes: u64 = repo
        .backend()
        .list(crate::backend::FileKind::Pack)?
        .iter()
        .map(|(_, s)| s)
        .sum();
    if g.json {
        super::print_json(&serde_json::json!({
            "snapshots": chosen.len(),
            "files": files,
            "logical_bytes": logical,
            "unique_raw_bytes": raw,
            "stored_bytes": stored,
            "dedup_ratio": dedup,
            "compression_ratio": compression,
            "data_blobs": blobs.len(),
            "trees": seen_trees.len(),
            "packs": packs.len(),
            "repository_pack_bytes": repo_bytes,
            "repository_blobs": index.len(),
            "repository_packs": index.packs().len(),
        }));
    } else {
        let h = super::human_bytes;
        println!("snapshots: {}, files: {files}", chosen.len());
        println!("logical size: {}", h(logical));
        println!(
            "unique data: {} in {} blobs ({} trees) across {} packs",
            h(raw),
            blobs.len(),
            seen_trees.len(),
            packs.len()
        );
        println!("stored size: {}", h(stored));
        println!("dedup ratio: {dedup:.2}x, compression ratio: {compression:.2}x");
        println!(
            "whole repository: {} in {} packs, {} blobs",
            h(repo_bytes),
            index.packs().len(),
            index.len()
        );
    }
    Ok(0)
}
