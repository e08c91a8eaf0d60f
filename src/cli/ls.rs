use super::{GlobalOptions, Outcome};
use ocvault::commands::ls::{self, LsOptions};
use ocvault::error::Result;
use ocvault::format::{Node, NodeKind};
use ocvault::snapshot::{format_time, rfc3339};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (any unique prefix) or "latest"
    snapshot: String,
    /// Folder inside the snapshot to list (default: everything)
    path: Option<String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    super::logged_read(g, "ls", "read file names", |repo, snapshots| {
        let (id, _) = repo.find_snapshot(&a.snapshot)?;
        snapshots.push(id);
        let opts = LsOptions {
            // The one resolved for the log: "latest" cannot name another by now.
            snapshot: id.to_hex(),
            path: a.path,
        };
        ls::ls(repo, &opts, |path, n| print_node(g.json, path, n))?;
        Ok(Outcome::Success)
    })
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
            "mtime": rfc3339(n.mtime_ns),
            "link_target": (n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.link_target).into_owned()),
        }));
        return;
    }
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
        format_time(n.mtime_ns)
    );
}
