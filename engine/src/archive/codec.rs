//! What the archive's objects (pieces, base backup manifests) encode
//! alike: their opening (magic, format, zero flags) and their lists of
//! wrapped data keys.

use crate::crypt::WrappedKey;
use crate::error::{Error, Result};
use crate::log::codec::{Put, Reader};

/// Writes the opening: `magic`, the format, zero flags.
pub(super) fn put_opening(v: &mut Vec<u8>, magic: &[u8; 8], format: u16) {
    v.extend_from_slice(magic);
    v.put_u16(format);
    v.put_u16(0);
}

/// Reads the opening of `bytes` (an object `what` of format `format`):
/// a reader after it, or why it is not one.
pub(super) fn read_opening<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    format: u16,
    what: &str,
) -> Result<Reader<'a>> {
    let bad = |d: String| Error::Corrupt(format!("{what}: {d}"));
    if bytes.len() < magic.len() || &bytes[..magic.len()] != magic {
        return Err(bad(format!("not a Vigil {what} (magic)")));
    }
    let mut r = Reader::new(&bytes[magic.len()..]);
    let found = r.u16("format").map_err(|e| bad(e.to_string()))?;
    if found != format {
        return Err(bad(format!("format {found}; this build reads {format}")));
    }
    if r.u16("flags").map_err(|e| bad(e.to_string()))? != 0 {
        return Err(bad("unknown flags".into()));
    }
    Ok(r)
}

/// Writes a count, then per key its id, length and wrapped bytes.
pub(super) fn put_keys(v: &mut Vec<u8>, keys: &[(u64, WrappedKey)]) {
    v.put_u32(keys.len() as u32);
    for (id, w) in keys {
        let bytes = w.encode();
        v.put_u64(*id);
        v.put_u32(bytes.len() as u32);
        v.extend_from_slice(&bytes);
    }
}

/// Reads what [`put_keys`] wrote: at most `max` keys.
pub(super) fn read_keys(
    r: &mut Reader<'_>,
    max: usize,
    what: &str,
) -> Result<Vec<(u64, WrappedKey)>> {
    let bad = |d: String| Error::Corrupt(format!("{what}: {d}"));
    let dec = |e: crate::DecodeError| bad(e.to_string());
    let n = r.u32("keys").map_err(dec)? as usize;
    if n > max {
        return Err(bad(format!("{n} data keys, at most {max}")));
    }
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u64("key id").map_err(dec)?;
        let len = r.u32("key length").map_err(dec)? as usize;
        let w = WrappedKey::decode(r.take(len, "wrapped key").map_err(dec)?)
            .map_err(|e| bad(format!("data key {id:016x}: {e}")))?;
        keys.push((id, w));
    }
    Ok(keys)
}
