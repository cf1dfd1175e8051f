//! The node's voting links: answers to its leader's messages on the
//! replication connection, and the connection to the witness.

use tokio::sync::{mpsc, watch};

use super::*;

/// A follower's answers to what its leader sends on the replication
/// connection.
pub(super) fn answer_leader(inner: &Inner, m: Message) -> Option<Message> {
    let now = inner.now_us();
    match m {
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
            *inner.hand_over.lock().unwrap_or_else(|p| p.into_inner()) = Some((epoch, last_lsn));
            Some(Message::Released {
                voter: inner.cfg.node.node.clone(),
            })
        }
        _ => None,
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
    loop {
        let (m, reply) = tokio::select! {
            j = rx.recv() => match j { Some(j) => j, None => break },
            _ = stop.changed() => break,
        };
        if reply.is_closed() {
            continue;
        }
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
