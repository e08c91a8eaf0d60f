use super::GlobalOptions;
use crate::error::Result;
use crate::format::{Node, Tree};
use crate::id::TreeId;
use crate::repository::IndexedRepository;

#[derive(clap::Args)]
pub struct Args {
    /// The older snapshot
    first: String,
    /// The newer snapshot
    second: String,
}

#[derive(serde::Serialize)]
struct Change {
    change: &'static str,
    path: String,
    old_size: Option<u64>,
    new_size: Option<u64>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let snaps = repo.list_snapshots()?;
    let (_, s1) = crate::snapshot::resolve(&snaps, &a.first)?;
    let (_, s2) = crate::snapshot::resolve(&snaps, &a.second)?;
    let repo = repo.load_index()?;
    let mut out = Vec::new();
    diff_trees(&repo, Some(&s1.tree), Some(&s2.tree), "", &mut out)?;
    if g.json {
        super::print_json(&out);
        return Ok(0);
    }
    for c in &out {
        let sym = match c.change {
            "added" => "+",
            "removed" => "-",
            "changed" => "M",
            _ => "T",
        };
        let size = match (c.old_size, c.new_size) {
            (Some(o), Some(n)) if o != n => format!("  {o} -> {n} bytes"),
            (_, Some(n)) | (Some(n), None) => format!("  {n} bytes"),
            _ => String::new(),
        };
        println!("{sym} {}{size}", c.path);
    }
    let count = |k: &str| out.iter().filter(|c| c.change == k).count();
    println!(
        "{} added, {} removed, {} changed, {} metadata only",
        count("added"),
        count("removed"),
        count("changed"),
        count("metadata")
    );
    Ok(0)
}

fn load(repo: &IndexedRepository, id: Option<&TreeId>) -> Result<Tree> {
    match id {
        Some(id) => repo.load_tree(id),
        None => Ok(Tree::default()),
    }
}

fn all_below(
    repo: &IndexedRepository,
    node: &Node,
    path: &str,
    change: &'static str,
    out: &mut Vec<Change>,
) -> Result<()> {
    let size = (node.kind == crate::format::NodeKind::File).then_some(node.size);
    let (old_size, new_size) = if change == "added" {
        (None, size)
    } else {
        (size, None)
    };
    out.push(Change {
        change,
        path: path.to_string(),
        old_size,
        new_size,
    });
    if let Some(sub) = &node.subtree {
        for n in repo.load_tree(sub)?.nodes {
            all_below(repo, &n, &format!("{path}/{}", n.name_lossy()), change, out)?;
        }
    }
    Ok(())
}

fn diff_trees(
    repo: &IndexedRepository,
    a: Option<&TreeId>,
    b: Option<&TreeId>,
    dir: &str,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let (ta, tb) = (load(repo, a)?, load(repo, b)?);
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let ord = match (ta.nodes.get(i), tb.nodes.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let n = &ta.nodes[i];
                all_below(
                    repo,
                    n,
                    &format!("{dir}/{}", n.name_lossy()),
                    "removed",
                    out,
                )?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = &tb.nodes[j];
                all_below(repo, n, &format!("{dir}/{}", n.name_lossy()), "added", out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&ta.nodes[i], &tb.nodes[j]);
                let path = format!("{dir}/{}", x.name_lossy());
                if x.kind != y.kind {
                    all_below(repo, x, &path, "removed", out)?;
                    all_below(repo, y, &path, "added", out)?;
                } else if x.subtree.is_some() || y.subtree.is_some() {
                    diff_trees(repo, x.subtree.as_ref(), y.subtree.as_ref(), &path, out)?;
                } else if x.content != y.content || x.link_target != y.link_target {
                    out.push(Change {
                        change: "changed",
                        path,
                        old_size: Some(x.size),
                        new_size: Some(y.size),
                    });
                } else if x.mode != y.mode
                    || x.mtime_ns != y.mtime_ns
                    || x.uid != y.uid
                    || x.gid != y.gid
                {
                    out.push(Change {
                        change: "metadata",
                        path,
                        old_size: Some(x.size),
                        new_size: Some(y.size),
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}
