//! Log records: the logical content of a frame's payload.
//!
//! A record is a kind byte followed by a kind-specific body, all fields
//! explicit little-endian (see `docs/format.md`). Each record has an LSN,
//! implicit from its frame's first LSN and its position in the frame.
//! Decoding borrows from the payload ([`RecordRef`]) so that recovery and
//! index rebuilds allocate nothing per record.

use crate::limits::{
    CHECKPOINT_WATERMARKS_MAX, DICTIONARY_BYTES_MAX, ID_BYTES_MAX, TYPE_BYTES_MAX,
    WATERMARK_NAME_BYTES_MAX,
};
use crate::log::codec::{DecodeError, Put, Reader};

/// Bytes sealing adds to a dictionary: the key id and the seal's own.
const SEALED_DICTIONARY_OVERHEAD: usize = crate::crypt::KEY_ID_BYTES + crate::crypt::SEAL_OVERHEAD;

const KIND_RESOURCE: u8 = 1;
const KIND_EPOCH_START: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;
const KIND_DICTIONARY: u8 = 4;
const KIND_REKEY: u8 = 5;
const KIND_SEALED_DICTIONARY: u8 = 6;
/// The bit of a resource record's codec byte that says its body is sealed
/// under a data key (`crate::crypt::datakeys`).
const CODEC_SEALED: u8 = 0x80;
/// Dictionary ids stay below this (the index keeps a sealed dictionary
/// under its id with this bit set).
pub(crate) const DICTIONARY_ID_LIMIT: u32 = 1 << 31;

/// What a resource version did to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// The first version of a resource (or the first after a purge; never today).
    Create = 1,
    /// A new live version of an existing resource, also after a delete.
    Update = 2,
    /// A tombstone: the resource is deleted as of this version.
    Delete = 3,
}

impl OpKind {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(Self::Create),
            2 => Ok(Self::Update),
            3 => Ok(Self::Delete),
            other => Err(DecodeError(format!("unknown resource op {other}"))),
        }
    }
}

/// How a record's body bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCodec {
    /// Stored as given.
    Raw = 0,
    /// zstd without a dictionary.
    Zstd = 1,
    /// zstd with the dictionary named by the record's `dict_id`.
    ZstdDict = 2,
}

impl BodyCodec {
    pub(crate) fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Self::Raw),
            1 => Ok(Self::Zstd),
            2 => Ok(Self::ZstdDict),
            other => Err(DecodeError(format!("unknown body codec {other}"))),
        }
    }
}

/// A resource version as stored in the log, borrowing its strings and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceRef<'a> {
    /// Create, update or delete.
    pub op: OpKind,
    /// How `stored` is encoded.
    pub codec: BodyCodec,
    /// The resource type, e.g. `Patient`.
    pub resource_type: &'a str,
    /// The resource id, unique within its type.
    pub id: &'a str,
    /// The version number, 1 for the first version of the resource.
    pub version: u64,
    /// The dictionary used when `codec` is [`BodyCodec::ZstdDict`], else 0.
    pub dict_id: u32,
    /// Length of the body once decoded.
    pub raw_len: u32,
    /// CRC32 of the decoded body: checked on every read.
    pub raw_crc: u32,
    /// `stored` is sealed under a data key (the store is encrypted): its
    /// first 8 bytes name the key, the rest is the sealed compressed body.
    pub sealed: bool,
    /// The body as stored (empty for a delete).
    pub stored: &'a [u8],
}

/// A named replication watermark recorded in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// Who the watermark belongs to (a follower's node name).
    pub name: String,
    /// The highest LSN durable on that node.
    pub durable_lsn: u64,
}

/// One decoded record, borrowing from the frame payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordRef<'a> {
    /// A version of a resource.
    Resource(ResourceRef<'a>),
    /// The first record of a new leadership term.
    EpochStart {
        /// The new epoch; equal to the frame's epoch.
        epoch: u64,
    },
    /// A checkpoint: how far the index had applied, and peers' watermarks.
    Checkpoint {
        /// The index's applied LSN when the checkpoint was written.
        index_lsn: u64,
        /// Durable watermarks of followers.
        watermarks: Vec<Watermark>,
    },
    /// A zstd dictionary that later records refer to by id.
    Dictionary {
        /// The dictionary's id, unique in the store, 1..2^31.
        id: u32,
        /// `bytes` are sealed under a data key (the store is encrypted).
        sealed: bool,
        /// The dictionary's bytes as stored.
        bytes: &'a [u8],
    },
    /// Re-derive the search keys of a resource's current version with the
    /// key definitions in force at this record (see
    /// [`crate::KeyExtractor::defining_type`]); no version is written. A
    /// resource that is deleted or unknown here has no keys to re-derive.
    Rekey {
        /// The resource type.
        resource_type: &'a str,
        /// The resource id.
        id: &'a str,
    },
}

impl RecordRef<'_> {
    /// The id of the data key a sealed record (a body or a dictionary) is
    /// sealed under: its stored bytes' first 8 (a record too short to hold
    /// one names none; opening it fails).
    pub(crate) fn sealed_under(&self) -> Option<u64> {
        let stored = match self {
            RecordRef::Resource(r) if r.sealed => r.stored,
            RecordRef::Dictionary {
                sealed: true,
                bytes,
                ..
            } => bytes,
            _ => return None,
        };
        let id = stored.get(..crate::crypt::KEY_ID_BYTES)?;
        Some(u64::from_le_bytes(id.try_into().ok()?))
    }
}

/// Encodes a resource record. The caller has validated names and sizes.
pub(crate) fn put_resource(out: &mut Vec<u8>, r: &ResourceRef<'_>) {
    debug_assert!(r.resource_type.len() <= TYPE_BYTES_MAX && !r.resource_type.is_empty());
    debug_assert!(r.id.len() <= ID_BYTES_MAX && !r.id.is_empty());
    let stored_len = u32::try_from(r.stored.len()).unwrap_or(u32::MAX);
    out.put_u8(KIND_RESOURCE);
    out.put_u8(r.op as u8);
    out.put_u8(r.codec as u8 | if r.sealed { CODEC_SEALED } else { 0 });
    out.put_u8(r.resource_type.len() as u8);
    out.put_u8(r.id.len() as u8);
    out.put_u64(r.version);
    out.put_u32(r.dict_id);
    out.put_u32(r.raw_len);
    out.put_u32(r.raw_crc);
    out.put_u32(stored_len);
    out.extend_from_slice(r.resource_type.as_bytes());
    out.extend_from_slice(r.id.as_bytes());
    out.extend_from_slice(r.stored);
}

/// Encodes any record, appending to `out` (public for golden tests and tools).
#[cfg(feature = "internals")]
pub fn encode(out: &mut Vec<u8>, record: &RecordRef<'_>) {
    put_record(out, record);
}

/// The CRC32 the engine stores for a body (`raw_crc`).
#[cfg(feature = "internals")]
pub fn body_crc(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

/// Encodes any record.
pub(crate) fn put_record(out: &mut Vec<u8>, record: &RecordRef<'_>) {
    match record {
        RecordRef::Resource(r) => put_resource(out, r),
        RecordRef::EpochStart { epoch } => {
            out.put_u8(KIND_EPOCH_START);
            out.put_u64(*epoch);
        }
        RecordRef::Checkpoint {
            index_lsn,
            watermarks,
        } => {
            assert!(watermarks.len() <= CHECKPOINT_WATERMARKS_MAX);
            out.put_u8(KIND_CHECKPOINT);
            out.put_u64(*index_lsn);
            out.put_u8(watermarks.len() as u8);
            for w in watermarks {
                assert!(w.name.len() <= WATERMARK_NAME_BYTES_MAX);
                out.put_u8(w.name.len() as u8);
                out.extend_from_slice(w.name.as_bytes());
                out.put_u64(w.durable_lsn);
            }
        }
        RecordRef::Dictionary { id, sealed, bytes } => {
            assert!(bytes.len() <= DICTIONARY_BYTES_MAX as usize + SEALED_DICTIONARY_OVERHEAD);
            assert!(*id != 0 && *id < DICTIONARY_ID_LIMIT);
            out.put_u8(match sealed {
                true => KIND_SEALED_DICTIONARY,
                false => KIND_DICTIONARY,
            });
            out.put_u32(*id);
            out.put_u32(bytes.len() as u32);
            out.extend_from_slice(bytes);
        }
        RecordRef::Rekey { resource_type, id } => {
            debug_assert!(resource_type.len() <= TYPE_BYTES_MAX && !resource_type.is_empty());
            debug_assert!(id.len() <= ID_BYTES_MAX && !id.is_empty());
            out.put_u8(KIND_REKEY);
            out.put_u8(resource_type.len() as u8);
            out.put_u8(id.len() as u8);
            out.extend_from_slice(resource_type.as_bytes());
            out.extend_from_slice(id.as_bytes());
        }
    }
}

/// Decodes the record at the reader's position.
///
/// Returns the record and, for a resource, the offset of its stored body
/// relative to the start of the reader's slice (the index stores it).
pub(crate) fn read_record<'a>(r: &mut Reader<'a>) -> Result<(RecordRef<'a>, usize), DecodeError> {
    let kind = r.u8("record kind")?;
    match kind {
        KIND_RESOURCE => {
            let op = OpKind::from_u8(r.u8("op")?)?;
            let codec_byte = r.u8("codec")?;
            let sealed = codec_byte & CODEC_SEALED != 0;
            let codec = BodyCodec::from_u8(codec_byte & !CODEC_SEALED)?;
            let type_len = r.u8("type length")? as usize;
            let id_len = r.u8("id length")? as usize;
            let version = r.u64("version")?;
            let dict_id = r.u32("dictionary id")?;
            let raw_len = r.u32("raw length")?;
            let raw_crc = r.u32("raw crc")?;
            let stored_len = r.u32("stored length")? as usize;
            if type_len == 0 || type_len > TYPE_BYTES_MAX || id_len == 0 || id_len > ID_BYTES_MAX {
                return Err(DecodeError(format!(
                    "resource name lengths out of range (type {type_len}, id {id_len})"
                )));
            }
            if version == 0 {
                return Err(DecodeError("resource version 0".into()));
            }
            if (codec == BodyCodec::ZstdDict) != (dict_id != 0) {
                return Err(DecodeError(format!(
                    "codec {codec:?} with dictionary id {dict_id}"
                )));
            }
            if op == OpKind::Delete && (stored_len != 0 || raw_len != 0) {
                return Err(DecodeError("a delete carries a body".into()));
            }
            let resource_type = r.str(type_len, "resource type")?;
            let id = r.str(id_len, "resource id")?;
            let body_offset = r.position();
            let stored = r.take(stored_len, "resource body")?;
            if codec == BodyCodec::Raw && !sealed && stored.len() != raw_len as usize {
                return Err(DecodeError("raw body length mismatch".into()));
            }
            if sealed && op == OpKind::Delete {
                return Err(DecodeError("a sealed delete".into()));
            }
            Ok((
                RecordRef::Resource(ResourceRef {
                    op,
                    codec,
                    resource_type,
                    id,
                    version,
                    dict_id,
                    raw_len,
                    raw_crc,
                    sealed,
                    stored,
                }),
                body_offset,
            ))
        }
        KIND_EPOCH_START => Ok((
            RecordRef::EpochStart {
                epoch: r.u64("epoch")?,
            },
            0,
        )),
        KIND_CHECKPOINT => {
            let index_lsn = r.u64("index lsn")?;
            let count = r.u8("watermark count")? as usize;
            if count > CHECKPOINT_WATERMARKS_MAX {
                return Err(DecodeError(format!("{count} watermarks")));
            }
            let mut watermarks = Vec::with_capacity(count);
            for _ in 0..count {
                let len = r.u8("watermark name length")? as usize;
                if len > WATERMARK_NAME_BYTES_MAX {
                    return Err(DecodeError(format!("watermark name of {len} bytes")));
                }
                let name = r.str(len, "watermark name")?.to_owned();
                let durable_lsn = r.u64("watermark lsn")?;
                watermarks.push(Watermark { name, durable_lsn });
            }
            Ok((
                RecordRef::Checkpoint {
                    index_lsn,
                    watermarks,
                },
                0,
            ))
        }
        KIND_DICTIONARY | KIND_SEALED_DICTIONARY => {
            let sealed = kind == KIND_SEALED_DICTIONARY;
            let id = r.u32("dictionary id")?;
            let len = r.u32("dictionary length")?;
            let len_max = DICTIONARY_BYTES_MAX
                + if sealed {
                    SEALED_DICTIONARY_OVERHEAD as u32
                } else {
                    0
                };
            if id == 0 || id >= DICTIONARY_ID_LIMIT || len > len_max {
                return Err(DecodeError(format!("dictionary {id} of {len} bytes")));
            }
            let bytes = r.take(len as usize, "dictionary")?;
            Ok((RecordRef::Dictionary { id, sealed, bytes }, 0))
        }
        KIND_REKEY => {
            let type_len = r.u8("type length")? as usize;
            let id_len = r.u8("id length")? as usize;
            if type_len == 0 || type_len > TYPE_BYTES_MAX || id_len == 0 || id_len > ID_BYTES_MAX {
                return Err(DecodeError(format!(
                    "rekey name lengths out of range (type {type_len}, id {id_len})"
                )));
            }
            let resource_type = r.str(type_len, "resource type")?;
            let id = r.str(id_len, "resource id")?;
            Ok((RecordRef::Rekey { resource_type, id }, 0))
        }
        other => Err(DecodeError(format!("unknown record kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(rec: RecordRef<'_>) {
        let mut buf = Vec::new();
        put_record(&mut buf, &rec);
        let mut r = Reader::new(&buf);
        let (back, _) = read_record(&mut r).expect("decodes");
        assert_eq!(back, rec);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn every_kind_roundtrips() {
        roundtrip(RecordRef::Resource(ResourceRef {
            op: OpKind::Update,
            codec: BodyCodec::Raw,
            resource_type: "Patient",
            id: "p-1",
            version: 7,
            dict_id: 0,
            raw_len: 2,
            raw_crc: crc32fast::hash(b"{}"),
            sealed: false,
            stored: b"{}",
        }));
        roundtrip(RecordRef::Resource(ResourceRef {
            op: OpKind::Create,
            codec: BodyCodec::Zstd,
            resource_type: "Patient",
            id: "p-2",
            version: 1,
            dict_id: 0,
            raw_len: 400,
            raw_crc: 7,
            sealed: true,
            stored: &[9; 80],
        }));
        roundtrip(RecordRef::EpochStart { epoch: 3 });
        roundtrip(RecordRef::Checkpoint {
            index_lsn: 9,
            watermarks: vec![Watermark {
                name: "east".into(),
                durable_lsn: 8,
            }],
        });
        roundtrip(RecordRef::Dictionary {
            id: 1,
            sealed: false,
            bytes: b"dict",
        });
        roundtrip(RecordRef::Dictionary {
            id: 2,
            sealed: true,
            bytes: &[3; 70],
        });
        roundtrip(RecordRef::Rekey {
            resource_type: "Patient",
            id: "p-1",
        });
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let mut buf = Vec::new();
        put_record(&mut buf, &RecordRef::EpochStart { epoch: 3 });
        for cut in 0..buf.len() {
            assert!(read_record(&mut Reader::new(&buf[..cut])).is_err());
        }
    }
}
