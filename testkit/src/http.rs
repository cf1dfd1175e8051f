//! A minimal blocking HTTP/1.1 client for tests (one request per
//! connection, Content-Length bodies): enough to drive a Vigil node
//! without pulling an HTTP stack into every test. The one HTTP client of
//! the tests that talk to a server over a socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: status, headers (lower-case names) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Reply> {
    request_with(addr, method, path, body, &[])
}

/// Like [`request`], with extra headers; an `Accept` or `Content-Type`
/// among them replaces the default (`application/fhir+json`).
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let given = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut defaults = String::new();
    for name in ["Accept", "Content-Type"] {
        if !given(name) {
            defaults.push_str(&format!("{name}: application/fhir+json\r\n"));
        }
    }
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{defaults}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut body = String::new();
    r.read_to_string(&mut body)?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A node's `/status` (Null when it does not answer 200).
pub fn status(addr: SocketAddr) -> serde_json::Value {
    match request(addr, "GET", "/status", None) {
        Ok(r) if r.status == 200 => serde_json::from_str(&r.body).expect("json"),
        _ => serde_json::Value::Null,
    }
}
