//! A store's data keys: the `data-keys` file, where each key is kept
//! wrapped under the store's key-encryption key, and the unwrapped keys in
//! memory that seal what the log stores of resources (bodies and
//! compression dictionaries) and open it again.
//!
//! **Invariants.** A data key is durable in the file, wrapped, before
//! anything sealed under it is written, so the file always holds the key
//! of every sealed byte of the log (a crash can tear only the last entry,
//! whose key sealed nothing; open cuts it). A key seals at most
//! [`SEALS_PER_KEY_MAX`] values; a new key is taken before. Keys are named
//! by random 64-bit ids, so two leaders of one cluster (before and after a
//! failover) never name different keys alike. Plaintext keys exist only in
//! memory.
//!
//! The file (`docs/format.md` draws it; `engine/tests/golden/data_keys_v1.bin`
//! pins it): a 16-byte header (`VGDATKEY`, format u16, reserved u16, CRC-32
//! of the first 12 bytes), then entries: length u32 of what follows the
//! CRC, CRC-32 u32 of it, key id u64, creation time u64 (µs since the Unix
//! epoch), and the [`WrappedKey`]. Keys are appended (write, fdatasync); a
//! re-wrap under a new KEK version writes the whole file anew (temporary
//! file, fsync, rename, directory fsync).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ring::aead::LessSafeKey;

use crate::crypt::{CryptError, DataKey, Kek, SEALS_PER_KEY_MAX, WrappedKey, open_with, seal_into};
use crate::error::{Error, Result};

/// The file's name in the store directory.
pub const DATA_KEYS_FILE: &str = "data-keys";
/// The file format this build writes and reads.
pub const DATA_KEYS_VERSION: u16 = 1;
/// Most data keys one store holds (a new key per 64 MiB segment: 6 PiB).
pub const DATA_KEYS_MAX: usize = 100_000;
pub use super::KEY_ID_BYTES;
/// What a quarantine's sealed `versions.ndjson.sealed` is bound to (with
/// the first LSN it holds): see [`DataKeys::seal_value`].
pub const QUARANTINE_DOMAIN: &[u8] = b"vigil quarantine";
const MAGIC: [u8; 8] = *b"VGDATKEY";
const HEADER_BYTES: usize = 16;
/// Longest entry (a wrapped key is about 200 bytes).
const ENTRY_BYTES_MAX: usize = 4096;
/// Bytes of an entry before its wrapped key: length, CRC, id, time.
const ENTRY_FIXED_BYTES: usize = 4 + 4 + 8 + 8;

/// One data key as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's id, random, never 0.
    pub id: u64,
    /// When it was made, µs since the Unix epoch.
    pub created_us: u64,
    /// The key, wrapped under a KEK.
    pub wrapped: WrappedKey,
}

impl KeyEntry {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let wrapped = self.wrapped.encode();
        let mut body = Vec::with_capacity(16 + wrapped.len());
        body.extend_from_slice(&self.id.to_le_bytes());
        body.extend_from_slice(&self.created_us.to_le_bytes());
        body.extend_from_slice(&wrapped);
        assert!(
            ENTRY_FIXED_BYTES - 8 + body.len() <= ENTRY_BYTES_MAX,
            "wrapped keys are bounded"
        );
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
}

/// What a data-keys file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysFile {
    /// Its entries, in the order written.
    pub entries: Vec<KeyEntry>,
    /// Bytes of whole, valid entries (with the header); less than the
    /// file's length when its last entry is torn.
    pub valid_len: u64,
}

/// Encodes a whole data-keys file.
pub fn encode_file(entries: &[KeyEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + entries.len() * 256);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&DATA_KEYS_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for e in entries {
        e.encode_into(&mut out);
    }
    out
}

/// Decodes a data-keys file. A last entry cut short or failing its CRC
/// with nothing after it is a torn append (its key sealed nothing) and
/// is left out, `valid_len` saying where it began; any other damage is an
/// error.
pub fn decode_file(b: &[u8]) -> std::result::Result<KeysFile, CryptError> {
    let bad = |detail: String| CryptError::Format {
        what: "data-keys file",
        detail,
    };
    if b.len() < HEADER_BYTES {
        return Err(bad(format!("{} bytes, shorter than its header", b.len())));
    }
    if b[..8] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != DATA_KEYS_VERSION {
        return Err(bad(format!(
            "format {version} (this build reads {DATA_KEYS_VERSION})"
        )));
    }
    let stored_crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    if crc32fast::hash(&b[..12]) != stored_crc || b[10..12] != [0, 0] {
        return Err(bad("header checksum mismatch".into()));
    }
    let mut entries = Vec::new();
    let mut at = HEADER_BYTES;
    while at < b.len() {
        let torn = |entries: Vec<KeyEntry>| KeysFile {
            entries,
            valid_len: at as u64,
        };
        let Some(head) = b.get(at..at + 8) else {
            return Ok(torn(entries));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(16..=ENTRY_BYTES_MAX).contains(&len) {
            if b[at..].iter().all(|x| *x == 0) {
                return Ok(torn(entries));
            }
            return Err(bad(format!("an entry of {len} bytes at offset {at}")));
        }
        let Some(body) = b.get(at + 8..at + 8 + len) else {
            return Ok(torn(entries));
        };
        if crc32fast::hash(body) != crc {
            if at + 8 + len == b.len() {
                return Ok(torn(entries));
            }
            return Err(bad(format!("entry checksum mismatch at offset {at}")));
        }
        if entries.len() >= DATA_KEYS_MAX {
            return Err(bad(format!("more than {DATA_KEYS_MAX} keys")));
        }
        let id = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let created_us = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
        if id == 0 {
            return Err(bad(format!("key id 0 at offset {at}")));
        }
        let wrapped = WrappedKey::decode(&body[16..])?;
        entries.push(KeyEntry {
            id,
            created_us,
            wrapped,
        });
        at += 8 + len;
    }
    Ok(KeysFile {
        entries,
        valid_len: at as u64,
    })
}

/// An unwrapped data key, prepared for sealing.
struct Unwrapped {
    id: u64,
    key: DataKey,
    aead: LessSafeKey,
    seals: AtomicU64,
}

struct State {
    by_id: HashMap<u64, Arc<Unwrapped>>,
    entries: Vec<KeyEntry>,
    /// What new values are sealed under (set by `open` before it returns).
    current: Option<Arc<Unwrapped>>,
}

/// What `vigil keys status` shows of one data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyStatus {
    /// The key's id.
    pub id: u64,
    /// When it was made (µs since the Unix epoch).
    pub created_us: u64,
    /// The KEK and version it is wrapped under.
    pub kek: String,
    /// That KEK's version.
    pub kek_version: u32,
    /// Whether new values are sealed under it.
    pub current: bool,
}

/// The data keys of one store, unwrapped, and its `data-keys` file.
pub struct DataKeys {
    /// Wraps new keys; replaced by a re-wrap under another KEK.
    kek: RwLock<Arc<dyn Kek>>,
    path: PathBuf,
    state: RwLock<State>,
    /// Serialises changes to the file (a new key, a re-wrap); `None`
    /// after a failed fsync of it.
    file: Mutex<Option<File>>,
    /// Held by the one caller that replaces an exhausted key.
    rotating: Mutex<()>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("kek", &self.kek().name())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn crypt(context: impl Into<String>) -> impl FnOnce(CryptError) -> Error {
    let context = context.into();
    move |source| Error::Crypt { context, source }
}

fn prepare(id: u64, key: DataKey) -> Arc<Unwrapped> {
    Arc::new(Unwrapped {
        id,
        aead: key.aead(),
        key,
        seals: AtomicU64::new(0),
    })
}

fn new_id(taken: &HashMap<u64, Arc<Unwrapped>>) -> Result<u64> {
    loop {
        let id = u64::from_le_bytes(crate::crypt::random().map_err(crypt("a new data key"))?);
        if id != 0 && !taken.contains_key(&id) {
            return Ok(id);
        }
    }
}

/// The associated data of a sealed body: what it is, and the key id,
/// length and CRC of the plaintext body its record names.
fn body_aad(key_id: u64, raw_len: u32, raw_crc: u32) -> [u8; 32] {
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(b"vigil body v1\0\0\0");
    aad[16..24].copy_from_slice(&key_id.to_le_bytes());
    aad[24..28].copy_from_slice(&raw_len.to_le_bytes());
    aad[28..].copy_from_slice(&raw_crc.to_le_bytes());
    aad
}

fn dictionary_aad(key_id: u64, dict_id: u32) -> [u8; 28] {
    let mut aad = [0u8; 28];
    aad[..16].copy_from_slice(b"vigil dict v1\0\0\0");
    aad[16..24].copy_from_slice(&key_id.to_le_bytes());
    aad[24..].copy_from_slice(&dict_id.to_le_bytes());
    aad
}

/// The associated data of a value of the store's derived files: `domain`
/// (what it is, zero-padded to 16 bytes), the key id, and `at` (where it
/// belongs).
fn value_aad(domain: &[u8], key_id: u64, at: u64) -> [u8; 32] {
    assert!(domain.len() <= 16, "a domain fits 16 bytes");
    let mut aad = [0u8; 32];
    aad[..domain.len()].copy_from_slice(domain);
    aad[16..24].copy_from_slice(&key_id.to_le_bytes());
    aad[24..].copy_from_slice(&at.to_le_bytes());
    aad
}

/// Splits a sealed value into its key id and the sealed bytes.
fn split(stored: &[u8]) -> std::result::Result<(u64, &[u8]), String> {
    if stored.len() < KEY_ID_BYTES {
        return Err(format!("a sealed value of {} bytes", stored.len()));
    }
    let id = u64::from_le_bytes(stored[..KEY_ID_BYTES].try_into().expect("8 bytes"));
    Ok((id, &stored[KEY_ID_BYTES..]))
}

impl DataKeys {
    /// Whether the store in `dir` has a data-keys file (is encrypted).
    pub fn present(dir: &Path) -> bool {
        dir.join(DATA_KEYS_FILE).exists()
    }

    /// Opens the data keys of the store in `dir` under `kek`, unwrapping
    /// every one (a KEK that cannot: [`Error::Crypt`] naming it, nothing
    /// changed), starting the file when there is none, and takes a new
    /// key for what is sealed from now on. A torn last entry is cut.
    pub fn open(dir: &Path, kek: Arc<dyn Kek>) -> Result<Self> {
        let path = dir.join(DATA_KEYS_FILE);
        let (entries, by_id) = match std::fs::read(&path) {
            Ok(bytes) => {
                let file =
                    decode_file(&bytes).map_err(crypt(format!("reading {}", path.display())))?;
                let mut by_id = HashMap::with_capacity(file.entries.len());
                for e in &file.entries {
                    let key = kek.unwrap(&e.wrapped).map_err(crypt(format!(
                        "unwrapping data key {:016x} with key-encryption key {}",
                        e.id,
                        kek.name()
                    )))?;
                    if by_id.insert(e.id, prepare(e.id, key)).is_some() {
                        return Err(Error::Corrupt(format!(
                            "{}: data key {:016x} appears twice",
                            path.display(),
                            e.id
                        )));
                    }
                }
                if file.valid_len < bytes.len() as u64 {
                    tracing::warn!(
                        path = %path.display(),
                        cut = bytes.len() as u64 - file.valid_len,
                        "cutting a torn last data key (it sealed nothing)"
                    );
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io("open data keys", &path, e))?;
                    f.set_len(file.valid_len)
                        .map_err(|e| Error::io("cut torn data key", &path, e))?;
                    f.sync_all().map_err(|source| Error::Fsync {
                        path: path.clone(),
                        source,
                    })?;
                }
                (file.entries, by_id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_whole(&path, &[])?;
                (Vec::new(), HashMap::new())
            }
            Err(e) => return Err(Error::io("read data keys", &path, e)),
        };
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open data keys", &path, e))?;
        let keys = Self {
            path,
            state: RwLock::new(State {
                by_id,
                entries,
                current: None,
            }),
            file: Mutex::new(Some(file)),
            rotating: Mutex::new(()),
            kek: RwLock::new(kek),
        };
        // A new key each open: the seal count of the newest one was lost
        // with the process that used it.
        keys.rotate()?;
        Ok(keys)
    }

    /// Opens the data keys of the store in `dir` for reading only (a tool
    /// beside a running store, e.g. reading its quarantine): every key
    /// unwrapped under `kek`, nothing written, nothing sealed.
    pub fn open_read_only(dir: &Path, kek: Arc<dyn Kek>) -> Result<Self> {
        let path = dir.join(DATA_KEYS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read data keys", &path, e))?;
        let file = decode_file(&bytes).map_err(crypt(format!("reading {}", path.display())))?;
        let mut by_id = HashMap::with_capacity(file.entries.len());
        for e in &file.entries {
            let key = kek.unwrap(&e.wrapped).map_err(crypt(format!(
                "unwrapping data key {:016x} with key-encryption key {}",
                e.id,
                kek.name()
            )))?;
            by_id.insert(e.id, prepare(e.id, key));
        }
        Ok(Self {
            path,
            state: RwLock::new(State {
                by_id,
                entries: file.entries,
                current: None,
            }),
            file: Mutex::new(None),
            rotating: Mutex::new(()),
            kek: RwLock::new(kek),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every change is one assignment under the lock: a panic cannot
        // leave it half made.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn kek(&self) -> Arc<dyn Kek> {
        self.kek.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The name of the KEK new keys are wrapped under.
    pub fn kek_name(&self) -> String {
        self.kek().name().to_owned()
    }

    /// Takes a new data key for what is sealed from now on: made, wrapped
    /// under the KEK's current version and made durable in the file before
    /// it is used. Returns its id.
    pub fn rotate(&self) -> Result<u64> {
        let key = DataKey::random().map_err(crypt("a new data key"))?;
        let id = new_id(&self.read().by_id)?;
        self.add(id, key, now_us(), true)?;
        Ok(id)
    }

    fn add(&self, id: u64, key: DataKey, created_us: u64, make_current: bool) -> Result<()> {
        let kek = self.kek();
        let wrapped = kek.wrap(&key).map_err(crypt(format!(
            "wrapping a new data key with key-encryption key {}",
            kek.name()
        )))?;
        let entry = KeyEntry {
            id,
            created_us,
            wrapped,
        };
        let mut bytes = Vec::new();
        entry.encode_into(&mut bytes);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if self.read().by_id.len() >= DATA_KEYS_MAX {
            return Err(Error::Invalid {
                what: "data keys",
                value: DATA_KEYS_MAX.to_string(),
                reason: "the store holds the most data keys it may".into(),
            });
        }
        let f = file.as_mut().ok_or(Error::Closed)?;
        f.write_all(&bytes)
            .map_err(|e| Error::io("append data key", &self.path, e))?;
        if let Err(source) = f.sync_data() {
            // The key may or may not be durable: never use it, and write
            // no more to the file (a reopen reads what is there).
            *file = None;
            return Err(Error::Fsync {
                path: self.path.clone(),
                source,
            });
        }
        let prepared = prepare(id, key);
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.by_id.insert(id, prepared.clone());
        st.entries.push(entry);
        if make_current {
            st.current = Some(prepared);
        }
        Ok(())
    }

    /// The current key, a new one first when it has sealed its most.
    fn current(&self) -> Result<Arc<Unwrapped>> {
        let current = self.read().current.clone().ok_or(Error::Closed)?;
        if current.seals.fetch_add(1, Ordering::Relaxed) < SEALS_PER_KEY_MAX {
            return Ok(current);
        }
        // Exhausted: one caller makes the next key, the others then find it.
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        if self.read().current.as_ref().map(|k| k.id) == Some(current.id) {
            self.rotate()?;
        }
        let next = self.read().current.clone().ok_or(Error::Closed)?;
        next.seals.fetch_add(1, Ordering::Relaxed);
        Ok(next)
    }

    fn key(&self, id: u64) -> std::result::Result<Arc<Unwrapped>, String> {
        self.read().by_id.get(&id).cloned().ok_or_else(|| {
            format!(
                "sealed under data key {id:016x}, which this store's data-keys file does not hold"
            )
        })
    }

    /// Seals a resource body as the log stores it (`stored`, compressed
    /// or raw), bound to the length and CRC of its plaintext: key id, then
    /// the sealed bytes.
    pub fn seal_body(&self, raw_len: u32, raw_crc: u32, stored: &[u8]) -> Result<Vec<u8>> {
        let k = self.current()?;
        let mut out = Vec::with_capacity(KEY_ID_BYTES + stored.len() + crate::crypt::SEAL_OVERHEAD);
        out.extend_from_slice(&k.id.to_le_bytes());
        seal_into(&k.aead, &body_aad(k.id, raw_len, raw_crc), stored, &mut out)
            .map_err(crypt("sealing a body"))?;
        Ok(out)
    }

    /// Opens what [`DataKeys::seal_body`] made.
    pub fn open_body(
        &self,
        raw_len: u32,
        raw_crc: u32,
        sealed: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let (id, rest) = split(sealed)?;
        let k = self.key(id)?;
        open_with(
            &k.aead,
            &body_aad(id, raw_len, raw_crc),
            rest,
            "a resource body",
        )
        .map_err(|e| e.to_string())
    }

    /// Seals a compression dictionary (trained from bodies) for its record.
    pub fn seal_dictionary(&self, dict_id: u32, bytes: &[u8]) -> Result<Vec<u8>> {
        let k = self.current()?;
        let mut out = Vec::with_capacity(KEY_ID_BYTES + bytes.len() + crate::crypt::SEAL_OVERHEAD);
        out.extend_from_slice(&k.id.to_le_bytes());
        seal_into(&k.aead, &dictionary_aad(k.id, dict_id), bytes, &mut out)
            .map_err(crypt("sealing a dictionary"))?;
        Ok(out)
    }

    /// Opens what [`DataKeys::seal_dictionary`] made.
    pub fn open_dictionary(
        &self,
        dict_id: u32,
        sealed: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let (id, rest) = split(sealed)?;
        let k = self.key(id)?;
        open_with(&k.aead, &dictionary_aad(id, dict_id), rest, "a dictionary")
            .map_err(|e| e.to_string())
    }

    /// Seals a value of the store's own derived files (a search-key run
    /// file's block or index), bound to `domain` (what it is, at most 16
    /// bytes) and `at` (where it lies): key id, then the sealed bytes.
    pub fn seal_value(&self, domain: &[u8], at: u64, plain: &[u8]) -> Result<Vec<u8>> {
        let k = self.current()?;
        let mut out = Vec::with_capacity(KEY_ID_BYTES + plain.len() + crate::crypt::SEAL_OVERHEAD);
        out.extend_from_slice(&k.id.to_le_bytes());
        seal_into(&k.aead, &value_aad(domain, k.id, at), plain, &mut out)
            .map_err(crypt("sealing a block of a file (search keys, quarantine)"))?;
        Ok(out)
    }

    /// Opens what [`DataKeys::seal_value`] made with the same `domain` and `at`.
    pub fn open_value(
        &self,
        domain: &[u8],
        at: u64,
        sealed: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let (id, rest) = split(sealed)?;
        let k = self.key(id)?;
        open_with(
            &k.aead,
            &value_aad(domain, id, at),
            rest,
            "a sealed block of a file",
        )
        .map_err(|e| e.to_string())
    }

    /// The key with this id, unwrapped (for a follower to receive over
    /// the replication link, which is mutual TLS).
    pub fn export(&self, id: u64) -> Option<DataKey> {
        self.read().by_id.get(&id).map(|k| k.key.clone())
    }

    /// The key `id` as this store's `data-keys` file holds it, wrapped
    /// under its KEK (what an archive piece carries).
    pub fn wrapped(&self, id: u64) -> Option<WrappedKey> {
        self.read()
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.wrapped.clone())
    }

    /// Adds a key another node made (a leader's, received by its
    /// follower), wrapped under this store's own KEK. Adding a key already
    /// held is nothing; a different key under a held id is refused.
    pub fn import(&self, id: u64, key: DataKey) -> Result<()> {
        if let Some(k) = self.read().by_id.get(&id) {
            if k.key == key {
                return Ok(());
            }
            return Err(Error::Corrupt(format!(
                "data key {id:016x} received differs from the one held"
            )));
        }
        if id == 0 {
            return Err(Error::Corrupt("data key id 0 received".into()));
        }
        self.add(id, key, now_us(), false)
    }

    /// Whether `kek` still unwraps this store's newest data key to the key
    /// held in memory: the check that a key-encryption key has not been
    /// revoked (or its module lost) while the store runs. Changes nothing.
    pub fn check(&self, kek: &dyn Kek) -> Result<()> {
        let (entry, held) = {
            let st = self.read();
            let Some(e) = st.entries.last().cloned() else {
                return Ok(());
            };
            let held = st.by_id.get(&e.id).map(|k| k.key.clone());
            (e, held)
        };
        let key = kek.unwrap(&entry.wrapped).map_err(crypt(format!(
            "unwrapping data key {:016x} with key-encryption key {}",
            entry.id,
            kek.name()
        )))?;
        if Some(key) != held {
            return Err(Error::Crypt {
                context: format!("key-encryption key {}", kek.name()),
                source: CryptError::Rejected {
                    what: format!("data key {:016x} (it unwraps to another key)", entry.id),
                },
            });
        }
        Ok(())
    }

    /// Whether a key with this id is held.
    pub fn holds(&self, id: u64) -> bool {
        self.read().by_id.contains_key(&id)
    }

    /// Every key: id, creation, the KEK version it is wrapped under.
    pub fn status(&self) -> Vec<DataKeyStatus> {
        let st = self.read();
        st.entries
            .iter()
            .map(|e| DataKeyStatus {
                id: e.id,
                created_us: e.created_us,
                kek: e.wrapped.kek.clone(),
                kek_version: e.wrapped.version,
                current: st.current.as_ref().is_some_and(|c| c.id == e.id),
            })
            .collect()
    }

    /// Wraps every key not under `kek`'s current version anew under it
    /// (a new version of the same KEK, or another KEK altogether),
    /// rewriting only the data-keys file (never the data), beside running
    /// writes; new keys are then wrapped under it. Returns how many keys
    /// were re-wrapped. On an error the file and the KEK in use are as
    /// they were.
    pub fn rewrap(&self, kek: Arc<dyn Kek>) -> Result<usize> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            return Err(Error::Closed);
        }
        let version = kek.current_version();
        let name = kek.name().to_owned();
        let (mut entries, by_id) = {
            let st = self.read();
            (st.entries.clone(), st.by_id.clone())
        };
        let mut changed = 0;
        for e in &mut entries {
            if e.wrapped.kek == name && e.wrapped.version == version {
                continue;
            }
            let key = &by_id
                .get(&e.id)
                .ok_or_else(|| Error::Corrupt(format!("data key {:016x} not held", e.id)))?
                .key;
            e.wrapped = kek.wrap(key).map_err(crypt(format!(
                "re-wrapping data key {:016x} with key-encryption key {name}",
                e.id
            )))?;
            changed += 1;
        }
        if changed == 0 {
            *self.kek.write().unwrap_or_else(|p| p.into_inner()) = kek;
            return Ok(0);
        }
        // Until the rename, the old file (and the old handle) stay whole;
        // after it, appends go to the new file.
        *file = None;
        write_whole(&self.path, &entries)?;
        *file = Some(
            OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io("open data keys", &self.path, e))?,
        );
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entries = entries;
        *self.kek.write().unwrap_or_else(|p| p.into_inner()) = kek;
        Ok(changed)
    }
}

/// Writes a whole data-keys file: temporary file, fsync, rename, directory fsync.
fn write_whole(path: &Path, entries: &[KeyEntry]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = encode_file(entries);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("write data keys", &tmp, e))?;
    f.write_all(&bytes)
        .map_err(|e| Error::io("write data keys", &tmp, e))?;
    f.sync_all().map_err(|source| Error::Fsync {
        path: tmp.clone(),
        source,
    })?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("replace data keys", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::log::files::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> KeyEntry {
        KeyEntry {
            id,
            created_us: 1_700_000_000_000_000 + id,
            wrapped: WrappedKey {
                kek: "eu".into(),
                version: 1,
                sealed: vec![id as u8; 61],
            },
        }
    }

    #[test]
    fn a_file_round_trips_and_a_torn_last_entry_is_left_out() {
        let entries = vec![entry(1), entry(2)];
        let bytes = encode_file(&entries);
        let whole = decode_file(&bytes).expect("decodes");
        assert_eq!(whole.entries, entries);
        assert_eq!(whole.valid_len, bytes.len() as u64);
        let first_end = encode_file(&entries[..1]).len();
        for cut in first_end..bytes.len() {
            let f = decode_file(&bytes[..cut]).expect("a torn tail is not an error");
            assert_eq!(f.entries, entries[..1], "cut at {cut}");
            assert_eq!(f.valid_len, first_end as u64);
        }
        for cut in 0..HEADER_BYTES {
            assert!(decode_file(&bytes[..cut]).is_err(), "header cut at {cut}");
        }
    }

    #[test]
    fn damage_before_the_last_entry_is_an_error() {
        let bytes = encode_file(&[entry(1), entry(2)]);
        let mut bad = bytes.clone();
        bad[HEADER_BYTES + 20] ^= 1;
        assert!(decode_file(&bad).is_err());
        let mut header = bytes;
        header[3] ^= 1;
        assert!(decode_file(&header).is_err());
    }
}
