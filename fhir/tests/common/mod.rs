//! An in-process server for HTTP-level tests: the real router over a
//! temporary store, driven request by request without sockets.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use vigil_fhir::app::App;
use vigil_fhir::config::Config;
use vigil_fhir::server::router;

/// A server on a temporary store.
pub struct TestServer {
    pub app: Arc<App>,
    _dir: tempfile::TempDir,
}

/// A response: status, headers, body parsed as JSON (Null when empty).
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The OperationOutcome's first diagnostics.
    pub fn diagnostics(&self) -> &str {
        self.body["issue"][0]["diagnostics"].as_str().unwrap_or("")
    }
}

impl TestServer {
    /// A fresh server with default settings.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A fresh server with adjusted settings.
    pub fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data: dir.path().join("data"),
            base_url: Some("http://vigil.test".into()),
            ..Config::default()
        };
        adjust(&mut config);
        let app = Arc::new(App::open(config).expect("store opens"));
        Self { app, _dir: dir }
    }

    /// Sends one request.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.into())).expect("request");
        let resp = router(self.app.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        };
        Resp {
            status,
            headers,
            body,
            raw,
        }
    }

    /// GET with request headers.
    pub async fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> Resp {
        self.call(Method::GET, uri, headers, Vec::new()).await
    }

    /// How many versions the store holds (to check that nothing was written).
    pub fn versions(&self) -> u64 {
        self.app
            .store()
            .expect("store")
            .stats()
            .expect("stats")
            .versions
    }

    /// GET.
    pub async fn get(&self, uri: &str) -> Resp {
        self.call(Method::GET, uri, &[], Vec::new()).await
    }

    /// POST a JSON body.
    pub async fn post(&self, uri: &str, body: &Value) -> Resp {
        self.call(
            Method::POST,
            uri,
            &[("content-type", "application/fhir+json")],
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// PUT a JSON body.
    pub async fn put(&self, uri: &str, body: &Value) -> Resp {
        self.call(
            Method::PUT,
            uri,
            &[("content-type", "application/fhir+json")],
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// PUT of a resource at `[type]/[id]` taken from the resource itself;
    /// panics unless it succeeds.
    pub async fn put_resource(&self, body: Value) {
        let path = format!(
            "/{}/{}",
            body["resourceType"].as_str().expect("a resourceType"),
            body["id"].as_str().expect("an id")
        );
        let r = self.put(&path, &body).await;
        assert!(r.status.is_success(), "{path}: {:?}", r.body);
    }

    /// DELETE.
    pub async fn delete(&self, uri: &str) -> Resp {
        self.call(Method::DELETE, uri, &[], Vec::new()).await
    }
}

/// The `Type/id` of a searchset's matches (not its outcome entries), in
/// the Bundle's order.
pub fn match_refs(bundle: &Value) -> Vec<String> {
    refs_of_mode(bundle, "match")
}

/// The `Type/id` of a searchset's entries of one search mode (`match`,
/// `include`), in the Bundle's order.
pub fn refs_of_mode(bundle: &Value, mode: &str) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == mode)
                .map(|x| {
                    format!(
                        "{}/{}",
                        x["resource"]["resourceType"].as_str().unwrap_or(""),
                        x["resource"]["id"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl TestServer {
    /// Every page of a search, following `next` links from `uri` (at most
    /// 100 pages).
    pub async fn pages(&self, uri: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut url = uri.to_owned();
        loop {
            let r = self.get(&url).await;
            assert_eq!(r.status, StatusCode::OK, "{url}: {:?}", r.body);
            let next = r.body["link"]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
                .and_then(|n| n["url"].as_str())
                .map(|u| u.trim_start_matches("http://vigil.test").to_owned());
            out.push(r.body);
            match next {
                Some(n) => url = n,
                None => return out,
            }
            assert!(out.len() < 100, "more than 100 pages from {uri}");
        }
    }
}

/// The ids of a searchset's matches, sorted.
pub fn sorted_ids(bundle: &Value) -> Vec<String> {
    let mut out: Vec<String> = match_refs(bundle)
        .into_iter()
        .map(|r| r.rsplit('/').next().unwrap_or("").to_owned())
        .collect();
    out.sort();
    out
}

/// The sorted ids a search finds; panics unless it answers 200.
pub async fn found(s: &TestServer, q: &str) -> Vec<String> {
    let r = s.get(q).await;
    assert_eq!(r.status, StatusCode::OK, "{q}: {:?}", r.body);
    sorted_ids(&r.body)
}

/// `Type/id` of each resource, as a set.
pub fn type_ids(resources: &[Value]) -> std::collections::BTreeSet<String> {
    resources
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}
