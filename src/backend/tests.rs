//! The layers, alone and stacked: retry semantics, the tree-pack cache, faults over the local
//! spilling writer, and `NotFound`.

use super::storage::{DynStorage, Meta, ObjectClass, SpillFile, Storage, StorageResult};
use super::*;
use async_trait::async_trait;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counts the calls that reach it and fails the first `failures` of them with `error`.
struct Flaky {
    inner: DynStorage,
    calls: AtomicU32,
    failures: u32,
    error: fn() -> opendal::Error,
}

impl Flaky {
    fn new(inner: DynStorage, failures: u32, error: fn() -> opendal::Error) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            calls: AtomicU32::new(0),
            failures,
            error,
        })
    }

    fn count(&self) -> StorageResult<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err((self.error)());
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for Flaky {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        self.count()?;
        self.inner.read(path, range).await
    }
    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        self.count()?;
        self.inner.write(path, bytes, class).await
    }
    fn spill_file(&self, name: &str) -> Option<std::io::Result<SpillFile>> {
        self.inner.spill_file(name)
    }
    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        class: ObjectClass,
    ) -> StorageResult<()> {
        self.count()?;
        self.inner.write_spilled(path, file, class).await
    }
    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.count()?;
        self.inner.delete(path).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        self.count()?;
        self.inner.list(prefix).await
    }
    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        self.count()?;
        self.inner.stat(path).await
    }
}

fn memory() -> DynStorage {
    let op = Operator::via_iter("memory", Vec::<(String, String)>::new()).unwrap();
    Arc::new(opendal_storage::OpenDalStorage::new(op, false))
}

fn temporary() -> opendal::Error {
    opendal::Error::new(ErrorKind::Unexpected, "flaky").set_temporary()
}

fn no_space() -> opendal::Error {
    let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
    opendal::Error::new(ErrorKind::Unexpected, "write")
        .set_source(io)
        .set_temporary()
}

fn fast_retries(max_retries: u32) -> retry::RetryPolicy {
    retry::RetryPolicy {
        max_retries,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    shared_runtime().unwrap().block_on(f)
}

#[test]
fn retry_repeats_temporary_errors_up_to_its_limit() {
    let flaky = Flaky::new(memory(), 3, temporary);
    let s = retry::Retry::wrap(flaky.clone(), fast_retries(6));
    block_on(s.write("a", Bytes::from_static(b"x"), ObjectClass::Metadata)).unwrap();
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        4,
        "3 failures, then success"
    );

    let flaky = Flaky::new(memory(), 3, temporary);
    let s = retry::Retry::wrap(flaky.clone(), fast_retries(2));
    assert!(block_on(s.write("a", Bytes::from_static(b"x"), ObjectClass::Metadata)).is_err());
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3, "1 try + 2 retries");
}

#[test]
fn retry_gives_up_at_once_on_a_full_disk_and_on_permanent_errors() {
    let flaky = Flaky::new(memory(), 1, no_space);
    let s = retry::Retry::wrap(flaky.clone(), fast_retries(6));
    let e = block_on(s.write("a", Bytes::from_static(b"x"), ObjectClass::Metadata)).unwrap_err();
    assert!(is_no_space(&e));
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);

    let flaky = Flaky::new(memory(), 1, || {
        opendal::Error::new(ErrorKind::Unexpected, "permanent")
    });
    let s = retry::Retry::wrap(flaky.clone(), fast_retries(6));
    assert!(block_on(s.read("a", None)).is_err());
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
}

/// The cache reads a file whole once and serves every nearby range from it, under or over
/// the retry layer alike.
#[test]
fn tree_pack_cache_reads_a_file_once_in_any_order_of_layers() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    for cache_outside in [true, false] {
        let counter = Flaky::new(memory(), 0, temporary);
        let s: DynStorage = if cache_outside {
            cache::TreePackCache::wrap(
                retry::Retry::wrap(counter.clone(), fast_retries(2)),
                1 << 20,
            )
        } else {
            retry::Retry::wrap(
                cache::TreePackCache::wrap(counter.clone(), 1 << 20),
                fast_retries(2),
            )
        };
        block_on(s.write("p", Bytes::from(bytes.clone()), ObjectClass::Metadata)).unwrap();
        for start in [0u64, 100, 5000, 9990] {
            let got = block_on(s.read_nearby("p", 10_000, start..start + 10)).unwrap();
            assert_eq!(got, bytes[start as usize..start as usize + 10]);
        }
        // One write and one whole read reached the storage.
        assert_eq!(counter.calls.load(Ordering::SeqCst), 2);
        // A file of another size than the caller expects is never kept: each read of it
        // reads it whole, then the range.
        block_on(s.write("q", Bytes::from(bytes.clone()), ObjectClass::Metadata)).unwrap();
        for round in 1..=2 {
            let got = block_on(s.read_nearby("q", 20_000, 0..10)).unwrap();
            assert_eq!(got, bytes[..10]);
            assert_eq!(counter.calls.load(Ordering::SeqCst), 3 + 2 * round);
        }
    }
}

/// Faults sit over the local storage and its spilling writer (before, any `fault.*` option
/// turned the local writer off and `local_file` returned `None`).
#[test]
fn faults_wrap_the_local_spilling_writer() {
    let dir = tempfile::tempdir().unwrap();
    let settings = BackendSettings {
        options: [
            "fault.write=0.5",
            "fault.cut=0.5",
            "fault.seed=3",
            "retry.delay_ms=1",
        ]
        .map(String::from)
        .to_vec(),
        connections: 0,
        ..Default::default()
    };
    let backend = Backend::open_with(dir.path().to_str().unwrap(), &settings, true).unwrap();
    let (faults_before, spilled_before) = (Backend::injected_faults(), Backend::spilled_writes());
    for i in 0..8u8 {
        let mut file = backend
            .local_file()
            .expect("a local repository spills")
            .unwrap();
        let data = vec![i; 300 << 10];
        file.append(&data).unwrap();
        let path = format!("data/0{i}/pack{i}");
        backend
            .runtime()
            .block_on(backend.spawn_finish_local(file, path.clone(), ObjectClass::DataPack))
            .unwrap()
            .unwrap();
        assert_eq!(backend.read(&path).unwrap(), data);
    }
    assert!(
        Backend::injected_faults() > faults_before,
        "no fault injected"
    );
    assert!(Backend::spilled_writes() >= spilled_before + 8);
    // Every temporary file was renamed into place or removed.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_missing_file_is_not_found_on_every_storage() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["memory:", dir.path().to_str().unwrap()] {
        let backend = Backend::open(url, true).unwrap();
        for e in [
            backend.read("snapshots/none").unwrap_err(),
            backend.read_range("data/00/none", 0, 4).unwrap_err(),
            backend.modified_ns("locks/none").unwrap_err(),
        ] {
            assert!(matches!(e, Error::NotFound(_)), "{url}: {e:?}");
            assert!(is_not_found(&e));
        }
        assert!(!backend.exists("config").unwrap());
        backend.delete("snapshots/none").unwrap();
        assert!(backend.list(FileKind::Snapshot).unwrap().is_empty());
    }
}

/// Ranged reads of a local repository, made on the calling thread, and the same reads through
/// the runtime (a `fault.*` option puts the fault layer on the stack, which turns the direct
/// path off) give the same bytes and the same errors: a range past the end is refused.
#[test]
fn direct_and_layered_local_reads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let direct = Backend::open(root, true).unwrap();
    let settings = BackendSettings {
        options: vec!["fault.read=0".to_string()],
        ..Default::default()
    };
    let layered = Backend::open_with(root, &settings, true).unwrap();
    assert!(direct.direct_reads.is_some() && layered.direct_reads.is_none());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    direct
        .write("data/ab/pack", data.clone(), ObjectClass::DataPack)
        .unwrap();
    for b in [&direct, &layered] {
        assert_eq!(b.read_range("data/ab/pack", 0, 10).unwrap(), data[..10]);
        assert_eq!(
            b.read_range("data/ab/pack", 99_000, 1_000).unwrap(),
            data[99_000..]
        );
        assert!(b.read_range("data/ab/pack", 99_000, 1_001).is_err());
        assert!(is_not_found(
            &b.read_range("data/ab/none", 0, 1).unwrap_err()
        ));
    }
}

/// The local backend's own listing gives what OpenDAL's fs service gave (a plain `fs:`
/// operator on the same folder): regular files below the prefix, recursively, with sizes;
/// no folders, no symbolic links; nothing for a missing folder.
#[test]
fn local_listing_agrees_with_opendal_fs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let local = Backend::open(root, true).unwrap();
    for (path, len) in [("data/ab/p1", 3), ("data/cd/p2", 70_000), ("log/e1", 5)] {
        local
            .write(path, vec![7u8; len], ObjectClass::Metadata)
            .unwrap();
    }
    std::fs::create_dir_all(dir.path().join("data/ef")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("log/e1"), dir.path().join("log/link")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("log/folder")).unwrap();
    let op = Operator::via_iter("fs", [("root".to_string(), root.to_string())]).unwrap();
    let opendal = crate::backend::opendal_storage::OpenDalStorage::new(op, false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for prefix in ["data/", "log/", "snapshots/", "data/ab/"] {
        let mut ours = local.list_prefix(prefix).unwrap();
        let mut theirs = rt.block_on(opendal.list(prefix)).unwrap();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{prefix}");
    }
    let mut data = local.list_prefix("data/").unwrap();
    data.sort();
    assert_eq!(
        data,
        [
            ("data/ab/p1".to_string(), 3),
            ("data/cd/p2".to_string(), 70_000)
        ]
    );
}

/// Every backend of the process shares one runtime while any is open.
#[test]
fn backends_share_one_runtime() {
    let a = Backend::open("memory:", true).unwrap();
    let b = Backend::open("memory:", true).unwrap();
    assert!(Arc::ptr_eq(&a.rt, &b.rt));
}
