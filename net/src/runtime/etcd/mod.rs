//! etcd as the coordinator: a data node's requests to the witness (lease
//! asks, the epoch's compare-and-set, eligibility records, a switchover's
//! release) answered from etcd instead, with the decisions of
//! [`crate::proto::coordination`].
//!
//! One request at a time (the link in `cluster::links` feeds them): read
//! both keys in one transaction, decide, then
//! keep a lease alive or write one transaction guarded by the revisions
//! read. An answer that does not come back from a write is never resolved
//! by sending the write again (a repeated compare-and-set could succeed
//! against the state the first one made): both keys are read again, and
//! the request is answered as granted only if they show the write made.

pub mod client;

use client::{Call, Compare, Kv, Op};
pub use client::{EtcdClient, EtcdConfig, EtcdError};

use crate::proto::coordination::{
    LEADER_KEY, LeaderChange, LeaderKey, Plan, STATE_KEY, View, plan, settled,
};
use crate::proto::lease::LeaseConfig;
use crate::proto::wire::Message;
use crate::proto::witness::WitnessState;
use crate::runtime::error::NetError;

/// Longest value of the state key read (a witness's state is a few lines
/// per follower).
const STATE_MAX: usize = 64 * 1024;

/// The witness's part, played from etcd for one data node.
#[derive(Debug)]
pub struct EtcdWitness {
    client: EtcdClient,
    lease: LeaseConfig,
}

fn etcd_failed(e: EtcdError) -> NetError {
    NetError::Connection(format!("etcd: {e}"))
}

impl EtcdWitness {
    /// A coordinator on `client` for leases of `lease`.
    pub fn new(client: EtcdClient, lease: LeaseConfig) -> Self {
        Self { client, lease }
    }

    /// The TTL of the `leader` key's lease: the lease duration, rounded up
    /// to whole seconds (etcd's unit), so that etcd's promise never ends
    /// before the holder's own view of it.
    pub fn ttl_s(&self) -> u64 {
        self.lease.duration_us.div_ceil(1_000_000).max(1)
    }

    /// Reads both keys in one transaction (linearizable).
    pub async fn read(&mut self) -> Result<View, NetError> {
        let (state_key, leader_key) = (self.client.key(STATE_KEY), self.client.key(LEADER_KEY));
        let (_, reads) = self
            .client
            .txn(
                &[],
                &[Op::Get(state_key.clone()), Op::Get(leader_key.clone())],
                Call::Repeatable,
            )
            .await
            .map_err(etcd_failed)?;
        let mut reads = reads.into_iter();
        let (state, leader) = (reads.next().flatten(), reads.next().flatten());
        let (state, state_revision) = match state {
            None => (WitnessState::default(), 0),
            Some(Kv { value, .. }) if value.len() > STATE_MAX => {
                return Err(NetError::Config(format!(
                    "etcd key {state_key} holds {} bytes, more than a witness state ({STATE_MAX})",
                    value.len()
                )));
            }
            Some(Kv {
                value,
                mod_revision,
                ..
            }) => (
                WitnessState::parse(&value).map_err(|line| {
                    NetError::Config(format!(
                        "etcd key {state_key} is not a witness state: {line}"
                    ))
                })?,
                mod_revision,
            ),
        };
        let leader = match leader {
            None => None,
            Some(kv) => {
                let (holder, epoch) = LeaderKey::parse_value(&kv.value).ok_or_else(|| {
                    NetError::Config(format!(
                        "etcd key {leader_key} holds {:?}, not \"<node> <epoch>\"",
                        kv.value
                    ))
                })?;
                Some(LeaderKey {
                    holder,
                    epoch,
                    lease: kv.lease,
                    mod_revision: kv.mod_revision,
                })
            }
        };
        Ok(View {
            state,
            state_revision,
            leader,
        })
    }

    /// Answers `m` as the witness would, from etcd.
    pub async fn answer(&mut self, m: Message) -> Result<Message, NetError> {
        let view = self.read().await?;
        let kind = m.kind();
        let Some(plan) = plan(&view, self.lease, m) else {
            return Err(NetError::Config(format!(
                "a {kind} message is not one the coordinator takes"
            )));
        };
        if let LeaderChange::Renew { lease, value: None } = plan.leader {
            // A renewal writes nothing: the read showed the promise held,
            // and etcd counts it again from the keepalive's arrival.
            let ttl = self.client.keepalive(lease).await.map_err(etcd_failed)?;
            return Ok(if ttl > 0 {
                plan.answer
            } else {
                refused(plan.answer)
            });
        }
        if !plan.writes() {
            return Ok(plan.answer);
        }
        self.write(&view, plan).await
    }

    async fn write(&mut self, view: &View, plan: Plan) -> Result<Message, NetError> {
        let (state_key, leader_key) = (self.client.key(STATE_KEY), self.client.key(LEADER_KEY));
        let mut new_lease = None;
        let mut ops = Vec::new();
        if let Some(st) = &plan.state {
            ops.push(Op::Put(state_key.clone(), st.to_text(), 0));
        }
        match &plan.leader {
            LeaderChange::Unchanged => {}
            LeaderChange::Acquire { value } => {
                let (id, _) = self
                    .client
                    .lease_grant(self.ttl_s())
                    .await
                    .map_err(etcd_failed)?;
                new_lease = Some(id);
                ops.push(Op::Put(leader_key.clone(), value.clone(), id));
            }
            LeaderChange::Renew { lease, value } => {
                if let Some(v) = value {
                    ops.push(Op::Put(leader_key.clone(), v.clone(), *lease));
                }
            }
            LeaderChange::Release { .. } => ops.push(Op::Delete(leader_key.clone())),
        }
        let guard = [
            Compare::ModRevision(state_key, view.state_revision),
            Compare::ModRevision(
                leader_key,
                view.leader.as_ref().map_or(0, |l| l.mod_revision),
            ),
        ];
        let outcome = self.client.txn(&guard, &ops, Call::Once).await;
        let made = match outcome {
            Ok((true, _)) => true,
            Ok((false, _)) => false,
            Err(EtcdError::Ambiguous(why)) => {
                // Never sent again: read what etcd holds now instead.
                let after = self.read().await;
                let made = after
                    .as_ref()
                    .is_ok_and(|after| settled(&plan, after, new_lease));
                tracing::warn!(why = %why, made, "etcd: a write's answer was lost; read again");
                made
            }
            Err(e) => {
                self.drop_lease(new_lease).await;
                return Err(etcd_failed(e));
            }
        };
        if !made {
            self.drop_lease(new_lease).await;
            return Err(NetError::Connection(
                "etcd: the keys changed between the read and the write; the next round decides again"
                    .into(),
            ));
        }
        if let LeaderChange::Renew { lease, .. } = plan.leader {
            let ttl = self.client.keepalive(lease).await.map_err(etcd_failed)?;
            if ttl == 0 {
                return Ok(refused(plan.answer));
            }
        }
        if let LeaderChange::Release { lease } = plan.leader {
            self.drop_lease(Some(lease)).await;
        }
        Ok(plan.answer)
    }

    /// Revokes a lease no key needs (best effort: it expires anyway).
    async fn drop_lease(&mut self, lease: Option<i64>) {
        if let Some(id) = lease
            && let Err(e) = self.client.revoke(id).await
        {
            tracing::debug!("etcd: lease {id} not revoked ({e}); it expires on its own");
        }
    }
}

/// A grant turned into a refusal (the promise ran out meanwhile).
fn refused(answer: Message) -> Message {
    match answer {
        Message::LeaseAnswer {
            voter,
            round,
            epoch,
            holder,
            ..
        } => Message::LeaseAnswer {
            voter,
            round,
            granted: false,
            epoch,
            holder,
        },
        other => other,
    }
}
