//! The local key file: a key-encryption key kept in a file readable by its
//! owner only (development and single-machine deployments; a hardware
//! module or a cloud key service holds it in production).
//!
//! Format, text: `vigil-kek 1`, then `name NAME`, then one `key VERSION
//! HEX` line per version (64 hex digits, 32 bytes), oldest first. New data
//! keys are wrapped under the highest version; older versions stay to
//! unwrap what they wrapped until everything is re-wrapped.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CryptError, DATA_KEY_BYTES, DataKey, KEK_NAME_MAX, Kek, WrappedKey};

/// The first line of a key file.
const MAGIC: &str = "vigil-kek 1";
/// Most versions one file holds.
pub const VERSIONS_MAX: usize = 1_000;
/// Longest key file read.
const FILE_MAX: u64 = 256 * 1024;

/// A KEK read from a key file.
pub struct KeyFile {
    path: PathBuf,
    name: String,
    /// (version, key), versions strictly increasing.
    keys: Vec<(u32, DataKey)>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("name", &self.name)
            .field(
                "versions",
                &self.keys.iter().map(|k| k.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; DATA_KEY_BYTES]> {
    if s.len() != 2 * DATA_KEY_BYTES || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; DATA_KEY_BYTES];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > KEK_NAME_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "a KEK name is 1 to {KEK_NAME_MAX} of A-Z a-z 0-9 - _ ., not {name:?}"
        ));
    }
    Ok(())
}

impl KeyFile {
    fn err(path: &Path, detail: impl Into<String>) -> CryptError {
        CryptError::KeyFile {
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }

    /// Writes a new key file at `path` (it must not exist) holding one
    /// random key, version 1, readable by its owner only.
    pub fn create(path: &Path, name: &str) -> Result<Self, CryptError> {
        check_name(name).map_err(|d| Self::err(path, d))?;
        let key = DataKey::random()?;
        let file = Self {
            path: path.to_owned(),
            name: name.to_owned(),
            keys: vec![(1, key)],
        };
        file.write(true)?;
        Ok(file)
    }

    /// Reads the key file at `path`: it must be readable by its owner only
    /// and hold well-formed keys.
    pub fn load(path: &Path) -> Result<Self, CryptError> {
        let e = |d: String| Self::err(path, d);
        let meta = std::fs::metadata(path).map_err(|x| e(x.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(e(format!(
                    "readable by others than its owner (mode {mode:o}); `chmod 600` it"
                )));
            }
        }
        if meta.len() > FILE_MAX {
            return Err(e(format!(
                "{} bytes, more than a key file holds",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|x| e(x.to_string()))?;
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(e(format!("does not begin with {MAGIC:?}")));
        }
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("name "))
            .ok_or_else(|| e("the second line is not `name NAME`".into()))?
            .to_owned();
        check_name(&name).map_err(e)?;
        let mut keys: Vec<(u32, DataKey)> = Vec::new();
        for (i, line) in lines.enumerate() {
            let bad = || {
                e(format!(
                    "line {}: not `key VERSION HEX` with 64 hex digits",
                    i + 3
                ))
            };
            let mut f = line.split(' ');
            let (Some("key"), Some(v), Some(k), None) = (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(bad());
            };
            let version: u32 = v.parse().map_err(|_| bad())?;
            let key = unhex(k).ok_or_else(bad)?;
            if keys.last().is_some_and(|(last, _)| *last >= version) || version == 0 {
                return Err(e(format!(
                    "line {}: versions must start at 1 and increase",
                    i + 3
                )));
            }
            if keys.len() >= VERSIONS_MAX {
                return Err(e(format!("more than {VERSIONS_MAX} versions")));
            }
            keys.push((version, DataKey::from_bytes(key)));
        }
        if keys.is_empty() {
            return Err(e("holds no key".into()));
        }
        Ok(Self {
            path: path.to_owned(),
            name,
            keys,
        })
    }

    /// Adds a new random version and writes the file again (replaced
    /// whole: temporary file, fsync, rename); returns the new version.
    /// Keys wrapped under older versions still unwrap.
    pub fn rotate(&mut self) -> Result<u32, CryptError> {
        let next = self.current_version() + 1;
        if self.keys.len() >= VERSIONS_MAX {
            return Err(Self::err(
                &self.path,
                format!("more than {VERSIONS_MAX} versions"),
            ));
        }
        self.keys.push((next, DataKey::random()?));
        if let Err(e) = self.write(false) {
            self.keys.pop();
            return Err(e);
        }
        Ok(next)
    }

    fn write(&self, new: bool) -> Result<(), CryptError> {
        let e = |x: std::io::Error| Self::err(&self.path, x.to_string());
        let mut text = format!("{MAGIC}\nname {}\n", self.name);
        for (v, k) in &self.keys {
            text.push_str(&format!("key {v} {}\n", hex(k.bytes())));
        }
        let target = if new {
            self.path.clone()
        } else {
            self.path.with_extension("tmp")
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        if new {
            opts.create_new(true);
        } else {
            opts.create(true).truncate(true);
        }
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&target).map_err(|x| {
            if x.kind() == std::io::ErrorKind::AlreadyExists {
                Self::err(
                    &self.path,
                    "already exists; a key file is never overwritten",
                )
            } else {
                e(x)
            }
        })?;
        f.write_all(text.as_bytes()).map_err(e)?;
        f.sync_all().map_err(e)?;
        if !new {
            std::fs::rename(&target, &self.path).map_err(e)?;
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(e)?;
        }
        Ok(())
    }

    fn aad(&self, version: u32) -> Vec<u8> {
        format!("vigil data key under {} v{version}", self.name).into_bytes()
    }
}

impl Kek for KeyFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn current_version(&self) -> u32 {
        self.keys.last().map_or(0, |k| k.0)
    }

    fn wrap(&self, key: &DataKey) -> Result<WrappedKey, CryptError> {
        let (version, kek) = self
            .keys
            .last()
            .ok_or_else(|| Self::err(&self.path, "holds no key"))?;
        Ok(WrappedKey {
            kek: self.name.clone(),
            version: *version,
            sealed: kek.seal(&self.aad(*version), key.bytes())?,
        })
    }

    fn versions(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.0).collect()
    }

    fn unwrap(&self, w: &WrappedKey) -> Result<DataKey, CryptError> {
        let other = || CryptError::OtherKek {
            wanted: format!("{} v{}", w.kek, w.version),
            have: format!("{} ({})", self.name, self.path.display()),
        };
        if w.kek != self.name {
            return Err(other());
        }
        let (_, kek) = self
            .keys
            .iter()
            .find(|(v, _)| *v == w.version)
            .ok_or_else(other)?;
        let plain = kek.open(&self.aad(w.version), &w.sealed, "a wrapped data key")?;
        DataKey::from_unwrapped(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_private_and_wraps_and_unwraps() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("kek");
        let kf = KeyFile::create(&path, "region-eu").expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = KeyFile::create(&path, "region-eu").expect_err("never overwritten");
        assert!(e.to_string().contains("never overwritten"), "{e}");
        let dek = DataKey::random().expect("dek");
        let w = kf.wrap(&dek).expect("wrap");
        assert_eq!((w.kek.as_str(), w.version), ("region-eu", 1));
        let again = KeyFile::load(&path).expect("load");
        assert_eq!(again.unwrap(&w).expect("unwrap"), dek);
    }

    #[test]
    fn rotation_keeps_old_versions_unwrapping() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("kek");
        let mut kf = KeyFile::create(&path, "k").expect("create");
        let dek = DataKey::random().expect("dek");
        let old = kf.wrap(&dek).expect("wrap");
        assert_eq!(kf.rotate().expect("rotate"), 2);
        let kf = KeyFile::load(&path).expect("load");
        assert_eq!(kf.versions(), [1, 2]);
        let new = kf.wrap(&dek).expect("wrap");
        assert_eq!(new.version, 2);
        assert_eq!(kf.unwrap(&old).expect("old"), dek);
        assert_eq!(kf.unwrap(&new).expect("new"), dek);
    }

    #[test]
    fn a_key_from_another_kek_a_wrong_key_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let a = KeyFile::create(&dir.path().join("a"), "a").expect("a");
        let b = KeyFile::create(&dir.path().join("b"), "b").expect("b");
        let dek = DataKey::random().expect("dek");
        let w = a.wrap(&dek).expect("wrap");
        let e = b.unwrap(&w).expect_err("another KEK");
        assert!(e.to_string().contains("wrapped under a v1"), "{e}");
        // Same name, other key (a file made again elsewhere).
        let a2 = KeyFile::create(&dir.path().join("a2"), "a").expect("a2");
        assert!(matches!(a2.unwrap(&w), Err(CryptError::Rejected { .. })));
        let mut cut = w.clone();
        cut.sealed.truncate(20);
        assert!(a.unwrap(&cut).is_err());

        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            }
            p
        };
        let good_key = "00".repeat(32);
        let cases = [
            (
                "open",
                format!("{MAGIC}\nname k\nkey 1 {good_key}\n"),
                0o644,
                "chmod 600",
            ),
            (
                "short",
                format!("{MAGIC}\nname k\nkey 1 abcd\n"),
                0o600,
                "64 hex digits",
            ),
            (
                "magic",
                format!("kek\nname k\nkey 1 {good_key}\n"),
                0o600,
                "begin with",
            ),
            ("nokey", format!("{MAGIC}\nname k\n"), 0o600, "no key"),
            (
                "order",
                format!("{MAGIC}\nname k\nkey 2 {good_key}\nkey 1 {good_key}\n"),
                0o600,
                "increase",
            ),
            (
                "name",
                format!("{MAGIC}\nname a b\nkey 1 {good_key}\n"),
                0o600,
                "KEK name",
            ),
        ];
        for (file, text, mode, says) in cases {
            let p = write(file, &text, mode);
            let e = KeyFile::load(&p).expect_err(file);
            assert!(e.to_string().contains(says), "{file}: {e}");
        }
    }
}
