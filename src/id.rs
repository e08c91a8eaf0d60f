//! 32-byte identifiers: blob ids (keyed BLAKE3 of plaintext) and file names (BLAKE3 of stored bytes).

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Name of a stored file: plain BLAKE3 of its bytes, so anyone can check it without a key.
    pub fn of_stored_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
}

/// An id type that names one kind of stored file or blob; converts to and from [`Id`].
pub trait FileId:
    Copy
    + Eq
    + Ord
    + std::hash::Hash
    + fmt::Debug
    + fmt::Display
    + Send
    + Sync
    + From<Id>
    + Into<Id>
    + 'static
{
}

impl FileId for Id {}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// Declares an id type for one kind of thing: the same 32 bytes as [`Id`], encoded exactly as
/// it (`serde(transparent)`), so typed ids change no stored byte. It dereferences to [`Id`]
/// for paths, hex and short forms.
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            pub fn from_hex(s: &str) -> Option<$name> {
                Id::from_hex(s).map($name)
            }
        }

        impl From<Id> for $name {
            fn from(id: Id) -> $name {
                $name(id)
            }
        }

        impl From<$name> for Id {
            fn from(id: $name) -> Id {
                id.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = Id;
            fn deref(&self) -> &Id {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }

        impl FileId for $name {}
    };
}

typed_id!(
    /// Names a snapshot file (`snapshots/<id>`).
    SnapshotId
);
typed_id!(
    /// Names a pack (`data/<xx>/<id>`).
    PackId
);
typed_id!(
    /// Names an index file (`index/<id>`).
    IndexFileId
);

typed_id!(
    /// Names a tree blob (keyed hash of the tree's encoding).
    TreeId
);
typed_id!(
    /// Names a data blob (keyed hash of a chunk of file content).
    DataId
);
typed_id!(
    /// Names a blob that may be a tree or data (pack headers, index entries).
    BlobId
);

impl From<TreeId> for BlobId {
    fn from(id: TreeId) -> BlobId {
        BlobId(id.0)
    }
}

impl From<DataId> for BlobId {
    fn from(id: DataId) -> BlobId {
        BlobId(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_ids_encode_exactly_as_id() {
        let id = Id(std::array::from_fn(|i| i as u8 * 7));
        let plain = postcard::to_stdvec(&id).unwrap();
        assert_eq!(postcard::to_stdvec(&SnapshotId(id)).unwrap(), plain);
        assert_eq!(postcard::to_stdvec(&PackId(id)).unwrap(), plain);
        assert_eq!(postcard::to_stdvec(&IndexFileId(id)).unwrap(), plain);
        assert_eq!(postcard::to_stdvec(&TreeId(id)).unwrap(), plain);
        assert_eq!(postcard::to_stdvec(&DataId(id)).unwrap(), plain);
        assert_eq!(postcard::to_stdvec(&BlobId(id)).unwrap(), plain);
        let list = postcard::to_stdvec(&vec![Some(id), None]).unwrap();
        assert_eq!(
            postcard::to_stdvec(&vec![Some(SnapshotId(id)), None]).unwrap(),
            list
        );
        let back: PackId = postcard::from_bytes(&plain).unwrap();
        assert_eq!(back, PackId(id));
    }
}
