//! `vigil`: the Vigil command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigil_fhir::config::Config;

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
    },
    /// Load-test a FHIR server (pgbench-like): throughput and latency.
    Bench {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// What each request does.
        #[arg(long, value_enum, default_value = "create")]
        workload: vigil_fhir::bench::Workload,
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
    },
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
        Command::Bench {
            url,
            workload,
            clients,
            duration,
            count,
            bundle_size,
            token,
            json,
        } => {
            if !(duration > 0.0 && duration <= 86_400.0) {
                anyhow::bail!("--duration must be between 0 and 86400 seconds");
            }
            let stop = match count {
                Some(n) => vigil_fhir::bench::Stop::Count(n),
                None => {
                    vigil_fhir::bench::Stop::Duration(std::time::Duration::from_secs_f64(duration))
                }
            };
            let settings = vigil_fhir::bench::Settings {
                url,
                workload,
                clients,
                stop,
                bundle_size,
                token,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = rt.block_on(vigil_fhir::bench::run(settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}
