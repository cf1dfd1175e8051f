//! Custom search parameters: active SearchParameter resources written to
//! the store, searchable like the built-in ones.
//!
//! They are a function of the log. The engine tells [`Custom`] every
//! version of a SearchParameter in LSN order (from its index on open,
//! then as frames are applied, on a leader and on a follower alike), and
//! [`Custom`] keeps the parameters in force from each of those LSNs on.
//! A resource's keys for them are those in force at the LSN that wrote
//! it, or that rekeyed it: a write of a SearchParameter starts a reindex
//! job (`crate::reindex`) that writes a rekey record for every resource
//! of its base types, so every node, every replay and every rebuild gives
//! the same keys.
//!
//! A definition is in force when its `status` is `active`, its `url` is
//! not a built-in parameter's, and for each `base` its `code` names no
//! built-in parameter of that type nor one another SearchParameter
//! already holds (the earlier wins); its `type` is one of number, date,
//! string, token, reference, quantity, uri; its `expression` parses and
//! has a path on the base. A write that breaks one of these is refused
//! ([`check_write`]); one stored anyway (an older server) is ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::Value;

use super::registry::{SearchParam, custom_param, registry};

/// The resource type whose versions define custom parameters.
pub const DEFINING_TYPE: &str = "SearchParameter";

/// Most bases one custom parameter may name.
pub const BASES_MAX: usize = 32;
/// Longest custom parameter code, in bytes.
pub const CODE_BYTES_MAX: usize = 64;
/// Longest custom parameter expression, in bytes.
pub const EXPRESSION_BYTES_MAX: usize = 4_096;
/// Most distinct custom definitions (per type) one process parses: each is
/// kept for the process's life, as the built-in ones are.
pub const INTERNED_MAX: usize = 4_096;

/// The custom parameters in force from one LSN on: by type, code.
#[derive(Debug, Default)]
pub struct Active {
    by_type: BTreeMap<String, BTreeMap<String, Held>>,
}

/// A parameter in force, and the SearchParameter that defines it.
#[derive(Debug, Clone)]
struct Held {
    id: String,
    param: &'static SearchParam,
}

impl Active {
    /// The custom parameter `code` of `ty`, if one is in force.
    pub fn find(&self, ty: &str, code: &str) -> Option<&'static SearchParam> {
        self.by_type.get(ty)?.get(code).map(|h| h.param)
    }

    /// The custom parameters of `ty`, by code.
    pub fn of(&self, ty: &str) -> impl Iterator<Item = &'static SearchParam> + '_ {
        self.by_type
            .get(ty)
            .into_iter()
            .flat_map(|m| m.values().map(|h| h.param))
    }

    /// The types a SearchParameter's parameters in force apply to.
    pub fn bases_of(&self, id: &str) -> Vec<String> {
        self.by_type
            .iter()
            .filter(|(_, m)| m.values().any(|h| h.id == id))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether any parameter is in force.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }
}

#[derive(Default)]
struct Timeline {
    /// The last LSN told.
    last: u64,
    /// (LSN, what is in force after it), oldest first; an entry only
    /// where that changed.
    steps: Vec<(u64, Arc<Active>)>,
    /// Every parameter ever in force, by type (for removals).
    ever: BTreeMap<String, Vec<&'static SearchParam>>,
}

/// Custom parameters as the log defines them; shared by the store's key
/// extractor and the searches on it.
#[derive(Default)]
pub struct Custom {
    timeline: RwLock<Timeline>,
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custom").finish_non_exhaustive()
    }
}

impl Custom {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Timeline> {
        self.timeline.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Timeline> {
        self.timeline.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets everything told.
    pub fn forget(&self) {
        *self.write() = Timeline::default();
    }

    /// What is in force after everything told so far.
    pub fn current(&self) -> Arc<Active> {
        self.read()
            .steps
            .last()
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    }

    /// What is in force for a record at `lsn` (told strictly before it).
    pub fn at(&self, lsn: u64) -> Option<Arc<Active>> {
        let t = self.read();
        let i = t.steps.partition_point(|(at, _)| *at < lsn);
        i.checked_sub(1).map(|i| t.steps[i].1.clone())
    }

    /// A version of SearchParameter `id` at `lsn` (`None`: deleted).
    pub fn define(&self, lsn: u64, id: &str, body: Option<&[u8]>) {
        let mut t = self.write();
        if lsn <= t.last {
            return;
        }
        t.last = lsn;
        let now = t.steps.last().map(|(_, a)| a.clone()).unwrap_or_default();
        let parsed = body
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .map(|v| definitions_of(&v));
        let defs = match parsed {
            Some(Ok(defs)) => defs,
            Some(Err(why)) => {
                tracing::warn!(id, lsn, "SearchParameter not in force: {why}");
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut next = Active::default();
        // The others keep what they hold; this one's previous version goes.
        for (ty, m) in &now.by_type {
            for (code, h) in m {
                if h.id != id {
                    next.by_type
                        .entry(ty.clone())
                        .or_default()
                        .insert(code.clone(), h.clone());
                }
            }
        }
        for (ty, param) in defs {
            let slot = next.by_type.entry(ty.clone()).or_default();
            if slot.contains_key(&param.code) {
                tracing::warn!(id, code = %param.code, ty = %ty, "another SearchParameter holds this code");
                continue;
            }
            let ever = t.ever.entry(ty).or_default();
            if !ever.iter().any(|p| std::ptr::eq(*p, param)) {
                ever.push(param);
            }
            slot.insert(
                param.code.clone(),
                Held {
                    id: id.to_owned(),
                    param,
                },
            );
        }
        next.by_type.retain(|_, m| !m.is_empty());
        if summary(&now) != summary(&next) {
            t.steps.push((lsn, Arc::new(next)));
        }
    }

    /// Whether any parameter was ever in force for `ty` (asked for every
    /// superseded version the index applies: nothing is copied).
    pub fn ever_defines(&self, ty: &str) -> bool {
        self.read().ever.get(ty).is_some_and(|v| !v.is_empty())
    }

    /// Every parameter ever in force for `ty`.
    pub fn ever(&self, ty: &str) -> Vec<&'static SearchParam> {
        self.read().ever.get(ty).cloned().unwrap_or_default()
    }
}

/// (type, code, SearchParameter id, parameter address) of what is in force.
fn summary(a: &Active) -> Vec<(&str, &str, &str, usize)> {
    a.by_type
        .iter()
        .flat_map(|(t, m)| {
            m.iter().map(move |(c, h)| {
                (
                    t.as_str(),
                    c.as_str(),
                    h.id.as_str(),
                    h.param as *const SearchParam as usize,
                )
            })
        })
        .collect()
}

/// The parameters a SearchParameter resource puts in force, one per base
/// (none when it is not active, or its url is a built-in parameter's);
/// `Err` says why it cannot be in force.
pub fn definitions_of(sp: &Value) -> Result<Vec<(String, &'static SearchParam)>, String> {
    let text = |k: &str| sp.get(k).and_then(Value::as_str);
    if text("status") != Some("active") {
        return Ok(Vec::new());
    }
    let url = text("url").ok_or("an active SearchParameter needs a url")?;
    let bases: Vec<&str> = match sp.get("base") {
        Some(Value::Array(b)) => b.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if bases.is_empty() || bases.len() > BASES_MAX {
        return Err(format!("base must list 1 to {BASES_MAX} resource types"));
    }
    // The official definitions are built in: storing them changes nothing.
    if bases
        .iter()
        .any(|b| registry().of(b).params.iter().any(|p| p.url == url))
    {
        return Ok(Vec::new());
    }
    let code = text("code").ok_or("an active SearchParameter needs a code")?;
    let code_ok = code.len() <= CODE_BYTES_MAX
        && code.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !code_ok {
        return Err(format!(
            "code {code:?}: a letter, then letters, digits, '-' or '_', at most {CODE_BYTES_MAX} bytes"
        ));
    }
    let kind = text("type").ok_or("an active SearchParameter needs a type")?;
    let expression = text("expression").ok_or("an active SearchParameter needs an expression")?;
    if expression.len() > EXPRESSION_BYTES_MAX {
        return Err(format!(
            "the expression is longer than {EXPRESSION_BYTES_MAX} bytes"
        ));
    }
    let targets: Vec<String> = match sp.get("target") {
        Some(Value::Array(t)) => t
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(bases.len());
    for ty in bases {
        if !crate::types::is_resource_type(ty) {
            return Err(format!("base {ty:?} is not an R4 resource type"));
        }
        if registry().of(ty).find(code).is_some() {
            return Err(format!("{ty} already has a search parameter {code}"));
        }
        out.push((
            ty.to_owned(),
            intern(ty, code, kind, url, expression, &targets)?,
        ));
    }
    Ok(out)
}

/// The one parsed copy of a definition, kept for the process's life.
fn intern(
    ty: &str,
    code: &str,
    kind: &str,
    url: &str,
    expression: &str,
    targets: &[String],
) -> Result<&'static SearchParam, String> {
    type Interned = Mutex<HashMap<String, &'static SearchParam>>;
    static INTERNED: OnceLock<Interned> = OnceLock::new();
    let name = serde_json::json!([ty, code, kind, url, expression, targets]).to_string();
    let mut m = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(p) = m.get(&name) {
        return Ok(p);
    }
    if m.len() >= INTERNED_MAX {
        return Err(format!(
            "this process has parsed {INTERNED_MAX} distinct custom parameter definitions; restart it to take more"
        ));
    }
    let p: &'static SearchParam = Box::leak(Box::new(custom_param(
        ty, code, kind, url, expression, targets,
    )?));
    m.insert(name, p);
    Ok(p)
}

/// Whether a SearchParameter write may be stored: `Err` says why not (a
/// 400 for the client). `id` is the resource's id; another active
/// SearchParameter holding the same code on a base is a conflict.
pub fn check_write(active: &Active, id: &str, sp: &Value) -> Result<Vec<String>, String> {
    let defs = definitions_of(sp)?;
    for (ty, p) in &defs {
        if let Some(h) = active.by_type.get(ty).and_then(|m| m.get(&p.code))
            && h.id != id
        {
            return Err(format!(
                "SearchParameter/{} already defines {} on {ty}",
                h.id, p.code
            ));
        }
    }
    Ok(defs.into_iter().map(|(t, _)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(code: &str, expr: &str, status: &str) -> Vec<u8> {
        serde_json::json!({
            "resourceType": "SearchParameter",
            "url": format!("http://example.org/sp/{code}"),
            "status": status,
            "code": code,
            "base": ["Patient"],
            "type": "string",
            "expression": expr,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_timeline_says_what_is_in_force_at_each_lsn() {
        let c = Custom::default();
        c.define(5, "a", Some(&sp("nick", "Patient.name.text", "active")));
        c.define(9, "a", Some(&sp("nick", "Patient.name.text", "retired")));
        c.define(
            12,
            "b",
            Some(&sp("birthplace", "Patient.address.city", "active")),
        );
        assert!(c.at(5).is_none(), "nothing before the first definition");
        assert!(c.at(6).and_then(|a| a.find("Patient", "nick")).is_some());
        assert!(c.at(10).and_then(|a| a.find("Patient", "nick")).is_none());
        assert!(c.current().find("Patient", "birthplace").is_some());
        assert_eq!(c.ever("Patient").len(), 2, "both ever in force");
        // Told again below the last LSN: ignored.
        c.define(7, "c", Some(&sp("other", "Patient.gender", "active")));
        assert!(c.current().find("Patient", "other").is_none());
    }

    #[test]
    fn definitions_that_cannot_be_in_force_say_why() {
        let bad = [
            (sp("name", "Patient.name", "active"), "already has"),
            (sp("9x", "Patient.name", "active"), "a letter"),
            (sp("x", "Patient.name.(", "active"), "expression"),
            (sp("x", "Observation.code", "active"), "no path"),
        ];
        for (body, why) in bad {
            let v: Value = serde_json::from_slice(&body).expect("json");
            let e = definitions_of(&v).expect_err("refused");
            assert!(e.contains(why), "{e}");
        }
        let draft: Value = serde_json::from_slice(&sp("x", "Patient.name", "draft")).expect("json");
        assert!(definitions_of(&draft).expect("fine").is_empty());
    }
}
