//! `vigil keys` against a key file and against a real PKCS#11 module
//! (SoftHSM2, which the test command installs; a missing one fails the
//! test, it is never skipped): made, checked, rotated, shown; a wrong PIN,
//! an unknown token or module, and a token that disappears (the key
//! revoked) are errors naming the key, and the key works again when the
//! token returns.

use std::path::Path;
use std::process::{Command, Output};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn vigil(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.args(args).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("vigil runs")
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn refused(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_key_file_is_made_checked_rotated_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("kek");
    let f = file.to_str().expect("utf-8");
    assert!(ok(&vigil(&["keys", "new", "--out", f, "--name", "eu"], &[])).contains("version 1"));
    assert!(refused(&vigil(&["keys", "new", "--out", f], &[])).contains("never overwritten"));
    assert!(ok(&vigil(&["keys", "check", "--kek", f], &[])).contains("ok"));
    assert!(ok(&vigil(&["keys", "rotate", "--kek", f], &[])).contains("version 2"));
    let status = ok(&vigil(
        &["keys", "status", "--kek", &format!("file:{f}")],
        &[],
    ));
    assert!(status.contains("versions [1, 2]"), "{status}");
}

fn softhsm(dir: &Path) -> String {
    assert!(
        Path::new(SOFTHSM_MODULE).is_file(),
        "SoftHSM2 is not installed: the README's test command installs it (Debian's softhsm2)"
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("tokens");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("conf");
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "vigil"])
        .args(["--so-pin", "1234", "--pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util runs");
    assert!(init.status.success(), "{init:?}");
    conf.display().to_string()
}

#[test]
fn a_key_on_a_pkcs11_token_works_and_its_loss_is_named_until_it_returns() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = softhsm(dir.path());
    let loc = format!("pkcs11:module={SOFTHSM_MODULE};token=vigil;key=eu");
    let env = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("VIGIL_PKCS11_PIN", "5678"),
    ];
    assert!(ok(&vigil(&["keys", "new", "--kek", &loc], &env)).contains("version 1"));
    assert!(refused(&vigil(&["keys", "new", "--kek", &loc], &env)).contains("already has"));
    assert!(ok(&vigil(&["keys", "check", "--kek", &loc], &env)).contains("ok"));
    assert!(ok(&vigil(&["keys", "rotate", "--kek", &loc], &env)).contains("version 2"));
    let status = ok(&vigil(&["keys", "status", "--kek", &loc], &env));
    assert!(status.contains("versions [1, 2]"), "{status}");

    let wrong_pin = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("VIGIL_PKCS11_PIN", "0000"),
    ];
    let e = refused(&vigil(&["keys", "check", "--kek", &loc], &wrong_pin));
    assert!(e.contains("key eu") && e.contains("logging in"), "{e}");
    let e = refused(&vigil(
        &["keys", "check", "--kek", &loc],
        &[("SOFTHSM2_CONF", &conf)],
    ));
    assert!(e.contains("VIGIL_PKCS11_PIN"), "{e}");
    let other_token = format!("pkcs11:module={SOFTHSM_MODULE};token=nope;key=eu");
    let e = refused(&vigil(&["keys", "check", "--kek", &other_token], &env));
    assert!(e.contains("no token has that label"), "{e}");
    let e = refused(&vigil(
        &[
            "keys",
            "check",
            "--kek",
            "pkcs11:module=/no/such.so;token=vigil;key=eu",
        ],
        &env,
    ));
    assert!(e.contains("loading the module"), "{e}");

    // The token goes away (the key revoked, the module's store lost):
    // named, nothing changed; back, it works again.
    let tokens = dir.path().join("tokens");
    let away = dir.path().join("tokens-away");
    std::fs::rename(&tokens, &away).expect("take the token away");
    std::fs::create_dir_all(&tokens).expect("empty");
    let e = refused(&vigil(&["keys", "check", "--kek", &loc], &env));
    assert!(
        e.contains("key eu") && e.contains("no token has that label"),
        "{e}"
    );
    std::fs::remove_dir(&tokens).expect("rm");
    std::fs::rename(&away, &tokens).expect("bring it back");
    assert!(ok(&vigil(&["keys", "check", "--kek", &loc], &env)).contains("ok"));
}

/// A `vigil serve` on an encrypted store whose key is on a SoftHSM2
/// token: it stops serving (503 naming the key, /health/ready 503) when
/// the token goes away, serves everything again when it returns; its data
/// keys are listed per KEK version and re-wrapped under a new version
/// while it runs; nothing written is readable in its log.
#[test]
fn an_encrypted_server_stops_serving_while_its_token_is_gone_and_resumes_when_it_returns() {
    use std::time::Duration;
    use vigil_testkit::http::request;
    use vigil_testkit::{ChildGuard, until};

    let dir = tempfile::tempdir().expect("dir");
    let conf = softhsm(dir.path());
    let loc = format!("pkcs11:module={SOFTHSM_MODULE};token=vigil;key=eu");
    let env = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("VIGIL_PKCS11_PIN", "5678"),
    ];
    ok(&vigil(&["keys", "new", "--kek", &loc], &env));
    let data = dir.path().join("data");
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "data = {data:?}\nhttp = \"127.0.0.1:0\"\nlog_level = \"warn\"\n[encryption]\nkek = {loc:?}\ncheck_interval_ms = 200\n"
        ),
    )
    .expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.arg("serve").arg("--config").arg(&config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (server, addr) = ChildGuard::spawn_server(cmd).expect("serve");
    let body = r#"{"resourceType":"Patient","id":"s1","name":[{"family":"Qwzxrevoked"}],"identifier":[{"value":"MRN-SECRET-77"}]}"#;
    let put = request(addr, "PUT", "/Patient/s1", Some(body)).expect("put");
    assert_eq!(put.status, 201, "{}", put.body);
    let status = |path: &str| request(addr, "GET", path, None).expect("request").status;
    let ready = request(addr, "GET", "/health/ready", None).expect("ready");
    assert_eq!(ready.status, 200, "{}", ready.body);

    let tokens = dir.path().join("tokens");
    let away = dir.path().join("tokens-away");
    std::fs::rename(&tokens, &away).expect("take the token away");
    std::fs::create_dir_all(&tokens).expect("empty");
    until("the node stops serving", Duration::from_secs(20), || {
        status("/health/ready") == 503
    });
    let r = request(addr, "GET", "/Patient/s1", None).expect("read");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("key-encryption key") && r.body.contains("key=eu"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("Qwzxrevoked"));
    let s2 = body.replace("\"s1\"", "\"s2\"");
    let w = request(addr, "PUT", "/Patient/s2", Some(&s2)).expect("write");
    assert_eq!(w.status, 503, "no write while the key is gone");
    assert_eq!(status("/metadata"), 200, "the server itself answers");

    std::fs::remove_dir(&tokens).expect("rm");
    std::fs::rename(&away, &tokens).expect("bring it back");
    let mut last = String::new();
    let waited = std::time::Instant::now();
    while status("/health/ready") != 200 {
        last = request(addr, "GET", "/health/ready", None)
            .expect("ready")
            .body;
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "the node never served again: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(last);
    assert_eq!(
        request(addr, "GET", "/Patient/s2", None)
            .expect("read")
            .status,
        404,
        "the write refused while the key was gone was not made"
    );
    let r = request(addr, "GET", "/Patient/s1", None).expect("read");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Qwzxrevoked"), "nothing lost: {}", r.body);

    // A new KEK version; the running node re-wraps its data keys under it.
    let d = data.to_str().expect("utf-8");
    let before = ok(&vigil(
        &["keys", "status", "--kek", &loc, "--data", d],
        &env,
    ));
    assert!(
        before.contains("wrapped under \"eu\" version 1"),
        "{before}"
    );
    ok(&vigil(&["keys", "rotate", "--kek", &loc], &env));
    let url = format!("http://{addr}");
    let rewrapped = ok(&vigil(&["keys", "rewrap", "--url", &url], &env));
    assert!(rewrapped.contains("re-wrapped"), "{rewrapped}");
    let after = ok(&vigil(
        &["keys", "status", "--kek", &loc, "--data", d],
        &env,
    ));
    assert!(
        after.contains("version 2") && !after.contains("version 1"),
        "{after}"
    );
    let s3 = body.replace("\"s1\"", "\"s3\"");
    let put = request(addr, "PUT", "/Patient/s3", Some(&s3)).expect("put");
    assert_eq!(
        put.status, 201,
        "writes go on after the re-wrap: {}",
        put.body
    );
    drop(server);
    for e in std::fs::read_dir(data.join("wal")).expect("wal") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("read");
        for needle in [&b"Qwzxrevoked"[..], b"MRN-SECRET-77"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }
}
