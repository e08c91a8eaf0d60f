//! PostgreSQL continuous archiving: WAL files stored as fixed-size blocks with one `wal/`
//! record each (`push`, `fetch`, `catalog`), base backups recognised in `snapshot --command`
//! streams (`basebackup`), the order of WAL files (`name`), continuity and retention
//! (`timeline`), and the local state beside `pg_wal` (`spool`).

pub mod basebackup;
pub mod catalog;
pub mod fetch;
pub mod name;
pub mod push;
pub mod spool;
pub mod timeline;
