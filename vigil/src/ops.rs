//! The `vigil` binary's DR and operator commands (not part of the library):
//! drills, backup and restore, switchover, forced promotion, quarantine.

use std::path::PathBuf;

use anyhow::Context;
use vigil_fhir::config::Config;

use crate::current_thread;

/// The flags of `vigil drill`.
#[derive(clap::Args)]
pub struct DrillArgs {
    /// Start a local cluster for the drill (in --dir).
    #[arg(long)]
    pub local: bool,
    /// The disaster.
    #[arg(long, value_enum, default_value = "kill-leader")]
    pub scenario: vigil::drill::Scenario,
    /// A running cluster's two node URLs (without --local).
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// The token a running cluster's `[drills]` settings require.
    #[arg(long)]
    pub token: Option<String>,
    /// Writes per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of writing before the disaster.
    #[arg(long, default_value_t = 5)]
    pub before: u64,
    /// Seconds of writing after it (the drill also waits for the rejoin).
    #[arg(long, default_value_t = 10)]
    pub after: u64,
    /// Where the report goes.
    #[arg(long, default_value = "./vigil-drill")]
    pub out: PathBuf,
    /// The RTO promise checked, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub rto_max: f64,
    /// Afterwards, move leadership back to the original leader.
    #[arg(long)]
    pub failback: bool,
    /// --local: the cluster directory.
    #[arg(long, default_value = "./vigil-drill/cluster")]
    pub dir: PathBuf,
    /// --local: node a's HTTP port (b: the next one).
    #[arg(long, default_value_t = 8180)]
    pub http_port: u16,
    /// --local: node a's replication port (b, witness: the next two).
    #[arg(long, default_value_t = 7480)]
    pub repl_port: u16,
    /// --local: coordinate through three local etcd members instead of the
    /// witness.
    #[arg(long)]
    pub etcd: bool,
}

/// A progress printer: one line a second at most, and the last one.
fn progress(what: &'static str) -> impl FnMut(vigil_engine::Progress) {
    let t0 = std::time::Instant::now();
    let mut shown = std::time::Instant::now();
    move |p| {
        let done = p.bytes_done >= p.bytes_total;
        if done || shown.elapsed() >= std::time::Duration::from_secs(1) {
            shown = std::time::Instant::now();
            let mb = p.bytes_done as f64 / 1e6;
            println!(
                "  {what}: {:.1}% ({mb:.1} of {:.1} MB, {:.1} MB/s)",
                p.bytes_done as f64 * 100.0 / p.bytes_total.max(1) as f64,
                p.bytes_total as f64 / 1e6,
                mb / t0.elapsed().as_secs_f64().max(1e-3)
            );
        }
    }
}

/// `vigil drill`: runs the drill and fails when a promise broke.
pub fn drill(args: DrillArgs) -> anyhow::Result<()> {
    let DrillArgs {
        local,
        scenario,
        urls,
        token,
        rate,
        before,
        after,
        out,
        rto_max,
        failback,
        dir,
        http_port,
        repl_port,
        etcd,
    } = args;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let opts = vigil::drill::DrillOptions {
        scenario,
        rate,
        before: std::time::Duration::from_secs(before),
        after: std::time::Duration::from_secs(after),
        out,
        local: local.then_some(vigil::up::UpOptions {
            dir,
            http_port,
            repl_port,
            patients: 0,
            exe,
            relays: true,
            etcd,
        }),
        urls,
        token,
        rto_max,
        failback,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let r = rt.block_on(vigil::drill::run(opts))?;
    println!(
        "RTO {} (promise {:.0} s: {}); lost {} acknowledged writes (promise max_lag {:.3} s: {}); rejoin {}",
        r.rto_seconds.map_or("none".into(), |s| format!("{s:.2} s")),
        r.rto_max_seconds,
        if r.rto_kept { "kept" } else { "BROKEN" },
        r.lost,
        r.max_lag_seconds,
        if r.rpo_kept { "kept" } else { "BROKEN" },
        r.rejoined_at.map_or("—".into(), |t| format!(
            "{:.2} s after the failure",
            t - r.failure_at
        )),
    );
    if !(r.rto_kept && r.rpo_kept) {
        anyhow::bail!("the cluster broke its promises in this drill");
    }
    Ok(())
}

/// `vigil backup verify DIR`.
pub fn backup_verify(dir: String) -> anyhow::Result<()> {
    if dir.contains("://") {
        let location = vigil_net::archive::Location::parse(&dir)?;
        let rt = current_thread()?;
        let mut shown = progress("verified");
        let v = rt.block_on(vigil_net::archive::verify_location(&location, &mut |p| {
            shown(p)
        }))?;
        println!(
            "archive at {dir} is whole: {} pieces, {} frames, {:.1} MB of log, lsn 1..={}, {} .. {}{}",
            v.pieces,
            v.frames,
            v.log_bytes as f64 / 1e6,
            v.last_lsn,
            vigil_fhir::instant::format_instant(v.first_time_us),
            vigil_fhir::instant::format_instant(v.last_time_us),
            if v.side_pieces > 0 {
                format!(
                    "; {} pieces off the history (a deposed leader's lost frames)",
                    v.side_pieces
                )
            } else {
                String::new()
            }
        );
        for b in &v.backups {
            println!(
                "  base backup {}: index at lsn {} ({}), {:.1} MB, taken {}{}",
                b.name,
                b.lsn,
                vigil_fhir::instant::format_instant(b.timestamp_us),
                b.bytes as f64 / 1e6,
                vigil_fhir::instant::format_instant(b.taken_us),
                if b.on_history {
                    ""
                } else {
                    " — NOT on the history: a restore cannot use it"
                }
            );
        }
        return Ok(());
    }
    let dir = PathBuf::from(dir);
    let v = vigil_engine::verify_backup(&dir, &mut progress("verified"))?;
    println!(
        "backup {} is whole: {} segments, {} frames, lsn {}..={}, {} .. {}",
        dir.display(),
        v.segments,
        v.frames,
        v.first_lsn,
        v.last_lsn,
        vigil_fhir::instant::format_instant(v.first_timestamp_us),
        vigil_fhir::instant::format_instant(v.last_timestamp_us)
    );
    Ok(())
}

/// `vigil backup prune URL`.
pub fn backup_prune(url: String, keep_days: u32, keep_backups: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        keep_days <= vigil_net::archive::backup::KEEP_DAYS_MAX,
        "--keep-days {keep_days}: at most {}",
        vigil_net::archive::backup::KEEP_DAYS_MAX
    );
    anyhow::ensure!(
        keep_backups <= vigil_net::archive::backup::KEEP_BACKUPS_MAX,
        "--keep-backups {keep_backups}: at most {}",
        vigil_net::archive::backup::KEEP_BACKUPS_MAX
    );
    let location = vigil_net::archive::Location::parse(&url)?;
    let rt = current_thread()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let r = rt.block_on(vigil_net::archive::prune_backups(
        &location,
        vigil_net::archive::Retention {
            keep_days,
            keep_backups,
        },
        now,
    ))?;
    for name in &r.deleted {
        println!("  deleted base backup {name}");
    }
    println!(
        "pruned {url}: {} base backups deleted, {} kept, {} objects of backups cut short removed; log pieces are never deleted",
        r.deleted.len(),
        r.kept.len(),
        r.orphans
    );
    Ok(())
}

/// `vigil backup --data DIR --to DIR|URL`.
pub fn backup(data: PathBuf, to: Option<String>, kek: Option<String>) -> anyhow::Result<()> {
    let Some(to) = to else {
        anyhow::bail!("give --to DIR or --to URL (or `vigil backup verify DIR|URL`)");
    };
    if to.contains("://") {
        return backup_to_url(data, &to, kek);
    }
    let to = PathBuf::from(to);
    let r = vigil_engine::backup(&data, &to, &mut progress("backed up"))?;
    println!(
        "backup {} consistent at lsn {} ({}); {} bytes copied into {} segments{}",
        to.display(),
        r.last_lsn,
        vigil_fhir::instant::format_instant(r.last_timestamp_us),
        r.bytes_copied,
        r.segments_written,
        if r.previous_lsn > 0 {
            format!(" (incremental: it held lsn {} before)", r.previous_lsn)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `vigil backup --to URL` of a store no server holds.
fn backup_to_url(data: PathBuf, url: &str, kek: Option<String>) -> anyhow::Result<()> {
    let location = vigil_net::archive::Location::parse(url)?;
    let cfg = Config {
        data: data.clone(),
        encryption: vigil_fhir::config::EncryptionConfig {
            kek,
            ..Default::default()
        },
        ..Config::default()
    };
    let store = match vigil_engine::Store::open_with(
        &data,
        vigil_fhir::app::App::store_options(&cfg)?,
    ) {
        Ok(s) => std::sync::Arc::new(s),
        Err(vigil_engine::Error::Locked { .. }) => anyhow::bail!(
            "the store in {} is held by a running server: ask it for the backup with `curl -X POST 'http://HOST:PORT/admin/backup?to={url}'` (or configure [backup] to take them on a schedule)",
            data.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let rt = current_thread()?;
    let mut shown = progress("index uploaded");
    let started = std::time::Instant::now();
    let r = rt.block_on(vigil_net::archive::backup_to_location(
        store.clone(),
        &location,
        &mut |p| shown(p),
    ))?;
    drop(store);
    println!(
        "base backup {} at {url}: index at lsn {} ({}), {} files, {:.1} MB; {} pieces ({:.1} MB) of log uploaded; {:.1} s",
        r.name,
        r.lsn,
        vigil_fhir::instant::format_instant(r.timestamp_us),
        r.files,
        r.index_bytes as f64 / 1e6,
        r.pieces,
        r.log_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `vigil restore`: the log to a point, then the index built.
pub fn restore(
    from: String,
    to: PathBuf,
    lsn: Option<u64>,
    time: Option<String>,
    kek: Option<String>,
) -> anyhow::Result<()> {
    let target = match (lsn, time) {
        (Some(n), _) => vigil_engine::RestoreTarget::Lsn(n),
        (None, Some(t)) => {
            let (start, _) = vigil_fhir::instant::parse_interval(&t)
                .with_context(|| format!("--time {t:?} is not a FHIR instant"))?;
            vigil_engine::RestoreTarget::Time(u64::try_from(start).unwrap_or(0))
        }
        (None, None) => vigil_engine::RestoreTarget::Latest,
    };
    let cfg = Config {
        data: to.clone(),
        encryption: vigil_fhir::config::EncryptionConfig {
            kek,
            ..Default::default()
        },
        ..Config::default()
    };
    let started = std::time::Instant::now();
    if from.contains("://") {
        let location = vigil_net::archive::Location::parse(&from)?;
        let opts = vigil_fhir::app::App::store_options(&cfg)?;
        let rt = current_thread()?;
        let mut shown = progress("restored");
        let r = rt.block_on(vigil_net::archive::restore_from_archive(
            &location,
            &to,
            opts,
            target,
            &mut |p| shown(p),
        ))?;
        println!(
            "restored {} from {from} up to lsn {} ({}): {:.1} MB of log{} in {:.1} s",
            to.display(),
            r.restore.last_lsn,
            vigil_fhir::instant::format_instant(r.restore.last_timestamp_us),
            r.log_bytes as f64 / 1e6,
            match &r.base_backup {
                Some(b) => format!(
                    " and the index of base backup {b} ({:.1} MB)",
                    r.index_bytes as f64 / 1e6
                ),
                None => ", indexed as appended".into(),
            },
            started.elapsed().as_secs_f64()
        );
        if r.base_backup.is_some() {
            println!(
                "  log written after {:.1} s; the index downloaded beside it after {:.1} s",
                r.log_seconds, r.index_seconds
            );
        }
        if let Some(note) = &r.index_note {
            println!("  note: {note}");
        }
    } else {
        let r = vigil_engine::restore(
            std::path::Path::new(&from),
            &to,
            target,
            &mut progress("restored"),
        )?;
        println!(
            "restored {} up to lsn {} ({}); building its index",
            to.display(),
            r.last_lsn,
            vigil_fhir::instant::format_instant(r.last_timestamp_us)
        );
    }
    let store = vigil_engine::Store::open_with(&to, vigil_fhir::app::App::store_options(&cfg)?)?;
    let stats = store.stats()?;
    store.close()?;
    println!(
        "ready after {:.1} s: {} resource versions; start it with `vigil serve --data {}` (a new leader) or use it to seed a follower",
        started.elapsed().as_secs_f64(),
        stats.versions,
        to.display()
    );
    Ok(())
}

/// `vigil switchover`.
pub fn switchover(url: String, token: Option<String>) -> anyhow::Result<()> {
    let rt = current_thread()?;
    println!("switchover requested at {url}: writes pause until the follower has every write");
    let text = rt.block_on(vigil::status::call(
        "POST",
        &url,
        "/admin/switchover",
        None,
        token.as_deref(),
    ))?;
    let r: serde_json::Value = serde_json::from_str(&text)?;
    println!(
        "done: {} leads now; epoch {} ended at lsn {} with every write on {}; handed over {} ms after the pause; the old leader follows since {} ms",
        r["new_leader"].as_str().unwrap_or("?"),
        r["from_epoch"],
        r["last_lsn"],
        r["new_leader"].as_str().unwrap_or("?"),
        r["handover_ms"],
        r["following_ms"]
    );
    Ok(())
}

/// `vigil promote [--force]`: the loss window, then (with --force) the promotion.
pub fn promote(url: String, force: bool, token: Option<String>) -> anyhow::Result<()> {
    let rt = current_thread()?;
    let text = rt.block_on(vigil::status::call(
        "GET",
        &url,
        "/admin/promote",
        None,
        token.as_deref(),
    ))?;
    let est: serde_json::Value = serde_json::from_str(&text)?;
    println!(
        "estimated loss window: {} LSNs, {:.1} s of the old leader's writes (this node holds lsn {}; leader connected: {})",
        est["lsns"],
        est["seconds"].as_f64().unwrap_or(0.0),
        est["durable_lsn"],
        est["leader_connected"]
    );
    if !force {
        anyhow::bail!("not promoted: pass --force to accept that loss window");
    }
    let text = rt.block_on(vigil::status::call(
        "POST",
        &url,
        "/admin/promote?force=true",
        None,
        token.as_deref(),
    ))?;
    let _: serde_json::Value = serde_json::from_str(&text)?;
    println!("promoted: {url} leads now");
    Ok(())
}

/// `vigil quarantine list`.
pub fn quarantine_list(data: PathBuf, json: bool) -> anyhow::Result<()> {
    let folders = vigil_fhir::quarantine::list(&data)
        .with_context(|| format!("cannot list {}", data.join("quarantine").display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&folders)?);
    } else if folders.is_empty() {
        println!("no quarantine in {}", data.display());
    } else {
        for f in &folders {
            println!(
                "{}  {}  {} versions{}",
                f.path.display(),
                f.kind,
                f.versions,
                if f.reapplied { "  (reapplied)" } else { "" }
            );
        }
    }
    Ok(())
}

/// `vigil quarantine reapply`.
pub fn quarantine_reapply(
    data: PathBuf,
    url: String,
    token: Option<String>,
    kek: Option<String>,
) -> anyhow::Result<()> {
    let folders = vigil_fhir::quarantine::list(&data)
        .with_context(|| format!("cannot list {}", data.join("quarantine").display()))?;
    let keys = match kek {
        Some(kek) => {
            let kek = vigil_fhir::config::EncryptionConfig {
                kek: Some(kek),
                ..Default::default()
            }
            .open_kek()?
            .context("a key-encryption key")?;
            Some(vigil_engine::crypt::datakeys::DataKeys::open_read_only(
                &data, kek,
            )?)
        }
        None => None,
    };
    let rt = current_thread()?;
    let (mut applied, mut conflicts, mut failed) = (0, 0, 0);
    for f in folders.iter().filter(|f| !f.reapplied && f.versions > 0) {
        println!(
            "reapplying {} ({} versions) to {url}",
            f.path.display(),
            f.versions
        );
        let report = rt.block_on(vigil::quarantine::reapply(
            &f.path,
            &url,
            token.as_deref(),
            keys.as_ref(),
        ))?;
        for r in report {
            match r.outcome.as_str() {
                "applied" => applied += 1,
                "conflict" => conflicts += 1,
                _ => failed += 1,
            }
            println!(
                "  {} lost version {}: {}{}{}",
                r.resource,
                r.lost_version,
                r.outcome,
                r.new_version
                    .map(|v| format!(" as version {v}"))
                    .unwrap_or_default(),
                r.detail.map(|d| format!(" ({d})")).unwrap_or_default()
            );
        }
    }
    println!("{applied} applied, {conflicts} conflicts, {failed} failed");
    if failed > 0 {
        anyhow::bail!("{failed} versions could not be submitted; run it again");
    }
    Ok(())
}

/// `vigil keys status --data DIR`: the store's data keys per KEK version,
/// from its data-keys file (no lock taken: the store may be running).
pub fn data_keys_status(dir: &std::path::Path) -> anyhow::Result<()> {
    use vigil_engine::crypt::datakeys::{DATA_KEYS_FILE, decode_file};
    let path = dir.join(DATA_KEYS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "{}: not encrypted (no {DATA_KEYS_FILE} file)",
                dir.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file = decode_file(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let mut per: std::collections::BTreeMap<(String, u32), usize> = Default::default();
    for e in &file.entries {
        *per.entry((e.wrapped.kek.clone(), e.wrapped.version))
            .or_default() += 1;
    }
    println!("{}: {} data keys", dir.display(), file.entries.len());
    for ((kek, version), n) in per {
        println!("  {n} wrapped under {kek:?} version {version}");
    }
    Ok(())
}

/// `vigil keys rewrap`: asks a running node to re-wrap its data keys under
/// its KEK's newest version.
pub fn keys_rewrap(url: String, token: Option<String>) -> anyhow::Result<()> {
    let rt = current_thread()?;
    let text = rt.block_on(vigil::status::call(
        "POST",
        &url,
        "/admin/keys/rewrap",
        None,
        token.as_deref(),
    ))?;
    let r: serde_json::Value = serde_json::from_str(&text)?;
    let keys = r["data_keys"].as_array().map_or(0, Vec::len);
    println!(
        "{url}: {} of {keys} data keys re-wrapped under {}",
        r["rewrapped"],
        r["kek"].as_str().unwrap_or("?")
    );
    Ok(())
}
