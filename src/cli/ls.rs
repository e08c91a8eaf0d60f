use super::GlobalOptions;
use crate::error::Result;
use crate::format::{Node, NodeKind};
use crate::id::TreeId;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (any unique prefix) or "latest"
    snapshot: String,
    /// Folder inside the snapshot to list (default: everything)
    path: Option<String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let repo = repo.load_index()?;
    let (start, prefix) = match a
        .path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        None => (snap.tree, String::new()),
        Some(p) => {
            let node = crate::tree::find_node(&repo, &snap.tree, p)?;
            match node.subtree {
                Some(t) => (t, format!("/{p}")),
                None => {
                    print_node(g.json, &format!("/{p}"), &node);
                    return Ok(0);
                }
            }
        }
    };
    let mut stack: Vec<(TreeId, String)> = vec![(start, prefix)];
    while let Some((tid, dir)) = stack.pop() {
        let tree = repo.load_tree(&tid)?;
        let mut subdirs = Vec::new();
        for n in &tree.nodes {
            let path = format!("{dir}/{}", n.name_lossy());
            print_node(g.json, &path, n);
            if let Some(s) = n.subtree {
                subdirs.push((s, path));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(0)
}

fn print_node(json: bool, path: &str, n: &Node) {
    if json {
        super::print_json(&serde_json::json!({
            "path": path,
            "type": format!("{:?}", n.kind).to_lowercase(),
            "mode": n.mode,
            "size": n.size,
            "uid": n.uid,
            "gid": n.gid,
            "mtime": crate::snapshot::rfc3339(n.mtime_ns),
            "link_target": (n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.link_target).into_owned()),
        }));
    } else {
        let t = match n.kind {
            NodeKind::Dir => 'd',
            NodeKind::Symlink => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::CharDevice => 'c',
            NodeKind::BlockDevice => 'b',
            NodeKind::Socket => 's',
            NodeKind::File => '-',
        };
        let link = if n.kind == NodeKind::Symlink {
            format!(" -> {}", String::from_utf8_lossy(&n.link_target))
        } else {
            String::new()
        };
        println!(
            "{t}{:04o} {:>8} {:>8} {:>12} {} {path}{link}",
            n.mode,
            n.user,
            n.group,
            n.size,
            crate::snapshot::format_time(n.mtime_ns)
        );
    }
}
