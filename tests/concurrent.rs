//! Concurrent writers: backups never wait for each other and never spoil each other's data.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Stdio;

/// Four processes snapshot four different trees into one repository at the same moment, twice
/// over; all eight snapshots restore byte for byte and `check --read-data` passes.
#[test]
fn four_writers_at_once_twice_over() {
    const WRITERS: usize = 4;
    let repo = TestRepo::new();
    init_small_packs(&repo, 524_288);
    let trees: Vec<PathBuf> = (0..WRITERS)
        .map(|w| {
            // Each under its own parent, all named `src`: one group per host in `forget`.
            let t = repo.path(&format!("host{w}/src"));
            std::fs::create_dir_all(&t).unwrap();
            generate_tree(
                &t,
                &TreeSpec {
                    big_file_bytes: 6 << 20,
                    small_files: 150,
                    sparse_file_bytes: 0,
                    // Trees 0 and 1 are equal, so two writers store the same blobs at once.
                    seed: [100, 100, 102, 103][w],
                    ..TreeSpec::default()
                },
            );
            t
        })
        .collect();

    let mut kept: Vec<(String, PathBuf)> = Vec::new();
    for round in 0..2u64 {
        if round > 0 {
            for (w, t) in trees.iter().enumerate() {
                mutate_tree(t, 0.2, round * 10 + w as u64);
            }
        }
        let children: Vec<_> = trees
            .iter()
            .enumerate()
            .map(|(w, t)| {
                repo.cmd_std()
                    .args(["--json", "snapshot", "--host", &format!("host{w}")])
                    .arg(t)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (w, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}, writer {w}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
            let state = repo.path(&format!("state-{round}-{w}"));
            copy_tree(&trees[w], &state);
            kept.push((id, state));
        }
    }
    assert_eq!(snapshot_ids(&repo).len(), 2 * WRITERS);
    assert_check_passes(&repo, &["--read-data"]);
    for (id, state) in &kept {
        restore_and_compare(&repo, id, state, "src");
    }
}
