//! SMART scopes, v1 and v2 (SMART App Launch 2.0, "Scopes and launch
//! context"): what a token may do, per resource type and interaction.
//!
//! A resource scope is `<context>/<Type or *>.<permissions>` with context
//! `patient`, `user` or `system`. v1 permissions are `read` (read and
//! search), `write` (create, update, delete) and `*`; v2 permissions are
//! letters of `cruds` in that order (`rs`, `cud`, `cruds`). A v2 scope
//! with a query (`system/Observation.rs?category=…`) is a narrower grant
//! this server does not evaluate: it grants nothing, so it never grants
//! too much. Other scopes (`openid`, `launch`, `offline_access`) grant no
//! resource access and are kept as they are.

use axum::http::Method;

/// One interaction a scope permits, by its v2 letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `c`: create.
    Create,
    /// `r`: read, vread, history of an instance.
    Read,
    /// `u`: update and patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search and type or system history.
    Search,
}

impl Access {
    fn bit(self) -> u8 {
        match self {
            Access::Create => 1,
            Access::Read => 2,
            Access::Update => 4,
            Access::Delete => 8,
            Access::Search => 16,
        }
    }
}

const ALL: u8 = 31;

/// One resource scope, read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    context: String,
    ty: String,
    perms: u8,
}

/// A token's scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    text: Vec<String>,
    grants: Vec<Grant>,
}

impl Scopes {
    /// Reads a space-separated scope string; what is no resource scope
    /// is kept as text and grants nothing.
    pub fn parse(s: &str) -> Scopes {
        let text: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
        let grants = text.iter().filter_map(|t| grant(t)).collect();
        Scopes { text, grants }
    }

    /// The scopes as a space-separated string.
    pub fn text(&self) -> String {
        self.text.join(" ")
    }

    /// Whether no scope grants any resource access.
    pub fn grants_nothing(&self) -> bool {
        self.grants.is_empty()
    }

    /// Whether `access` to resources of `ty` is granted; `ty = "*"` asks
    /// for every type, which only a `*` scope grants.
    pub fn allows_type(&self, ty: &str, access: Access) -> bool {
        self.grants
            .iter()
            .any(|g| (g.ty == "*" || (g.ty == ty && ty != "*")) && g.perms & access.bit() != 0)
    }

    /// The scopes of `requested` that `allowed` covers, each narrowed to
    /// what `allowed` grants for its context and type (a client asking
    /// `system/*.cruds` with `system/*.rs` allowed gets `system/*.rs`).
    /// Non-resource scopes are kept only when `allowed` lists them.
    pub fn within(requested: &Scopes, allowed: &Scopes) -> Scopes {
        let mut text = Vec::new();
        let mut grants = Vec::new();
        for t in &requested.text {
            match grant(t) {
                None => {
                    if allowed.text.contains(t) {
                        text.push(t.clone());
                    }
                }
                Some(g) => {
                    let mut perms = 0;
                    for a in &allowed.grants {
                        if a.context == g.context && (a.ty == "*" || a.ty == g.ty) {
                            perms |= a.perms & g.perms;
                        }
                    }
                    if perms != 0 {
                        let n = Grant { perms, ..g };
                        text.push(n.to_v2());
                        grants.push(n);
                    }
                }
            }
        }
        Scopes { text, grants }
    }

    /// Whether the scopes allow `method` on `path` (a path below the
    /// base, such as `/Patient/1`).
    pub fn allows(&self, method: &Method, path: &str) -> bool {
        match needed(method, path) {
            Need::Any => !self.grants.is_empty(),
            Need::Admin => false,
            Need::Type(ty, accesses) => accesses.iter().all(|a| self.allows_type(&ty, *a)),
        }
    }
}

impl Grant {
    fn to_v2(&self) -> String {
        let letters: String = [
            (Access::Create, 'c'),
            (Access::Read, 'r'),
            (Access::Update, 'u'),
            (Access::Delete, 'd'),
            (Access::Search, 's'),
        ]
        .iter()
        .filter(|(a, _)| self.perms & a.bit() != 0)
        .map(|(_, l)| *l)
        .collect();
        format!("{}/{}.{letters}", self.context, self.ty)
    }
}

/// A resource scope read, `None` when `s` is no resource scope.
fn grant(s: &str) -> Option<Grant> {
    let (context, rest) = s.split_once('/')?;
    if !matches!(context, "patient" | "user" | "system") {
        return None;
    }
    let (ty, perms) = rest.split_once('.')?;
    if ty != "*" && !crate::types::is_resource_type(ty) {
        return None;
    }
    let perms = match perms {
        "read" => Access::Read.bit() | Access::Search.bit(),
        "write" => Access::Create.bit() | Access::Update.bit() | Access::Delete.bit(),
        "*" => ALL,
        letters => v2_letters(letters)?,
    };
    Some(Grant {
        context: context.to_owned(),
        ty: ty.to_owned(),
        perms,
    })
}

/// `cruds` letters in that order, each at most once; `None` otherwise
/// (and for a query, which this server does not evaluate).
fn v2_letters(letters: &str) -> Option<u8> {
    let order = "cruds";
    let mut at = 0;
    let mut perms = 0;
    for ch in letters.chars() {
        let i = order[at..].find(ch)? + at;
        perms |= 1 << i;
        at = i + 1;
    }
    (perms != 0).then_some(perms)
}

/// What a request needs.
enum Need {
    /// Any resource scope (the handler narrows: `$export`, its status;
    /// the node's `/status` and `/metrics`).
    Any,
    /// A token without scopes (static, or a JWT with no `scope`): the
    /// operator's endpoints (`/admin/…`: switchover, promotion, drills),
    /// which no SMART scope grants.
    Admin,
    /// These accesses on this type (`*`: every type).
    Type(String, Vec<Access>),
}

fn needed(method: &Method, path: &str) -> Need {
    use Access::*;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = matches!(*method, Method::GET | Method::HEAD);
    let ty = |s: &str| s.to_owned();
    match segs.as_slice() {
        // Bulk export: the kick-off keeps to the types the token may read;
        // status and files are checked against the job's client.
        [op] | [_, op] | [_, _, op] if *op == "$export" => Need::Any,
        ["$export-status", ..] | ["status"] | ["metrics"] => Need::Any,
        ["admin", ..] => Need::Admin,
        // An output file holds one type, named in the file's name; the
        // error and deleted files need only a token of the job's client.
        ["$export-file", _, file] => match file.trim_end_matches(".ndjson").split_once('-') {
            Some((_, t)) if crate::types::is_resource_type(t) && t != "OperationOutcome" => {
                Need::Type(ty(t), vec![Read, Search])
            }
            _ => Need::Any,
        },
        [""] | ["_search"] | ["_history"] if get || segs[0] == "_search" => {
            Need::Type(ty("*"), vec![Search])
        }
        // A transaction or batch: its entries may do anything.
        [""] => Need::Type(ty("*"), vec![Create, Read, Update, Delete, Search]),
        [t, _, "$everything"] | [t, "$everything"] => {
            let _ = t;
            Need::Type(ty("*"), vec![Read, Search])
        }
        [t, "_search"] => Need::Type(ty(t), vec![Search]),
        [t, "_history"] => Need::Type(ty(t), vec![Search]),
        [t, "$validate"] | [t, _, "$validate"] => Need::Type(ty(t), vec![Read]),
        [t] | [t, ""] if get => Need::Type(ty(t), vec![Search]),
        [t] | [t, ""] => match *method {
            Method::POST => Need::Type(ty(t), vec![Create]),
            Method::DELETE => Need::Type(ty(t), vec![Delete, Search]),
            // Conditional update and patch find their target by search.
            _ => Need::Type(ty(t), vec![Update, Search]),
        },
        [t, _, ..] if get => Need::Type(ty(t), vec![Read]),
        [t, _, ..] => match *method {
            Method::DELETE => Need::Type(ty(t), vec![Delete]),
            Method::POST if segs.last().is_some_and(|s| *s == "_search") => {
                Need::Type(ty(t), vec![Read, Search])
            }
            _ => Need::Type(ty(t), vec![Update]),
        },
        _ => Need::Type(ty("*"), vec![Create, Read, Update, Delete, Search]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_scopes_grant_per_type_and_interaction() {
        let s = Scopes::parse("system/Patient.rs system/Observation.read openid");
        assert!(s.allows(&Method::GET, "/Patient/1"));
        assert!(s.allows(&Method::GET, "/Patient"));
        assert!(s.allows(&Method::GET, "/Observation"));
        assert!(!s.allows(&Method::PUT, "/Patient/1"));
        assert!(!s.allows(&Method::GET, "/Condition/1"));
        assert!(
            !s.allows(&Method::POST, "/"),
            "a transaction needs a * scope"
        );
        let w = Scopes::parse("user/Patient.write");
        assert!(w.allows(&Method::PUT, "/Patient/1"));
        assert!(w.allows(&Method::POST, "/Patient"));
        assert!(!w.allows(&Method::GET, "/Patient/1"));
        let c = Scopes::parse("system/Patient.c");
        assert!(c.allows(&Method::POST, "/Patient"));
        assert!(!c.allows(&Method::DELETE, "/Patient/1"));
        let all = Scopes::parse("system/*.cruds");
        assert!(all.allows(&Method::POST, "/"));
        assert!(all.allows(&Method::GET, "/Patient/1/$everything"));
        assert!(!s.allows(&Method::GET, "/Patient/1/$everything"));
    }

    #[test]
    fn letters_out_of_order_or_with_a_query_grant_nothing() {
        assert!(Scopes::parse("system/Patient.sr").grants_nothing());
        assert!(Scopes::parse("system/Patient.rr").grants_nothing());
        assert!(Scopes::parse("system/Observation.rs?category=x").grants_nothing());
        assert!(Scopes::parse("system/Nope.rs").grants_nothing());
        assert!(Scopes::parse("garbage").grants_nothing());
    }

    #[test]
    fn a_grant_is_what_both_requested_and_allowed_cover() {
        let allowed = Scopes::parse("system/*.rs system/Patient.cruds");
        let got = Scopes::within(&Scopes::parse("system/*.cruds system/Group.read"), &allowed);
        assert_eq!(got.text(), "system/*.rs system/Group.rs");
        let got = Scopes::within(&Scopes::parse("user/Patient.read"), &allowed);
        assert!(got.grants_nothing(), "another context is not allowed");
    }

    #[test]
    fn operators_endpoints_need_a_token_without_scopes() {
        let all = Scopes::parse("system/*.cruds system/*.*");
        assert!(!all.allows(&Method::POST, "/admin/switchover"));
        assert!(!all.allows(&Method::POST, "/admin/promote"));
        assert!(all.allows(&Method::GET, "/status"));
        assert!(Scopes::parse("system/Patient.rs").allows(&Method::GET, "/metrics"));
    }

    #[test]
    fn export_files_need_their_type() {
        let s = Scopes::parse("system/Patient.read");
        assert!(s.allows(&Method::GET, "/$export-file/j/000000-Patient.ndjson"));
        assert!(!s.allows(&Method::GET, "/$export-file/j/000000-Observation.ndjson"));
        assert!(s.allows(&Method::GET, "/$export"));
        assert!(s.allows(&Method::GET, "/Group/g/$export"));
    }
}
