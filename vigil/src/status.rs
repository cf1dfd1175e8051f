//! `vigil status`: fetches a node's `/status` and prints it for people.

use std::fmt::Write;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why the status could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The node could not be reached or answered with an error.
    #[error("cannot get {url}: {detail}")]
    Fetch {
        /// The URL asked.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The answer is not a status document.
    #[error("the node's /status is not understood: {0}")]
    Parse(#[from] serde_json::Error),
}

/// GETs `BASE/status` and returns the JSON text.
pub async fn fetch(base: &str, token: Option<&str>) -> Result<String, StatusError> {
    call("GET", base, "/status", None, token).await
}

/// Sends `METHOD BASE PATH` (with a FHIR JSON body, if any) and returns the
/// answer's text; a status other than 2xx is an error carrying the text
/// (an OperationOutcome). Waits at most 60 seconds.
pub async fn call(
    method: &str,
    base: &str,
    path: &str,
    body: Option<Vec<u8>>,
    token: Option<&str>,
) -> Result<String, StatusError> {
    call_with(method, base, path, body, &[], token)
        .await
        .and_then(|(status, text, url)| {
            if (200..300).contains(&status) {
                Ok(text)
            } else {
                Err(StatusError::Fetch {
                    url,
                    detail: format!("HTTP {status}: {text}"),
                })
            }
        })
}

/// Like [`call`] with extra headers, and any HTTP status is an answer:
/// `(status, text, url)`.
pub async fn call_with(
    method: &str,
    base: &str,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, String)],
    token: Option<&str>,
) -> Result<(u16, String, String), StatusError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let fail = |detail: String| StatusError::Fetch {
        url: url.clone(),
        detail,
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(&url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/fhir+json");
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| fail(e.to_string()))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(60), client.request(req))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    Ok((status.as_u16(), text, url))
}

/// Renders a `/status` document as a few readable lines.
pub fn render(json: &str) -> Result<String, StatusError> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let s = |v: &serde_json::Value, k: &str| {
        v.get(k).map_or(String::new(), |x| match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} ({}) in cluster {}: epoch {}, last lsn {}",
        s(&v, "node"),
        s(&v, "role"),
        s(&v, "cluster"),
        s(&v, "epoch"),
        s(&v, "last_lsn")
    );
    if let Some(m) = v.get("max_lag_seconds").filter(|m| !m.is_null()) {
        let _ = writeln!(out, "RPO promise (max_lag): {m} s");
    }
    for f in v
        .get("followers")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "  follower {} at {}: {}, received {} durable {} applied {}, lag {} lsns / {:.3} s, {}",
            s(f, "node"),
            s(f, "remote"),
            if f["connected"] == true {
                "connected"
            } else {
                "DISCONNECTED"
            },
            s(f, "received"),
            s(f, "durable"),
            s(f, "applied"),
            s(f, "lag_lsns"),
            f["lag_seconds"].as_f64().unwrap_or(0.0),
            if f["eligible"] == true {
                "eligible"
            } else {
                "INELIGIBLE for promotion"
            },
        );
        if f["commit_to_durable_samples"].as_u64().unwrap_or(0) > 0 {
            let _ = writeln!(
                out,
                "    commit to durable on it: p50 {:.1} ms, p99 {:.1} ms (recent commits)",
                f["commit_to_durable_p50_ms"].as_f64().unwrap_or(0.0),
                f["commit_to_durable_p99_ms"].as_f64().unwrap_or(0.0),
            );
        }
    }
    if let Some(u) = v.get("upstream").filter(|u| !u.is_null()) {
        let _ = writeln!(
            out,
            "  leader {} ({}) at {}: {}, durable {} of {}, lag {} lsns",
            s(u, "leader"),
            s(u, "leader_http"),
            s(u, "leader_addr"),
            if u["connected"] == true {
                "streaming"
            } else {
                "NOT CONNECTED"
            },
            s(u, "durable"),
            s(u, "leader_lsn"),
            s(u, "lag_lsns"),
        );
        if let Some(p) = u.get("sync").filter(|p| !p.is_null()) {
            let _ = writeln!(
                out,
                "  catching up: {:.1}%, {:.1} MB/s, about {} s left",
                p["percent"].as_f64().unwrap_or(0.0),
                p["bytes_per_second"].as_f64().unwrap_or(0.0) / 1e6,
                p["eta_seconds"]
                    .as_f64()
                    .map_or("?".into(), |e| format!("{e:.0}")),
            );
        }
        if let Some(r) = u.get("stopped").and_then(|r| r.as_str()) {
            let _ = writeln!(out, "  REPLICATION STOPPED: {r}");
        }
    }
    if let Some(l) = v.get("leadership").filter(|l| !l.is_null()) {
        let _ = writeln!(
            out,
            "leadership: {} in epoch {}, {}; {} {}; {} lease renewals, {} lapses, {} elections won",
            s(l, "role"),
            s(l, "epoch"),
            if l["may_write"] == true {
                format!("takes writes (lease {} ms left)", s(l, "lease_left_ms"))
            } else {
                "takes no writes".into()
            },
            match l["coordinator"].as_str() {
                Some("etcd") => "etcd".to_owned(),
                _ => format!("witness {}", s(l, "witness")),
            },
            if l["witness_reachable"] == true {
                "reachable"
            } else {
                "NOT REACHABLE"
            },
            s(l, "lease_renewals"),
            s(l, "lease_lapses"),
            s(l, "elections_won"),
        );
        if l["paused"] == true {
            let _ = writeln!(out, "  writes paused: a switchover is moving leadership");
        }
        for t in l["transitions"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .take(5)
        {
            let at = t["at_us"].as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "  {} {} (epoch {}): {}{}",
                vigil_fhir::instant::format_instant(at),
                s(t, "kind"),
                s(t, "epoch"),
                s(t, "reason"),
                match t["kind"].as_str() {
                    Some("promoted") => format!(
                        "; loss window at most {} lsns / {:.1} s",
                        s(t, "lost_lsns"),
                        t["lost_seconds"].as_f64().unwrap_or(0.0)
                    ),
                    Some("rejoined") => format!(
                        "; {} versions cut into {}",
                        s(t, "lost_lsns"),
                        s(t, "quarantine")
                    ),
                    _ => String::new(),
                }
            );
        }
    }
    if let Some(d) = v.get("disk").filter(|d| d.is_object()) {
        let mb = |k: &str| d[k].as_f64().unwrap_or(0.0) / 1e6;
        let rate = d["growth_bytes_per_second"].as_f64().unwrap_or(0.0);
        let full = match d["seconds_to_reserve"].as_f64() {
            Some(secs) => format!(", writes stop in about {:.0} min", secs / 60.0),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "disk: {:.0} MB free of {:.0} MB (reserve {:.0} MB), shrinking {:.2} MB/s{full}{}",
            mb("free_bytes"),
            mb("total_bytes"),
            mb("reserve_bytes"),
            rate / 1e6,
            if d["writable"] == false {
                "; FULL: client writes are refused (507)"
            } else {
                ""
            }
        );
    }
    if let Some(a) = v.get("archive").filter(|a| a.is_object()) {
        let state = if a["active"] == true {
            format!(
                "lag {} lsns / {:.1} s",
                a["lag_lsns"].as_u64().unwrap_or(0),
                a["lag_seconds"].as_f64().unwrap_or(0.0)
            )
        } else {
            "not archiving (this node does not lead)".into()
        };
        let _ = writeln!(
            out,
            "archive: {} up to lsn {}, {state}; {} pieces uploaded here{}",
            s(a, "url"),
            a["archived_lsn"].as_u64().unwrap_or(0),
            a["pieces"].as_u64().unwrap_or(0),
            match a["last_error"].as_str() {
                Some(e) => format!("; FAILING ({} errors): {e}", a["errors"]),
                None => String::new(),
            }
        );
    }
    if let Some(b) = v.get("backups").filter(|b| b.is_object()) {
        let every = match b["interval_ms"].as_u64().unwrap_or(0) {
            0 => "none scheduled".to_owned(),
            ms => format!("every {:.1} h", ms as f64 / 3.6e6),
        };
        let last = match b["last_name"].as_str() {
            Some(n) => format!(
                "newest {n} (index at lsn {})",
                b["last_lsn"].as_u64().unwrap_or(0)
            ),
            None => "none yet".into(),
        };
        let _ = writeln!(
            out,
            "base backups: {every}; {last}{}{}",
            if b["running"] == true {
                "; one is being taken"
            } else {
                ""
            },
            match b["last_error"].as_str() {
                Some(e) => format!("; FAILING ({} errors): {e}", b["errors"]),
                None => String::new(),
            }
        );
    }
    for q in v["quarantine"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "quarantine: {} ({} versions{})",
            s(q, "path"),
            s(q, "versions"),
            if q["reapplied"] == true {
                ", reapplied"
            } else {
                "; `vigil quarantine reapply` submits them"
            }
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_and_a_follower_read_at_a_glance() {
        let leader = r#"{"role":"leader","node":"a","cluster":"c","epoch":1,"last_lsn":42,
            "max_lag_seconds":0.5,"upstream":null,
            "followers":[{"node":"b","remote":"127.0.0.1:9","connected":true,"received":42,
            "durable":40,"applied":39,"lag_lsns":2,"lag_seconds":0.25,"eligible":false,
            "commit_to_durable_p50_ms":1.5,"commit_to_durable_p99_ms":30.0,
            "commit_to_durable_samples":10}]}"#;
        let text = render(leader).expect("renders");
        assert!(
            text.contains("node a (leader) in cluster c: epoch 1, last lsn 42"),
            "{text}"
        );
        let full = r#"{"role":"standalone","disk":{"free_bytes":100000000,"total_bytes":1000000000,
            "reserve_bytes":268435456,"writable":false,"growth_bytes_per_second":2000000.0,
            "seconds_to_reserve":null}}"#;
        let disk = render(full).expect("renders");
        assert!(
            disk.contains(
                "disk: 100 MB free of 1000 MB (reserve 268 MB), shrinking 2.00 MB/s; FULL"
            ),
            "{disk}"
        );
        assert!(text.contains("RPO promise (max_lag): 0.5 s"), "{text}");
        let archiving = r#"{"role":"standalone","archive":{"url":"s3://b/p","active":true,
            "archived_lsn":40,"archived_time_us":1,"last_success_us":2,"pieces":3,"bytes":9,
            "errors":4,"last_error":"listing log/ at s3://b/p: refused","lag_lsns":2,"lag_seconds":1.25}}"#;
        let shown = render(archiving).expect("renders");
        assert!(
            shown.contains(
                "archive: s3://b/p up to lsn 40, lag 2 lsns / 1.2 s; 3 pieces uploaded here; FAILING (4 errors): listing log/ at s3://b/p: refused"
            ),
            "{shown}"
        );
        let backups = r#"{"role":"standalone","backups":{"interval_ms":86400000,"running":false,
            "last_name":"00000000000000000040-00000000000000000009","last_lsn":40,
            "last_taken_us":9,"last_seconds":1.5,"taken":1,"pruned":0,"errors":1,
            "last_error":"uploading x: refused"}}"#;
        let shown = render(backups).expect("renders");
        assert!(
            shown.contains(
                "base backups: every 24.0 h; newest 00000000000000000040-00000000000000000009 (index at lsn 40); FAILING (1 errors): uploading x: refused"
            ),
            "{shown}"
        );
        assert!(
            text.contains("durable 40 applied 39, lag 2 lsns / 0.250 s, INELIGIBLE"),
            "{text}"
        );
        assert!(text.contains("p50 1.5 ms, p99 30.0 ms"), "{text}");
        let follower = r#"{"role":"follower","node":"b","cluster":"c","epoch":1,"last_lsn":10,
            "max_lag_seconds":null,"followers":[],
            "upstream":{"leader_addr":"127.0.0.1:7400","leader":"a","leader_http":"http://a",
            "connected":true,"leader_lsn":40,"durable":10,"lag_lsns":30,
            "sync":{"percent":25.0,"lsns_left":30,"bytes_per_second":2000000.0,"eta_seconds":3.0},
            "stopped":"the leader refused this follower"}}"#;
        let text = render(follower).expect("renders");
        assert!(
            text.contains("leader a (http://a) at 127.0.0.1:7400: streaming, durable 10 of 40"),
            "{text}"
        );
        assert!(
            text.contains("catching up: 25.0%, 2.0 MB/s, about 3 s left"),
            "{text}"
        );
        assert!(
            text.contains("REPLICATION STOPPED: the leader refused"),
            "{text}"
        );
        assert!(render("not json").is_err());
    }
}
