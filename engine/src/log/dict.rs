//! zstd dictionaries and body compression.
//!
//! FHIR resources are small (a few hundred bytes to tens of KiB) and share
//! most of their structure, so each body is compressed on its own with a
//! dictionary trained from the store's own data. A dictionary is written to
//! the log as a record before any frame that uses it, and is named by id in
//! every record compressed with it, so the log alone is enough to read it
//! back. Compression and decompression contexts are kept per thread.
//!
//! On an encrypted store (one with [`DataKeys`]) every body and every
//! dictionary is sealed after compression and opened before
//! decompression here, so nothing else in the engine handles a sealed
//! byte: the log stores ciphertext, the rest sees plaintext in memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use zstd::zstd_safe::{self, CCtx, CDict, DCtx, DDict};

use crate::crypt::datakeys::DataKeys;
use crate::error::{Error, Result};
use crate::limits::{DICTIONARIES_MAX, DICTIONARY_BYTES_MAX};
use crate::log::record::BodyCodec;

/// Bodies shorter than this are stored raw: zstd cannot win on them.
const COMPRESS_MIN_BYTES: usize = 64;
/// Samples longer than this are cut before training (zstd trains on prefixes well).
pub(crate) const SAMPLE_BYTES_MAX: usize = 16 * 1024;
/// One body in this many is kept as a training sample (the training
/// still waits for `train_after_bytes` of bodies).
pub(crate) const SAMPLE_STRIDE: u64 = 2;

/// One dictionary, prepared for both directions.
pub(crate) struct Dictionary {
    pub(crate) id: u32,
    cdict: CDict<'static>,
    ddict: DDict<'static>,
}

impl Dictionary {
    pub(crate) fn new(id: u32, bytes: &[u8], level: i32) -> Result<Self> {
        assert!(id != 0, "dictionary id 0 means no dictionary");
        if bytes.len() > DICTIONARY_BYTES_MAX as usize {
            return Err(Error::Corrupt(format!(
                "dictionary {id} of {} bytes exceeds {DICTIONARY_BYTES_MAX}",
                bytes.len()
            )));
        }
        // zstd copies the dictionary into both prepared forms.
        let cdict = CDict::try_create(bytes, level)
            .ok_or_else(|| Error::Corrupt(format!("zstd refused dictionary {id}")))?;
        let ddict = DDict::try_create(bytes)
            .ok_or_else(|| Error::Corrupt(format!("zstd refused dictionary {id}")))?;
        Ok(Self { id, cdict, ddict })
    }
}

/// All dictionaries of a store, and the one new bodies are compressed with.
pub(crate) struct Dictionaries {
    level: i32,
    inner: RwLock<DictSet>,
    /// The store's data keys, when it is encrypted.
    keys: Option<Arc<DataKeys>>,
}

#[derive(Default)]
struct DictSet {
    by_id: HashMap<u32, Arc<Dictionary>>,
    current: Option<Arc<Dictionary>>,
}

/// A compressed (or raw) body ready to be put in a record.
pub(crate) struct Encoded {
    pub(crate) codec: BodyCodec,
    pub(crate) dict_id: u32,
    /// `stored` is sealed under a data key (after compression).
    pub(crate) sealed: bool,
    pub(crate) stored: Vec<u8>,
}

thread_local! {
    static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

impl Dictionaries {
    pub(crate) fn new(level: i32, keys: Option<Arc<DataKeys>>) -> Self {
        Self {
            level,
            inner: RwLock::new(DictSet::default()),
            keys,
        }
    }

    /// The store's data keys, when it is encrypted.
    pub(crate) fn keys(&self) -> Option<&Arc<DataKeys>> {
        self.keys.as_ref()
    }

    /// A dictionary as its record stores it: `(sealed, bytes)`.
    pub(crate) fn to_record(&self, id: u32, bytes: &[u8]) -> Result<(bool, Vec<u8>)> {
        match &self.keys {
            Some(k) => Ok((true, k.seal_dictionary(id, bytes)?)),
            None => Ok((false, bytes.to_vec())),
        }
    }

    /// Installs a dictionary as a record (or the index) stores it.
    pub(crate) fn install_stored(&self, id: u32, sealed: bool, stored: &[u8]) -> Result<()> {
        if !sealed {
            return self.install(id, stored);
        }
        if self.read().by_id.contains_key(&id) {
            return Ok(());
        }
        let keys = self.keys.as_ref().ok_or_else(|| {
            Error::Corrupt(format!(
                "dictionary {id} is sealed and the store was opened without a key-encryption key"
            ))
        })?;
        let bytes = keys
            .open_dictionary(id, stored)
            .map_err(|e| Error::Corrupt(format!("dictionary {id}: {e}")))?;
        self.install(id, &bytes)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, DictSet> {
        // A panic while holding this lock cannot leave the map half-updated
        // (insertions are single calls), so a poisoned lock is still sound.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a dictionary found in the log (or just trained) and makes it current.
    pub(crate) fn install(&self, id: u32, bytes: &[u8]) -> Result<()> {
        let mut set = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if set.by_id.contains_key(&id) {
            return Ok(());
        }
        if set.by_id.len() >= DICTIONARIES_MAX as usize {
            return Err(Error::Corrupt(format!(
                "more than {DICTIONARIES_MAX} dictionaries"
            )));
        }
        let d = Arc::new(Dictionary::new(id, bytes, self.level)?);
        set.by_id.insert(id, d.clone());
        if set.current.as_ref().is_none_or(|c| c.id < id) {
            set.current = Some(d);
        }
        Ok(())
    }

    /// The id the next trained dictionary gets.
    pub(crate) fn next_id(&self) -> u32 {
        self.read().by_id.keys().max().copied().unwrap_or(0) + 1
    }

    /// Whether any dictionary is installed.
    pub(crate) fn has_current(&self) -> bool {
        self.read().current.is_some()
    }

    /// How many dictionaries are installed.
    pub(crate) fn count(&self) -> usize {
        self.read().by_id.len()
    }

    /// Compresses a body with the current dictionary, or stores it raw when
    /// compression does not make it smaller; then seals it on an encrypted
    /// store (bound to `raw_crc`, the CRC of `body`).
    pub(crate) fn encode(
        &self,
        body: &[u8],
        raw_crc: u32,
        use_dictionary: bool,
    ) -> Result<Encoded> {
        debug_assert_eq!(crc32fast::hash(body), raw_crc);
        let mut enc = self.compress(body, use_dictionary)?;
        if let Some(keys) = &self.keys {
            enc.stored = keys.seal_body(body.len() as u32, raw_crc, &enc.stored)?;
            enc.sealed = true;
        }
        Ok(enc)
    }

    fn compress(&self, body: &[u8], use_dictionary: bool) -> Result<Encoded> {
        if body.len() < COMPRESS_MIN_BYTES {
            return Ok(raw(body));
        }
        let dict = if use_dictionary {
            self.read().current.clone()
        } else {
            None
        };
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(body.len()));
        let res = CCTX.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = CCtx::try_create();
            }
            let cctx = slot
                .as_mut()
                .ok_or_else(|| Error::Compression("cannot allocate a zstd context".into()))?;
            match &dict {
                Some(d) => cctx.compress_using_cdict(&mut out, body, &d.cdict),
                None => cctx.compress(&mut out, body, self.level),
            }
            .map_err(|code| Error::Compression(zstd_safe::get_error_name(code).to_owned()))
        });
        res?;
        if out.len() >= body.len() {
            return Ok(raw(body));
        }
        Ok(match dict {
            Some(d) => Encoded {
                codec: BodyCodec::ZstdDict,
                dict_id: d.id,
                sealed: false,
                stored: out,
            },
            None => Encoded {
                codec: BodyCodec::Zstd,
                dict_id: 0,
                sealed: false,
                stored: out,
            },
        })
    }

    /// Decodes a stored body (opening it first when `sealed`) and checks
    /// its length and CRC.
    pub(crate) fn decode(
        &self,
        codec: BodyCodec,
        dict_id: u32,
        sealed: bool,
        stored: &[u8],
        raw_len: u32,
        raw_crc: u32,
    ) -> std::result::Result<Vec<u8>, String> {
        let opened;
        let stored = match (sealed, &self.keys) {
            (false, _) => stored,
            (true, Some(keys)) => {
                opened = keys.open_body(raw_len, raw_crc, stored)?;
                &opened[..]
            }
            (true, None) => {
                return Err(
                    "the body is sealed and the store was opened without a key-encryption key"
                        .into(),
                );
            }
        };
        let body = match codec {
            BodyCodec::Raw => stored.to_vec(),
            BodyCodec::Zstd | BodyCodec::ZstdDict => {
                let dict = if codec == BodyCodec::ZstdDict {
                    Some(
                        self.read()
                            .by_id
                            .get(&dict_id)
                            .cloned()
                            .ok_or_else(|| format!("unknown dictionary {dict_id}"))?,
                    )
                } else {
                    None
                };
                let mut out = Vec::with_capacity(raw_len as usize);
                DCTX.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = DCtx::try_create();
                    }
                    let dctx = slot
                        .as_mut()
                        .ok_or_else(|| "cannot allocate a zstd context".to_owned())?;
                    match &dict {
                        Some(d) => dctx.decompress_using_ddict(&mut out, stored, &d.ddict),
                        None => dctx.decompress(&mut out, stored),
                    }
                    .map_err(|code| format!("zstd: {}", zstd_safe::get_error_name(code)))
                })?;
                out
            }
        };
        if body.len() != raw_len as usize {
            return Err(format!(
                "body decodes to {} bytes, record says {raw_len}",
                body.len()
            ));
        }
        let actual = crc32fast::hash(&body);
        if actual != raw_crc {
            return Err(format!(
                "body checksum mismatch: stored {raw_crc:#010x}, computed {actual:#010x}"
            ));
        }
        Ok(body)
    }
}

fn raw(body: &[u8]) -> Encoded {
    Encoded {
        codec: BodyCodec::Raw,
        dict_id: 0,
        sealed: false,
        stored: body.to_vec(),
    }
}

/// Trains a dictionary of at most `size` bytes from sample bodies.
pub(crate) fn train(samples: &[Vec<u8>], size: usize) -> Result<Vec<u8>> {
    assert!(size as u64 <= u64::from(DICTIONARY_BYTES_MAX));
    zstd::dict::from_samples(samples, size)
        .map_err(|e| Error::Compression(format!("dictionary training failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(i: usize) -> Vec<u8> {
        format!(
            r#"{{"resourceType":"Observation","id":"obs-{i}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}}]}},"valueQuantity":{{"value":{},"unit":"/min"}}}}"#,
            60 + i % 40
        )
        .into_bytes()
    }

    #[test]
    fn bodies_roundtrip_with_and_without_a_dictionary() {
        let d = Dictionaries::new(3, None);
        let b = body(1);
        let plain = d.encode(&b, crc32fast::hash(&b), true).expect("encodes");
        assert_eq!(plain.codec, BodyCodec::Zstd);
        let samples: Vec<_> = (0..2000).map(body).collect();
        let trained = train(&samples, 8 * 1024).expect("trains");
        d.install(1, &trained).expect("installs");
        let with = d.encode(&b, crc32fast::hash(&b), true).expect("encodes");
        assert_eq!(with.codec, BodyCodec::ZstdDict);
        assert!(with.stored.len() < plain.stored.len());
        for e in [plain, with] {
            let back = d
                .decode(
                    e.codec,
                    e.dict_id,
                    false,
                    &e.stored,
                    b.len() as u32,
                    crc32fast::hash(&b),
                )
                .expect("decodes");
            assert_eq!(back, b);
        }
    }

    #[test]
    fn a_wrong_crc_or_unknown_dictionary_is_reported() {
        let d = Dictionaries::new(3, None);
        let b = body(2);
        let e = d.encode(&b, crc32fast::hash(&b), true).expect("encodes");
        assert!(
            d.decode(e.codec, 0, false, &e.stored, b.len() as u32, 1)
                .is_err()
        );
        assert!(
            d.decode(BodyCodec::ZstdDict, 9, false, &e.stored, b.len() as u32, 0)
                .is_err()
        );
        assert!(
            d.decode(e.codec, 0, true, &e.stored, b.len() as u32, 0)
                .is_err(),
            "a sealed body without keys"
        );
    }
}
