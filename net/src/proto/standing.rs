//! What a data node under automatic failover does, each tick, with what
//! its replication session knows of the leader ([`LeaderView`]): the rules
//! the failover loop (`runtime::cluster`) carries out, pure so that they
//! are read and tested apart from the tasks that run them.

/// What a follower knows of its leader, kept by the replication session
/// as events arrive. The failover loop decides from this, never from the
/// status it shows operators.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaderView {
    /// The leader's node name, once known.
    pub leader: String,
    /// Whether frames are flowing now.
    pub connected: bool,
    /// The leader's epoch, as last heard.
    pub leader_epoch: u64,
    /// The leader's last durable LSN, as last heard.
    pub leader_lsn: u64,
    /// This follower's durable end.
    pub durable: u64,
    /// How much older this follower's newest write is than the leader's,
    /// seconds of commit time.
    pub lag_seconds: f64,
    /// The leader refused this follower as diverged: the last LSN both may
    /// share.
    pub diverged_at: Option<u64>,
    /// The leader no longer holds what this follower needs.
    pub reseed_needed: bool,
}

impl LeaderView {
    /// LSNs this follower lacks of what the leader last said it had.
    pub fn lsns_behind(&self) -> u64 {
        self.leader_lsn.saturating_sub(self.durable)
    }
}

/// One thing the failover loop does after looking at its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The leader is heard in `epoch`: its lease is alive, and no vote
    /// goes to an older epoch.
    LeaderAlive {
        /// The leader's epoch.
        epoch: u64,
    },
    /// Cut the log back to where it agrees with the leader, into
    /// quarantine, and follow again.
    Rejoin {
        /// The last LSN both logs may share.
        agree_until: u64,
    },
    /// Start over from the leader's data, the old directory kept aside.
    Reseed,
    /// This node holds all the leader has: it may be promoted again.
    StandAgain,
}

/// The steps for a follower that sees `view` and that may (`standing`) or
/// may not yet be promoted. A rejoin or a reseed comes alone: nothing else
/// is decided on a log about to change.
pub fn steps(view: &LeaderView, standing: bool) -> Vec<Step> {
    let mut out = Vec::new();
    if view.connected {
        out.push(Step::LeaderAlive {
            epoch: view.leader_epoch,
        });
    }
    if let Some(agree_until) = view.diverged_at {
        out.push(Step::Rejoin { agree_until });
        return out;
    }
    if view.reseed_needed {
        out.push(Step::Reseed);
        return out;
    }
    if !standing && view.connected && view.lsns_behind() == 0 {
        out.push(Step::StandAgain);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> LeaderView {
        LeaderView {
            leader: "a".into(),
            connected: true,
            leader_epoch: 3,
            leader_lsn: 100,
            durable: 100,
            ..LeaderView::default()
        }
    }

    #[test]
    fn a_caught_up_follower_stands_again_and_a_diverged_one_only_rejoins() {
        assert_eq!(
            steps(&view(), false),
            vec![Step::LeaderAlive { epoch: 3 }, Step::StandAgain]
        );
        assert_eq!(steps(&view(), true), vec![Step::LeaderAlive { epoch: 3 }]);
        let behind = LeaderView {
            durable: 99,
            ..view()
        };
        assert_eq!(steps(&behind, false), vec![Step::LeaderAlive { epoch: 3 }]);
        let diverged = LeaderView {
            connected: false,
            diverged_at: Some(42),
            ..view()
        };
        assert_eq!(
            steps(&diverged, false),
            vec![Step::Rejoin { agree_until: 42 }]
        );
        let gone = LeaderView {
            reseed_needed: true,
            ..view()
        };
        assert_eq!(
            steps(&gone, false),
            vec![Step::LeaderAlive { epoch: 3 }, Step::Reseed]
        );
        assert!(
            steps(
                &LeaderView {
                    connected: false,
                    ..view()
                },
                false
            )
            .is_empty(),
            "a silent leader: nothing to do (its lease runs out)"
        );
    }
}
