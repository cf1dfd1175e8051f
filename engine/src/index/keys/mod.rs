//! Secondary index keys: derived from resource bodies by a pluggable
//! extractor, stored and rebuilt by the engine, interpreted only by the
//! caller.
//!
//! The engine keeps them in a store of their own (`store`): sorted runs in
//! memory (`runs`) over immutable sorted files (`runfile`), listed by a
//! manifest and merged in the background (`files`).
//!
//! **Invariant:** the files named by the manifest equal the keys at exactly
//! `keys_lsn`, never past the index's durable LSN.

pub(crate) mod files;
pub(crate) mod runfile;
pub(crate) mod runs;
pub(crate) mod store;

/// Derives secondary index keys from a resource body.
///
/// The FHIR layer passes one that turns search parameters into sortable
/// byte keys; the engine stores `(key, type, id)` for the *current live*
/// version of each resource, removes the entries of superseded versions,
/// and rebuilds them from the log with the same extractor. Keys are opaque
/// bytes, compared lexicographically by [`crate::Store::lookup_range`].
pub trait KeyExtractor: Send + Sync + 'static {
    /// A name that changes whenever the keys it derives change. The index
    /// records it; opening with a different name rebuilds the index.
    fn name(&self) -> &str;

    /// Appends the keys of one live version to `out` (duplicates are
    /// removed by the engine). Must be deterministic. Keys longer than
    /// [`crate::limits::INDEX_KEY_BYTES_MAX`] or beyond
    /// [`crate::limits::INDEX_KEYS_PER_VERSION_MAX`] per version are dropped
    /// and logged.
    fn keys(&self, resource_type: &str, body: &[u8], out: &mut Vec<Vec<u8>>);

    /// The resource type whose versions define further keys (FHIR:
    /// `SearchParameter`), if any. Those keys are a function of the log:
    /// the engine tells the extractor every version of this type in LSN
    /// order ([`KeyExtractor::define`]), and asks for a version's defined
    /// keys as of the LSN that wrote or rekeyed it.
    fn defining_type(&self) -> Option<&str> {
        None
    }

    /// Forgets every definition: the engine then tells again, from the
    /// start or from its index, what the log holds.
    fn forget_definitions(&self) {}

    /// A version of the defining type at `lsn` (`None`: a delete). Called
    /// in LSN order; a call at or below an LSN already told is ignored.
    fn define(&self, _lsn: u64, _id: &str, _body: Option<&[u8]>) {}

    /// Whether a live version of `resource_type` at `lsn` has defined keys
    /// (if not, the engine skips decoding its body for them).
    fn has_defined_keys(&self, _lsn: u64, _resource_type: &str) -> bool {
        false
    }

    /// Appends the keys the definitions in force at `lsn` (those told
    /// before it) give `body`. Deterministic in (definitions, `lsn`, body).
    fn defined_keys(&self, _lsn: u64, _resource_type: &str, _body: &[u8], _out: &mut Vec<Vec<u8>>) {
    }

    /// Appends every key any definition told so far could have given
    /// `body`: a superset, removed when a version is superseded or
    /// rekeyed (removing a key a resource lacks changes nothing).
    fn defined_keys_ever(&self, _resource_type: &str, _body: &[u8], _out: &mut Vec<Vec<u8>>) {}

    /// A rekey at `lsn`: appends to `remove` what
    /// [`KeyExtractor::defined_keys_ever`] gives `body` and to `insert`
    /// what [`KeyExtractor::defined_keys`] gives it at `lsn` (an extractor
    /// may do both from one parse of the body).
    fn rekey_keys(
        &self,
        lsn: u64,
        resource_type: &str,
        body: &[u8],
        remove: &mut Vec<Vec<u8>>,
        insert: &mut Vec<Vec<u8>>,
    ) {
        self.defined_keys_ever(resource_type, body, remove);
        if self.has_defined_keys(lsn, resource_type) {
            self.defined_keys(lsn, resource_type, body, insert);
        }
    }

    /// Whether any definition told so far gives keys to `resource_type`.
    fn ever_defines(&self, _resource_type: &str) -> bool {
        false
    }

    /// The extractor as `Any`, for a caller that needs its own type back
    /// from a store ([`crate::Store::extractor`]).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The extractor used when none is configured: no secondary keys.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKeys;

impl KeyExtractor for NoKeys {
    fn name(&self) -> &str {
        "none"
    }
    fn keys(&self, _resource_type: &str, _body: &[u8], _out: &mut Vec<Vec<u8>>) {}
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Whether an extractor derives any keys (so bodies must be decoded for it).
pub(crate) fn extracts(extractor: &dyn KeyExtractor) -> bool {
    extractor.name() != NoKeys.name()
}
