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
    }
}
