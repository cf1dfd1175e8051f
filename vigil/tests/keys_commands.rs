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
