//! The node's voting links: answers to its leader's messages on the
//! replication connection, and the link to the coordinator (the witness's
//! connection, or etcd).

use tokio::sync::{mpsc, watch};

use super::*;
use crate::proto::wire::RefuseCode;

/// A follower's answers to what its leader sends on the replication
/// connection (authenticated as the peer by its certificate during the
/// handshake). Each is bound to the sender's role: a lease ask must name
/// the peer as candidate, and a hand-over must be of the epoch this node
/// knows as current (a deposed leader's hand-over of an older epoch is
/// refused).
pub(super) fn answer_leader(inner: &Inner, m: Message) -> Option<Message> {
    let now = inner.now_us();
    let peer = &inner.cfg.peer.name;
    match m {
        Message::LeaseAsk { candidate, .. } if candidate != *peer => {
            tracing::warn!(candidate = %candidate, peer = %peer, "refused a lease ask naming another candidate than the peer");
            Some(Message::refusal(
                RefuseCode::Protocol,
                format!("a lease ask from {peer} must name {peer} as candidate, not {candidate}"),
            ))
        }
        Message::LeaseAsk {
            candidate,
            epoch,
            round,
        } => {
            let r = inner.elector().own_voter().on_request(
                &LeaseRequest {
                    candidate,
                    epoch,
                    round,
                },
                now,
            );
            Some(Message::LeaseAnswer {
                voter: r.voter,
                round: r.round,
                granted: r.granted,
                epoch: r.epoch,
                holder: r.holder.unwrap_or_default(),
            })
        }
        Message::HandOver { epoch, last_lsn } => {
            // The epoch handed over must be the one this node follows: the
            // epoch of its log's last frame (it holds the leader's
            // EpochStart), and none later known here.
            let known = inner.elector().epoch();
            let logged = inner.store().map_or(0, |s| s.epoch());
            if epoch < known || epoch != logged {
                tracing::warn!(
                    epoch,
                    known,
                    logged,
                    "refused a hand-over of an epoch that is not the current one"
                );
                return Some(Message::refusal(
                    RefuseCode::NotLeader,
                    format!(
                        "hand-over of epoch {epoch}, but this node follows epoch {logged} and knows epoch {known}"
                    ),
                ));
            }
            *inner.hand_over.lock().unwrap_or_else(|p| p.into_inner()) = Some((epoch, last_lsn));
            Some(Message::Released {
                voter: inner.cfg.node.name.clone(),
            })
        }
        _ => None,
    }
}

/// The next request to the coordinator whose asker still waits; `None`
/// at `stop` or when the node's side is gone.
async fn next_job(
    rx: &mut mpsc::Receiver<WitnessJob>,
    stop: &mut watch::Receiver<bool>,
) -> Option<WitnessJob> {
    loop {
        let job = tokio::select! {
            j = rx.recv() => j?,
            _ = stop.changed() => return None,
        };
        if !job.1.is_closed() {
            return Some(job);
        }
    }
}

/// The connection to the witness: one request at a time, reconnecting
/// when it fails.
pub(super) async fn witness_link(
    id: Identity,
    witness: Member,
    mut rx: mpsc::Receiver<WitnessJob>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<WitnessClient> = None;
    while let Some((m, reply)) = next_job(&mut rx, &mut stop).await {
        if client.is_none() {
            match tokio::time::timeout(
                WITNESS_TIMEOUT,
                WitnessClient::connect(&id, witness.addr, &witness.name),
            )
            .await
            {
                Ok(Ok(c)) => client = Some(c),
                Ok(Err(e)) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
                Err(_) => {
                    let _ = reply.send(Err(NetError::Connection(
                        "witness connect timed out".into(),
                    )));
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let r = match tokio::time::timeout(WITNESS_TIMEOUT, c.ask(&m)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Connection(
                "the witness did not answer in time".into(),
            )),
        };
        if r.is_err()
            && let Some(c) = client.take()
        {
            c.close();
        }
        let _ = reply.send(r);
    }
    if let Some(c) = client {
        c.close();
    }
}

/// The node's requests to its coordinator answered from etcd, one at a
/// time; each gets at most [`ETCD_BUDGET`] (the asker gives up after
/// [`WITNESS_TIMEOUT`] anyway).
pub(super) async fn etcd_link(
    mut etcd: EtcdWitness,
    mut rx: mpsc::Receiver<WitnessJob>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some((m, reply)) = next_job(&mut rx, &mut stop).await {
        let r = match tokio::time::timeout(ETCD_BUDGET, etcd.answer(m)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Connection(format!(
                "etcd did not answer within {} ms",
                ETCD_BUDGET.as_millis()
            ))),
        };
        let _ = reply.send(r);
    }
}
