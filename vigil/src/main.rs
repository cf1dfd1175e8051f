//! `vigil`: the Vigil command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

/// mimalloc: the server allocates per request and per index entry; glibc's
/// allocator took ~15% of the server's CPU under the create load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use vigil_fhir::config::Config;

mod ops;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil: a FHIR R4 store with disaster recovery built in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the FHIR REST API (data in ./vigil-data, HTTP on 127.0.0.1:8080 by default).
    Serve {
        /// A TOML file with every setting; flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// The HTTP listen address.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Log format: text or json.
        #[arg(long)]
        log_format: Option<String>,
        /// Encrypt at rest under this key-encryption key: a key file
        /// (`vigil keys new --out FILE`) or
        /// `pkcs11:module=PATH;token=LABEL;key=NAME` (PIN in
        /// VIGIL_PKCS11_PIN). Sets `[encryption] kek`.
        #[arg(long)]
        kek: Option<String>,
        #[command(flatten)]
        repl: Box<ReplFlags>,
    },
    /// Make a cluster CA and a certificate per node for replication (mutual TLS).
    Certs {
        /// Directory to write ca.pem, ca.key, NODE.pem and NODE.key into
        /// (an existing CA there is reused).
        #[arg(long)]
        out: PathBuf,
        /// The cluster's name.
        #[arg(long)]
        cluster: String,
        /// A node: NAME, or NAME=host,ip,… for the names it is reached at
        /// (default: localhost, 127.0.0.1, ::1). Repeat for each node.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
    /// Run the witness: the third voter, holding only the epoch, its lease
    /// promise and the followers' eligibility (no resource data).
    Witness {
        /// Where the witness keeps its state (witness.state).
        #[arg(long, default_value = "./vigil-witness")]
        data: PathBuf,
        /// The UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:7500")]
        listen: SocketAddr,
        /// Directory made by `vigil certs` (ca.pem, NODE.pem, NODE.key).
        #[arg(long)]
        certs: PathBuf,
        /// The witness's node name (its certificate's).
        #[arg(long, default_value = "witness")]
        node: String,
        /// Lease duration in ms; must equal the data nodes' `lease_ms`.
        #[arg(long, default_value_t = vigil_net::proto::lease::LEASE_MS_DEFAULT)]
        lease_ms: u64,
    },
    /// Key-encryption key files for encryption at rest (made, rotated,
    /// shown).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Start a whole local DR cluster (two data nodes and a witness on
    /// loopback) with sample patients; Ctrl-C stops it. Reuses DIR.
    Up {
        /// The cluster directory.
        #[arg(long, default_value = "./vigil-cluster")]
        dir: PathBuf,
        /// Node a's HTTP port (b: the next one).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Node a's replication port (b and the witness: the next two).
        #[arg(long, default_value_t = 7400)]
        repl_port: u16,
        /// Sample patients (20 resources each) loaded into a new cluster.
        #[arg(long, default_value_t = 50)]
        patients: usize,
        /// Coordinate through three local etcd members (the installed
        /// `etcd`) instead of the witness.
        #[arg(long)]
        etcd: bool,
    },
    /// A DR drill: steady writes, a disaster, and a report of RTO, RPO,
    /// latency and throughput (Markdown, JSON, SVG); exits non-zero when
    /// the cluster broke its promises.
    Drill(ops::DrillArgs),
    /// Back up a store (online: no pause, consistent at an LSN). Into a
    /// directory: its segments, only what is new copied into an existing
    /// backup. Into object storage (`s3://bucket/prefix`, `az://…`,
    /// `gs://…`, `file:///path`, the same place as the `[archive] url`):
    /// the log it lacks as archive pieces, then a copy of the index, so a
    /// restore from there serves without indexing the whole log. A running
    /// server's store is backed up by the server: `POST /admin/backup`.
    /// `backup verify` checks a backup; `backup prune` applies retention.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[command(subcommand)]
        action: Option<BackupAction>,
        /// The store's data directory.
        #[arg(long, default_value = "./vigil-data")]
        data: PathBuf,
        /// The backup directory or object storage URL.
        #[arg(long)]
        to: Option<String>,
        /// The store's key-encryption key (an encrypted store, backed up
        /// to object storage: the index copy is read through it).
        #[arg(long)]
        kek: Option<String>,
    },
    /// Restore a store from a backup, as it was at an LSN or a time.
    Restore {
        /// A backup directory, or the URL of a continuous log archive and
        /// its base backups (`s3://bucket/prefix`, `az://…`, `gs://…`,
        /// `file:///path`: the `[archive] url` of the cluster's leader).
        #[arg(long)]
        from: String,
        /// The new store's data directory (must not hold a store).
        #[arg(long)]
        to: PathBuf,
        /// The state after this LSN.
        #[arg(long, conflicts_with = "time")]
        lsn: Option<u64>,
        /// The state at this time (FHIR instant, e.g. 2026-11-26T18:00:00Z).
        #[arg(long)]
        time: Option<String>,
        /// The key-encryption key of an encrypted backup's store (needed
        /// to build the restored store's index).
        #[arg(long)]
        kek: Option<String>,
    },
    /// Move leadership to the follower with zero loss (planned failover or
    /// failback): writes pause, the follower catches up, it takes over.
    Switchover {
        /// Any node's base URL (a follower passes the request to its leader).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token for servers that need one.
        #[arg(long)]
        token: Option<String>,
    },
    /// Make a follower lead without the witness (the witness is gone).
    /// Prints the writes it may lose before it acts.
    Promote {
        /// The follower's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Required: a forced promotion may lose writes the follower lacks.
        #[arg(long)]
        force: bool,
        /// A bearer token for servers that need one.
        #[arg(long)]
        token: Option<String>,
    },
    /// What a failover cut from this node's log: list it, or submit it to
    /// the current leader again.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Show a node's role, log position and replication state.
    Status {
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// A bearer token for servers that need one.
        #[arg(long)]
        token: Option<String>,
    },
    /// Load-test a FHIR server (pgbench-like): throughput and latency.
    Bench {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// What each request does.
        #[arg(long, value_enum, default_value = "create")]
        workload: vigil::bench::Workload,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds to run (unless --count is given).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop after this many requests instead of after --duration.
        #[arg(long)]
        count: Option<u64>,
        /// Resources per transaction Bundle (transaction workload).
        #[arg(long, default_value_t = 100)]
        bundle_size: usize,
        /// A bearer token for servers that need one.
        #[arg(long)]
        token: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Pace requests to this many per second in total (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// The directory of Bundles (`.json`, `.json.zst`) the bundles workload posts.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The query of the export workload's kick-off (`_type=Observation&_typeFilter=…`),
        /// or the search the pages workload pages through (`Observation?code=…`).
        #[arg(long)]
        query: Option<String>,
        /// A `Prefer` header the bundles workload sends with each Bundle
        /// (`return=minimal`: the answer carries no resources).
        #[arg(long)]
        prefer: Option<String>,
    },
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// List the quarantine folders of a data directory.
    List {
        /// The node's data directory.
        #[arg(long, default_value = "./vigil-data")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Submit every lost version (not yet reapplied) to the leader as a new
    /// version, reporting each conflict.
    Reapply {
        /// The node's data directory.
        #[arg(long, default_value = "./vigil-data")]
        data: PathBuf,
        /// The leader's (or any node's) base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token for servers that need one.
        #[arg(long)]
        token: Option<String>,
        /// An encrypted store's key-encryption key (its quarantine is
        /// sealed); the store's data keys are read, never changed.
        #[arg(long)]
        kek: Option<String>,
    },
}

#[derive(Subcommand)]
enum BackupAction {
    /// Check every frame of a backup (CRCs, dense LSNs, the segment chain);
    /// at a URL, every piece of the archive's history and every base
    /// backup's files, and that each backup is on that history.
    Verify {
        /// The backup directory or object storage URL.
        dir: String,
    },
    /// Delete the base backups at a URL that retention does not keep:
    /// those older than `--keep-days` and not among the `--keep-backups`
    /// newest (the newest is always kept). Log pieces are never deleted:
    /// every restore needs the whole log.
    Prune {
        /// The object storage URL.
        url: String,
        /// Keep every backup taken within this many days.
        #[arg(long, default_value_t = 7)]
        keep_days: u32,
        /// Keep at least this many of the newest backups.
        #[arg(long, default_value_t = 2)]
        keep_backups: u32,
    },
}

/// `vigil keys`: key-encryption keys (KEKs) for encryption at rest. A
/// KEK is a key file's path (`file:PATH` or a plain path) or a key on a
/// PKCS#11 token (`pkcs11:module=PATH;token=LABEL;key=NAME`, the user PIN
/// in `VIGIL_PKCS11_PIN`).
#[derive(clap::Subcommand)]
enum KeysAction {
    /// Make a KEK: a new key file (one random 256-bit key, version 1, mode
    /// 0600, never overwriting), or version 1 of a key on a PKCS#11 token
    /// (made there, sensitive, not extractable).
    New {
        /// The key file to write.
        #[arg(long, conflicts_with = "kek", required_unless_present = "kek")]
        out: Option<PathBuf>,
        /// A PKCS#11 key: pkcs11:module=PATH;token=LABEL;key=NAME.
        #[arg(long)]
        kek: Option<String>,
        /// A key file's name, stored with every data key it wraps.
        #[arg(long, default_value = "vigil")]
        name: String,
    },
    /// Add a version: new data keys are wrapped under it; the older
    /// versions stay to unwrap what they wrapped.
    Rotate {
        /// The KEK.
        #[arg(long)]
        kek: String,
    },
    /// Show a KEK's name and versions (never a key); with --data, also
    /// the store's data keys per KEK version (read from its data-keys
    /// file, the store may be running).
    Status {
        /// The KEK.
        #[arg(long)]
        kek: String,
        /// A store's data directory.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Re-wrap a running node's data keys under its KEK's newest version
    /// (after `vigil keys rotate`): only the data-keys file is rewritten,
    /// writes go on.
    Rewrap {
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token for servers that need one.
        #[arg(long)]
        token: Option<String>,
    },
    /// Wrap a fresh data key under the KEK and unwrap it again: says whether
    /// the KEK works now (reachable, not revoked).
    Check {
        /// The KEK.
        #[arg(long)]
        kek: String,
    },
}

/// Replication flags of `vigil serve`; they override `[replication]`.
#[derive(clap::Args)]
struct ReplFlags {
    /// leader or follower.
    #[arg(long)]
    role: Option<vigil_fhir::config::replication::ReplicationRole>,
    /// Follower: the leader's replication address (UDP), e.g. 10.0.0.1:7400.
    #[arg(long)]
    leader: Option<SocketAddr>,
    /// Leader: the replication address to listen on (UDP).
    #[arg(long)]
    replication: Option<SocketAddr>,
    /// This node's name (its certificate is CERTS/NODE.pem).
    #[arg(long)]
    node: Option<String>,
    /// The cluster's name.
    #[arg(long)]
    cluster: Option<String>,
    /// Directory made by `vigil certs`.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// The RPO promise in milliseconds; 0 is synchronous replication.
    #[arg(long)]
    max_lag_ms: Option<u64>,
    /// Auto: who coordinates leadership, witness or etcd.
    #[arg(long)]
    coordinator: Option<vigil_fhir::config::replication::CoordinatorKind>,
    /// Etcd: the members' client URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Etcd: the prefix of this cluster's keys (default /vigil/CLUSTER).
    #[arg(long)]
    etcd_prefix: Option<String>,
    /// Etcd: the CA that signed the members' certificates.
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Etcd: this node's client certificate (with --etcd-key).
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    /// Etcd: the client certificate's key.
    #[arg(long)]
    etcd_key: Option<PathBuf>,
    /// Etcd: a user (its password from VIGIL_ETCD_PASSWORD).
    #[arg(long)]
    etcd_user: Option<String>,
}

impl ReplFlags {
    fn apply(self, cfg: &mut Config) -> anyhow::Result<()> {
        let any = self.role.is_some()
            || self.leader.is_some()
            || self.replication.is_some()
            || self.node.is_some()
            || self.cluster.is_some()
            || self.certs.is_some()
            || self.max_lag_ms.is_some()
            || self.coordinator.is_some()
            || !self.etcd_endpoints.is_empty()
            || self.etcd_prefix.is_some()
            || self.etcd_ca.is_some()
            || self.etcd_cert.is_some()
            || self.etcd_key.is_some()
            || self.etcd_user.is_some();
        if !any {
            return Ok(());
        }
        let r = match cfg.replication.take() {
            Some(r) => r,
            None => {
                let (Some(node), Some(certs)) = (self.node.clone(), self.certs.clone()) else {
                    anyhow::bail!(
                        "replication needs --node and --certs (or a [replication] table in --config)"
                    );
                };
                vigil_fhir::config::replication::ReplicationConfig::new(
                    "vigil",
                    &node,
                    certs,
                    vigil_fhir::config::replication::ReplicationRole::Leader,
                )
            }
        };
        let mut r = r;
        if let Some(v) = self.role {
            r.role = v;
        }
        if let Some(v) = self.leader {
            r.leader = Some(v);
        }
        if let Some(v) = self.replication {
            r.listen = Some(v);
        }
        if let Some(v) = self.node {
            r.node = v;
        }
        if let Some(v) = self.cluster {
            r.cluster = v;
        }
        if let Some(v) = self.certs {
            r.certs = v;
        }
        if let Some(v) = self.max_lag_ms {
            r.max_lag_ms = Some(v);
        }
        if let Some(v) = self.coordinator {
            r.coordinator = v;
        }
        if !self.etcd_endpoints.is_empty() {
            r.etcd_endpoints = self.etcd_endpoints;
        }
        for (flag, setting) in [
            (self.etcd_prefix, &mut r.etcd_prefix),
            (self.etcd_user, &mut r.etcd_user),
        ] {
            if flag.is_some() {
                *setting = flag;
            }
        }
        for (flag, setting) in [
            (self.etcd_ca, &mut r.etcd_ca),
            (self.etcd_cert, &mut r.etcd_cert),
            (self.etcd_key, &mut r.etcd_key),
        ] {
            if flag.is_some() {
                *setting = flag;
            }
        }
        cfg.replication = Some(r);
        Ok(())
    }
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data,
            http,
            log_format,
            kek,
            repl,
        } => {
            let mut cfg = match &config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            if let Some(d) = data {
                cfg.data = d;
            }
            if let Some(h) = http {
                cfg.http = h;
            }
            if let Some(f) = log_format {
                cfg.log_format = f;
            }
            if kek.is_some() {
                cfg.encryption.kek = kek;
            }
            repl.apply(&mut cfg)?;
            cfg.validate()?;
            init_logs(&cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(vigil_fhir::server::run(cfg, |addr| {
                // One line on stdout that scripts and tests wait for.
                println!("vigil listening on http://{addr}");
            }))?;
            Ok(())
        }
        Command::Certs {
            out,
            cluster,
            nodes,
        } => {
            let specs = nodes
                .iter()
                .map(|n| vigil_net::runtime::tls::NodeSpec::parse(n))
                .collect::<Result<Vec<_>, _>>()?;
            let written = vigil_net::runtime::tls::make_cluster(&out, &cluster, &specs)?;
            for f in written {
                println!("wrote {}", f.display());
            }
            println!(
                "keep {} offline once every node has its certificate",
                out.join("ca.key").display()
            );
            Ok(())
        }
        Command::Up {
            dir,
            http_port,
            repl_port,
            patients,
            etcd,
        } => {
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let rt = current_thread()?;
            rt.block_on(vigil::up::run(
                vigil::up::UpOptions {
                    dir,
                    http_port,
                    repl_port,
                    patients,
                    exe,
                    relays: false,
                    etcd,
                },
                |_| {},
            ))?;
            Ok(())
        }
        Command::Drill(args) => ops::drill(args),
        Command::Keys { action } => keys(action),
        Command::Backup {
            action: Some(BackupAction::Verify { dir }),
            ..
        } => ops::backup_verify(dir),
        Command::Backup {
            action:
                Some(BackupAction::Prune {
                    url,
                    keep_days,
                    keep_backups,
                }),
            ..
        } => ops::backup_prune(url, keep_days, keep_backups),
        Command::Backup {
            action: None,
            data,
            to,
            kek,
        } => ops::backup(data, to, kek),
        Command::Restore {
            from,
            to,
            lsn,
            time,
            kek,
        } => ops::restore(from, to, lsn, time, kek),
        Command::Switchover { url, token } => ops::switchover(url, token),
        Command::Promote { url, force, token } => ops::promote(url, force, token),
        Command::Quarantine {
            action: QuarantineAction::List { data, json },
        } => ops::quarantine_list(data, json),
        Command::Quarantine {
            action:
                QuarantineAction::Reapply {
                    data,
                    url,
                    token,
                    kek,
                },
        } => ops::quarantine_reapply(data, url, token, kek),
        Command::Witness {
            data,
            listen,
            certs,
            node,
            lease_ms,
        } => {
            init_logs(&Config::default());
            if !(600..=600_000).contains(&lease_ms) {
                anyhow::bail!("--lease-ms must be 600..=600000");
            }
            let id = vigil_net::runtime::tls::Identity::load(&certs, &node)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async {
                let (stop_tx, stop) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    vigil_fhir::server::shutdown_signal().await;
                    let _ = stop_tx.send(true);
                });
                vigil_net::runtime::witness::serve(
                    &data,
                    id,
                    vigil_net::proto::lease::LeaseConfig::with_duration_ms(lease_ms),
                    listen,
                    stop,
                    |addr| println!("vigil witness listening on {addr}"),
                )
                .await
            })?;
            Ok(())
        }
        Command::Status { url, json, token } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let text = rt.block_on(vigil::status::fetch(&url, token.as_deref()))?;
            if json {
                println!("{text}");
            } else {
                print!("{}", vigil::status::render(&text)?);
            }
            Ok(())
        }
        Command::Bench {
            url,
            workload,
            clients,
            duration,
            count,
            bundle_size,
            token,
            json,
            rate,
            from,
            query,
            prefer,
        } => {
            if !(duration > 0.0 && duration <= 86_400.0) {
                anyhow::bail!("--duration must be between 0 and 86400 seconds");
            }
            let stop = match count {
                Some(n) => vigil::bench::Stop::Count(n),
                None => vigil::bench::Stop::Duration(std::time::Duration::from_secs_f64(duration)),
            };
            let settings = vigil::bench::Settings {
                url,
                workload,
                clients,
                stop,
                bundle_size,
                token,
                rate,
                from,
                query,
                prefer,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = rt.block_on(vigil::bench::run(settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}

/// `vigil keys`.
fn keys(action: KeysAction) -> anyhow::Result<()> {
    use vigil_engine::crypt::keyfile::KeyFile;
    use vigil_engine::crypt::pkcs11::Pkcs11Kek;
    use vigil_engine::crypt::{DataKey, Kek, KekLocator};
    let pin = std::env::var("VIGIL_PKCS11_PIN").ok();
    let pkcs11 = |loc: &str| -> anyhow::Result<Pkcs11Kek> {
        match KekLocator::parse(loc)? {
            KekLocator::Pkcs11(at) => {
                let pin = pin
                    .as_deref()
                    .context("a PKCS#11 token needs its user PIN in VIGIL_PKCS11_PIN")?;
                Ok(Pkcs11Kek::open(&at, pin)?)
            }
            KekLocator::File(_) => anyhow::bail!("{loc} is not a pkcs11: locator"),
        }
    };
    let open = |loc: &str| -> anyhow::Result<Box<dyn Kek>> {
        match KekLocator::parse(loc)? {
            KekLocator::File(path) => Ok(Box::new(KeyFile::load(&path)?)),
            KekLocator::Pkcs11(_) => Ok(Box::new(pkcs11(loc)?)),
        }
    };
    match action {
        KeysAction::New { out, kek, name } => match (out, kek) {
            (Some(out), _) => {
                let kf = KeyFile::create(&out, &name)?;
                println!(
                    "wrote {} (key {:?}, version {}, mode 0600); keep a copy where the data is not",
                    out.display(),
                    kf.name(),
                    kf.current_version()
                );
            }
            (None, Some(loc)) => {
                let mut k = pkcs11(&loc)?;
                if !k.versions().is_empty() {
                    anyhow::bail!(
                        "key {:?} already has versions {:?} on the token; `vigil keys rotate` adds one",
                        k.name(),
                        k.versions()
                    );
                }
                let v = k.add_version()?;
                println!("made key {:?} version {v} on the token", k.name());
            }
            (None, None) => anyhow::bail!("--out FILE or --kek pkcs11:…"),
        },
        KeysAction::Rotate { kek } => {
            let v = match KekLocator::parse(&kek)? {
                KekLocator::File(path) => KeyFile::load(&path)?.rotate()?,
                KekLocator::Pkcs11(_) => pkcs11(&kek)?.add_version()?,
            };
            println!("{kek}: version {v} added; new data keys are wrapped under it");
        }
        KeysAction::Status { kek, data } => {
            let k = open(&kek)?;
            println!(
                "{kek}: key {:?}, versions {:?}, current {}",
                k.name(),
                k.versions(),
                k.current_version()
            );
            if let Some(dir) = data {
                ops::data_keys_status(&dir)?;
            }
        }
        KeysAction::Rewrap { url, token } => ops::keys_rewrap(url, token)?,
        KeysAction::Check { kek } => {
            let k = open(&kek)?;
            let dek = DataKey::random()?;
            let wrapped = k.wrap(&dek)?;
            anyhow::ensure!(k.unwrap(&wrapped)? == dek, "the unwrapped key differs");
            println!(
                "{kek}: ok — a data key wrapped under {:?} version {} and unwrapped",
                k.name(),
                wrapped.version
            );
        }
    }
    Ok(())
}
