use super::GlobalOptions;
use crate::error::{Error, Result};
use crate::id::TreeId;

#[derive(clap::Args)]
pub struct Args {
    /// Glob; without '/', matched against names, with '/', against whole paths in the snapshot
    pattern: String,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let glob = globset::GlobBuilder::new(&a.pattern)
        .literal_separator(a.pattern.contains('/'))
        .build()
        .map_err(|e| Error::usage(format!("invalid pattern {:?}: {e}", a.pattern)))?
        .compile_matcher();
    let by_path = a.pattern.contains('/');
    let repo = g.open()?;
    let repo = repo.load_index()?;
    let mut found = Vec::new();
    for (id, snap) in repo.list_snapshots()? {
        let mut stack: Vec<(TreeId, String)> = vec![(snap.tree, String::new())];
        while let Some((t, dir)) = stack.pop() {
            for n in repo.load_tree(&t)?.nodes {
                let path = format!("{dir}/{}", n.name_lossy());
                let hit = if by_path {
                    glob.is_match(&path) || glob.is_match(path.trim_start_matches('/'))
                } else {
                    glob.is_match(n.name_lossy())
                };
                if hit {
                    found.push((id, snap.time_unix_ns, path.clone(), n.size, n.mtime_ns));
                }
                if let Some(s) = n.subtree {
                    stack.push((s, path));
                }
            }
        }
    }
    if g.json {
        let v: Vec<_> = found
            .iter()
            .map(|(id, t, p, size, m)| serde_json::json!({"snapshot": id.to_hex(), "snapshot_time": crate::snapshot::rfc3339(*t), "path": p, "size": size, "mtime": crate::snapshot::rfc3339(*m)}))
            .collect();
        super::print_json(&v);
    } else {
        for (id, t, p, size, _) in &found {
            println!(
                "{} {}  {p}  {size} bytes",
                id.short(),
                crate::snapshot::format_time(*t)
            );
        }
        println!("{} matches", found.len());
    }
    Ok(0)
}
