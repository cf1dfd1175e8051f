//! The `[replication]` table: role, peers, `max_lag`, what to do when a
//! follower lags or the disk fills, each default defined once here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_net::runtime::cluster::Coordinator;
use vigil_net::runtime::etcd::EtcdConfig;
use vigil_net::runtime::node::{NodeConfig, Role};
pub use vigil_net::runtime::replicated::OnLag;
use vigil_net::runtime::replicated::WriteRules;

use crate::config::ConfigError;

/// `role`: how this node takes part in replication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationRole {
    /// Leads, always (a static role): followers connect to `listen`.
    #[default]
    Leader,
    /// Follows `leader`, always (a static role).
    Follower,
    /// Automatic failover: whoever holds the lease at the witness leads.
    Auto,
}

impl ReplicationRole {
    /// The name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Follower => "follower",
            Self::Auto => "auto",
        }
    }
}

impl std::fmt::Display for ReplicationRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReplicationRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "leader" => Ok(Self::Leader),
            "follower" => Ok(Self::Follower),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "role must be leader, follower or auto, not {other:?}"
            )),
        }
    }
}

/// `coordinator`: who holds the third vote, allocates epochs and keeps
/// eligibility under `role = "auto"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoordinatorKind {
    /// Vigil's witness process (`witness`, `witness_addr`).
    #[default]
    Witness,
    /// An etcd cluster (`etcd_endpoints`, …).
    Etcd,
}

impl std::str::FromStr for CoordinatorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "witness" => Ok(Self::Witness),
            "etcd" => Ok(Self::Etcd),
            other => Err(format!(
                "coordinator must be witness or etcd, not {other:?}"
            )),
        }
    }
}

/// Longest wait for one etcd member before the next is tried.
pub const ETCD_REQUEST_TIMEOUT_MS: u64 = 300;

/// How long a synchronous write waits for the follower unless configured.
pub const SYNC_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// The `[replication]` table of the config file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The cluster's name (every member's must match).
    pub cluster: String,
    /// This node's name; its certificate is `certs/NODE.pem`.
    pub node: String,
    /// Directory made by `vigil certs`.
    pub certs: PathBuf,
    /// `leader`, `follower`, or `auto` (automatic failover: whoever holds
    /// the lease leads; needs `peer`, `peer_addr`, `witness`, `witness_addr`).
    pub role: ReplicationRole,
    /// Auto: the other data node's name.
    #[serde(default)]
    pub peer: Option<String>,
    /// Auto: the other data node's replication address.
    #[serde(default)]
    pub peer_addr: Option<SocketAddr>,
    /// Auto: the witness's name.
    #[serde(default)]
    pub witness: Option<String>,
    /// Auto: the witness's address.
    #[serde(default)]
    pub witness_addr: Option<SocketAddr>,
    /// Auto: `witness` (default) or `etcd`.
    #[serde(default)]
    pub coordinator: CoordinatorKind,
    /// Etcd: the members' client URLs (`https://host:2379`, …).
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// Etcd: the prefix of this cluster's keys (default `/vigil/<cluster>`).
    #[serde(default)]
    pub etcd_prefix: Option<String>,
    /// Etcd: the CA that signed the members' certificates (https).
    #[serde(default)]
    pub etcd_ca: Option<PathBuf>,
    /// Etcd: this node's client certificate (with `etcd_key`).
    #[serde(default)]
    pub etcd_cert: Option<PathBuf>,
    /// Etcd: the client certificate's key.
    #[serde(default)]
    pub etcd_key: Option<PathBuf>,
    /// Etcd: a user, when etcd has authentication on.
    #[serde(default)]
    pub etcd_user: Option<String>,
    /// Etcd: the user's password (or the `VIGIL_ETCD_PASSWORD` variable).
    #[serde(default, skip_serializing)]
    pub etcd_password: Option<String>,
    /// Auto: the node that takes the first lease of a new cluster
    /// (default: this node).
    #[serde(default)]
    pub preferred: Option<String>,
    /// Auto: lease duration in ms (renewed every sixth of it). Shorter
    /// fails over faster and risks needless failovers on a slow link.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Leader (and auto): the UDP address followers connect to.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Follower: the leader's replication address.
    #[serde(default)]
    pub leader: Option<SocketAddr>,
    /// Follower: the name on the leader's certificate (default: `leader`'s IP).
    #[serde(default)]
    pub leader_name: Option<String>,
    /// The RPO promise in milliseconds: 0 is synchronous replication.
    #[serde(default)]
    pub max_lag_ms: Option<u64>,
    /// Synchronous mode: how long a write waits for the follower. Then,
    /// with `on_lag = "accept"`, the follower is recorded ineligible and
    /// the write acknowledged; with `"stall"`, the client gets 503 (the
    /// write is durable on the leader only).
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    /// `accept` (default): a follower beyond `max_lag` is marked ineligible
    /// for promotion and writes go on; `stall`: writes get 503 with
    /// Retry-After until it is back within the bound.
    #[serde(default)]
    pub on_lag: OnLag,
    /// What a leader does when its disk fills (free space below
    /// `disk_reserve_bytes`): keep leading and refuse writes (507), or,
    /// under automatic failover, hand leadership to the follower with a
    /// zero-loss switchover.
    #[serde(default)]
    pub on_disk_full: OnDiskFull,
    /// QUIC flow-control window in bytes (≥ bandwidth × round trip).
    #[serde(default = "default_window")]
    pub window_bytes: u64,
}

/// `[replication] on_disk_full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDiskFull {
    /// Keep leading; client writes get 507 until space is freed.
    #[default]
    Refuse,
    /// Automatic failover only: a switchover to the follower (it must be
    /// connected and hold every write; tried again every
    /// [`DISK_FULL_SWITCHOVER_RETRY`] while the disk stays full).
    Switchover,
}

/// How often a leader whose disk is full tries the switchover again.
pub const DISK_FULL_SWITCHOVER_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

fn default_lease_ms() -> u64 {
    vigil_net::proto::lease::LEASE_MS_DEFAULT
}
fn default_sync_timeout_ms() -> u64 {
    SYNC_TIMEOUT_MS_DEFAULT
}
fn default_window() -> u64 {
    vigil_net::runtime::node::WINDOW_BYTES_DEFAULT
}

impl ReplicationConfig {
    /// Node `node` of cluster `cluster` in `role`, with certificates in
    /// `certs` and every other setting at its default (the defaults a
    /// config file gets for what it leaves out).
    pub fn new(cluster: &str, node: &str, certs: PathBuf, role: ReplicationRole) -> Self {
        Self {
            cluster: cluster.into(),
            node: node.into(),
            certs,
            role,
            peer: None,
            peer_addr: None,
            witness: None,
            witness_addr: None,
            coordinator: CoordinatorKind::default(),
            etcd_endpoints: Vec::new(),
            etcd_prefix: None,
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password: None,
            preferred: None,
            lease_ms: default_lease_ms(),
            listen: None,
            leader: None,
            leader_name: None,
            max_lag_ms: None,
            sync_timeout_ms: default_sync_timeout_ms(),
            on_lag: OnLag::default(),
            on_disk_full: OnDiskFull::default(),
            window_bytes: default_window(),
        }
    }

    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[replication] {m}")));
        match self.role {
            ReplicationRole::Leader if self.listen.is_none() => {
                bad("a leader needs listen = \"IP:PORT\"".into())
            }
            ReplicationRole::Follower if self.leader.is_none() => {
                bad("a follower needs leader = \"IP:PORT\"".into())
            }
            ReplicationRole::Auto
                if self.listen.is_none() || self.peer.is_none() || self.peer_addr.is_none() =>
            {
                bad("role = \"auto\" needs listen, peer and peer_addr".into())
            }
            ReplicationRole::Auto
                if self.coordinator == CoordinatorKind::Witness
                    && (self.witness.is_none() || self.witness_addr.is_none()) =>
            {
                bad("coordinator = \"witness\" needs witness and witness_addr".into())
            }
            ReplicationRole::Auto
                if self.coordinator == CoordinatorKind::Etcd && self.etcd_endpoints.is_empty() =>
            {
                bad(
                    "coordinator = \"etcd\" needs etcd_endpoints = [\"https://host:2379\", …]"
                        .into(),
                )
            }
            _ => Ok(()),
        }?;
        if self.coordinator == CoordinatorKind::Etcd {
            if !self.is_auto() {
                return bad(
                    "coordinator = \"etcd\" needs role = \"auto\" (a static role has no coordinator)"
                        .into(),
                );
            }
            // The client checks URLs, certificates and limits the same way
            // at start; here the mistakes are named before anything runs.
            if let Err(e) = vigil_net::runtime::etcd::EtcdClient::new(self.etcd_config()) {
                return bad(e.to_string());
            }
            if self.etcd_password.is_some() && self.etcd_user.is_none() {
                return bad("etcd_password needs etcd_user".into());
            }
        }
        if !(600..=600_000).contains(&self.lease_ms) {
            return bad("lease_ms must be 600..=600000".into());
        }
        if self.on_disk_full == OnDiskFull::Switchover && !self.is_auto() {
            return bad(
                "on_disk_full = \"switchover\" needs role = \"auto\" (a static leader has no one to hand over to)"
                    .into(),
            );
        }
        if !(1..=600_000).contains(&self.sync_timeout_ms) {
            return bad("sync_timeout_ms must be 1..=600000".into());
        }
        if !(1 << 16..=1 << 30).contains(&self.window_bytes) {
            return bad("window_bytes must be 64 KiB..=1 GiB".into());
        }
        Ok(())
    }

    /// Whether this node follows another.
    pub fn is_follower(&self) -> bool {
        self.role == ReplicationRole::Follower
    }

    /// Whether leadership is automatic (leases at a witness).
    pub fn is_auto(&self) -> bool {
        self.role == ReplicationRole::Auto
    }

    /// The failover configuration for `role = "auto"`; `None` otherwise.
    pub fn cluster_config(
        &self,
        http_url: &str,
        data: &std::path::Path,
        store: vigil_engine::Options,
    ) -> Option<vigil_net::runtime::cluster::ClusterConfig> {
        let (Some(listen), Some(peer), Some(peer_addr)) =
            (self.listen, self.peer.clone(), self.peer_addr)
        else {
            return None;
        };
        let coordinator = match (self.coordinator, self.witness.clone(), self.witness_addr) {
            (CoordinatorKind::Etcd, _, _) => Coordinator::Etcd(self.etcd_config()),
            (CoordinatorKind::Witness, Some(name), Some(addr)) => {
                Coordinator::Witness(vigil_net::runtime::cluster::Member { name, addr })
            }
            (CoordinatorKind::Witness, _, _) => return None,
        };
        Some(vigil_net::runtime::cluster::ClusterConfig {
            node: self.node_config(http_url),
            listen,
            peer: vigil_net::runtime::cluster::Member {
                name: peer,
                addr: peer_addr,
            },
            coordinator,
            lease: vigil_net::proto::lease::LeaseConfig::with_duration_ms(self.lease_ms),
            preferred: self.preferred.clone().unwrap_or_else(|| self.node.clone()),
            data: data.to_owned(),
            store,
        })
    }

    /// How this node reaches etcd (`coordinator = "etcd"`).
    pub fn etcd_config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self
                .etcd_prefix
                .clone()
                .unwrap_or_else(|| format!("/vigil/{}", self.cluster)),
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
            password: self
                .etcd_password
                .clone()
                .or_else(|| std::env::var("VIGIL_ETCD_PASSWORD").ok()),
            request_timeout: Duration::from_millis(ETCD_REQUEST_TIMEOUT_MS),
        }
    }

    /// The rules this node's writes follow.
    pub fn write_rules(&self) -> WriteRules {
        WriteRules {
            max_lag: self.max_lag_ms.map(Duration::from_millis),
            sync_timeout: Duration::from_millis(self.sync_timeout_ms),
            on_lag: self.on_lag,
        }
    }

    /// The replication node configuration.
    pub fn node_config(&self, http_url: &str) -> NodeConfig {
        let role = match (self.is_follower(), self.leader, self.listen) {
            (true, Some(leader), _) => Role::Follower {
                leader,
                leader_name: self
                    .leader_name
                    .clone()
                    .unwrap_or_else(|| leader.ip().to_string()),
            },
            (_, _, listen) => Role::Leader {
                listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            },
        };
        let mut c = NodeConfig::new(
            &self.cluster,
            &self.node,
            self.certs.clone(),
            http_url,
            role,
        );
        c.window_bytes = self.window_bytes;
        c.max_lag = self.max_lag_ms.map(Duration::from_millis);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto_etcd() -> ReplicationConfig {
        let mut r = ReplicationConfig::new("demo", "a", "/certs".into(), ReplicationRole::Auto);
        r.listen = Some(SocketAddr::from(([127, 0, 0, 1], 7400)));
        r.peer = Some("b".into());
        r.peer_addr = Some(SocketAddr::from(([127, 0, 0, 1], 7401)));
        r.coordinator = CoordinatorKind::Etcd;
        r.etcd_endpoints = vec!["http://127.0.0.1:2379".into()];
        r
    }

    fn refusal(r: &ReplicationConfig) -> String {
        r.validate().expect_err("refused").to_string()
    }

    #[test]
    fn etcd_settings_become_the_cluster_coordinator_with_the_default_prefix() {
        let r = auto_etcd();
        r.validate().expect("valid");
        let c = r
            .cluster_config(
                "http://127.0.0.1:8080",
                std::path::Path::new("/d"),
                Default::default(),
            )
            .expect("auto");
        match c.coordinator {
            Coordinator::Etcd(e) => {
                assert_eq!(e.prefix, "/vigil/demo");
                assert_eq!(e.endpoints, ["http://127.0.0.1:2379"]);
            }
            other => panic!("not etcd: {other:?}"),
        }
    }

    #[test]
    fn etcd_mistakes_are_named_before_anything_runs() {
        let mut r = auto_etcd();
        r.etcd_endpoints.clear();
        assert!(refusal(&r).contains("etcd_endpoints"), "{}", refusal(&r));
        let mut r = auto_etcd();
        r.etcd_endpoints = vec!["ftp://x:1".into()];
        assert!(refusal(&r).contains("http://HOST:PORT"), "{}", refusal(&r));
        let mut r = auto_etcd();
        r.etcd_endpoints = vec!["https://x:2379".into()];
        assert!(refusal(&r).contains("etcd_ca"), "{}", refusal(&r));
        let mut r = auto_etcd();
        r.etcd_cert = Some("/c.pem".into());
        assert!(refusal(&r).contains("both"), "{}", refusal(&r));
        let mut r = auto_etcd();
        r.etcd_password = Some("p".into());
        assert!(refusal(&r).contains("etcd_user"), "{}", refusal(&r));
        let mut r = auto_etcd();
        r.role = ReplicationRole::Leader;
        assert!(refusal(&r).contains("role = \"auto\""), "{}", refusal(&r));
        // The witness still needs its own settings.
        let mut r = auto_etcd();
        r.coordinator = CoordinatorKind::Witness;
        assert!(refusal(&r).contains("witness_addr"), "{}", refusal(&r));
    }

    #[test]
    fn the_password_is_never_written_out() {
        let mut r = auto_etcd();
        r.etcd_user = Some("vigil".into());
        r.etcd_password = Some("s3cret".into());
        let text = toml::to_string(&r).expect("toml");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("etcd_user"), "{text}");
        let debug = format!("{:?}", r.etcd_config());
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
