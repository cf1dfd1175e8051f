//! Explicit little-endian encoding helpers for every on-disk structure.
//!
//! Hand-written rather than derived so that the bytes are exactly what
//! `docs/format.md` draws, and cannot change with a dependency upgrade.
//! The [`Reader`] never panics and never allocates more than the bytes it
//! was given: every length is checked against what remains.

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Appends little-endian fields to a byte vector.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    /// LEB128: seven bits a byte, low first, the high bit set on all but
    /// the last (at most 10 bytes).
    fn put_varint(&mut self, v: u64);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }
}

/// A bounds-checked cursor over a byte slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError(format!(
                "{what}: needs {n} bytes at offset {}, only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A LEB128 varint as [`Put::put_varint`] writes it; more than 10
    /// bytes, or running past the end, is an error.
    pub(crate) fn varint(&mut self, what: &str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError(format!("{what}: varint longer than 10 bytes")))
    }

    /// Reads `n` bytes that must be UTF-8.
    pub(crate) fn str(&mut self, n: usize, what: &str) -> Result<&'a str, DecodeError> {
        let raw = self.take(n, what)?;
        std::str::from_utf8(raw).map_err(|_| DecodeError(format!("{what}: not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_overruns() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            b.put_varint(v);
            let mut r = Reader::new(&b);
            assert_eq!(r.varint("v"), Ok(v));
            assert_eq!(r.remaining(), 0);
            assert!(Reader::new(&b[..b.len() - 1]).varint("v").is_err());
        }
        assert!(Reader::new(&[0x80; 11]).varint("v").is_err());
    }

    #[test]
    fn reader_refuses_to_read_past_the_end() {
        let bytes = [1u8, 2, 3];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u16("a"), Ok(0x0201));
        assert!(r.u16("b").is_err());
        assert_eq!(r.u8("c"), Ok(3));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn put_is_little_endian() {
        let mut v = Vec::new();
        v.put_u32(0x0403_0201);
        v.put_u64(1);
        assert_eq!(v, [1, 2, 3, 4, 1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
