//! `vigil quarantine reapply`: the versions a rejoin cut (listed by
//! [`vigil_fhir::quarantine`]) submitted to the current leader as new
//! versions, each with `If-Match` on the version the cut one replaced, so a
//! conflict is reported and never overwrites a newer write.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vigil_engine::crypt::datakeys::{DataKeys, QUARANTINE_DOMAIN};
use vigil_fhir::quarantine::{REAPPLIED_FILE, SEALED_VERSIONS_FILE, VERSIONS_BYTES_MAX, first_lsn};

/// What happened to one lost version on a reapply.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reapplied {
    /// `Type/id`.
    pub resource: String,
    /// The versionId it had on the deposed leader (never issued again).
    pub lost_version: String,
    /// `applied`, `conflict` or `failed`.
    pub outcome: String,
    /// The new versionId on the leader, when applied.
    pub new_version: Option<String>,
    /// Why, for a conflict or a failure.
    pub detail: Option<String>,
}

/// Why a reapply could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReapplyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `versions.ndjson` holds a line that is not a lost version.
    #[error("{path} line {line}: {why}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Why.
        why: String,
    },
}

#[derive(serde::Deserialize)]
struct Line {
    #[serde(rename = "resourceType")]
    resource_type: String,
    id: String,
    #[serde(rename = "versionId")]
    version_id: String,
    #[serde(rename = "lastUpdatedMicros")]
    last_updated_us: u64,
    op: String,
    #[serde(default)]
    resource: Option<serde_json::Value>,
}

/// Submits every version in `folder`'s `versions.ndjson` to the node at
/// `url` as a new version, oldest first, and marks the folder reapplied.
///
/// A lost version is applied only when the leader's copy of the resource
/// has not changed since the write was lost (its `lastUpdated` is older,
/// or it does not exist for a lost create); it is sent with `If-Match` on
/// the leader's version, so a concurrent change is a conflict, never an
/// overwrite. Every conflict is reported, with both versions named.
///
/// An encrypted store's folder holds them sealed: `keys` (the store's data
/// keys, opened read-only with its key-encryption key) opens them.
pub async fn reapply(
    folder: &Path,
    url: &str,
    token: Option<&str>,
    keys: Option<&DataKeys>,
) -> Result<Vec<Reapplied>, ReapplyError> {
    let sealed = folder.join(SEALED_VERSIONS_FILE);
    let path = match sealed.exists() {
        true => sealed,
        false => folder.join("versions.ndjson"),
    };
    let meta = std::fs::metadata(&path).map_err(|source| ReapplyError::Io {
        path: path.clone(),
        source,
    })?;
    if meta.len() > VERSIONS_BYTES_MAX {
        return Err(ReapplyError::Parse {
            path,
            line: 0,
            why: format!("larger than {VERSIONS_BYTES_MAX} bytes"),
        });
    }
    let bytes = std::fs::read(&path).map_err(|source| ReapplyError::Io {
        path: path.clone(),
        source,
    })?;
    let bytes = match (path.ends_with(SEALED_VERSIONS_FILE), keys) {
        (false, _) => bytes,
        (true, Some(k)) => k
            .open_value(QUARANTINE_DOMAIN, first_lsn(folder), &bytes)
            .map_err(|why| ReapplyError::Parse {
                path: path.clone(),
                line: 0,
                why,
            })?,
        (true, None) => {
            return Err(ReapplyError::Parse {
                path,
                line: 0,
                why: "sealed (an encrypted store's): give the store's key-encryption key (--kek)"
                    .into(),
            });
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| ReapplyError::Parse {
        path: path.clone(),
        line: 0,
        why: format!("not UTF-8: {e}"),
    })?;
    let mut out = Vec::new();
    // Resources this run already wrote: their version on the leader now.
    let mut ours: std::collections::HashMap<String, String> = Default::default();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(raw).map_err(|e| ReapplyError::Parse {
            path: path.clone(),
            line: i + 1,
            why: e.to_string(),
        })?;
        let r = reapply_one(&l, url, token, &mut ours).await;
        out.push(r);
    }
    let report: String = out
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(|s| s + "\n")
        .collect();
    // Marked done only when every version got an answer; a rerun after a
    // failure finds what it already applied changed on the leader (a
    // conflict, reported), never applies it twice.
    if out.iter().all(|r| r.outcome != "failed") {
        let marker = folder.join(REAPPLIED_FILE);
        std::fs::write(&marker, report).map_err(|source| ReapplyError::Io {
            path: marker,
            source,
        })?;
    }
    Ok(out)
}

async fn reapply_one(
    l: &Line,
    url: &str,
    token: Option<&str>,
    ours: &mut std::collections::HashMap<String, String>,
) -> Reapplied {
    use crate::status::call_with;
    let name = format!("{}/{}", l.resource_type, l.id);
    let path = format!("/{name}");
    let mut rep = Reapplied {
        resource: name.clone(),
        lost_version: l.version_id.clone(),
        outcome: "failed".into(),
        new_version: None,
        detail: None,
    };
    // The leader's version now, unless this run wrote it.
    let base = match ours.get(&name) {
        Some(v) => Some(v.clone()),
        None => match call_with("GET", url, &path, None, &[], token).await {
            Ok((404, _, _)) => None,
            Ok((410, _, _)) => Some(String::new()),
            Ok((200, text, _)) => {
                let cur: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let v = cur["meta"]["versionId"].as_str().unwrap_or("").to_owned();
                let updated = cur["meta"]["lastUpdated"]
                    .as_str()
                    .and_then(vigil_fhir::instant::parse_interval)
                    .map_or(u64::MAX, |(start, _)| u64::try_from(start).unwrap_or(0));
                if updated >= l.last_updated_us {
                    rep.outcome = "conflict".into();
                    rep.detail = Some(format!(
                        "the leader's version {v} was written after the lost one; not overwritten"
                    ));
                    return rep;
                }
                Some(v)
            }
            Ok((status, text, _)) => {
                rep.detail = Some(format!("reading it from the leader: HTTP {status}: {text}"));
                return rep;
            }
            Err(e) => {
                rep.detail = Some(e.to_string());
                return rep;
            }
        },
    };
    if l.op == "create" && base.is_some() && !ours.contains_key(&name) {
        rep.outcome = "conflict".into();
        rep.detail = Some("the leader has a resource with this id now".into());
        return rep;
    }
    let mut headers = Vec::new();
    if let Some(v) = base.as_ref().filter(|v| !v.is_empty()) {
        headers.push(("if-match", format!("W/\"{v}\"")));
    }
    let (method, body) = match (l.op.as_str(), &l.resource) {
        ("delete", _) => ("DELETE", None),
        (_, Some(r)) => ("PUT", serde_json::to_vec(r).ok()),
        (_, None) => {
            rep.detail = Some("the quarantine line holds no resource".into());
            return rep;
        }
    };
    match call_with(method, url, &path, body, &headers, token).await {
        Ok((200 | 201, text, _)) => {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let new = v["meta"]["versionId"].as_str().map(String::from);
            if let Some(n) = &new {
                ours.insert(name, n.clone());
            }
            rep.outcome = "applied".into();
            rep.new_version = new;
        }
        Ok((412, _, _)) => {
            rep.outcome = "conflict".into();
            rep.detail = Some("the leader's version changed meanwhile (412)".into());
        }
        Ok((status, text, _)) => rep.detail = Some(format!("HTTP {status}: {text}")),
        Err(e) => rep.detail = Some(e.to_string()),
    }
    rep
}
