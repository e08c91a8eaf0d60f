use super::{GlobalOptions, Outcome};
use ocvault::commands::repair;
use ocvault::commands::select::Selection;
use ocvault::error::Result;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rebuild the index from the pack headers in data/ (after index files were lost or damaged)
    Index {
        /// Read the header of every pack, not only of packs the index lacks or gets wrong
        #[arg(long)]
        read_all_packs: bool,
        /// Show what would change; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Write new versions of snapshots without the files whose blobs are lost (tag `repaired`)
    Snapshots {
        /// Snapshots to repair (default: all)
        ids: Vec<String>,
        /// Delete each damaged original once its repaired version is saved
        #[arg(long)]
        forget: bool,
        /// Show what would be cut; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Store the intact blobs of damaged packs again in new packs and unindex the old ones
    Packs {
        /// Packs to salvage: ids, unique prefixes or data/xx/ID paths as `check` names them
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Show what would be kept and lost; change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    ocvault::interrupt::install()?;
    match a.what {
        What::Index {
            read_all_packs,
            dry_run,
        } => index(g, read_all_packs, dry_run),
        What::Snapshots {
            ids,
            forget,
            dry_run,
        } => snapshots(g, ids, forget, dry_run),
        What::Packs { ids, dry_run } => packs(g, &ids, dry_run),
    }
}

fn outcome(damage_remains: bool) -> Outcome {
    if damage_remains {
        Outcome::Damage
    } else {
        Outcome::Success
    }
}

fn index(g: &GlobalOptions, read_all_packs: bool, dry_run: bool) -> Result<Outcome> {
    // Pack headers are sealed with a key write-only keys hold too.
    let repo = g.open()?;
    let r = repair::repair_index(&repo, read_all_packs, dry_run, &super::command_line())?;
    super::warn_all(&r.warnings);
    let r = r.report;
    let hex = |ids: &[ocvault::id::PackId]| ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>();
    if g.json {
        super::print_json(&json!({
            "dry_run": dry_run,
            "packs": r.packs_present,
            "headers_read": r.headers_read,
            "packs_indexed": hex(&r.packs_indexed),
            "packs_missing": hex(&r.packs_missing),
            "unreadable": r.unreadable.iter().map(|(id, e)| json!({"pack": id.to_hex(), "problem": e})).collect::<Vec<_>>(),
            "marked_skipped": r.marked_skipped,
            "damaged_index_files": r.damaged_index_files.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "new_index": r.new_index,
            "index_files_replaced": r.index_files_replaced,
        }));
        return Ok(outcome(r.damage_remains()));
    }
    println!(
        "{} packs, {} headers read: {} packs to index anew, {} missing packs to drop, {} damaged index files",
        r.packs_present,
        r.headers_read,
        r.packs_indexed.len(),
        r.packs_missing.len(),
        r.damaged_index_files.len()
    );
    match (r.new_index, dry_run) {
        (false, _) => println!("the index is complete: nothing to do"),
        (true, true) => println!(
            "dry run: would write a new index replacing {} index files",
            r.index_files_replaced
        ),
        (true, false) => println!(
            "wrote a new index replacing {} index files",
            r.index_files_replaced
        ),
    }
    for id in &r.packs_missing {
        println!("  missing: data/{}", short_path(id));
    }
    for (id, e) in &r.unreadable {
        println!(
            "  unreadable, left for `repair packs` or prune: data/{}: {e}",
            short_path(id)
        );
    }
    Ok(outcome(r.damage_remains()))
}

fn short_path(id: &ocvault::id::PackId) -> String {
    let h = id.to_hex();
    format!("{}/{h}", &h[..2])
}

fn snapshots(g: &GlobalOptions, ids: Vec<String>, forget: bool, dry_run: bool) -> Result<Outcome> {
    let selection = Selection {
        ids,
        ..Selection::default()
    };
    let repo = g.open_full("repair snapshots")?;
    let r = repair::repair_snapshots(&repo, &selection, forget, dry_run, &super::command_line())?;
    super::warn_all(&r.warnings);
    let remains = r.report.iter().any(|s| s.damaged() && !s.forgotten);
    if g.json {
        let v: Vec<_> = r
            .report
            .iter()
            .map(|s| {
                json!({
                    "old": s.old.to_hex(),
                    "new": s.new.map(|n| n.to_hex()),
                    "dropped_files": s.dropped_files,
                    "emptied_dirs": s.emptied_dirs,
                    "forgotten": s.forgotten,
                })
            })
            .collect();
        super::print_json(&v);
        return Ok(outcome(remains));
    }
    for s in &r.report {
        if !s.damaged() {
            println!("{}: intact", s.old.short());
            continue;
        }
        let new = s
            .new
            .map(|n| n.short())
            .unwrap_or_else(|| "(dry run)".into());
        let forgotten = if s.forgotten {
            ", original forgotten"
        } else {
            ""
        };
        println!(
            "{} -> {new}: {} files dropped, {} folders emptied{forgotten}",
            s.old.short(),
            s.dropped_files.len(),
            s.emptied_dirs.len()
        );
        for p in &s.dropped_files {
            println!("    dropped: {p}");
        }
        for p in &s.emptied_dirs {
            println!("    emptied: {p}");
        }
    }
    Ok(outcome(remains))
}

fn packs(g: &GlobalOptions, ids: &[String], dry_run: bool) -> Result<Outcome> {
    let repo = g.open_full("repair packs")?;
    let r = repair::repair_packs(&repo, ids, dry_run, &super::command_line())?;
    super::warn_all(&r.warnings);
    let r = r.report;
    if g.json {
        super::print_json(&json!({
            "dry_run": dry_run,
            "packs": r.packs.iter().map(|p| json!({
                "pack": p.pack.to_hex(),
                "listed_by": p.listed_by,
                "blobs": p.blobs,
                "kept": p.kept,
                "lost": p.lost.iter().map(|b| b.to_hex()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "blobs_stored": r.blobs_stored,
            "new_packs": r.new_packs,
        }));
        return Ok(outcome(r.damage_remains()));
    }
    for p in &r.packs {
        println!(
            "data/{}: {} blobs (from its {}), {} kept, {} lost",
            short_path(&p.pack),
            p.blobs,
            p.listed_by,
            p.kept,
            p.lost.len()
        );
    }
    if dry_run {
        println!("dry run: nothing written");
    } else {
        println!(
            "{} blobs stored in {} new packs; the damaged packs left the index (prune deletes them)",
            r.blobs_stored, r.new_packs
        );
    }
    if r.damage_remains() {
        println!("blobs were lost: run `ocvault repair snapshots` to cut the files that used them");
    }
    Ok(outcome(r.damage_remains()))
}
