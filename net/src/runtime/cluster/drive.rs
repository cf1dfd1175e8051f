//! The leadership loop: time and answers in, the elector's actions out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};

use super::roles::{rejoin, reseed};
use super::*;
use crate::proto::standing::{self, Step};

/// The leadership loop.
pub(super) async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let actions = tokio::select! {
            _ = tick.tick() => on_tick(&inner).await,
            ev = rx.recv() => match ev {
                Some(Event::Reply(r)) => {
                    let mut e = inner.elector();
                    let before = e.lease_until();
                    let out = e.on_reply(&r);
                    if e.lease_until() > before && matches!(e.role(), LeaseRole::Leader { .. }) {
                        drop(e);
                        inner.status().lease_renewals += 1;
                    }
                    out
                }
                Some(Event::Cas(r)) => {
                    let now = inner.now_us();
                    inner.elector().on_cas(r, now)
                }
                Some(Event::WitnessReachable(ok)) => {
                    inner.status().witness_reachable = ok;
                    Vec::new()
                }
                None => break,
            },
            _ = stop.changed() => break,
        };
        for a in actions {
            act(&inner, a, &tx).await;
        }
    }
}

pub(super) async fn on_tick(inner: &Arc<Inner>) -> Vec<ElectorAction> {
    let now = inner.now_us();
    let leading = matches!(inner.elector().role(), LeaseRole::Leader { .. });
    // Only the view is kept: a rejoin needs every handle on the store (the
    // node holds one) dropped.
    let view = inner.node().and_then(|n| n.leader_view());
    if !leading && let Some(view) = view {
        for step in standing::steps(&view, inner.standing.load(Ordering::Acquire)) {
            match step {
                Step::LeaderAlive { epoch } => {
                    let mut e = inner.elector();
                    e.on_leader_alive(now);
                    e.own_voter().observe_epoch(epoch);
                }
                Step::Rejoin { agree_until } => {
                    rejoin(inner, agree_until).await;
                    return Vec::new();
                }
                Step::Reseed => {
                    reseed(inner).await;
                    return Vec::new();
                }
                Step::StandAgain => {
                    inner.standing.store(true, Ordering::Release);
                    inner.elector().allow_promotion_from(now);
                    tracing::info!("caught up with the leader: this node may be promoted again");
                }
            }
        }
    }
    if let Some((epoch, last)) = inner
        .hand_over
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        let durable = inner.store().map_or(0, |s| s.log_end().lsn);
        if durable >= last {
            tracing::info!(epoch, last, "switchover: taking over");
            inner.elector().take_over(&inner.cfg.peer.name, now);
        } else {
            tracing::warn!(
                epoch,
                last,
                durable,
                "switchover hand-over refused: this node lacks writes"
            );
        }
    }
    inner.elector().on_tick(now)
}

pub(super) async fn act(inner: &Arc<Inner>, a: ElectorAction, tx: &mpsc::Sender<Event>) {
    match a {
        ElectorAction::Request { to, req } => {
            let msg = Message::LeaseAsk {
                candidate: req.candidate.clone(),
                epoch: req.epoch,
                round: req.round,
            };
            let (inner, tx) = (inner.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = if to == inner.cfg.coordinator.name() {
                    let r = inner.ask_witness(msg).await;
                    let _ = tx.send(Event::WitnessReachable(r.is_ok())).await;
                    r
                } else {
                    match inner.node() {
                        Some(n) if n.is_leader() => n.ask_follower(&to, &msg).await,
                        _ => return, // a follower asks its leader nothing
                    }
                };
                tracing::debug!(to = %to, round = req.round, epoch = req.epoch, answer = ?answer, "lease request answered");
                if let Ok(Message::LeaseAnswer {
                    voter,
                    round,
                    granted,
                    epoch,
                    holder,
                }) = answer
                {
                    let reply = LeaseReply {
                        voter,
                        round,
                        granted,
                        epoch,
                        holder: (!holder.is_empty()).then_some(holder),
                    };
                    let _ = tx.send(Event::Reply(reply)).await;
                }
            });
        }
        ElectorAction::Cas { expected } => {
            let (inner, tx) = (inner.clone(), tx.clone());
            tokio::spawn(async move {
                let m = Message::EpochCas {
                    candidate: inner.cfg.node.name.clone(),
                    expected,
                };
                let r = match inner.ask_witness(m).await {
                    Ok(Message::EpochCasAnswer { ok: true, epoch }) => Ok(epoch),
                    Ok(Message::EpochCasAnswer { ok: false, epoch }) => Err(epoch),
                    _ => Err(expected),
                };
                let _ = tx.send(Event::Cas(r)).await;
            });
        }
        ElectorAction::Promote { epoch } => {
            let why = format!(
                "the lease of {} expired; promoted with a majority",
                inner.cfg.peer.name
            );
            promote(inner, epoch, why).await;
        }
        ElectorAction::LeaseLost(why) => {
            inner.status().lease_lapses += 1;
            tracing::warn!("lease lapsed: {why}");
        }
        ElectorAction::StepDown(why) => step_down(inner, &why).await,
    }
}
