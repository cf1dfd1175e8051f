//! What a store is opened with: [`Options`] and their defaults, each bound
//! from `crate::limits`.

use std::sync::Arc;

use crate::crypt::Kek;
use crate::index::keys::{KeyExtractor, NoKeys};
use crate::limits::{KEY_BUFFER_ENTRIES_DEFAULT, RESOURCE_BYTES_DEFAULT, SEGMENT_BYTES_TARGET};
#[allow(unused_imports, reason = "named by the documentation")]
use crate::limits::{RESOURCE_BYTES_MAX, SEGMENT_BYTES_MIN};
use crate::write::clock::{Clock, SystemClock};

/// When to train a zstd dictionary from the store's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictionaryPolicy {
    /// Never: bodies are compressed without a dictionary.
    Off,
    /// Train once `train_after_bytes` of bodies have been committed without one.
    Auto {
        /// Body bytes to sample before training.
        train_after_bytes: u64,
        /// Size of the trained dictionary.
        dictionary_bytes: u32,
    },
}

impl Default for DictionaryPolicy {
    fn default() -> Self {
        DictionaryPolicy::Auto {
            train_after_bytes: 4 * 1024 * 1024,
            dictionary_bytes: 64 * 1024,
        }
    }
}

/// How to open a store. Every field has a production default.
#[derive(Clone)]
pub struct Options {
    /// Largest resource body accepted, at most [`RESOURCE_BYTES_MAX`].
    pub resource_bytes_max: u32,
    /// zstd level for bodies (explicit, not zstd's default).
    pub zstd_level: i32,
    /// Dictionary training.
    pub dictionary: DictionaryPolicy,
    /// Check every frame of every segment on open (else the newest two).
    /// A bit flip in an old segment is then found by `verify` instead.
    pub verify_on_open: bool,
    /// A segment is sealed once it reaches this many bytes
    /// ([`SEGMENT_BYTES_MIN`]..=[`SEGMENT_BYTES_TARGET`]).
    pub segment_bytes: u64,
    /// Cut the log at mid-log corruption, moving the rest to `quarantine/`,
    /// instead of refusing to open.
    pub repair: bool,
    /// Open as a replica of another store's log: a new store writes no
    /// `EpochStart` of its own, local commits are refused with
    /// [`Error::ReadOnly`] (until [`Store::set_read_only`] clears it), and
    /// frames arrive through [`Store::append_log`]. A replica writes many
    /// frames per fsync, so recovery cuts everything from the first bad
    /// frame of its newest segment: that tail was never reported durable
    /// and is fetched again from the leader.
    pub replica: bool,
    /// Derives secondary index keys.
    pub extractor: Arc<dyn KeyExtractor>,
    /// Wall clock for `lastUpdated`.
    pub clock: Arc<dyn Clock>,
    /// Search-key changes held in memory (at most twice this many) before
    /// they are written to a key run file in one sorted pass; also what a
    /// replay after a crash redoes at most. See `keystore`.
    pub key_buffer_entries: usize,
    /// Client commits (and a replica's appends) are refused with
    /// [`Error::DiskFull`] when they would leave less than this many bytes
    /// free on the store's file system; 0 turns the check off. See
    /// [`crate::limits::DISK_RESERVE_BYTES_DEFAULT`].
    pub disk_reserve_bytes: u64,
    /// The key-encryption key that wraps the store's data keys: with one,
    /// every body and dictionary written is sealed (encryption at rest,
    /// `crate::crypt`); an encrypted store refuses to open without it
    /// ([`crate::Error::KeyNeeded`]) or when it cannot unwrap
    /// ([`crate::Error::Crypt`]). A store written without one opens
    /// either way; given one, what it writes from then on is sealed.
    pub kek: Option<Arc<dyn Kek>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resource_bytes_max: RESOURCE_BYTES_DEFAULT,
            zstd_level: 3,
            dictionary: DictionaryPolicy::default(),
            verify_on_open: true,
            segment_bytes: SEGMENT_BYTES_TARGET,
            repair: false,
            replica: false,
            extractor: Arc::new(NoKeys),
            clock: Arc::new(SystemClock),
            key_buffer_entries: KEY_BUFFER_ENTRIES_DEFAULT,
            disk_reserve_bytes: crate::limits::DISK_RESERVE_BYTES_DEFAULT,
            kek: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("resource_bytes_max", &self.resource_bytes_max)
            .field("zstd_level", &self.zstd_level)
            .field("dictionary", &self.dictionary)
            .field("verify_on_open", &self.verify_on_open)
            .field("segment_bytes", &self.segment_bytes)
            .field("repair", &self.repair)
            .field("key_buffer_entries", &self.key_buffer_entries)
            .field("disk_reserve_bytes", &self.disk_reserve_bytes)
            .field("extractor", &self.extractor.name())
            .field("kek", &self.kek.as_ref().map(|k| k.name().to_owned()))
            .finish()
    }
}
