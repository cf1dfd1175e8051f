//! The leader's archive task: every interval it uploads the durable frames
//! written since the last piece, as pieces of at most
//! [`ArchiveConfig::piece_bytes`], create-only. It starts by listing the
//! archive and continuing after the newest piece its own log agrees with
//! (a promoted follower continues its predecessor's archive; a deposed
//! leader's lost frames stay where they are, on a branch a restore does
//! not follow). Failures are counted and shown, never fatal: writes go on
//! and the archive catches up when storage answers again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_engine::Store;
use vigil_engine::archive::{PIECE_BYTES_MAX, PIECE_PREFIX, PieceName, archive_resume_lsn};

use super::{ArchiveError, Created, Location, blocking};

/// Shortest interval (the archive's RPO) accepted.
pub const INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Longest interval accepted.
pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Wait after a failure before trying again (doubling up to the interval).
const RETRY_FIRST: Duration = Duration::from_millis(200);

/// Log bytes a leader puts in one piece by default. Smaller than the
/// most a piece may hold so that a restore downloads the next piece
/// while it writes one (a 64 MiB piece is fetched whole before any of it
/// is written: docs/BENCHMARKS.md, issue 21).
pub const PIECE_BYTES: usize = 16 << 20;

/// How a leader archives.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Most time between a frame becoming durable and its upload starting
    /// (the archive's RPO). Default 60 s.
    pub interval: Duration,
    /// Most log bytes per piece (default [`PIECE_BYTES`], at most
    /// `PIECE_BYTES_MAX`).
    pub piece_bytes: usize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            piece_bytes: PIECE_BYTES,
        }
    }
}

/// What `/status` and `/metrics` show of the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveStatus {
    /// The archive's URL.
    pub url: String,
    /// Whether the task runs (this node leads).
    pub active: bool,
    /// Newest LSN known archived (0: none yet).
    pub archived_lsn: u64,
    /// Commit time of that frame, µs since the Unix epoch.
    pub archived_time_us: u64,
    /// When the last upload round finished without error, µs.
    pub last_success_us: u64,
    /// Pieces this node uploaded.
    pub pieces: u64,
    /// Log bytes this node uploaded.
    pub bytes: u64,
    /// Failed rounds since the task started.
    pub errors: u64,
    /// The last failure, while it lasts (cleared by a success).
    pub last_error: Option<String>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The running archive task of a leader.
#[derive(Debug)]
pub struct Archiver {
    status: Arc<Mutex<ArchiveStatus>>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Archiver {
    /// Starts archiving `store`'s log to `location`.
    pub fn start(store: Arc<Store>, location: Location, config: ArchiveConfig) -> Self {
        assert!(
            config.piece_bytes > 0 && config.piece_bytes <= PIECE_BYTES_MAX,
            "a piece holds 1..=PIECE_BYTES_MAX bytes"
        );
        let status = Arc::new(Mutex::new(ArchiveStatus {
            url: location.to_string(),
            active: true,
            ..ArchiveStatus::default()
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(run(store, location, config, status.clone(), wake.clone()));
        Self { status, wake, task }
    }

    /// What the task has done so far.
    pub fn status(&self) -> ArchiveStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A shared view of the status, for `/status` while the task runs.
    pub fn status_handle(&self) -> Arc<Mutex<ArchiveStatus>> {
        self.status.clone()
    }

    /// Uploads what is durable now and waits until it is archived (or a
    /// round fails): a switchover or shutdown calls it to leave nothing
    /// behind. Returns the archived LSN.
    pub async fn flush(&self, timeout: Duration) -> u64 {
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + timeout;
        let want = self.status().archived_lsn;
        loop {
            let s = self.status();
            if s.archived_lsn > want || s.last_error.is_some() {
                return s.archived_lsn;
            }
            if tokio::time::Instant::now() >= deadline {
                return s.archived_lsn;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the task (an upload in flight is abandoned: it is either
    /// whole in the store or absent).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        self.status.lock().unwrap_or_else(|p| p.into_inner()).active = false;
    }
}

/// Where to continue: after the newest piece this log agrees with.
pub(super) async fn resume(
    store: &Arc<Store>,
    location: &Location,
) -> Result<(u64, u64), ArchiveError> {
    let names: Vec<PieceName> = location
        .list(PIECE_PREFIX)
        .await?
        .into_iter()
        .filter_map(|(n, _)| PieceName::parse(&n))
        .collect();
    let s = store.clone();
    let next = blocking(move || archive_resume_lsn(&s, &names)).await?;
    let s = store.clone();
    let time = blocking(move || Ok(s.frame_at(next - 1)?.map_or(0, |h| h.timestamp_us))).await?;
    Ok((next, time))
}

/// Uploads every durable frame from `next` on; returns the next LSN.
/// `uploaded` is told each piece's log bytes once it is stored.
pub(super) async fn upload_round(
    store: &Arc<Store>,
    location: &Location,
    config: &ArchiveConfig,
    mut next: u64,
    status: &Mutex<ArchiveStatus>,
    uploaded: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, ArchiveError> {
    // The next piece is read and encoded while this one uploads; pieces
    // are still stored one after the other, in LSN order.
    let read = |from: u64| {
        let s = store.clone();
        let bytes = config.piece_bytes;
        tokio::task::spawn_blocking(move || {
            Ok::<_, vigil_engine::Error>(s.archive_piece(from, bytes)?.map(|p| {
                let encoded = p.encode();
                (p, encoded)
            }))
        })
    };
    let mut ahead = read(next);
    loop {
        let Some((piece, encoded)) = ahead
            .await
            .map_err(|e| ArchiveError::Task(e.to_string()))??
        else {
            return Ok(next);
        };
        assert_eq!(piece.name.first_lsn, next, "pieces follow each other");
        ahead = read(piece.name.last_lsn + 1);
        let name = piece.name.object_name();
        let created = location.put_new(&name, encoded).await?;
        next = piece.name.last_lsn + 1;
        uploaded(piece.log.len() as u64);
        let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
        st.archived_lsn = piece.name.last_lsn;
        st.archived_time_us = piece.last_time_us;
        // The storage answers again: the failure is over.
        st.last_error = None;
        if created == Created::Written {
            st.pieces += 1;
            st.bytes += piece.log.len() as u64;
        }
    }
}

async fn run(
    store: Arc<Store>,
    location: Location,
    config: ArchiveConfig,
    status: Arc<Mutex<ArchiveStatus>>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut next: Option<u64> = None;
    let mut retry = RETRY_FIRST;
    let mut logged: Option<tokio::time::Instant> = None;
    loop {
        let round = async {
            let from = match next {
                Some(n) => n,
                None => {
                    let (n, time) = resume(&store, &location).await?;
                    let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                    st.archived_lsn = n - 1;
                    st.archived_time_us = time;
                    n
                }
            };
            next = Some(from);
            let n = upload_round(&store, &location, &config, from, &status, &mut |_| {}).await?;
            next = Some(n);
            Ok::<(), ArchiveError>(())
        };
        let wait = match round.await {
            Ok(()) => {
                retry = RETRY_FIRST;
                let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                st.last_success_us = now_us();
                st.last_error = None;
                config.interval
            }
            Err(e) => {
                let text = e.to_string();
                let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                // The first failure of a kind, then one line per interval
                // at most: an outage must not flood the log.
                if st.last_error.as_deref() != Some(text.as_str())
                    || logged.is_none_or(|t: tokio::time::Instant| {
                        t.elapsed() >= config.interval.max(Duration::from_secs(60))
                    })
                {
                    tracing::warn!("archive to {location}: {text}");
                    logged = Some(tokio::time::Instant::now());
                }
                st.errors += 1;
                st.last_error = Some(text);
                let w = retry.min(config.interval);
                retry = (retry * 2).min(config.interval);
                w
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}
