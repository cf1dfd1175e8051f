//! When the disk fills at the places that stop the store (an fsync, an
//! index commit, a search-key write), a standalone server answers 507 or
//! 503, tells its health checks, and, once there is room, reopens the
//! store by itself: writes resume with no restart and no operator, and
//! every acknowledged write is there. Runs alone in its binary because fail
//! points are process-wide.

mod common;

use axum::http::StatusCode;
use common::TestServer;
use serde_json::json;
use vigil_engine::failpoint;

fn patient(id: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": "Stop"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stopped_by_a_full_disk_reopens_and_writes_resume() {
    let server = TestServer::with(|c| {
        c.disk_reserve_bytes = 0;
        // Search keys go to their files every few writes.
        c.search_key_buffer_entries = 8;
    });
    let mut acked = Vec::new();
    for point in ["log.fsync", "index.apply", "keys.flush"] {
        let before = format!("before-{}", point.replace('.', "-"));
        let r = server
            .put(&format!("/Patient/{before}"), &patient(&before))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        acked.push(before);
        failpoint::arm_no_space(point, 1);
        let id = format!("during-{}", point.replace('.', "-"));
        let r = server.put(&format!("/Patient/{id}"), &patient(&id)).await;
        if point == "keys.flush" {
            // The key flusher works behind the writes: more writes reach it.
            let mut n = 0;
            while !failpoint::fired() && n < 1_000 {
                let more = format!("more-{n}");
                let r = server
                    .put(&format!("/Patient/{more}"), &patient(&more))
                    .await;
                if r.status == StatusCode::CREATED {
                    acked.push(more);
                }
                n += 1;
            }
        }
        // The index applier works behind the acknowledgement: the point may
        // fail its call after the answer. Disarm only once it has.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !failpoint::fired() {
            assert!(
                std::time::Instant::now() < deadline,
                "{point}: the armed point never failed a call"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        failpoint::disarm_all();
        match r.status {
            // The fsync failed: not acknowledged.
            StatusCode::INSUFFICIENT_STORAGE => {
                assert!(
                    r.diagnostics().contains("the disk is full"),
                    "{}",
                    r.diagnostics()
                );
                assert!(r.header("retry-after").is_some());
            }
            // The index failed after the frame was durable: acknowledged
            // if the answer left before the applier stopped the store, or
            // refused as the store stopped (durable, not acknowledged).
            StatusCode::CREATED => acked.push(id),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.diagnostics().contains("stopped"), "{}", r.diagnostics());
            }
            other => panic!("{point}: {other} {}", r.diagnostics()),
        }
        // The store has stopped (at once for an fsync; for the index, as
        // soon as the applier meets the failure).
        let stopped = async {
            loop {
                if server.get("/health/ready").await.status != StatusCode::OK {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(std::time::Duration::from_secs(10), stopped)
            .await
            .is_err()
        {
            panic!(
                "{point}: health never reported the stopped store (answer {})",
                r.status
            );
        }
        let r = server.put("/Patient/refused", &patient("refused")).await;
        assert!(
            r.status == StatusCode::SERVICE_UNAVAILABLE
                || r.status == StatusCode::INSUFFICIENT_STORAGE,
            "{point}: a stopped store takes no write: {} {}",
            r.status,
            r.diagnostics()
        );
        // Room again (the fail point is gone): the server reopens it.
        assert!(server.app.recover_store().await, "{point}: reopened");
        assert!(!server.app.recover_store().await, "nothing to do twice");
        assert_eq!(server.get("/health/ready").await.status, StatusCode::OK);
        let after = format!("after-{}", point.replace('.', "-"));
        let r = server
            .put(&format!("/Patient/{after}"), &patient(&after))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{point}: writes resume");
        acked.push(after);
    }
    for id in &acked {
        let r = server.get(&format!("/Patient/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "acknowledged {id} is there");
    }
    let r = server.get("/Patient/refused").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
