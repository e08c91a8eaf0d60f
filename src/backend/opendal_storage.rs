//! Storage through an OpenDAL operator: sftp, webdav, memory, `opendal:SCHEME` (its s3 among
//! them), and deletes in local folders.

use super::storage::{Meta, ObjectClass, SpillFile, Storage, StorageResult};
use async_trait::async_trait;
use bytes::Bytes;
use opendal::{ErrorKind, Operator};
use std::ops::Range;
use std::sync::Arc;

pub struct OpenDalStorage {
    op: Operator,
    /// Whether a write must go to a temporary name and be renamed: the service may leave a
    /// half-written object under its final name when a connection drops mid-upload.
    rename_writes: bool,
}

impl OpenDalStorage {
    pub fn new(op: Operator, rename_writes: bool) -> Self {
        OpenDalStorage { op, rename_writes }
    }
}

#[async_trait]
impl Storage for OpenDalStorage {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        let buf = match range {
            None => self.op.read(path).await?,
            Some(r) => self.op.read_with(path).range(r).await?,
        };
        Ok(buf.to_vec())
    }

    /// Where the service could leave half an object under its final name, the bytes go to
    /// tmp/ first and are renamed into place.
    async fn write(&self, path: &str, bytes: Bytes, _class: ObjectClass) -> StorageResult<()> {
        if !self.rename_writes {
            return self.op.write(path, bytes).await.map(|_| ());
        }
        let tmp = format!("tmp/{}", hex::encode(crate::crypto::random_bytes::<12>()));
        let res = async {
            self.op.write(&tmp, bytes).await?;
            self.op.rename(&tmp, path).await
        }
        .await;
        if res.is_err() {
            let _ = self.op.delete(&tmp).await;
        }
        res
    }

    fn spill_file(&self, _name: &str) -> Option<std::io::Result<SpillFile>> {
        None
    }

    /// Uploads a spilled file's bytes (layers above may hand one over from a local storage).
    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        class: ObjectClass,
    ) -> StorageResult<()> {
        self.write(path, file.read_all().await?, class).await
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.op.delete(path).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            // Some services list the folder itself, or folders, among the entries.
            if !e.metadata().is_file() || e.path().ends_with('/') {
                continue;
            }
            let mut size = e.metadata().content_length();
            if size == 0 {
                // Some services do not report sizes in listings.
                size = self
                    .op
                    .stat(e.path())
                    .await
                    .map_or(0, |m| m.content_length());
            }
            out.push((e.path().to_string(), size));
        }
        Ok(out)
    }

    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        let meta = self.op.stat(path).await?;
        Ok(Meta {
            size: meta.content_length(),
            modified_ns: meta
                .last_modified()
                .map(|t| t.into_inner().as_nanosecond() as i64),
        })
    }
}
