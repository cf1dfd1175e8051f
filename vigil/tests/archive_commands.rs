//! The log archive as a user runs it, against a real S3 server (SeaweedFS
//! on loopback; the test command installs it, a missing one fails): `vigil
//! serve` with `[archive] url = "s3://…"` archives while clients write and
//! shows it in `/status` and `/metrics`; it is killed with SIGKILL during
//! uploads; every archived object still reads whole, and `vigil restore
//! --from s3://… --time T` gives exactly the acknowledged versions
//! committed at or before T (checked against the client's own log).
//! The server takes base backups there (on its schedule and on
//! `POST /admin/backup`); `vigil backup verify` checks them, `vigil
//! restore` lays the newest beside the log, and the restored server
//! answers searches at once; `vigil backup prune` applies retention.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use vigil_engine::archive::{PIECE_PREFIX, Piece, PieceName};
use vigil_engine::{Store, VersionRead};
use vigil_net::archive::Location;
use vigil_testkit::http::request;
use vigil_testkit::s3::S3Server;
use vigil_testkit::{ChildGuard, output_of, until};

struct Acked {
    id: String,
    version: u64,
    family: String,
    last_updated: String,
}

fn serve(config: &std::path::Path, env: &[(&'static str, String)]) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.arg("serve").arg("--config").arg(config);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    ChildGuard::spawn_server(cmd).expect("serve")
}

fn status(addr: SocketAddr) -> serde_json::Value {
    let r = request(addr, "GET", "/status", None).expect("status");
    serde_json::from_str(&r.body).expect("json")
}

#[test]
fn a_killed_servers_archive_restores_exactly_what_was_acknowledged_by_a_time() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil-dr");
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "data = {data:?}\nhttp = \"127.0.0.1:0\"\nlog_level = \"warn\"\n[archive]\nurl = \"s3://vigil-dr/region-a\"\ninterval_ms = 200\n"
        ),
    )
    .expect("config");
    let env = s3.env();
    let (server, addr) = serve(&config, &env);

    let mut acked: Vec<Acked> = Vec::new();
    let write = |i: usize, acked: &mut Vec<Acked>| {
        let id = format!("p{}", i % 25);
        let family = format!("Fam{i:05}");
        let body =
            format!(r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"{family}"}}]}}"#);
        let r = request(addr, "PUT", &format!("/Patient/{id}"), Some(&body)).expect("put");
        assert!(r.status == 200 || r.status == 201, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        acked.push(Acked {
            id,
            version: v["meta"]["versionId"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("versionId"),
            family,
            last_updated: v["meta"]["lastUpdated"]
                .as_str()
                .expect("lastUpdated")
                .into(),
        });
    };
    for i in 0..300 {
        write(i, &mut acked);
    }
    until("the archive catches up", Duration::from_secs(60), || {
        let s = status(addr);
        s["archive"]["lag_lsns"] == 0 && s["archive"]["archived_lsn"].as_u64() > Some(0)
    });
    let s = status(addr);
    assert_eq!(s["archive"]["url"], "s3://vigil-dr/region-a");
    assert_eq!(s["archive"]["active"], true);
    assert_eq!(s["archive"]["last_error"], serde_json::Value::Null);
    let metrics = request(addr, "GET", "/metrics", None)
        .expect("metrics")
        .body;
    assert!(metrics.contains("vigil_archive_lag_lsns 0"), "{metrics}");
    assert!(metrics.contains("vigil_archive_active 1"), "{metrics}");
    // More writes, then SIGKILL while the archive uploads them.
    for i in 300..700 {
        write(i, &mut acked);
    }
    drop(server);

    // Every object is whole (create-only uploads: absent or complete).
    let pairs: Vec<(&str, String)> = vec![
        ("aws_access_key_id", env[0].1.clone()),
        ("aws_secret_access_key", env[1].1.clone()),
        ("aws_region", env[2].1.clone()),
        ("aws_endpoint", env[3].1.clone()),
        ("aws_allow_http", "true".into()),
    ];
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let loc = Location::parse_with("s3://vigil-dr/region-a", &pairs).expect("location");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let objects = rt.block_on(loc.list(PIECE_PREFIX)).expect("list");
    assert!(
        !objects.is_empty(),
        "nothing archived; the server said {s:#}"
    );
    let mut archived_end = 0u64;
    for (name, _) in &objects {
        let parsed = PieceName::parse(name).unwrap_or_else(|| panic!("a piece name: {name}"));
        let piece = Piece::decode(&rt.block_on(loc.get(name)).expect("get")).expect("whole");
        assert_eq!(piece.name, parsed);
        archived_end = archived_end.max(piece.last_time_us);
    }

    // A time inside the archive: an acknowledged write's own instant.
    let micros = |t: &str| -> u64 {
        let (start, _) = vigil_fhir::instant::parse_interval(t).expect("instant");
        u64::try_from(start).expect("after 1970")
    };
    let covered: Vec<&Acked> = acked
        .iter()
        .filter(|a| micros(&a.last_updated) <= archived_end)
        .collect();
    assert!(
        covered.len() >= 300,
        "the archive holds at least the first 300 writes"
    );
    let t = covered[covered.len() * 2 / 3].last_updated.clone();
    let tu = micros(&t);
    let restored = dir.path().join("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["restore", "--from", "s3://vigil-dr/region-a", "--to"])
        .arg(&restored)
        .args(["--time", &t])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("restore runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("from s3://vigil-dr/region-a up to lsn"),
        "{text}"
    );
    assert!(text.contains("ready after"), "{text}");
    let store = Store::open(&restored).expect("open restored");
    for a in &acked {
        let got = store
            .get_version("Patient", &a.id, a.version)
            .expect("vread");
        if micros(&a.last_updated) <= tu {
            match got {
                VersionRead::Live(v) => assert!(
                    std::str::from_utf8(&v.body)
                        .expect("utf8")
                        .contains(&a.family),
                    "{}/{} holds what was written",
                    a.id,
                    a.version
                ),
                other => panic!("{}/{} acknowledged by {t}: {other:?}", a.id, a.version),
            }
        } else {
            assert!(
                !matches!(got, VersionRead::Live(_)),
                "{}/{} was written after {t}",
                a.id,
                a.version
            );
        }
    }
}

fn vigil(args: &[&str], env: &[(&'static str, String)]) -> String {
    output_of(
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    )
}

#[test]
fn a_servers_base_backups_restore_a_server_that_searches_at_once() {
    let s3 = S3Server::start();
    s3.create_bucket("vigil-dr");
    let env = s3.env();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "data = {data:?}\nhttp = \"127.0.0.1:0\"\nlog_level = \"warn\"\n[archive]\nurl = \"s3://vigil-dr/a\"\ninterval_ms = 200\nbackup_interval_ms = 60000\nkeep_days = 0\nkeep_backups = 5\n"
        ),
    )
    .expect("config");
    let (server, addr) = serve(&config, &env);
    let put = |i: usize| {
        let body = format!(
            r#"{{"resourceType":"Patient","id":"p{i}","name":[{{"family":"Fam{i:05}"}}]}}"#
        );
        let r = request(addr, "PUT", &format!("/Patient/p{i}"), Some(&body)).expect("put");
        assert!(r.status == 201, "{}", r.body);
    };
    for i in 0..200 {
        put(i);
    }
    // No backup at the location yet: the schedule takes one.
    until("a scheduled base backup", Duration::from_secs(60), || {
        status(addr)["backups"]["last_name"].is_string()
    });
    let first = status(addr)["backups"]["last_name"]
        .as_str()
        .expect("name")
        .to_owned();
    for i in 200..300 {
        put(i);
    }
    let r = request(addr, "POST", "/admin/backup", None).expect("backup");
    assert_eq!(r.status, 200, "{}", r.body);
    let taken: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let second = taken["name"].as_str().expect("name").to_owned();
    assert_ne!(first, second);
    assert!(taken["index_bytes"].as_u64() > Some(0), "{taken}");
    let bad = request(addr, "POST", "/admin/backup?to=ftp://nowhere", None).expect("bad");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("OperationOutcome"), "{}", bad.body);
    let s = status(addr);
    assert_eq!(s["backups"]["last_name"], second.as_str());
    assert_eq!(s["backups"]["last_error"], serde_json::Value::Null);
    let metrics = request(addr, "GET", "/metrics", None)
        .expect("metrics")
        .body;
    assert!(metrics.contains("vigil_backup_lsn "), "{metrics}");
    drop(server);

    let text = vigil(&["backup", "verify", "s3://vigil-dr/a"], &env);
    assert!(
        text.contains("archive at s3://vigil-dr/a is whole"),
        "{text}"
    );
    assert!(
        text.contains(&format!("base backup {first}"))
            && text.contains(&format!("base backup {second}")),
        "{text}"
    );
    assert!(!text.contains("NOT on the history"), "{text}");

    let restored = dir.path().join("restored");
    let r = restored.to_str().expect("utf8");
    let text = vigil(&["restore", "--from", "s3://vigil-dr/a", "--to", r], &env);
    assert!(
        text.contains(&format!("and the index of base backup {second}")),
        "{text}"
    );
    assert!(text.contains("ready after"), "{text}");
    // The restored server answers a search from the backup's index.
    let config2 = dir.path().join("restored.toml");
    std::fs::write(
        &config2,
        format!("data = {restored:?}\nhttp = \"127.0.0.1:0\"\nlog_level = \"warn\"\n"),
    )
    .expect("config");
    let (server, addr) = serve(&config2, &[]);
    let found = request(addr, "GET", "/Patient?family=Fam00299", None).expect("search");
    assert_eq!(found.status, 200, "{}", found.body);
    let bundle: serde_json::Value = serde_json::from_str(&found.body).expect("json");
    assert_eq!(bundle["total"], 1, "{bundle}");
    drop(server);

    // A stopped store backs up from the command line.
    let text = vigil(&["backup", "--data", r, "--to", "s3://vigil-dr/b"], &env);
    assert!(
        text.contains("base backup") && text.contains("at s3://vigil-dr/b"),
        "{text}"
    );
    let text = vigil(
        &[
            "backup",
            "prune",
            "s3://vigil-dr/a",
            "--keep-days",
            "0",
            "--keep-backups",
            "1",
        ],
        &env,
    );
    assert!(
        text.contains(&format!("deleted base backup {first}")),
        "{text}"
    );
    assert!(text.contains("1 base backups deleted, 1 kept"), "{text}");
}

/// The commands on Azure Blob Storage (Azurite), credentials from the
/// standard `AZURE_STORAGE_*` environment: a stopped store backed up to
/// `az://`, verified, and restored with its index.
#[test]
fn the_commands_take_azure_blob_urls_with_credentials_from_the_environment() {
    let az = vigil_testkit::azurite::Azurite::start();
    az.create_container("vigil");
    let env = az.env();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    {
        let store = Store::open(&data).expect("store");
        for i in 0..50u32 {
            let body = format!(r#"{{"resourceType":"Patient","id":"p{i}"}}"#);
            store
                .commit(vigil_engine::Batch::one(vigil_engine::Op::put(
                    "Patient",
                    format!("p{i}"),
                    body.into_bytes(),
                )))
                .expect("commit");
        }
    }
    let d = data.to_str().expect("utf8");
    let text = vigil(&["backup", "--data", d, "--to", "az://vigil/cli"], &env);
    assert!(
        text.contains("base backup") && text.contains("at az://vigil/cli"),
        "{text}"
    );
    let text = vigil(&["backup", "verify", "az://vigil/cli"], &env);
    assert!(text.contains("is whole"), "{text}");
    let restored = dir.path().join("restored");
    let r = restored.to_str().expect("utf8");
    let text = vigil(&["restore", "--from", "az://vigil/cli", "--to", r], &env);
    assert!(text.contains("and the index of base backup"), "{text}");
    let store = Store::open(&restored).expect("open restored");
    assert!(matches!(
        store.get("Patient", "p49").expect("read"),
        vigil_engine::Current::Live(_)
    ));
}
