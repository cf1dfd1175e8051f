//! Server configuration: one TOML file, every field with a working default;
//! command-line flags override the file.

pub mod replication;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything `vigil serve` can be told.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store lives.
    pub data: PathBuf,
    /// Address the HTTP server listens on.
    pub http: SocketAddr,
    /// The base URL clients see (for `Location` and bundle links); defaults
    /// to `http://<http>`.
    pub base_url: Option<String>,
    /// Largest request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Largest resource in bytes (engine limit).
    pub max_resource_bytes: u32,
    /// What a write does with a resource that is not valid R4 (against the
    /// official R4 JSON Schema and the checks in `validate`): `strict`
    /// (refused, 400), `lenient` (stored, its problems reported back) or
    /// `off`.
    pub validation: crate::validate::Mode,
    /// Search-key changes held in memory before they are written to the
    /// key file in one sorted pass (about 140 bytes each, at most twice
    /// this many held); also bounds the key replay after a crash.
    pub search_key_buffer_entries: usize,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Log filter, e.g. `info` or `vigil_fhir=debug`.
    pub log_level: String,
    /// Bearer-token authorisation (off unless configured).
    pub auth: AuthConfig,
    /// Replication to (or from) another region; off unless configured.
    pub replication: Option<replication::ReplicationConfig>,
    /// DR drills against this node (`vigil drill`); off unless configured.
    pub drills: DrillsConfig,
    /// Cross-origin requests from browsers (`[cors]`).
    pub cors: CorsConfig,
    /// Where `$export` writes its files (default `<data>/exports`); with
    /// failover, a directory both data nodes reach, so the new leader can
    /// finish a job the old one began. `export_url` replaces it.
    pub export_dir: Option<PathBuf>,
    /// Where `$export` writes its files as objects: `s3://bucket/prefix`,
    /// `az://…`, `gs://…`, `file:///path` (credentials from the cloud's
    /// standard environment). Both data nodes reach it with no shared
    /// directory; clients fetch the files through this server's
    /// `$export-file` route, under the same authorization as `$export`.
    pub export_url: Option<String>,
    /// An export job's lease: how long after its worker was last heard a
    /// job is taken over (ms; the reference service waits 10 minutes).
    pub export_lease_ms: u64,
    /// Resources per export output file.
    pub export_chunk_resources: usize,
    /// How long a finished export's files are kept (seconds after it
    /// completed; the status answer's `Expires`); then the job and its
    /// files are deleted.
    pub export_expire_s: u64,
    /// Free bytes kept on the data directory's file system for internal
    /// work (index commits, search-key merges, a rejoin's cut, a clean
    /// shutdown): client writes get 507 below it. 0 turns it off.
    pub disk_reserve_bytes: u64,
    /// Below this many free bytes (above the reserve) the server logs a
    /// warning, once per crossing; 0: four times the reserve.
    pub disk_warn_bytes: u64,
    /// Encryption at rest (`[encryption]`); off unless a key is named.
    pub encryption: EncryptionConfig,
    /// The continuous log archive (`[archive]`); off unless a URL is named.
    pub archive: ArchiveTable,
}

/// The `[archive]` table: while this node leads, its durable log is
/// uploaded to `url` every `interval_ms` as immutable pieces, from which
/// `vigil restore --from URL` rebuilds a store to any LSN or time; every
/// `backup_interval_ms` it also takes a base backup there (a copy of the
/// index, so a restore need not index the whole log) and applies the
/// retention `keep_days` / `keep_backups` to base backups.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveTable {
    /// `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`,
    /// `file:///path` or a path; credentials from the cloud's standard
    /// environment variables (`AWS_ACCESS_KEY_ID`, …), never from here.
    pub url: Option<String>,
    /// Most time between a write becoming durable and its upload starting:
    /// the archive's RPO, milliseconds, 100..=86,400,000 (default 60,000).
    pub interval_ms: u64,
    /// Time between base backups taken by the leader, milliseconds:
    /// 0 (none) or 60,000..=2,592,000,000 (30 days); default a day.
    pub backup_interval_ms: u64,
    /// Keep every base backup taken within this many days (0..=36,500;
    /// default 7).
    pub keep_days: u32,
    /// Keep at least this many of the newest base backups (1..=10,000;
    /// default 2). Log pieces are never deleted: every restore needs the
    /// whole log.
    pub keep_backups: u32,
}

/// The archive's interval by default: 60 s.
pub const ARCHIVE_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Base backups by default: daily.
pub const BACKUP_INTERVAL_MS_DEFAULT: u64 = 86_400_000;

impl Default for ArchiveTable {
    fn default() -> Self {
        Self {
            url: None,
            interval_ms: ARCHIVE_INTERVAL_MS_DEFAULT,
            backup_interval_ms: BACKUP_INTERVAL_MS_DEFAULT,
            keep_days: 7,
            keep_backups: 2,
        }
    }
}

/// The `[encryption]` table: the key-encryption key that wraps the
/// store's data keys. With one, everything the log stores of resources is
/// sealed (AES-256-GCM under data keys wrapped by this key); an encrypted
/// store does not open without it. Each node of a cluster names its own
/// (one per region); the leader's data keys reach the follower over the
/// mutual-TLS replication link and are wrapped there under the follower's.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// A key file (`vigil keys new --out FILE`; a path, or `file:PATH`) or
    /// a key on a PKCS#11 token (`pkcs11:module=PATH;token=LABEL;key=NAME`,
    /// the user PIN in the `VIGIL_PKCS11_PIN` environment variable).
    pub kek: Option<String>,
    /// How often the key is opened again and checked while the server
    /// runs (revocation: see `keywatch`), milliseconds, 100..=3,600,000.
    pub check_interval_ms: u64,
}

/// How often the key-encryption key is checked, by default: 5 s.
pub const KEY_CHECK_INTERVAL_MS_DEFAULT: u64 = 5_000;

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            kek: None,
            check_interval_ms: KEY_CHECK_INTERVAL_MS_DEFAULT,
        }
    }
}

impl EncryptionConfig {
    /// Opens the key-encryption key, if one is named: reads the key file,
    /// or logs into the token (which must hold the key).
    pub fn open_kek(
        &self,
    ) -> Result<Option<std::sync::Arc<dyn vigil_engine::crypt::Kek>>, vigil_engine::crypt::CryptError>
    {
        let Some(locator) = &self.kek else {
            return Ok(None);
        };
        let at = vigil_engine::crypt::KekLocator::parse(locator)?;
        let pin = std::env::var("VIGIL_PKCS11_PIN").ok();
        Ok(Some(std::sync::Arc::from(at.open(pin.as_deref())?)))
    }

    /// After the key failed: the next [`EncryptionConfig::open_kek`] looks
    /// for it anew (see `KekLocator::reconnect`).
    pub fn reconnect_kek(&self) -> Result<(), vigil_engine::crypt::CryptError> {
        match &self.kek {
            Some(locator) => vigil_engine::crypt::KekLocator::parse(locator)?.reconnect(),
            None => Ok(()),
        }
    }
}

/// The `[drills]` table: whether `vigil drill` may tell this node to crash.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DrillsConfig {
    /// Off by default: `POST /admin/drill/crash` answers 403.
    pub enabled: bool,
    /// The token a drill must present (`X-Vigil-Drill-Token`); required
    /// when enabled.
    pub token: Option<String>,
}

/// The `[cors]` table: which browser origins may call the server (a
/// SMART app on another origin). None by default: no CORS headers, and a
/// preflight is refused.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed, as `scheme://host[:port]`, or `"*"` for any.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer, seconds.
    pub max_age_s: u32,
}

/// Most origins `[cors] allowed_origins` may list.
pub const CORS_ORIGINS_MAX: usize = 256;

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_s: 600,
        }
    }
}

impl CorsConfig {
    /// Whether `origin` may call the server.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.allowed_origins.len() > CORS_ORIGINS_MAX {
            return Err(ConfigError::Invalid(format!(
                "[cors] allowed_origins lists more than {CORS_ORIGINS_MAX}"
            )));
        }
        for o in &self.allowed_origins {
            let ok = o == "*"
                || o.split_once("://").is_some_and(|(scheme, rest)| {
                    matches!(scheme, "http" | "https")
                        && !rest.is_empty()
                        && !rest.contains(['/', '?', '#', ' '])
                });
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "[cors] allowed_origins: {o:?} is not an origin like https://app.example.org (or \"*\")"
                )));
            }
        }
        if self.max_age_s > 86_400 {
            return Err(ConfigError::Invalid(
                "[cors] max_age_s must be at most 86400".into(),
            ));
        }
        Ok(())
    }
}

/// Default request body limit: 16 MiB, as the issue asks.
pub const MAX_BODY_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            data: PathBuf::from("./vigil-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_url: None,
            max_body_bytes: MAX_BODY_BYTES_DEFAULT,
            max_resource_bytes: vigil_engine::limits::RESOURCE_BYTES_DEFAULT,
            validation: crate::validate::Mode::default(),
            search_key_buffer_entries: vigil_engine::limits::KEY_BUFFER_ENTRIES_DEFAULT,
            log_format: "text".into(),
            log_level: "info".into(),
            auth: AuthConfig::default(),
            replication: None,
            drills: DrillsConfig::default(),
            cors: CorsConfig::default(),
            export_dir: None,
            export_url: None,
            export_lease_ms: LEASE_MS_DEFAULT,
            export_chunk_resources: CHUNK_RESOURCES_DEFAULT,
            export_expire_s: EXPORT_EXPIRE_S_DEFAULT,
            disk_reserve_bytes: vigil_engine::limits::DISK_RESERVE_BYTES_DEFAULT,
            disk_warn_bytes: 0,
            encryption: EncryptionConfig::default(),
            archive: ArchiveTable::default(),
        }
    }
}

impl Config {
    /// The configuration as a TOML file (what [`Config::from_file`] reads back
    /// to an equal value): how `vigil up` and the tests write one.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Write(e.to_string()))
    }

    /// The free space below which a warning is logged.
    pub fn disk_warn_bytes(&self) -> u64 {
        if self.disk_warn_bytes > 0 {
            self.disk_warn_bytes
        } else {
            self.disk_reserve_bytes.saturating_mul(4)
        }
    }

    /// Where `$export` writes its files, when they go to a directory.
    pub fn export_dir(&self) -> PathBuf {
        self.export_dir
            .clone()
            .unwrap_or_else(|| self.data.join("exports"))
    }

    /// Where `$export` writes its files: `export_url`, else the
    /// `export_dir` directory.
    pub fn export_location(&self) -> String {
        match &self.export_url {
            Some(u) => u.clone(),
            None => self.export_dir().display().to_string(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
    /// The configuration could not be written as TOML.
    #[error("config: cannot write it as TOML: {0}")]
    Write(String),
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cors.validate()?;
        if self.max_body_bytes == 0 || self.max_body_bytes > 1 << 30 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be 1..=1 GiB".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format must be text or json, not {:?}",
                self.log_format
            )));
        }
        if let Some(r) = &self.replication {
            r.validate()?;
        }
        if let Some(kek) = &self.encryption.kek {
            vigil_engine::crypt::KekLocator::parse(kek)
                .map_err(|e| ConfigError::Invalid(format!("[encryption] kek: {e}")))?;
        }
        if !(100..=86_400_000).contains(&self.archive.interval_ms) {
            return Err(ConfigError::Invalid(
                "[archive] interval_ms must be 100..=86400000".into(),
            ));
        }
        let b = self.archive.backup_interval_ms;
        if b != 0 && !(60_000..=2_592_000_000).contains(&b) {
            return Err(ConfigError::Invalid(
                "[archive] backup_interval_ms must be 0 (no base backups) or 60000..=2592000000"
                    .into(),
            ));
        }
        if self.archive.keep_days > 36_500 {
            return Err(ConfigError::Invalid(
                "[archive] keep_days must be 0..=36500".into(),
            ));
        }
        if !(1..=10_000).contains(&self.archive.keep_backups) {
            return Err(ConfigError::Invalid(
                "[archive] keep_backups must be 1..=10000".into(),
            ));
        }
        if self
            .export_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            return Err(ConfigError::Invalid("export_url is empty".into()));
        }
        if let Some(url) = &self.archive.url
            && url.trim().is_empty()
        {
            return Err(ConfigError::Invalid("[archive] url is empty".into()));
        }
        if !(100..=3_600_000).contains(&self.encryption.check_interval_ms) {
            return Err(ConfigError::Invalid(
                "[encryption] check_interval_ms must be 100..=3600000".into(),
            ));
        }
        Ok(())
    }

    /// The base URL for links, without a trailing slash.
    pub fn base(&self) -> String {
        match &self.base_url {
            Some(b) => b.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.http),
        }
    }
}

/// How long a finished export is kept, by default: a day.
pub const EXPORT_EXPIRE_S_DEFAULT: u64 = 86_400;
/// Resources per `$export` output chunk, by default.
pub const CHUNK_RESOURCES_DEFAULT: usize = 1_000;
/// How long an `$export` worker's claim on a job lasts without renewal,
/// by default.
pub const LEASE_MS_DEFAULT: u64 = 60_000;

/// The `[auth]` table of the config file. Empty: no authorisation.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Static bearer tokens that may do anything.
    pub tokens: Vec<String>,
    /// The shared secret of HS256-signed JWTs.
    pub jwt_hs256_secret: Option<String>,
    /// A PEM file with the RSA public key of RS256-signed JWTs.
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// The `iss` a JWT must carry, if set.
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry, if set.
    pub jwt_audience: Option<String>,
    /// The JWKS of an external authorization server (`https://…` or, on
    /// loopback, `http://…`): its tokens are checked with the key their
    /// `kid` names, fetched and cached, fetched again for a `kid` not seen
    /// (key rotation).
    pub jwks_url: Option<String>,
    /// Without `jwks_url`: find the issuer's keys from `jwt_issuer` alone,
    /// reading its `jwks_uri` from `{jwt_issuer}/.well-known/openid-configuration`
    /// (else `/.well-known/smart-configuration`).
    pub jwks_discovery: bool,
    /// A PEM file of CA certificates trusted for `jwks_url` and clients'
    /// `jwks_url`s, besides the built-in web roots.
    pub jwks_ca: Option<PathBuf>,
    /// The external authorization server's token endpoint, published in
    /// `/.well-known/smart-configuration` when this server issues none.
    pub token_endpoint: Option<String>,
    /// The built-in token endpoint's signing key: a PEM (PKCS#8) EC P-384
    /// private key (`vigil certs` writes one). Cluster configuration: give
    /// every node the same file, so a token one node issued is valid on
    /// the others.
    pub token_signing_key: Option<PathBuf>,
    /// Seconds an issued access token is valid (default 300).
    pub token_lifetime_s: Option<u64>,
    /// Clients the built-in token endpoint knows.
    pub clients: Vec<ClientConfig>,
}

/// A client registered with the built-in token endpoint (SMART Backend
/// Services): it authenticates with a JWT signed by one of its keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The client id (`iss` and `sub` of its assertions).
    pub id: String,
    /// Its public keys, a JWKS as JSON text.
    pub jwks: Option<String>,
    /// Or where its JWKS is published.
    pub jwks_url: Option<String>,
    /// The scopes it may be granted (space-separated, SMART v1 or v2).
    pub scopes: String,
}

impl AuthConfig {
    /// Whether any way to authenticate is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
            || self.jwt_hs256_secret.is_some()
            || self.jwt_rs256_public_key.is_some()
            || self.jwks_url.is_some()
            || self.jwks_discovery
            || self.token_signing_key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_fields_and_unknown_ones_are_refused() {
        let c: Config = toml::from_str("data = \"/x\"\nhttp = \"0.0.0.0:9\"\n").expect("parses");
        assert_eq!(c.data, PathBuf::from("/x"));
        assert_eq!(c.max_body_bytes, MAX_BODY_BYTES_DEFAULT);
        assert!(toml::from_str::<Config>("dta = 1").is_err());
    }

    #[test]
    fn a_configuration_written_as_toml_reads_back_equal() {
        use replication::{OnLag, ReplicationConfig, ReplicationRole};
        let mut c = Config {
            data: PathBuf::from("/data/a"),
            export_dir: Some(PathBuf::from("/exports")),
            disk_reserve_bytes: 2 << 20,
            ..Config::default()
        };
        let mut r =
            ReplicationConfig::new("c", "a", PathBuf::from("/certs"), ReplicationRole::Auto);
        r.listen = Some(SocketAddr::from(([127, 0, 0, 1], 7000)));
        r.peer = Some("b".into());
        r.max_lag_ms = Some(0);
        r.on_lag = OnLag::Stall;
        c.replication = Some(r);
        c.auth.tokens = vec!["t".into()];
        let text = c.to_toml().expect("toml");
        assert!(text.contains("role = \"auto\""), "{text}");
        assert!(text.contains("on_lag = \"stall\""), "{text}");
        let back: Config = toml::from_str(&text).expect("reads back");
        assert_eq!(back, c);
        // What a file leaves out takes the same defaults `new` gives.
        let min: Config = toml::from_str(
            "[replication]\ncluster = \"c\"\nnode = \"a\"\ncerts = \"/certs\"\nrole = \"leader\"\n",
        )
        .expect("parses");
        assert_eq!(
            min.replication,
            Some(ReplicationConfig::new(
                "c",
                "a",
                PathBuf::from("/certs"),
                ReplicationRole::Leader
            ))
        );
        assert!(
            toml::from_str::<Config>(
                "[replication]\ncluster = \"c\"\nnode = \"a\"\ncerts = \"/c\"\nrole = \"boss\"\n"
            )
            .is_err()
        );
    }
}
