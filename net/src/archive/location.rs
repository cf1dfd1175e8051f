//! Where archives, backups and exports live: a URL naming an object store
//! (`s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`)
//! or a local directory (`file:///path`, or a plain path), opened through
//! the `object_store` crate. Credentials come from each cloud's standard
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`; `AZURE_STORAGE_*`;
//! `GOOGLE_*`) and are never shown: a location displays as its URL.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use vigil_engine::archive::DirectFile;

use super::ArchiveError;

/// Part size of a streamed upload (S3 takes 5 MiB..5 GiB parts).
pub const PART_BYTES: usize = 16 << 20;
/// Parts of one streamed upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Longest object read back whole (a piece is at most 64 MiB of log plus
/// its header).
pub const OBJECT_BYTES_MAX: u64 = 80 << 20;
/// Chunks of a streamed download queued for its decompressing thread
/// (a chunk is what one read of the response gives, tens of KiB).
const CHUNKS_AHEAD: usize = 64;
/// Most objects one listing returns before it is refused (an archive of
/// 64 MiB pieces holds 64 TiB at this count).
pub const LIST_MAX: usize = 1 << 20;
/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An object store and the prefix under which Vigil's objects live.
#[derive(Clone)]
pub struct Location {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The directory, when the location is one (folders emptied by a
    /// delete are removed there; object stores have none).
    local: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location").field("url", &self.url).finish()
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Whether a create-only upload wrote the object or found it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// It was written now.
    Written,
    /// An object of that name already existed (and was left as it was).
    Existed,
}

fn bad_url(url: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Url {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// A cloud's builder with `settings` applied in order (each a config key
/// of that cloud, such as `aws_endpoint`).
fn configured<B, K>(
    url: &str,
    builder: B,
    settings: &[(&str, &str)],
    set: impl Fn(B, K, &str) -> B,
) -> Result<B, ArchiveError>
where
    K: std::str::FromStr,
    K::Err: std::fmt::Display,
{
    settings.iter().try_fold(builder, |b, (k, v)| {
        k.parse::<K>()
            .map(|key| set(b, key, v))
            .map_err(|e| bad_url(url, format!("setting {k}: {e}")))
    })
}

/// S3's rule for bucket names (some S3-compatible servers take a write to
/// an invalid one and store nothing: refused here first).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

impl Location {
    /// Opens the location a URL names, with credentials from the
    /// environment. No request is made: a wrong bucket or credential shows
    /// at the first upload or listing.
    pub fn parse(url: &str) -> Result<Self, ArchiveError> {
        Self::parse_with(url, &[])
    }

    /// Like [`Location::parse`], with settings that take precedence over
    /// the environment's (`object_store` config keys such as
    /// `aws_access_key_id`, `aws_endpoint`, `aws_allow_http`).
    pub fn parse_with(url: &str, settings: &[(&str, &str)]) -> Result<Self, ArchiveError> {
        // object_store's HTTP client takes rustls's process-wide provider;
        // Vigil's TLS is ring throughout. Installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Settings replace the environment's; the request timeout goes
        // first so that a user's own replaces it.
        let timeout = format!("{}s", REQUEST_TIMEOUT.as_secs());
        let settings: Vec<(&str, &str)> = std::iter::once(("timeout", timeout.as_str()))
            .chain(settings.iter().copied())
            .collect();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("file".to_owned(), url),
        };
        let cloud_prefix = |rest: &str| -> Result<ObjectPath, ArchiveError> {
            let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad_url(url, "no bucket or container named"));
            }
            ObjectPath::parse(path.trim_matches('/')).map_err(|e| bad_url(url, e.to_string()))
        };
        let mut local = None;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match scheme.as_str() {
            "s3" | "s3a" if !valid_bucket(rest.split('/').next().unwrap_or("")) => {
                return Err(bad_url(
                    url,
                    "an S3 bucket name is 3-63 characters: lower-case letters, digits, dots and hyphens",
                ));
            }
            "s3" | "s3a" => (
                Arc::new(
                    configured(
                        url,
                        object_store::aws::AmazonS3Builder::from_env(),
                        &settings,
                        |b, k: object_store::aws::AmazonS3ConfigKey, v| b.with_config(k, v),
                    )?
                    .with_url(url)
                    .build()
                    .map_err(|e| bad_url(url, e.to_string()))?,
                ),
                cloud_prefix(rest)?,
            ),
            "az" | "azure" | "abfs" | "abfss" => (
                Arc::new(
                    configured(
                        url,
                        object_store::azure::MicrosoftAzureBuilder::from_env(),
                        &settings,
                        |b, k: object_store::azure::AzureConfigKey, v| b.with_config(k, v),
                    )?
                    .with_url(url)
                    .build()
                    .map_err(|e| bad_url(url, e.to_string()))?,
                ),
                cloud_prefix(rest)?,
            ),
            "gs" => (
                Arc::new(
                    configured(
                        url,
                        object_store::gcp::GoogleCloudStorageBuilder::from_env(),
                        &settings,
                        |b, k: object_store::gcp::GoogleConfigKey, v| b.with_config(k, v),
                    )?
                    .with_url(url)
                    .build()
                    .map_err(|e| bad_url(url, e.to_string()))?,
                ),
                cloud_prefix(rest)?,
            ),
            "file" => {
                if rest.is_empty() {
                    return Err(bad_url(url, "no directory named"));
                }
                let dir = std::path::Path::new(rest);
                std::fs::create_dir_all(dir)
                    .map_err(|e| bad_url(url, format!("cannot create the directory: {e}")))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| bad_url(url, e.to_string()))?;
                local = Some(dir.to_owned());
                (Arc::new(store), ObjectPath::default())
            }
            other => {
                return Err(bad_url(
                    url,
                    format!(
                        "unknown scheme {other}: use s3://, az://, gs://, file:// or a plain path"
                    ),
                ));
            }
        };
        Ok(Self {
            url: url.to_owned(),
            store,
            prefix,
            local,
        })
    }

    fn path(&self, name: &str) -> Result<ObjectPath, ArchiveError> {
        let mut p = self.prefix.clone();
        for part in name.split('/').filter(|s| !s.is_empty()) {
            p = p
                .clone()
                .join(object_store::path::PathPart::parse(part).map_err(|e| {
                    ArchiveError::Name {
                        name: name.to_owned(),
                        reason: e.to_string(),
                    }
                })?);
        }
        Ok(p)
    }

    /// Starts reading the object `name`.
    async fn fetch(&self, name: &str) -> Result<object_store::GetResult, ArchiveError> {
        let path = self.path(name)?;
        self.store
            .get(&path)
            .await
            .map_err(|e| self.fail("reading", name, e))
    }

    fn fail(&self, what: &str, name: &str, source: object_store::Error) -> ArchiveError {
        ArchiveError::Store {
            what: format!("{what} {name} at {}", self.url),
            source: Box::new(source),
        }
    }

    /// Uploads `bytes` as `name` only if no object of that name exists
    /// (a create-only put: a deposed leader cannot replace what another
    /// node wrote).
    pub async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<Created, ArchiveError> {
        let path = self.path(name)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Created::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Existed),
            Err(e) => Err(self.fail("uploading", name, e)),
        }
    }

    /// The object `name`, whole (at most [`OBJECT_BYTES_MAX`]).
    pub async fn get(&self, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let got = self.fetch(name).await?;
        if got.meta.size > OBJECT_BYTES_MAX {
            return Err(ArchiveError::Name {
                name: name.to_owned(),
                reason: format!(
                    "{} bytes, more than the {OBJECT_BYTES_MAX} an archive object may hold",
                    got.meta.size
                ),
            });
        }
        use futures_util::StreamExt;
        // Each chunk copied once, into a buffer of the announced size
        // (a piece is up to 64 MiB: no second copy of it).
        let announced = got.meta.size;
        let mut bytes = Vec::with_capacity(announced as usize);
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.fail("reading", name, e))?;
            if bytes.len() + chunk.len() > announced as usize {
                return Err(ArchiveError::Name {
                    name: name.to_owned(),
                    reason: format!("more than the {announced} bytes its listing announced"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Uploads the file at `path` as `name`, streaming it in parts of
    /// [`PART_BYTES`] (a few in flight), so memory stays bounded whatever
    /// its size. Replaces an object of that name: used for the files of
    /// a base backup, which exists only once its manifest is written
    /// create-only after them.
    pub async fn put_file(&self, name: &str, path: &std::path::Path) -> Result<u64, ArchiveError> {
        use tokio::io::AsyncReadExt;
        let object = self.path(name)?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(super::local_io("open", path))?;
        let size = file
            .metadata()
            .await
            .map_err(super::local_io("stat", path))?
            .len();
        if size <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)
                .await
                .map_err(super::local_io("read", path))?;
            self.store
                .put(&object, PutPayload::from(bytes))
                .await
                .map_err(|e| self.fail("uploading", name, e))?;
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(&object)
            .await
            .map_err(|e| self.fail("starting the upload of", name, e))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        let result = loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => break Err(super::local_io("read", path)(e)),
            };
            if n == 0 {
                break Ok(());
            }
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                break Err(self.fail("uploading", name, e));
            }
            w.write(&buf[..n]);
            sent += n as u64;
        };
        match result {
            Ok(()) => {
                w.finish()
                    .await
                    .map_err(|e| self.fail("finishing the upload of", name, e))?;
                Ok(sent)
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// Downloads `name` (one zstd frame) and decompresses it as it
    /// arrives, on a thread of its own, into a new file at `path` (written
    /// past the page cache where possible, made durable) or, without one,
    /// nowhere: returns its stored size and the
    /// size and CRC-32 of what it decompresses to (the caller checks them
    /// against what it expects). More than `max_stored` bytes stored or
    /// `max_raw` decompressed is an error.
    pub async fn get_zstd(
        &self,
        name: &str,
        path: Option<&std::path::Path>,
        max_stored: u64,
        max_raw: u64,
    ) -> Result<Unpacked, ArchiveError> {
        use futures_util::StreamExt;
        let got = self.fetch(name).await?;
        let too_big = |what: String| ArchiveError::Name {
            name: name.to_owned(),
            reason: what,
        };
        if got.meta.size > max_stored {
            return Err(too_big(format!(
                "{} bytes, more than the {max_stored} expected",
                got.meta.size
            )));
        }
        let file = match path {
            Some(p) => Some((
                DirectFile::create_new(p).map_err(super::local_io("create", p))?,
                p.to_owned(),
            )),
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let object = name.to_owned();
        let unpack = tokio::task::spawn_blocking(move || unpack_zstd(rx, &object, file, max_raw));
        let mut stream = got.into_stream();
        let mut stored = 0u64;
        let mut fed = Ok(());
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    fed = Err(self.fail("reading", name, e));
                    break;
                }
            };
            stored += chunk.len() as u64;
            if stored > max_stored {
                fed = Err(too_big(format!(
                    "more than the {max_stored} bytes expected"
                )));
                break;
            }
            if tx.send(chunk).await.is_err() {
                // The decompressing side stopped: its error says why.
                break;
            }
        }
        drop(tx);
        let unpacked = unpack
            .await
            .map_err(|e| ArchiveError::Task(e.to_string()))?;
        fed?;
        let (raw_bytes, raw_crc) = unpacked?;
        Ok(Unpacked {
            stored,
            raw_bytes,
            raw_crc,
        })
    }

    /// Uploads `bytes` as `name`, replacing an object of that name (for
    /// files whose content a rewrite reproduces, such as an export's
    /// chunks). Whole or not at all: S3 and the others never show a
    /// partial object; a directory takes a temporary file and a rename.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let path = self.path(name)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.fail("uploading", name, e))?;
        Ok(())
    }

    /// The object `name` whole (at most [`OBJECT_BYTES_MAX`]), or `None`
    /// when there is none.
    pub async fn get_opt(&self, name: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        match self.get(name).await {
            Ok(b) => Ok(Some(b)),
            Err(ArchiveError::Store { source, .. })
                if matches!(*source, object_store::Error::NotFound { .. }) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes every object under `under` (a folder such as `<job>/`).
    pub async fn delete_under(&self, under: &str) -> Result<usize, ArchiveError> {
        let names = self.list(under).await?;
        for (name, _) in &names {
            self.delete(name).await?;
        }
        if let Some(dir) = &self.local {
            let folder = under
                .split('/')
                .filter(|p| !p.is_empty())
                .fold(dir.clone(), |d, p| d.join(p));
            // Only when empty: something written meanwhile stays.
            let _ = std::fs::remove_dir(folder);
        }
        Ok(names.len())
    }

    /// Deletes `name` (nothing if it is already gone).
    pub async fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        let object = self.path(name)?;
        match self.store.delete(&object).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("deleting", name, e)),
        }
    }

    /// Names (relative to the location) and sizes of the objects under
    /// `under` (a folder such as `log/`), in name order.
    pub async fn list(&self, under: &str) -> Result<Vec<(String, u64)>, ArchiveError> {
        use futures_util::TryStreamExt;
        let dir = self.path(under)?;
        let mut stream = self.store.list(Some(&dir));
        let mut out = Vec::new();
        let skip = self.prefix.parts().count();
        while let Some(meta) = stream
            .try_next()
            .await
            .map_err(|e| self.fail("listing", under, e))?
        {
            if out.len() >= LIST_MAX {
                return Err(ArchiveError::Name {
                    name: under.to_owned(),
                    reason: format!("more than {LIST_MAX} objects"),
                });
            }
            let name: Vec<String> = meta
                .location
                .parts()
                .skip(skip)
                .map(|p| p.as_ref().to_owned())
                .collect();
            out.push((name.join("/"), meta.size));
        }
        out.sort();
        Ok(out)
    }
}

/// What [`Location::get_zstd`] read and what it decompressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Bytes stored (compressed).
    pub stored: u64,
    /// Bytes decompressed.
    pub raw_bytes: u64,
    /// CRC-32 of the bytes decompressed.
    pub raw_crc: u32,
}

/// Decompresses the chunks `rx` brings of the object `name` (one zstd
/// frame) into `file`, if any, and hashes them: the size and CRC-32
/// decompressed.
fn unpack_zstd<B: AsRef<[u8]>>(
    mut rx: tokio::sync::mpsc::Receiver<B>,
    name: &str,
    file: Option<(DirectFile, std::path::PathBuf)>,
    max_raw: u64,
) -> Result<(u64, u32), ArchiveError> {
    use std::io::Write;
    /// Why the sink refused a write (the decoder reports any error of its
    /// writer as its own, so the sink keeps the real one).
    enum Refused {
        TooBig,
        Write(std::io::Error),
    }
    /// Hashes, counts and writes what the decoder gives.
    struct Sink {
        crc: crc32fast::Hasher,
        bytes: u64,
        max: u64,
        file: Option<(DirectFile, std::path::PathBuf)>,
        refused: Option<Refused>,
    }
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.bytes += b.len() as u64;
            if self.bytes > self.max {
                self.refused = Some(Refused::TooBig);
                return Err(std::io::Error::other("refused"));
            }
            self.crc.update(b);
            if let Some((f, _)) = &mut self.file
                && let Err(e) = f.write_all(b)
            {
                self.refused = Some(Refused::Write(e));
                return Err(std::io::Error::other("refused"));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let data = |reason: String| ArchiveError::Name {
        name: name.to_owned(),
        reason,
    };
    let sink = Sink {
        crc: crc32fast::Hasher::new(),
        bytes: 0,
        max: max_raw,
        file,
        refused: None,
    };
    let mut dec = zstd::stream::write::Decoder::new(sink)
        .map_err(|e| data(format!("no zstd decoder: {e}")))?;
    let why = |dec: &mut zstd::stream::write::Decoder<'_, Sink>, e: std::io::Error| {
        let sink = dec.get_mut();
        match (sink.refused.take(), &sink.file) {
            (Some(Refused::Write(io)), Some((_, path))) => super::local_io("write", path)(io),
            (Some(Refused::TooBig), _) => data(format!(
                "decompresses to more than the {} bytes expected",
                sink.max
            )),
            _ => data(format!("not one zstd frame: {e}")),
        }
    };
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = dec.write_all(chunk.as_ref()) {
            return Err(why(&mut dec, e));
        }
    }
    if let Err(e) = dec.flush() {
        return Err(why(&mut dec, e));
    }
    let sink = dec.into_inner();
    if let Some((f, path)) = sink.file {
        f.finish()
            .map_err(super::local_io("write and sync", &path))?;
    }
    Ok((sink.bytes, sink.crc.finalize()))
}
