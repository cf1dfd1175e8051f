//! A real Azure Blob Storage server on loopback for the object-storage
//! tests: Azurite (Microsoft's emulator, from npm), which the README's
//! test command installs into `target/tools/azurite`. It checks Shared Key
//! signatures as Azure does, with the emulator's well-known account.
//! Killed when dropped. A missing Azurite fails the test with what to
//! install; it is never skipped.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;

use crate::{ChildGuard, free_ports, until};

/// The emulator's account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known account key (public, in Azure's docs).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The Blob API version of the requests made here.
const API_VERSION: &str = "2021-08-06";

/// A running Azurite (Blob service only).
#[derive(Debug)]
pub struct Azurite {
    dir: tempfile::TempDir,
    port: u16,
    _child: ChildGuard,
}

/// Where the test command put Azurite, or `azurite-blob` on the PATH.
fn binary() -> PathBuf {
    crate::installed_tool(
        "VIGIL_AZURITE",
        "azurite/node_modules/.bin/azurite-blob",
        "azurite-blob",
    )
}

impl Azurite {
    /// Starts the Blob service and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("azurite dir");
        let (port, _) = free_ports(1, 0);
        let log = std::fs::File::create(dir.path().join("azurite.log")).expect("log");
        let mut cmd = Command::new(binary());
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--location")
            .arg(dir.path().join("data"))
            .arg("--skipApiVersionCheck")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "Azurite is not installed: the README's test command installs it (npm's \
                 azurite, into target/tools/azurite); these tests never skip"
            ),
            Err(e) => panic!("azurite did not start: {e}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Self {
            dir,
            port,
            _child: ChildGuard(child),
        };
        until("Azurite listens", Duration::from_secs(60), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        server
    }

    /// The account's Blob endpoint (path-style, as the emulator serves).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// The environment a client needs (`AZURE_*`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY.into()),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint()),
            ("AZURE_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The same as `object_store` settings, for a test process.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("azure_storage_account_name", ACCOUNT.into()),
            ("azure_storage_account_key", ACCOUNT_KEY.into()),
            ("azure_storage_endpoint", self.endpoint()),
            ("azure_allow_http", "true".into()),
        ]
    }

    /// Creates container `name` (Put Container, signed with Shared Key).
    pub fn create_container(&self, name: &str) {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        // Content-Length empty for 0 (API versions from 2015-02-21), the
        // canonical headers, then the account and the path (path-style:
        // the account twice) and the query.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .expect("the emulator's key is base64");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            to_sign.as_bytes(),
        );
        let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let reply = (|| -> std::io::Result<String> {
            use std::io::{Read, Write};
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(
                s,
                "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: {addr}\r\nx-ms-date: {date}\r\nx-ms-version: {API_VERSION}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        })()
        .expect("Put Container");
        assert!(
            reply.starts_with("HTTP/1.1 201"),
            "Azurite refused to create container {name}: {reply}\n{}",
            std::fs::read_to_string(self.dir.path().join("azurite.log")).unwrap_or_default()
        );
    }
}
