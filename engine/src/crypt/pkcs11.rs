//! A key-encryption key inside a PKCS#11 module (a hardware security
//! module, a cloud key service's PKCS#11 library, or SoftHSM2 in tests),
//! through the `cryptoki` crate. The key never leaves the module: data
//! keys are sealed and opened by the module itself with AES-256-GCM
//! (`CKM_AES_GCM`), under a fresh random nonce each.
//!
//! Each version is a secret AES key object on the token whose label is the
//! KEK's name and whose id is the version (4 bytes, big-endian); it is
//! made sensitive and not extractable. The user PIN comes from the caller
//! (the `VIGIL_PKCS11_PIN` variable at the command line), never from a
//! file of ours.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ring::aead::NONCE_LEN;

use super::{CryptError, DATA_KEY_BYTES, DataKey, Kek, SEALED_FORMAT, WrappedKey, random};

/// Most versions of one KEK looked at.
const VERSIONS_MAX: usize = 1_000;

/// Where a PKCS#11 KEK lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Locator {
    /// The module (a shared library, e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The KEK's name: its key objects' label.
    pub key: String,
}

impl Pkcs11Locator {
    /// Reads `module=PATH;token=LABEL;key=NAME` (the part after
    /// `pkcs11:` in a `kek` setting).
    pub fn parse(s: &str) -> Result<Self, CryptError> {
        let bad = |d: String| CryptError::Format {
            what: "PKCS#11 key locator",
            detail: d,
        };
        let (mut module, mut token, mut key) = (None, None, None);
        for part in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not NAME=VALUE")))?;
            match k {
                "module" => module = Some(PathBuf::from(v)),
                "token" => token = Some(v.to_owned()),
                "key" => key = Some(v.to_owned()),
                other => return Err(bad(format!("unknown part {other:?}"))),
            }
        }
        match (module, token, key) {
            (Some(module), Some(token), Some(key)) if !token.is_empty() && !key.is_empty() => {
                super::keyfile::check_name(&key).map_err(bad)?;
                Ok(Self { module, token, key })
            }
            _ => Err(bad(
                "module=PATH;token=LABEL;key=NAME, all three, are needed".into(),
            )),
        }
    }
}

/// Modules loaded and initialised in this process, by path. A module is
/// initialised once per process (a second `C_Initialize` is refused) and
/// kept for the process's life, so every KEK opened on it — the store's,
/// a key check's, a re-wrap's — shares it, and none finalises it under
/// another's sessions.
static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Pkcs11>>>> = OnceLock::new();

fn module(at: &Pkcs11Locator) -> Result<Arc<Pkcs11>, CryptError> {
    let mut loaded = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = loaded.get(&at.module) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(&at.module).map_err(|e| err(at, "loading the module", e))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| err(at, "initialising the module", e))?;
    let ctx = Arc::new(ctx);
    loaded.insert(at.module.clone(), ctx.clone());
    Ok(ctx)
}

/// Finalises and initialises again the module `at` names (if this process
/// loaded it), so that it looks for its tokens anew: a module finds its
/// tokens when initialised, so a token that went away and came back is
/// seen again only after this. Every session on the module ends: KEKs
/// opened before it must be opened again.
pub fn reinitialize(at: &Pkcs11Locator) -> Result<(), CryptError> {
    let loaded = {
        let map = MODULES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.get(&at.module).cloned()
    };
    let Some(ctx) = loaded else {
        return Ok(());
    };
    // Finalising a module whose token is gone may itself fail; the
    // initialisation below is what counts.
    let _ = Pkcs11::clone(&ctx).finalize();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| err(at, "initialising the module again", e))
}

/// A KEK held by a PKCS#11 token.
pub struct Pkcs11Kek {
    at: Pkcs11Locator,
    // Kept for as long as the session lives.
    _ctx: Arc<Pkcs11>,
    session: Mutex<Session>,
    /// (version, key object), versions increasing.
    keys: Vec<(u32, ObjectHandle)>,
}

impl std::fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("at", &self.at)
            .field("versions", &self.versions())
            .finish()
    }
}

fn err(at: &Pkcs11Locator, doing: &str, e: impl std::fmt::Display) -> CryptError {
    CryptError::Module {
        key: format!(
            "{} on token {:?} ({})",
            at.key,
            at.token,
            at.module.display()
        ),
        detail: format!("{doing}: {e}"),
    }
}

impl Pkcs11Kek {
    /// Loads the module, logs in to the token labelled `at.token` with
    /// `pin`, and finds the KEK's versions (none yet is not an error:
    /// [`Pkcs11Kek::add_version`] makes the first).
    pub fn open(at: &Pkcs11Locator, pin: &str) -> Result<Self, CryptError> {
        let ctx = module(at)?;
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| err(at, "listing its tokens", e))?;
        let slot = slots
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|t| t.label().trim_end() == at.token)
            })
            .ok_or_else(|| err(at, "finding the token", "no token has that label"))?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| err(at, "opening a session", e))?;
        // Login is per token for the whole process: another KEK opened on
        // the same token (a key check beside the store's) finds it done.
        match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => return Err(err(at, "logging in", e)),
        }
        let mut kek = Self {
            at: at.clone(),
            _ctx: ctx,
            session: Mutex::new(session),
            keys: Vec::new(),
        };
        kek.keys = kek.find_versions()?;
        Ok(kek)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find_versions(&self) -> Result<Vec<(u32, ObjectHandle)>, CryptError> {
        let s = self.session();
        let objects = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(self.at.key.as_bytes().to_vec()),
            ])
            .map_err(|e| err(&self.at, "finding its key objects", e))?;
        let mut keys = Vec::new();
        for o in objects.into_iter().take(VERSIONS_MAX) {
            let attrs = s
                .get_attributes(o, &[AttributeType::Id])
                .map_err(|e| err(&self.at, "reading a key object's id", e))?;
            let version = attrs.iter().find_map(|a| match a {
                Attribute::Id(id) if id.len() == 4 => {
                    Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
                }
                _ => None,
            });
            if let Some(v) = version {
                keys.push((v, o));
            }
        }
        keys.sort_by_key(|k| k.0);
        Ok(keys)
    }

    /// Makes a new version on the token (an AES-256 key, sensitive, not
    /// extractable, kept on the token); returns it.
    pub fn add_version(&mut self) -> Result<u32, CryptError> {
        let version = self.current_version() + 1;
        let handle = self
            .session()
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen((DATA_KEY_BYTES as u64).into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(self.at.key.as_bytes().to_vec()),
                    Attribute::Id(version.to_be_bytes().to_vec()),
                ],
            )
            .map_err(|e| err(&self.at, "generating a key", e))?;
        self.keys.push((version, handle));
        Ok(version)
    }

    fn aad(&self, version: u32) -> Vec<u8> {
        format!("vigil data key under {} v{version}", self.at.key).into_bytes()
    }
}

impl Kek for Pkcs11Kek {
    fn name(&self) -> &str {
        &self.at.key
    }

    fn current_version(&self) -> u32 {
        self.keys.last().map_or(0, |k| k.0)
    }

    fn versions(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.0).collect()
    }

    fn wrap(&self, key: &DataKey) -> Result<WrappedKey, CryptError> {
        let &(version, handle) = self.keys.last().ok_or_else(|| {
            err(
                &self.at,
                "wrapping",
                "the token holds no version of this key",
            )
        })?;
        let mut iv: [u8; NONCE_LEN] = random()?;
        let aad = self.aad(version);
        let params = GcmParams::new(&mut iv, &aad, 128u64.into())
            .map_err(|e| err(&self.at, "wrapping", e))?;
        let sealed_body = self
            .session()
            .encrypt(&Mechanism::AesGcm(params), handle, key.bytes())
            .map_err(|e| err(&self.at, "wrapping", e))?;
        let mut sealed = vec![SEALED_FORMAT];
        sealed.extend_from_slice(&iv);
        sealed.extend_from_slice(&sealed_body);
        Ok(WrappedKey {
            kek: self.at.key.clone(),
            version,
            sealed,
        })
    }

    fn unwrap(&self, w: &WrappedKey) -> Result<DataKey, CryptError> {
        let other = || CryptError::OtherKek {
            wanted: format!("{} v{}", w.kek, w.version),
            have: format!("{} on token {:?}", self.at.key, self.at.token),
        };
        if w.kek != self.at.key {
            return Err(other());
        }
        let &(_, handle) = self
            .keys
            .iter()
            .find(|(v, _)| *v == w.version)
            .ok_or_else(other)?;
        if w.sealed.len() < 1 + NONCE_LEN + 16 || w.sealed[0] != SEALED_FORMAT {
            return Err(CryptError::Format {
                what: "wrapped data key",
                detail: "not a sealed value of this build's format".into(),
            });
        }
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(&w.sealed[1..1 + NONCE_LEN]);
        let aad = self.aad(w.version);
        let params = GcmParams::new(&mut iv, &aad, 128u64.into())
            .map_err(|e| err(&self.at, "unwrapping", e))?;
        let plain = self
            .session()
            .decrypt(
                &Mechanism::AesGcm(params),
                handle,
                &w.sealed[1 + NONCE_LEN..],
            )
            .map_err(|_| CryptError::Rejected {
                what: "a wrapped data key".into(),
            })?;
        DataKey::from_unwrapped(plain)
    }
}
