//! Envelope encryption, the part of encryption at rest that is settled:
//! random data keys, sealed with an AEAD (AES-256-GCM from ring, no
//! home-made cryptography), and key-encryption keys (KEKs) that wrap and
//! unwrap them behind a small trait ([`Kek`]). The local key file
//! ([`keyfile::KeyFile`]) is the first KEK; PKCS#11 modules come next.
//!
//! [`datakeys::DataKeys`] holds a store's data keys (wrapped in its
//! `data-keys` file) and seals what the log stores of resources: bodies
//! and compression dictionaries. The formats here are versioned and pinned
//! by `engine/tests/golden/wrapped_key_v1.bin`, `sealed_v1.bin` and
//! `data_keys_v1.bin`.
//!
//! **Nonces**: every seal draws a fresh 96-bit nonce from the operating
//! system's generator (read 4 KiB at a time per thread, each nonce taken
//! once) and stores it beside the ciphertext. Nothing about
//! the nonce depends on the store's state, so a crash, a torn tail cut
//! and rewritten, or a rejoin that rewrites an LSN can never repeat one
//! under the same key; a data key seals at most [`SEALS_PER_KEY_MAX`]
//! values (a collision among random nonces then has probability below
//! 2^-48), and the caller takes a new data key before that.

pub mod datakeys;
pub mod keyfile;
pub mod pkcs11;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of a data key (AES-256).
pub const DATA_KEY_BYTES: usize = 32;
/// Values one data key may seal (random nonces: a collision below 2^-48).
pub const SEALS_PER_KEY_MAX: u64 = 1 << 24;
/// The sealed format's version byte.
pub const SEALED_FORMAT: u8 = 1;
/// The wrapped-key format's version byte.
pub const WRAPPED_FORMAT: u8 = 1;
/// Bytes a seal adds to its plaintext: format, nonce, tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + 16;
/// Bytes a sealed value's data-key id takes before the sealed bytes (in
/// the log's records and the key files; see `datakeys`).
pub const KEY_ID_BYTES: usize = 8;
/// Longest KEK name.
pub const KEK_NAME_MAX: usize = 128;

/// Why a key could not be made, wrapped, unwrapped, or a value opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    /// Authentication failed: the wrong key, or the bytes were altered or
    /// truncated. Nothing is returned of them.
    #[error("cannot decrypt {what}: the wrong key, or the data was altered or truncated")]
    Rejected {
        /// What was being opened.
        what: String,
    },
    /// Bytes that are not the format they claim.
    #[error("not a {what}: {detail}")]
    Format {
        /// The format expected.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A wrapped key names a KEK (or a version of it) this one is not.
    #[error("the data key is wrapped under {wanted}, not under {have}")]
    OtherKek {
        /// The KEK and version the wrapped key names.
        wanted: String,
        /// The KEK asked to unwrap it.
        have: String,
    },
    /// A key file that cannot be used.
    #[error("key file {path}: {detail}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A key module (PKCS#11) refused or could not be reached: the key is
    /// revoked, the PIN wrong, the token or the module missing.
    #[error("key {key}: {detail}")]
    Module {
        /// Which key, on which token of which module.
        key: String,
        /// What was being done, and the module's answer.
        detail: String,
    },
    /// The system's random generator failed.
    #[error("the system's random generator failed")]
    Random,
}

/// A data key: 32 random bytes, in memory only (stored wrapped).
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; DATA_KEY_BYTES]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], CryptError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CryptError::Random)?;
    Ok(b)
}

/// Random bytes drawn from the system's generator 4 KiB at a time, per
/// thread, and handed out as nonces: one system call per 341 seals
/// instead of one per seal. Every nonce is still fresh randomness from the
/// system, never reused (each is taken from the buffer once).
const NONCE_POOL_BYTES: usize = 4096;

thread_local! {
    static NONCE_POOL: std::cell::RefCell<(usize, [u8; NONCE_POOL_BYTES])> =
        const { std::cell::RefCell::new((NONCE_POOL_BYTES, [0; NONCE_POOL_BYTES])) };
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], CryptError> {
    NONCE_POOL.with(|cell| {
        let mut pool = cell.borrow_mut();
        let (used, bytes) = &mut *pool;
        if *used + NONCE_LEN > NONCE_POOL_BYTES {
            SystemRandom::new()
                .fill(bytes)
                .map_err(|_| CryptError::Random)?;
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[*used..*used + NONCE_LEN]);
        // Taken: wipe it so it can never be handed out again.
        bytes[*used..*used + NONCE_LEN].fill(0);
        *used += NONCE_LEN;
        Ok(nonce)
    })
}

impl DataKey {
    /// A new random data key.
    pub fn random() -> Result<Self, CryptError> {
        Ok(Self(random()?))
    }

    /// A data key from its bytes (as a KEK unwraps it).
    pub fn from_bytes(b: [u8; DATA_KEY_BYTES]) -> Self {
        Self(b)
    }

    /// A data key from what a KEK unwrapped (exactly 32 bytes).
    pub fn from_unwrapped(plain: Vec<u8>) -> Result<Self, CryptError> {
        let bytes: [u8; DATA_KEY_BYTES] =
            plain.try_into().map_err(|p: Vec<u8>| CryptError::Format {
                what: "data key",
                detail: format!("{} bytes, not {DATA_KEY_BYTES}", p.len()),
            })?;
        Ok(Self(bytes))
    }

    /// The key's bytes (for a KEK to wrap).
    pub fn bytes(&self) -> &[u8; DATA_KEY_BYTES] {
        &self.0
    }

    pub(crate) fn aead(&self) -> LessSafeKey {
        // 32 bytes is AES-256-GCM's key length, so this cannot fail.
        let key = UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key");
        LessSafeKey::new(key)
    }

    /// Seals `plain`, bound to `aad` (what the value is and where it
    /// belongs: opening it under another `aad` fails): format byte, a
    /// fresh random nonce, ciphertext and tag.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        seal_into(&self.aead(), aad, plain, &mut out)?;
        Ok(out)
    }

    /// Opens what [`DataKey::seal`] made under the same `aad`; `what`
    /// names it in the error.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, CryptError> {
        open_with(&self.aead(), aad, sealed, what)
    }
}

/// Appends the sealed form of `plain` to `out` (see [`DataKey::seal`]),
/// with a prepared key.
pub(crate) fn seal_into(
    aead: &LessSafeKey,
    aad: &[u8],
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CryptError> {
    let nonce = fresh_nonce()?;
    out.reserve(plain.len() + SEAL_OVERHEAD);
    out.push(SEALED_FORMAT);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[start..],
        )
        .map_err(|_| CryptError::Format {
            what: "sealable value",
            detail: "too long for one seal".into(),
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Opens a sealed value with a prepared key (see [`DataKey::open`]).
pub(crate) fn open_with(
    aead: &LessSafeKey,
    aad: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Vec<u8>, CryptError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptError::Format {
            what: "sealed value",
            detail: format!(
                "{} bytes, fewer than the {SEAL_OVERHEAD} a seal adds",
                sealed.len()
            ),
        });
    }
    if sealed[0] != SEALED_FORMAT {
        return Err(CryptError::Format {
            what: "sealed value",
            detail: format!("format {} (this build reads {SEALED_FORMAT})", sealed[0]),
        });
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
    let mut body = sealed[1 + NONCE_LEN..].to_vec();
    let plain_len = aead
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| CryptError::Rejected { what: what.into() })?
        .len();
    body.truncate(plain_len);
    Ok(body)
}

/// A data key wrapped under a KEK: which KEK and version, and the sealed
/// key. Stored beside the data it protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The KEK's name.
    pub kek: String,
    /// The KEK's version that wrapped it.
    pub version: u32,
    /// The data key, sealed.
    pub sealed: Vec<u8>,
}

impl WrappedKey {
    /// The explicit encoding: format byte, name length (u16 LE) and name,
    /// version (u32 LE), sealed length (u16 LE) and the sealed key.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.kek.len() <= KEK_NAME_MAX,
            "KEK names are checked when made"
        );
        let mut out = vec![WRAPPED_FORMAT];
        out.extend_from_slice(&(self.kek.len() as u16).to_le_bytes());
        out.extend_from_slice(self.kek.as_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.sealed.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Reads [`WrappedKey::encode`]'s bytes; every length is checked.
    pub fn decode(b: &[u8]) -> Result<Self, CryptError> {
        let bad = |detail: String| CryptError::Format {
            what: "wrapped data key",
            detail,
        };
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], CryptError> {
            let s = b
                .get(at..at + n)
                .ok_or_else(|| bad(format!("ends at byte {} of {} needed", b.len(), at + n)))?;
            at += n;
            Ok(s)
        };
        let format = take(1)?[0];
        if format != WRAPPED_FORMAT {
            return Err(bad(format!(
                "format {format} (this build reads {WRAPPED_FORMAT})"
            )));
        }
        let u16_at = |s: &[u8]| usize::from(u16::from_le_bytes([s[0], s[1]]));
        let name_len = u16_at(take(2)?);
        if name_len == 0 || name_len > KEK_NAME_MAX {
            return Err(bad(format!("a KEK name of {name_len} bytes")));
        }
        let kek = std::str::from_utf8(take(name_len)?)
            .map_err(|_| bad("a KEK name that is not UTF-8".into()))?
            .to_owned();
        let v = take(4)?;
        let version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        let sealed_len = u16_at(take(2)?);
        let sealed = take(sealed_len)?.to_vec();
        if at != b.len() {
            return Err(bad(format!("{} bytes after the end", b.len() - at)));
        }
        Ok(Self {
            kek,
            version,
            sealed,
        })
    }
}

/// Where a KEK lives, as a setting or a flag gives it:
/// `pkcs11:module=PATH;token=LABEL;key=NAME`, or a key file
/// (`file:PATH`, or a plain path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekLocator {
    /// A local key file.
    File(std::path::PathBuf),
    /// A key on a PKCS#11 token.
    Pkcs11(pkcs11::Pkcs11Locator),
}

impl KekLocator {
    /// Reads a locator.
    pub fn parse(s: &str) -> Result<Self, CryptError> {
        if let Some(rest) = s.strip_prefix("pkcs11:") {
            return Ok(Self::Pkcs11(pkcs11::Pkcs11Locator::parse(rest)?));
        }
        let path = s.strip_prefix("file:").unwrap_or(s);
        if path.is_empty() {
            return Err(CryptError::Format {
                what: "key locator",
                detail: "empty: a key file's path, or pkcs11:module=…;token=…;key=…".into(),
            });
        }
        Ok(Self::File(path.into()))
    }

    /// After a KEK failed: makes the next [`KekLocator::open`] look for it
    /// anew (a PKCS#11 module is initialised again, ending its sessions;
    /// a key file is read anew by every open anyway).
    pub fn reconnect(&self) -> Result<(), CryptError> {
        match self {
            Self::File(_) => Ok(()),
            Self::Pkcs11(at) => pkcs11::reinitialize(at),
        }
    }

    /// Opens the KEK (a PKCS#11 token needs its user `pin`).
    pub fn open(&self, pin: Option<&str>) -> Result<Box<dyn Kek>, CryptError> {
        match self {
            Self::File(p) => Ok(Box::new(keyfile::KeyFile::load(p)?)),
            Self::Pkcs11(at) => {
                let pin = pin.ok_or_else(|| CryptError::Module {
                    key: at.key.clone(),
                    detail: "a PKCS#11 token needs its user PIN".into(),
                })?;
                Ok(Box::new(pkcs11::Pkcs11Kek::open(at, pin)?))
            }
        }
    }
}

/// A key-encryption key: wraps data keys under its newest version and
/// unwraps those wrapped under any version it still holds. Implementations
/// fail with a typed error, never panic, when the key is wrong, revoked or
/// unreachable.
pub trait Kek: Send + Sync {
    /// Its name (stored with every key it wraps).
    fn name(&self) -> &str;
    /// The version new data keys are wrapped under.
    fn current_version(&self) -> u32;
    /// Wraps `key` under the current version.
    fn wrap(&self, key: &DataKey) -> Result<WrappedKey, CryptError>;
    /// Unwraps a key this KEK wrapped (any version it holds).
    fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, CryptError>;
    /// The versions it holds, oldest first.
    fn versions(&self) -> Vec<u32>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_context() {
        let k = DataKey::random().expect("key");
        let sealed = k
            .seal(b"segment 7", b"Patient/abc family Lemke")
            .expect("seal");
        assert_eq!(sealed.len(), 24 + SEAL_OVERHEAD);
        assert!(
            !sealed.windows(5).any(|w| w == b"Lemke"),
            "no plaintext in the sealed bytes"
        );
        assert_eq!(
            k.open(b"segment 7", &sealed, "v").expect("open"),
            b"Patient/abc family Lemke"
        );
        let rejected =
            |r: Result<Vec<u8>, CryptError>| matches!(r, Err(CryptError::Rejected { .. }));
        assert!(
            rejected(k.open(b"segment 8", &sealed, "v")),
            "other context"
        );
        let other = DataKey::random().expect("key");
        assert!(
            rejected(other.open(b"segment 7", &sealed, "v")),
            "other key"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x20;
            assert!(k.open(b"segment 7", &bad, "v").is_err(), "byte {i} altered");
        }
        for n in 0..sealed.len() {
            assert!(
                k.open(b"segment 7", &sealed[..n], "v").is_err(),
                "cut at {n}"
            );
        }
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let k = DataKey::random().expect("key");
        let a = k.seal(b"", b"same").expect("seal");
        let b = k.seal(b"", b"same").expect("seal");
        assert_ne!(a, b, "fresh nonces");
    }

    #[test]
    fn wrapped_keys_round_trip_and_bad_bytes_are_named() {
        let w = WrappedKey {
            kek: "region-eu".into(),
            version: 3,
            sealed: vec![7; 60],
        };
        let bytes = w.encode();
        assert_eq!(WrappedKey::decode(&bytes), Ok(w));
        for n in 0..bytes.len() {
            assert!(WrappedKey::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(WrappedKey::decode(&long).is_err(), "trailing byte");
        let mut other = bytes;
        other[0] = 9;
        let e = WrappedKey::decode(&other).expect_err("format");
        assert!(e.to_string().contains("format 9"), "{e}");
    }
}
