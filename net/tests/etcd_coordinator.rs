//! The etcd coordinator against a real etcd (`etcd` processes on
//! loopback): candidates racing for the promise get it one at a time and
//! every epoch is allocated once; a leader's renewals keep it; mutual TLS
//! and a user with a password work, and a wrong password, a missing
//! client certificate or no member at all are errors that name the cause.

use std::time::Duration;

use vigil_net::proto::coordination::ETCD_VOTER;
use vigil_net::proto::lease::LeaseConfig;
use vigil_net::proto::wire::Message;
use vigil_net::runtime::etcd::{EtcdClient, EtcdConfig, EtcdWitness};
use vigil_testkit::etcd::{Etcd, EtcdTls};

fn config(endpoints: Vec<String>) -> EtcdConfig {
    EtcdConfig {
        endpoints,
        prefix: "/vigil/t".into(),
        ca: None,
        cert: None,
        key: None,
        user: None,
        password: None,
        request_timeout: Duration::from_millis(500),
    }
}

fn coordinator(cfg: EtcdConfig) -> EtcdWitness {
    EtcdWitness::new(
        EtcdClient::new(cfg).expect("client"),
        LeaseConfig::with_duration_ms(2_000),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn ask(candidate: &str, epoch: u64, round: u64) -> Message {
    Message::LeaseAsk {
        candidate: candidate.into(),
        epoch,
        round,
    }
}

fn granted(m: &Message) -> bool {
    matches!(m, Message::LeaseAnswer { granted: true, voter, .. } if voter == ETCD_VOTER)
}

#[test]
fn racing_candidates_get_the_promise_one_at_a_time_and_each_epoch_once() {
    let etcd = Etcd::start(1);
    rt().block_on(async {
        let mut a = coordinator(config(etcd.endpoints()));
        let mut b = coordinator(config(etcd.endpoints()));
        let mut epochs = Vec::new();
        for round in 1..=20u64 {
            let epoch = epochs.last().copied().unwrap_or(0);
            let (ra, rb) = tokio::join!(
                a.answer(ask("a", epoch, round)),
                b.answer(ask("b", epoch, round))
            );
            let (ga, gb) = (
                ra.as_ref().is_ok_and(granted),
                rb.as_ref().is_ok_and(granted),
            );
            assert!(!(ga && gb), "round {round}: both hold the promise");
            let Some((winner, c)) = [("a", &mut a), ("b", &mut b)]
                .into_iter()
                .zip([ga, gb])
                .find_map(|(w, g)| g.then_some(w))
            else {
                // Both lost the race to each other's read: the next round
                // decides again.
                continue;
            };
            let m = c
                .answer(Message::EpochCas {
                    candidate: winner.into(),
                    expected: epoch,
                })
                .await
                .expect("cas");
            let Message::EpochCasAnswer { ok: true, epoch: e } = m else {
                panic!("round {round}: the holder's CAS failed: {m:?}");
            };
            assert_eq!(e, epoch + 1, "epochs move by one");
            epochs.push(e);
            // The winner renews, then hands the promise back.
            assert!(granted(
                &c.answer(ask(winner, e, round)).await.expect("renew")
            ));
            let m = c
                .answer(Message::LeaseRelease {
                    holder: winner.into(),
                })
                .await
                .expect("release");
            assert!(matches!(m, Message::Released { .. }), "{m:?}");
            // The new epoch made the other node ineligible (it must be
            // seen catching up first): record it eligible, as the leader
            // does once it is.
            let other = if winner == "a" { "b" } else { "a" };
            let m = c
                .answer(Message::Eligibility {
                    leader: winner.into(),
                    follower: other.into(),
                    eligible: true,
                    durable_lsn: round,
                    epoch: e,
                    seq: 1,
                })
                .await
                .expect("record");
            assert!(matches!(m, Message::EligibilityRecorded { .. }), "{m:?}");
        }
        assert!(
            epochs.len() >= 10,
            "most rounds elected someone: {epochs:?}"
        );
        assert!(epochs.windows(2).all(|w| w[1] == w[0] + 1), "{epochs:?}");
        // A CAS from an old epoch never succeeds again.
        let m = a
            .answer(Message::EpochCas {
                candidate: "a".into(),
                expected: 1,
            })
            .await
            .expect("cas");
        assert!(
            matches!(m, Message::EpochCasAnswer { ok: false, .. }),
            "{m:?}"
        );
    });
}

#[test]
fn a_promise_lasts_while_renewed_and_ends_with_the_lease() {
    let etcd = Etcd::start(1);
    rt().block_on(async {
        let mut a = coordinator(config(etcd.endpoints()));
        let mut b = coordinator(config(etcd.endpoints()));
        assert!(granted(&a.answer(ask("a", 0, 1)).await.expect("ask")));
        for round in 2..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(granted(&a.answer(ask("a", 0, round)).await.expect("renew")));
            let m = b.answer(ask("b", 0, round)).await.expect("ask");
            assert!(
                matches!(&m, Message::LeaseAnswer { granted: false, holder, .. } if holder == "a"),
                "{m:?}"
            );
        }
        assert_eq!(etcd.get("/vigil/t/leader").as_deref(), Some("a 0"));
        // a stops renewing: etcd ends the promise with its lease (2 s),
        // and b gets it.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(etcd.get("/vigil/t/leader"), None);
        assert!(granted(&b.answer(ask("b", 0, 9)).await.expect("ask")));
    });
}

#[test]
fn mutual_tls_works_and_a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    let specs = ["etcd", "a"].map(|n| vigil_net::runtime::tls::NodeSpec::parse(n).expect("spec"));
    vigil_net::runtime::tls::make_cluster(&certs, "t", &specs).expect("certs");
    let etcd = Etcd::start_tls(EtcdTls {
        ca: certs.join("ca.pem"),
        cert: certs.join("etcd.pem"),
        key: certs.join("etcd.key"),
    });
    let endpoints = etcd.endpoints();
    assert!(endpoints[0].starts_with("https://"));
    rt().block_on(async {
        let mut cfg = config(endpoints.clone());
        cfg.ca = Some(certs.join("ca.pem"));
        cfg.cert = Some(certs.join("a.pem"));
        cfg.key = Some(certs.join("a.key"));
        let mut a = coordinator(cfg.clone());
        let mut answered = false;
        for round in 0..20 {
            match a.answer(ask("a", 0, round)).await {
                Ok(m) => {
                    assert!(granted(&m), "{m:?}");
                    answered = true;
                    break;
                }
                // The single member may still be electing itself.
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        assert!(answered, "etcd over mutual TLS answered");
        cfg.cert = None;
        cfg.key = None;
        let err = coordinator(cfg)
            .answer(ask("b", 0, 1))
            .await
            .expect_err("no client certificate");
        assert!(err.to_string().contains("etcd"), "{err}");
    });
    // https without the CA that signed the members: named at once.
    let err = EtcdClient::new(config(endpoints)).expect_err("no CA");
    assert!(err.to_string().contains("etcd_ca"), "{err}");
}

#[test]
fn a_user_with_its_password_works_and_a_wrong_password_is_named() {
    let etcd = Etcd::start(1);
    etcd.enable_auth("s3cret");
    rt().block_on(async {
        let mut cfg = config(etcd.endpoints());
        cfg.user = Some("root".into());
        cfg.password = Some("s3cret".into());
        let mut a = coordinator(cfg.clone());
        assert!(granted(&a.answer(ask("a", 0, 1)).await.expect("ask")));
        cfg.password = Some("wrong".into());
        let err = coordinator(cfg)
            .answer(ask("b", 0, 1))
            .await
            .expect_err("a wrong password");
        assert!(err.to_string().contains("authentication failed"), "{err}");
        // Without a user, etcd with authentication refuses the request.
        let err = coordinator(config(etcd.endpoints()))
            .answer(ask("b", 0, 1))
            .await
            .expect_err("no user");
        assert!(err.to_string().contains("etcd"), "{err}");
    });
}

#[test]
fn no_member_answering_is_an_error_naming_it() {
    let (port, _) = vigil_testkit::free_ports(1, 0);
    rt().block_on(async {
        let mut c = coordinator(config(vec![format!("http://127.0.0.1:{port}")]));
        let err = c.answer(ask("a", 0, 1)).await.expect_err("nobody there");
        assert!(err.to_string().contains("no etcd member answered"), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    });
}
