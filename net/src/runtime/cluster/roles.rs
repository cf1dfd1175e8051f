//! Role changes carried out: promotion, step-down, rejoin, reseed, and
//! starting replication in the role decided.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_engine::{Options, Store};

use crate::proto::enforce::{Record, RecordError};
use crate::proto::wire::RefuseCode;

use super::*;

/// Carries out a promotion: stop following, make the store writable,
/// write `EpochStart`, lead.
pub(super) async fn promote(inner: &Arc<Inner>, epoch: u64, reason: String) {
    let (lost_lsns, lost_seconds) = inner
        .node()
        .and_then(|n| n.leader_view())
        .map_or((0, 0.0), |v| (v.lsns_behind(), v.lag_seconds));
    let node = take_node(inner);
    if let Some(n) = node {
        n.shutdown().await;
    }
    let Some(store) = inner.store() else {
        tracing::error!("promotion without a store; stepping down");
        inner.elector().hand_over(inner.now_us());
        return;
    };
    let s = store.clone();
    let began = tokio::task::spawn_blocking(move || {
        s.set_read_only(false);
        s.begin_epoch(epoch)
    })
    .await;
    if !matches!(began, Ok(Ok(()))) {
        tracing::error!(
            epoch,
            "cannot write the EpochStart ({began:?}); stepping down"
        );
        abandon_promotion(inner, &store).await;
        return;
    }
    if let Err(e) = start_leader(inner).await {
        tracing::error!(epoch, "cannot start leading: {e}; stepping down");
        abandon_promotion(inner, &store).await;
        return;
    }
    inner.status().elections_won += 1;
    inner.record(Transition {
        at_us: wall_us(),
        kind: "promoted".into(),
        epoch,
        reason,
        lost_lsns,
        lost_seconds,
        quarantine: None,
    });
    tracing::warn!(epoch, lost_lsns, "PROMOTED: this node leads epoch {epoch}");
}

/// A promotion that failed half-way: read-only again, not leading, free to
/// stand again, following the peer.
async fn abandon_promotion(inner: &Arc<Inner>, store: &Store) {
    store.set_read_only(true);
    {
        let now = inner.now_us();
        let mut e = inner.elector();
        e.hand_over(now);
        e.allow_promotion_from(now);
    }
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after an abandoned promotion: {e}");
    }
}

/// Stops leading (a higher epoch exists, or a switchover) and follows the
/// peer. Leader-only work (max_lag enforcement and its records at the
/// witness) stops first, before anything that can wait.
pub(super) async fn step_down(inner: &Arc<Inner>, why: &str) {
    if let Some(n) = inner.node() {
        n.stop_leading(why);
    }
    tracing::warn!("stepping down: {why}");
    if let Some(s) = inner.store() {
        s.set_read_only(true);
    }
    let node = take_node(inner);
    if let Some(n) = node {
        n.shutdown().await;
    }
    inner.standing.store(false, Ordering::Release);
    let epoch = inner.elector().epoch();
    inner.record(Transition {
        at_us: wall_us(),
        kind: "stepped-down".into(),
        epoch,
        reason: why.into(),
        lost_lsns: 0,
        lost_seconds: 0.0,
        quarantine: None,
    });
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after stepping down: {e}");
    }
}

/// The new leader said our log diverged after `agree_until`: close the
/// store, cut it there (the cut versions go to quarantine), reopen, follow.
pub(super) async fn rejoin(inner: &Arc<Inner>, agree_until: u64) {
    tracing::warn!(
        agree_until,
        "the logs diverged: cutting this node's log back to rejoin"
    );
    let Some(store) = close_store(inner).await else {
        return;
    };
    let (dir, opts) = (inner.cfg.data.clone(), replica_options(inner));
    let cut = tokio::task::spawn_blocking(move || {
        store.close()?;
        let report = Store::cut_log(&dir, opts.clone(), agree_until)?;
        Ok::<_, vigil_engine::Error>((report, Store::open_with(&dir, opts)?))
    })
    .await;
    match cut {
        Ok(Ok((report, store))) => {
            let (versions, path, cut_after) = report.as_ref().map_or((0, None, agree_until), |r| {
                (
                    r.versions as u64,
                    Some(r.quarantine.display().to_string()),
                    r.first_lsn - 1,
                )
            });
            install(
                inner,
                store,
                "rejoined",
                format!("log cut after LSN {cut_after} to follow the new leader"),
                versions,
                path,
            );
            tracing::warn!(versions, "rejoined: cut versions are in quarantine");
        }
        other => {
            tracing::error!("rejoin failed: {other:?}; this node stays down until restarted");
            return;
        }
    }
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after the rejoin: {e}");
    }
}

/// The store stopped (an fsync, index commit or search-key write failed)
/// and its disk has room again: close it, reopen it (recovery rebuilds
/// what the log holds), and follow.
pub(super) async fn reopen(inner: &Arc<Inner>, why: &str) {
    let Some(store) = close_store(inner).await else {
        return;
    };
    let (dir, opts) = (inner.cfg.data.clone(), replica_options(inner));
    let reopened = tokio::task::spawn_blocking(move || {
        // A stopped store's close reports why it stopped; the reopen is
        // what matters.
        if let Err(e) = store.close() {
            tracing::debug!("closing the stopped store: {e}");
        }
        Store::open_with(&dir, opts)
    })
    .await;
    match reopened {
        Ok(Ok(store)) => {
            install(
                inner,
                store,
                "reopened",
                format!("the store stopped ({why}) and was reopened once its disk had room"),
                0,
                None,
            );
            tracing::warn!("the store is open again; following");
        }
        other => {
            tracing::error!("reopening the stopped store failed: {other:?}; tried again shortly");
            return;
        }
    }
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after reopening the store: {e}");
    }
}

/// The leader no longer holds what this node needs: the data directory is
/// set aside (never deleted) and a fresh copy is fetched.
pub(super) async fn reseed(inner: &Arc<Inner>) {
    tracing::error!("the leader no longer holds this node's divergence point: reseeding");
    let Some(store) = close_store(inner).await else {
        return;
    };
    let (dir, opts) = (inner.cfg.data.clone(), replica_options(inner));
    let aside = dir.with_extension(format!("before-reseed-{}", wall_us() / 1_000_000));
    let (d2, a2) = (dir.clone(), aside.clone());
    let r = tokio::task::spawn_blocking(move || {
        store.close().map_err(|e| e.to_string())?;
        std::fs::rename(&d2, &a2)
            .map_err(|e| format!("set {} aside as {}: {e}", d2.display(), a2.display()))?;
        Store::open_with(&d2, opts).map_err(|e| e.to_string())
    })
    .await;
    match r {
        Ok(Ok(store)) => {
            install(
                inner,
                store,
                "reseeded",
                "the leader no longer holds the divergence point".into(),
                0,
                Some(aside.display().to_string()),
            );
        }
        other => {
            tracing::error!("reseed failed: {other:?}; this node stays down until restarted");
            return;
        }
    }
    if let Err(e) = start_follower(inner).await {
        tracing::error!("cannot follow after the reseed: {e}");
    }
}

/// Puts a freshly opened store in service and records the role change
/// that made it (in the epoch this node knows).
fn install(
    inner: &Inner,
    store: Store,
    kind: &str,
    reason: String,
    lost_lsns: u64,
    quarantine: Option<String>,
) {
    *inner.store.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
    let epoch = inner.elector().epoch();
    inner.record(Transition {
        at_us: wall_us(),
        kind: kind.into(),
        epoch,
        reason,
        lost_lsns,
        lost_seconds: 0.0,
        quarantine,
    });
}

pub(super) fn take_node(inner: &Inner) -> Option<Arc<Node>> {
    inner.node.write().unwrap_or_else(|p| p.into_inner()).take()
}

pub(super) fn replica_options(inner: &Inner) -> Options {
    Options {
        replica: true,
        ..inner.cfg.store.clone()
    }
}

/// Stops replication and takes the store out of service, waiting for the
/// requests that still use it; `None` if they do not finish in time.
pub(super) async fn close_store(inner: &Arc<Inner>) -> Option<Store> {
    inner.standing.store(false, Ordering::Release);
    let node = take_node(inner);
    if let Some(n) = node {
        n.shutdown().await;
    }
    let mut store = inner
        .store
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .take()?;
    let deadline = Instant::now() + STORE_RELEASE_TIMEOUT;
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => return Some(s),
            Err(s) if Instant::now() < deadline => {
                store = s;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(s) => {
                tracing::error!("requests still hold the store; rejoin postponed");
                *inner.store.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
                let _ = start_follower(inner).await;
                return None;
            }
        }
    }
}

pub(super) async fn start_follower(inner: &Arc<Inner>) -> Result<(), NetError> {
    let store = inner
        .store()
        .ok_or_else(|| NetError::Config("no store".into()))?;
    let mut cfg = inner.cfg.node.clone();
    cfg.role = Role::Follower {
        leader: inner.cfg.peer.addr,
        leader_name: inner.cfg.peer.name.clone(),
    };
    cfg.record_eligibility = None;
    let weak = Arc::downgrade(inner);
    cfg.voter = Some(Arc::new(move |m: Message| {
        let inner = weak.upgrade()?;
        answer_leader(&inner, m)
    }));
    let node = Node::start(store, cfg).await?;
    *inner.node.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(node));
    Ok(())
}

pub(super) async fn start_leader(inner: &Arc<Inner>) -> Result<(), NetError> {
    let store = inner
        .store()
        .ok_or_else(|| NetError::Config("no store".into()))?;
    let mut cfg = inner.cfg.node.clone();
    cfg.role = Role::Leader {
        listen: inner.cfg.listen,
    };
    cfg.voter = None;
    let handle = tokio::runtime::Handle::current();
    let weak = Arc::downgrade(inner);
    cfg.record_eligibility = Some(Arc::new(move |r: &Record| {
        let inner = weak
            .upgrade()
            .ok_or_else(|| RecordError::Refused("shutting down".into()))?;
        record_at_witness(&inner, &handle, r)
    }));
    // The port may still be held by the endpoint of a node that just
    // stopped; try for a moment.
    let mut last = None;
    for _ in 0..50 {
        match Node::start(store.clone(), cfg.clone()).await {
            Ok(node) => {
                *inner.node.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(node));
                return Ok(());
            }
            Err(e @ NetError::Io { .. }) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| NetError::Config("cannot start leading".into())))
}

/// Sends eligibility record `r` to the witness, in the epoch this node won
/// (`r.epoch`), and only while its elector still leads that very epoch: a
/// node that stepped down, or learned of a later epoch, sends nothing
/// leader-only. "Eligible again" waits while the lease has lapsed (it only
/// widens what the witness may do); "ineligible" does not, because it is
/// what keeps a lagging follower from being promoted with more than
/// `max_lag` lost while this node is still the epoch's leader.
fn record_at_witness(
    inner: &Inner,
    handle: &tokio::runtime::Handle,
    r: &Record,
) -> Result<(), RecordError> {
    {
        let e = inner.elector();
        let leads = matches!(e.role(), LeaseRole::Leader { epoch } if epoch == r.epoch);
        if !leads || e.epoch() > r.epoch {
            return Err(RecordError::Refused(format!(
                "this node no longer leads epoch {} (it knows epoch {})",
                r.epoch,
                e.epoch()
            )));
        }
        if r.eligible && !e.may_write(inner.now_us()) {
            return Err(RecordError::Failed(
                "the lease has lapsed: eligible-again records wait for its renewal".into(),
            ));
        }
    }
    let m = Message::Eligibility {
        leader: inner.cfg.node.name.clone(),
        follower: r.follower.clone(),
        eligible: r.eligible,
        durable_lsn: r.durable_lsn,
        epoch: r.epoch,
        seq: r.seq,
    };
    match handle.block_on(inner.ask_witness(m)) {
        Ok(Message::EligibilityRecorded { .. }) => Ok(()),
        Ok(Message::Refused {
            code: RefuseCode::NotLeader,
            reason,
            ..
        }) => Err(RecordError::Refused(reason)),
        // Only a record this node already gave up on is stale; this one
        // is not, unless the witness's state went back: try again.
        Ok(Message::Refused {
            code: RefuseCode::Stale,
            reason,
            ..
        }) => Err(RecordError::Failed(format!(
            "the witness says stale: {reason}"
        ))),
        Ok(Message::Refused { reason, .. }) => Err(RecordError::Refused(format!(
            "the witness refused: {reason}"
        ))),
        Ok(other) => Err(RecordError::Failed(format!(
            "the witness answered {}",
            other.kind()
        ))),
        Err(e) => Err(RecordError::Failed(e.to_string())),
    }
}
