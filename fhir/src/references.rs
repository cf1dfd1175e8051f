//! Conditional references: a `reference` written as `Type?criteria`
//! (`"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999"`) is
//! resolved by search to the one resource it matches and stored as the
//! literal `Type/id` (R4 http page, transaction processing rules).
//!
//! Where they are resolved: in transaction and batch entries (after the
//! Bundle's own conditional creates and updates, its `urn:uuid` fullUrls
//! and its deletions are settled), and in single creates, updates and
//! patches, as HAPI and Microsoft's FHIR server do, so a resource never
//! stores a reference that points nowhere. Writes a follower forwards run
//! the same code on the leader.
//!
//! How: a reference equal to the criteria of one of the Bundle's own
//! conditional creates or updates (`Type?` + its `ifNoneExist`, or its
//! conditional PUT URL) is that entry's resource; any other is a search
//! of the store (an index lookup), cached for the rest of the write, in
//! which resources the Bundle deletes do not count. No match → 400,
//! several → 412, a malformed criterion or an unknown parameter → 400:
//! the whole transaction (or that batch entry) fails, naming the entry and
//! the reference, and nothing is written.
//!
//! Not covered: a resource the Bundle creates *without* a conditional URL
//! is not searched for (it has no index entries until the Bundle commits);
//! a resource found here and deleted by another client before the commit
//! is referred to as it was, like any literal reference.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::app::App;
use crate::http::outcome::FhirError;
use crate::types::is_resource_type;

/// Most distinct conditional references one write may hold (each is a
/// search).
pub const CONDITIONAL_REFERENCES_MAX: usize = 10_000;

/// Resolves the conditional references of one write (a Bundle, or one
/// resource), caching each criterion's answer.
pub(crate) struct Resolver<'a> {
    app: &'a App,
    /// The Bundle's own conditional URLs (`Type?criteria`) and the
    /// `Type/id` each settled on.
    own: HashMap<String, String>,
    /// `Type/id` of what the Bundle deletes.
    deleted: HashSet<String>,
    /// Answers so far: the conditional reference as written → `Type/id`.
    cache: HashMap<String, String>,
}

/// What a `reference` value is.
enum Kind<'r> {
    /// `Type?criteria` (possibly with this server's base before it).
    Conditional { ty: &'r str, criteria: &'r str },
    /// Anything else: left as written.
    Other,
}

impl<'a> Resolver<'a> {
    /// A resolver with no Bundle context (a single create or update).
    pub(crate) fn new(app: &'a App) -> Self {
        Self {
            app,
            own: HashMap::new(),
            deleted: HashSet::new(),
            cache: HashMap::new(),
        }
    }

    /// Records one of the Bundle's conditional creates or updates: a
    /// reference equal to `ty?criteria` is `ty/id`.
    pub(crate) fn settled(&mut self, ty: &str, criteria: &str, id: &str) {
        let criteria = criteria.trim_start_matches('?');
        self.own
            .insert(format!("{ty}?{criteria}"), format!("{ty}/{id}"));
    }

    /// Records that the Bundle deletes `ty/id`: it matches no reference.
    pub(crate) fn deletes(&mut self, ty: &str, id: &str) {
        self.deleted.insert(format!("{ty}/{id}"));
    }

    fn kind<'r>(&self, reference: &'r str) -> Result<Kind<'r>, FhirError> {
        let Some((path, criteria)) = reference.split_once('?') else {
            return Ok(Kind::Other);
        };
        let base = self.app.base.as_str();
        let path = path
            .strip_prefix(base)
            .map(|p| p.trim_start_matches('/'))
            .unwrap_or(path);
        if path.contains(':') || path.contains('/') {
            // Another server's URL, or a path that is not `Type`.
            return Ok(Kind::Other);
        }
        if !is_resource_type(path) {
            return Err(FhirError::invalid(format!(
                "the conditional reference {reference:?} does not start with an R4 resource type"
            )));
        }
        Ok(Kind::Conditional { ty: path, criteria })
    }

    /// The literal `Type/id` a conditional reference stands for.
    fn resolve(&mut self, reference: &str) -> Result<Option<String>, FhirError> {
        let Kind::Conditional { ty, criteria } = self.kind(reference)? else {
            return Ok(None);
        };
        if let Some(to) = self.cache.get(reference) {
            return Ok(Some(to.clone()));
        }
        let key = format!("{ty}?{criteria}");
        let to = match self.own.get(&key) {
            Some(to) => to.clone(),
            None => self.search(reference, ty, criteria)?,
        };
        if self.cache.len() >= CONDITIONAL_REFERENCES_MAX {
            return Err(FhirError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "too-costly",
                format!(
                    "more than {CONDITIONAL_REFERENCES_MAX} distinct conditional references in one write"
                ),
            ));
        }
        self.cache.insert(reference.to_owned(), to.clone());
        Ok(Some(to))
    }

    fn search(&self, reference: &str, ty: &str, criteria: &str) -> Result<String, FhirError> {
        if criteria.split('&').all(|p| p.is_empty()) {
            return Err(FhirError::invalid(format!(
                "the conditional reference {reference:?} has no search criteria"
            )));
        }
        let found = crate::search::matching_ids(self.app, ty, criteria).map_err(|e| {
            let mut e = e;
            e.diagnostics = format!("the conditional reference {reference:?}: {}", e.diagnostics);
            e
        })?;
        let mut live = found
            .into_iter()
            .map(|id| format!("{ty}/{id}"))
            .filter(|t| !self.deleted.contains(t));
        match (live.next(), live.next()) {
            (Some(one), None) => Ok(one),
            (None, _) => Err(FhirError::invalid(format!(
                "the conditional reference {reference:?} matches no {ty}"
            ))),
            (Some(_), Some(_)) => Err(FhirError::precondition(format!(
                "the conditional reference {reference:?} matches {} resources; it must match exactly one",
                2 + live.count()
            ))),
        }
    }

    /// Replaces every conditional reference in `v` (each `reference`
    /// member whose value is `Type?criteria`) by the `Type/id` it resolves
    /// to; the first that does not resolve is the error, and `v` is then
    /// not to be written.
    pub(crate) fn rewrite(&mut self, v: &mut Value) -> Result<(), FhirError> {
        match v {
            Value::Array(items) => items.iter_mut().try_for_each(|x| self.rewrite(x)),
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    match x {
                        Value::String(s) if k == "reference" => {
                            if let Some(to) = self.resolve(s)? {
                                *s = to;
                            }
                        }
                        Value::Array(_) | Value::Object(_) => self.rewrite(x)?,
                        _ => {}
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// [`Resolver::rewrite`] on a resource held as a map.
    pub(crate) fn rewrite_map(
        &mut self,
        map: &mut serde_json::Map<String, Value>,
    ) -> Result<(), FhirError> {
        let mut v = Value::Object(std::mem::take(map));
        let r = self.rewrite(&mut v);
        if let Value::Object(m) = v {
            *map = m;
        }
        r
    }
}

/// Resolves the conditional references of one resource written alone
/// (create, update, patch) against the store.
pub(crate) fn resolve_in(
    app: &App,
    map: &mut serde_json::Map<String, Value>,
) -> Result<(), FhirError> {
    Resolver::new(app).rewrite_map(map)
}
