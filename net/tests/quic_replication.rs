//! Replication over real QUIC on loopback: a follower catches up with a
//! leader that already holds data and then tails it; a node whose
//! certificate another cluster's CA signed is refused; a write never waits
//! on recording a follower "eligible again".

use std::sync::Arc;
use std::time::Duration;

use vigil_engine::{Batch, Op, Options, Store};
use vigil_net::proto::enforce::{Record, RecordError};
use vigil_net::runtime::node::{Node, NodeConfig, Role};
use vigil_net::runtime::tls::{NodeSpec, make_cluster};
use vigil_testkit::{frames, until_async};

/// How long a test waits for what it expects before failing.
const LIMIT: Duration = Duration::from_secs(30);

fn write(store: &Store, from: u32, n: u32) {
    let mut b = Batch::new();
    for i in from..from + n {
        let id = format!("p{i}");
        let body =
            format!(r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"F{i}"}}]}}"#);
        b.push(Op::put("Patient", id, body.into_bytes()));
    }
    store.commit(b).expect("commit");
}

/// A replica store in `dir` and a follower node "b" of `cluster` on it,
/// following the leader at `leader` (named "a").
async fn follower(
    dir: &std::path::Path,
    cluster: &str,
    certs: &std::path::Path,
    http: &str,
    leader: std::net::SocketAddr,
) -> (Arc<Store>, Node) {
    let replica = Arc::new(
        Store::open_with(
            dir,
            Options {
                replica: true,
                ..Options::default()
            },
        )
        .expect("replica"),
    );
    let node = Node::start(
        replica.clone(),
        NodeConfig::new(
            cluster,
            "b",
            certs.to_owned(),
            http,
            Role::Follower {
                leader,
                leader_name: "a".into(),
            },
        ),
    )
    .await
    .expect("follower node");
    (replica, node)
}

/// Node "a" of `cluster`, leading on an ephemeral loopback port.
fn leader_config(cluster: &str, certs: &std::path::Path, http: &str) -> NodeConfig {
    NodeConfig::new(
        cluster,
        "a",
        certs.to_owned(),
        http,
        Role::Leader {
            listen: "127.0.0.1:0".parse().expect("addr"),
        },
    )
}

fn nodes(certs: &std::path::Path, cluster: &str, names: &[&str]) {
    let specs: Vec<_> = names
        .iter()
        .map(|n| NodeSpec::parse(n).expect("spec"))
        .collect();
    make_cluster(certs, cluster, &specs).expect("certs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_then_tails_the_leader() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    nodes(&certs, "c1", &["a", "b"]);
    let leader = Arc::new(Store::open(dir.path().join("a")).expect("leader"));
    for r in 0..20 {
        write(&leader, r * 100, 100);
    }
    let ln = Node::start(
        leader.clone(),
        leader_config("c1", &certs, "http://127.0.0.1:1"),
    )
    .await
    .expect("leader node");
    let addr = ln.local_addr().expect("addr");
    let (replica, fnode) = follower(
        &dir.path().join("b"),
        "c1",
        &certs,
        "http://127.0.0.1:2",
        addr,
    )
    .await;
    until_async("catch-up", LIMIT, || {
        replica.last_lsn() == leader.last_lsn()
    })
    .await;
    write(&leader, 5000, 10);
    until_async("live tail", LIMIT, || {
        replica.last_lsn() == leader.last_lsn()
    })
    .await;
    assert!(
        ln.wait_replicated(leader.last_lsn(), Duration::from_secs(10))
            .await
    );
    until_async("status", LIMIT, || {
        let s = ln.status();
        s.followers.len() == 1 && s.followers[0].durable == leader.last_lsn()
    })
    .await;
    let s = ln.status();
    assert_eq!(s.role, "leader");
    assert!(s.followers[0].connected && s.followers[0].eligible);
    assert_eq!(s.followers[0].node, "b");
    let fs = fnode.status();
    let up = fs.upstream.expect("upstream");
    assert_eq!(up.leader, "a");
    assert_eq!(up.leader_http, "http://127.0.0.1:1");
    assert_eq!(up.durable, leader.last_lsn());
    assert_eq!(fnode.leader_http().as_deref(), Some("http://127.0.0.1:1"));
    fnode.shutdown().await;
    ln.shutdown().await;
    assert_eq!(
        frames(&replica),
        frames(&leader),
        "logs frame-for-frame identical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    nodes(&ours, "c1", &["a"]);
    nodes(&theirs, "c2", &["b"]);
    let leader = Arc::new(Store::open(dir.path().join("a")).expect("leader"));
    write(&leader, 0, 10);
    let ln = Node::start(leader.clone(), leader_config("c1", &ours, "http://x"))
        .await
        .expect("leader node");
    let leader_addr = ln.local_addr().expect("addr");
    let (replica, fnode) = follower(
        &dir.path().join("b"),
        "c2",
        &theirs,
        "http://y",
        leader_addr,
    )
    .await;
    until_async("a failed connection", LIMIT, || {
        fnode.status().upstream.is_some_and(|u| u.disconnects >= 1)
    })
    .await;
    assert_eq!(
        replica.last_lsn(),
        0,
        "nothing replicated to a foreign node"
    );
    assert!(
        ln.status().followers.is_empty(),
        "the leader never accepted it"
    );
    fnode.shutdown().await;
    ln.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_grants_leases_and_epochs_over_mutual_tls() {
    use vigil_net::proto::lease::LeaseConfig;
    use vigil_net::proto::wire::{Message, RefuseCode};
    use vigil_net::runtime::tls::Identity;
    use vigil_net::runtime::witness::{WitnessClient, serve};

    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    nodes(&certs, "c1", &["a", "b", "w"]);
    let foreign = dir.path().join("foreign");
    nodes(&foreign, "c2", &["a"]);
    let cfg = LeaseConfig {
        duration_us: 200_000,
        renew_every_us: 50_000,
        drift_margin_us: 20_000,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let wid = Identity::load(&certs, "w").expect("identity");
    let wdir = dir.path().join("witness");
    let task = tokio::spawn(async move {
        serve(
            &wdir,
            wid,
            cfg,
            "127.0.0.1:0".parse().expect("addr"),
            stop,
            |a| {
                let _ = ready_tx.send(a);
            },
        )
        .await
    });
    let addr = ready.await.expect("witness ready");
    let a = Identity::load(&certs, "a").expect("identity");
    let mut c = WitnessClient::connect(&a, addr, "w")
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(250)).await; // the witness's quiet start
    let ask = Message::LeaseAsk {
        candidate: "a".into(),
        epoch: 0,
        round: 1,
    };
    assert!(matches!(
        c.ask(&ask).await.expect("answer"),
        Message::LeaseAnswer { granted: true, .. }
    ));
    let cas = Message::EpochCas {
        candidate: "a".into(),
        expected: 0,
    };
    assert_eq!(
        c.ask(&cas).await.expect("answer"),
        Message::EpochCasAnswer { ok: true, epoch: 1 }
    );
    // a leads epoch 1: its records are taken.
    let record = |leader: &str, follower: &str| Message::Eligibility {
        leader: leader.into(),
        follower: follower.into(),
        eligible: false,
        durable_lsn: 3,
        epoch: 1,
        seq: 1,
    };
    assert!(matches!(
        c.ask(&record("a", "b")).await.expect("answer"),
        Message::EligibilityRecorded { .. }
    ));
    // b, a member of the same cluster, can neither speak as a nor record
    // in a's epoch under its own name.
    let b = Identity::load(&certs, "b").expect("identity");
    let mut cb = WitnessClient::connect(&b, addr, "w")
        .await
        .expect("connect");
    for (m, code) in [
        (record("a", "a"), RefuseCode::Protocol),
        (
            Message::LeaseRelease { holder: "a".into() },
            RefuseCode::Protocol,
        ),
        (record("b", "a"), RefuseCode::NotLeader),
    ] {
        let answer = cb.ask(&m).await.expect("answer");
        assert!(
            matches!(&answer, Message::Refused { code: c, .. } if *c == code),
            "{m:?} -> {answer:?}"
        );
    }
    cb.close();
    assert!(
        matches!(
            c.ask(&Message::LeaseAsk {
                candidate: "a".into(),
                epoch: 1,
                round: 2
            })
            .await
            .expect("answer"),
            Message::LeaseAnswer { granted: true, .. }
        ),
        "a's promise was not released by b"
    );
    c.close();
    // A node of another cluster cannot even connect.
    let stranger = Identity::load(&foreign, "a").expect("identity");
    assert!(WitnessClient::connect(&stranger, addr, "w").await.is_err());
    let _ = stop_tx.send(true);
    task.await.expect("task").expect("witness ran");
    let state =
        vigil_net::proto::witness::WitnessState::load(&dir.path().join("witness")).expect("state");
    assert_eq!(state.epoch, 1, "the epoch is durable");
    assert_eq!(state.leader, "a", "and whom it was allocated to");
    assert!(
        state.followers.get("a").is_some_and(|r| r.eligible),
        "b's claims changed nothing: {state:?}"
    );
}

/// "Eligible again" only widens what the witness may do: a write must not
/// be refused because it could not be recorded (the witness may be down),
/// while the background tick keeps trying. "Ineligible" stays strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_never_waits_on_recording_eligible_again() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    nodes(&certs, "c4", &["a", "b"]);
    let leader = Arc::new(Store::open(dir.path().join("a")).expect("leader"));
    write(&leader, 0, 10);
    let asked: Arc<std::sync::Mutex<Vec<bool>>> = Arc::default();
    let seen = asked.clone();
    let mut cfg = leader_config("c4", &certs, "http://127.0.0.1:1");
    cfg.max_lag = Some(Duration::from_secs(60));
    cfg.record_eligibility = Some(Arc::new(move |r: &Record| {
        seen.lock().expect("lock").push(r.eligible);
        if r.eligible {
            Err(RecordError::Failed(
                "the witness did not answer in time".to_owned(),
            ))
        } else {
            Ok(())
        }
    }));
    let ln = Node::start(leader.clone(), cfg).await.expect("leader node");
    let addr = ln.local_addr().expect("addr");
    let (replica, fnode) = follower(
        &dir.path().join("b"),
        "c4",
        &certs,
        "http://127.0.0.1:2",
        addr,
    )
    .await;
    until_async("catch-up", LIMIT, || {
        replica.last_lsn() == leader.last_lsn()
    })
    .await;
    until_async("the tick tried to record eligible", LIMIT, || {
        asked.lock().expect("lock").contains(&true)
    })
    .await;
    // The follower is within the bound, the witness unreachable: the
    // write's check passes all the same.
    write(&leader, 100, 1);
    ln.check_bound().await.expect("a write is not refused");
    fnode.shutdown().await;
    ln.shutdown().await;
}
