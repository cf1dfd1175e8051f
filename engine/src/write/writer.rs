//! The single writer thread: group commit.
//!
//! Committers prepare their batches on their own threads (compression, key
//! extraction) and queue them. The writer takes every batch waiting (up to
//! a frame's worth), checks preconditions and assigns versions against the
//! index, the frames the index has not applied yet and the batches ahead
//! of it in the group, encodes one frame, appends and fsyncs it, hands it
//! to the index applier (`apply.rs`) and answers every committer in the
//! group. So a commit is acknowledged only once it is durable, and the
//! index's work (and its periodic durable commits) is off that path; the
//! store's read barrier makes every acknowledged write visible to any read
//! that begins after the acknowledgement.
//!
//! A replica's appends run on this thread too, as it owns the active
//! segment (`crate::log::active`), but what they check, hold and cut is
//! `crate::replica::append`'s: this module is the leader's group commit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::index::apply::{Applier, ApplyJob, FrameKeys};
use crate::index::keys::store::keys_path;
use crate::index::rebuild::rebuild_into;
use crate::index::tables::{Snapshot, VersionEntry, entry_of};
use crate::limits::{
    APPLY_QUEUE_BYTES_MAX, EPOCH_VERSIONS, FRAME_PAYLOAD_BYTES_TARGET, INDEX_SYNC_INTERVAL_MS,
};
use crate::log::active::ActiveLog;
use crate::log::chunk::FrameFacts;
use crate::log::dict::{Encoded, SAMPLE_BYTES_MAX, SAMPLE_STRIDE, train};
use crate::log::files::{Appender, sync_data, sync_dir};
use crate::log::frame::{
    FRAME_HEADER_BYTES, FrameHeader, decode_records, encode_frame, parse_header,
};
use crate::log::record::{
    BodyCodec, OpKind, RecordRef, ResourceRef, Watermark, put_record, put_resource,
};
use crate::replica::append::ReplicaAppender;
use crate::store::options::DictionaryPolicy;
use crate::store::state::Inner;
use crate::write::batch::{Committed, OpOutcome};
use crate::write::clock::next_timestamp;
use crate::write::precondition::Precondition;

/// Most operations the writer puts in one group.
const GROUP_OPS_MAX: usize = 50_000;
/// Estimated record overhead beyond the stored body, for sizing groups.
const RECORD_OVERHEAD_BYTES: usize = 160;

pub(crate) struct PreparedBody {
    pub raw: Vec<u8>,
    pub raw_crc: u32,
    pub enc: Encoded,
    pub keys: Vec<Vec<u8>>,
}

pub(crate) struct PreparedOp {
    /// A rekey record ([`crate::Action::Rekey`]): no version, no body.
    pub rekey: bool,
    pub resource_type: String,
    pub id: String,
    pub expect: Precondition,
    pub put: Option<PreparedBody>,
}

/// Where a request's result goes: a channel a thread waits on, or a
/// callback run on the writer's thread (for async callers, which must not
/// park a thread; it must be quick).
pub(crate) enum Reply<T> {
    Channel(SyncSender<Result<T>>),
    Callback(Box<dyn FnOnce(Result<T>) + Send>),
}

impl<T> Reply<T> {
    fn send(self, r: Result<T>) {
        match self {
            Reply::Channel(tx) => {
                let _ = tx.send(r);
            }
            Reply::Callback(f) => f(r),
        }
    }
}

pub(crate) enum Control {
    BeginEpoch(u64),
    Checkpoint(Vec<Watermark>),
    Reindex,
    /// Frames of the leader's log, to append byte for byte (a replica),
    /// and the leader's durable end: frames past it are held back from
    /// the index until confirmed.
    Append {
        frames: Vec<u8>,
        confirmed: u64,
    },
    /// The leader's durable end moved: frames appended through it may be
    /// indexed and made visible.
    Confirm(u64),
    /// The leader came back without frames after this LSN: cut them, if
    /// they were never shown.
    DropUnconfirmed(u64),
    Shutdown,
}

pub(crate) enum Request {
    Commit {
        ops: Vec<PreparedOp>,
        reply: Reply<Committed>,
    },
    Control {
        op: Control,
        reply: Reply<()>,
    },
}

impl Request {
    fn weight(&self) -> (usize, usize) {
        match self {
            Request::Commit { ops, .. } => (
                ops.len(),
                ops.iter()
                    .map(|o| {
                        o.put.as_ref().map_or(0, |p| p.enc.stored.len()) + RECORD_OVERHEAD_BYTES
                    })
                    .sum(),
            ),
            Request::Control { .. } => (0, 0),
        }
    }
}

/// What the writer knows about a resource's newest version during a group.
#[derive(Clone, Copy)]
struct Head {
    version: u64,
    live: bool,
    raw_len: u32,
    raw_crc: u32,
    last_updated_us: u64,
    body: BodyAt,
}

#[derive(Clone, Copy)]
enum BodyAt {
    Index(VersionEntry),
    /// (batch index in the group, op index in the batch)
    Pending(usize, usize),
    Nowhere,
}

/// The newest version of each resource written in a frame the index has
/// not applied yet, so that preconditions and version numbers see it.
/// Entries leave once the applier has made their frame visible.
#[derive(Default)]
struct Unapplied {
    /// type -> id -> newest version entry.
    heads: HashMap<String, HashMap<String, VersionEntry>>,
    /// (lsn, type, id) in log order, to forget entries once applied.
    order: VecDeque<(u64, String, String)>,
}

impl Unapplied {
    fn get(&self, resource_type: &str, id: &str) -> Option<VersionEntry> {
        self.heads.get(resource_type)?.get(id).copied()
    }

    fn insert(&mut self, resource_type: &str, id: &str, e: VersionEntry) {
        self.order
            .push_back((e.lsn, resource_type.to_owned(), id.to_owned()));
        self.heads
            .entry(resource_type.to_owned())
            .or_default()
            .insert(id.to_owned(), e);
    }

    /// Forgets what the index holds now: everything through `visible`.
    fn forget_through(&mut self, visible: u64) {
        while let Some((lsn, t, id)) = self.order.front() {
            if *lsn > visible {
                break;
            }
            if let Some(ids) = self.heads.get_mut(t.as_str())
                && ids.get(id.as_str()).is_some_and(|e| e.lsn == *lsn)
            {
                ids.remove(id.as_str());
            }
            self.order.pop_front();
        }
    }
}

pub(crate) struct WriterState {
    inner: Arc<Inner>,
    log: ActiveLog,
    samples: Vec<Vec<u8>>,
    /// Bytes of the bodies seen for the next training (sampled or not).
    sample_bytes: u64,
    /// Bodies seen for the next training.
    bodies_seen: u64,
    training: bool,
    trained_tx: mpsc::Sender<Result<Vec<u8>>>,
    trained_rx: mpsc::Receiver<Result<Vec<u8>>>,
    /// The index applier; `None` only once shut down.
    applier: Option<Applier>,
    /// Resources written in frames the applier has not indexed yet.
    unapplied: Unapplied,
    /// A replica's appends: frames held until the leader confirms them.
    replica: ReplicaAppender,
    /// Refuses client commits and replica appends below the disk reserve.
    reserve: crate::disk::ReserveGate,
}

/// A record planned for the frame being built.
struct Planned {
    batch: usize,
    op: usize,
    /// What the record is: a resource version of this kind, or a rekey.
    record: PlannedRecord,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PlannedRecord {
    Version(OpKind, u64),
    Rekey,
}

impl Planned {
    /// Whether the record carries the op's body (a create or update).
    fn has_body(&self) -> bool {
        matches!(self.record, PlannedRecord::Version(k, _) if k != OpKind::Delete)
    }
}

impl WriterState {
    pub(crate) fn new(
        inner: Arc<Inner>,
        appender: Appender,
        next_lsn: u64,
        epoch: u64,
        last_ts: u64,
    ) -> std::io::Result<Self> {
        let (trained_tx, trained_rx) = mpsc::channel();
        let applier = Applier::start(inner.clone())?;
        let (inner_dir, reserve_bytes) = (inner.dir.clone(), inner.opts.disk_reserve_bytes);
        Ok(Self {
            inner,
            log: ActiveLog {
                appender,
                next_lsn,
                epoch,
                last_ts,
            },
            samples: Vec::new(),
            sample_bytes: 0,
            bodies_seen: 0,
            training: false,
            trained_tx,
            trained_rx,
            applier: Some(applier),
            unapplied: Unapplied::default(),
            replica: ReplicaAppender::default(),
            reserve: crate::disk::ReserveGate::new(&inner_dir, reserve_bytes),
        })
    }

    /// The writer loop. Ends on `Shutdown` or when every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        let mut carry: Option<Request> = None;
        loop {
            self.poll_trained();
            let first = match carry.take() {
                Some(r) => r,
                None => match rx.recv_timeout(Duration::from_millis(INDEX_SYNC_INTERVAL_MS)) {
                    Ok(r) => r,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            if let Request::Control { op, reply } = first {
                let stop = matches!(op, Control::Shutdown);
                let res = self.control(op);
                reply.send(res);
                if stop {
                    return;
                }
                continue;
            }
            let (mut ops, mut bytes) = first.weight();
            let mut group = vec![first];
            while bytes < FRAME_PAYLOAD_BYTES_TARGET && ops < GROUP_OPS_MAX {
                match rx.try_recv() {
                    Ok(r @ Request::Control { .. }) => {
                        carry = Some(r);
                        break;
                    }
                    Ok(r) => {
                        let (o, b) = r.weight();
                        ops += o;
                        bytes += b;
                        group.push(r);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if let Err(e) = self.commit_group(group) {
                self.fail(e, &rx);
                return;
            }
        }
        let _ = self.stop_applier();
    }

    /// Lets the applier index what is queued, make the index durable and
    /// end; reports whether it got there.
    fn stop_applier(&mut self) -> Result<()> {
        drop(self.applier.take());
        self.inner.check_alive()
    }

    fn applier(&self) -> Result<&Applier> {
        self.applier.as_ref().ok_or(Error::Closed)
    }

    /// Poisons the store and answers everything queued with the failure.
    fn fail(&mut self, e: Error, rx: &Receiver<Request>) {
        self.inner.poison(e.to_string());
        while let Ok(r) = rx.try_recv() {
            match r {
                Request::Commit { reply, .. } => {
                    reply.send(Err(Error::Poisoned(e.to_string())));
                }
                Request::Control { reply, .. } => {
                    reply.send(Err(Error::Poisoned(e.to_string())));
                }
            }
        }
    }

    fn control(&mut self, op: Control) -> Result<()> {
        self.inner.check_alive()?;
        if matches!(op, Control::BeginEpoch(_) | Control::Reindex) {
            // A new epoch's versions are numbered against the whole index;
            // a rebuild swaps the index the applier writes to.
            self.drain_applier()?;
        }
        match op {
            Control::BeginEpoch(epoch) => {
                if epoch <= self.log.epoch {
                    return Err(Error::EpochFenced {
                        ours: self.log.epoch,
                        theirs: epoch,
                    });
                }
                let previous = self.log.epoch;
                self.log.epoch = epoch;
                let res = self.write_records(&[RecordRef::EpochStart { epoch }]);
                if res.is_err() {
                    self.log.epoch = previous;
                } else {
                    self.inner.log.epoch.store(epoch, Ordering::Release);
                    // A promoted follower's newest key is its leader's.
                    self.new_data_key("a new epoch");
                }
                res
            }
            Control::Checkpoint(watermarks) => {
                let index_lsn = self.log.next_lsn - 1;
                self.write_records(&[RecordRef::Checkpoint {
                    index_lsn,
                    watermarks,
                }])
            }
            Control::Reindex => self.reindex(),
            Control::Append { frames, confirmed } => {
                let applier = self.applier.as_ref().ok_or(Error::Closed)?;
                let res = self.replica.append(
                    &mut self.log,
                    &self.inner,
                    applier,
                    &mut self.reserve,
                    &frames,
                );
                self.replica.confirm(applier, confirmed);
                res
            }
            Control::Confirm(lsn) => {
                if let Some(applier) = self.applier.as_ref() {
                    self.replica.confirm(applier, lsn);
                }
                Ok(())
            }
            Control::DropUnconfirmed(after) => {
                self.replica
                    .drop_unconfirmed(&mut self.log, &self.inner, after)
            }
            Control::Shutdown => self.stop_applier(),
        }
    }

    /// Writes control records as a frame of their own.
    fn write_records(&mut self, records: &[RecordRef<'_>]) -> Result<()> {
        let mut payload = Vec::new();
        for r in records {
            put_record(&mut payload, r);
        }
        let ts = next_timestamp(self.inner.opts.clock.as_ref(), self.log.last_ts);
        self.write_frame(&payload, records.len() as u32, ts, None)
            .inspect_err(|e| self.inner.poison(e.to_string()))
    }

    fn reindex(&mut self) -> Result<()> {
        let path = self.inner.index_path();
        let tmp = path.with_extension("redb.rebuild");
        let (fresh, stats) = rebuild_into(
            &tmp,
            &self.inner.log.segments,
            self.inner.opts.extractor.as_ref(),
            &self.inner.log.dicts,
            None,
            false,
            self.inner.opts.key_buffer_entries,
        )?;
        // The old index writes nothing more to its key directory, which
        // the new one's takes the place of; the old one's open files serve
        // its readers until they finish.
        self.inner.index.current().keys.retire();
        fresh.keys.relocate(&keys_path(&path), |from, to| {
            if to.exists() {
                std::fs::remove_dir_all(to).map_err(|e| Error::io("replace index", to, e))?;
            }
            std::fs::rename(from, to).map_err(|e| Error::io("replace index", to, e))
        })?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("replace index", &path, e))?;
        sync_dir(&self.inner.dir)?;
        tracing::info!(
            frames = stats.frames,
            bytes = stats.bytes,
            "index rebuilt on request"
        );
        self.inner.index.replace(Arc::new(fresh));
        Ok(())
    }

    fn poll_trained(&mut self) {
        let Ok(result) = self.trained_rx.try_recv() else {
            return;
        };
        self.training = false;
        match result {
            Ok(bytes) => {
                let id = self.inner.log.dicts.next_id();
                // Durable before any record can use it: install happens when
                // the index applies this frame.
                let written =
                    self.inner
                        .log
                        .dicts
                        .to_record(id, &bytes)
                        .and_then(|(sealed, stored)| {
                            self.write_records(&[RecordRef::Dictionary {
                                id,
                                sealed,
                                bytes: &stored,
                            }])
                        });
                if let Err(e) = written {
                    tracing::error!("writing the trained dictionary failed: {e}");
                } else {
                    tracing::info!(
                        id,
                        bytes = bytes.len(),
                        "compression dictionary trained and stored"
                    );
                }
            }
            Err(e) => tracing::warn!("dictionary training failed, continuing without: {e}"),
        }
    }

    fn sample(&mut self, raw: &[u8]) {
        let DictionaryPolicy::Auto {
            train_after_bytes,
            dictionary_bytes,
        } = self.inner.opts.dictionary
        else {
            return;
        };
        if self.training || self.inner.log.dicts.has_current() {
            return;
        }
        // Every SAMPLE_STRIDE-th body is kept: as good a dictionary as
        // keeping them all, for about half the training time
        // (docs/BENCHMARKS.md, issue 19).
        let take = raw.len().min(SAMPLE_BYTES_MAX);
        if self.bodies_seen.is_multiple_of(SAMPLE_STRIDE) {
            self.samples.push(raw[..take].to_vec());
        }
        self.bodies_seen += 1;
        self.sample_bytes += take as u64;
        if self.sample_bytes >= train_after_bytes {
            self.training = true;
            let samples = std::mem::take(&mut self.samples);
            self.sample_bytes = 0;
            self.bodies_seen = 0;
            let tx = self.trained_tx.clone();
            let spawned = std::thread::Builder::new()
                .name("vigil-dict-train".into())
                .spawn(move || {
                    let _ = tx.send(train(&samples, dictionary_bytes as usize));
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start dictionary training: {e}");
                self.training = false;
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Request>) -> Result<()> {
        if self.replica.take_unindexed() {
            // A former replica: its preconditions read the index, which
            // must hold every frame appended from the leader first.
            self.drain_applier()?;
        }
        self.unapplied.forget_through(self.inner.visible_lsn());
        let mut batches: Vec<Vec<PreparedOp>> = Vec::with_capacity(group.len());
        let mut replies: Vec<Option<Reply<Committed>>> = Vec::with_capacity(group.len());
        for r in group {
            if let Request::Commit { ops, reply } = r {
                batches.push(ops);
                replies.push(Some(reply));
            }
        }
        let snap = Snapshot::new(&self.inner.index.current())?;
        let ts = next_timestamp(self.inner.opts.clock.as_ref(), self.log.last_ts);
        let mut overlay: HashMap<(&str, &str), Head> = HashMap::new();
        let mut planned: Vec<Planned> = Vec::new();
        let mut outcomes: Vec<Option<Vec<OpOutcome>>> = Vec::with_capacity(batches.len());
        for (b, ops) in batches.iter().enumerate() {
            match self.plan_batch(&snap, &batches, b, ops, &overlay, ts) {
                Ok((outs, plan, changes)) => {
                    overlay.extend(changes);
                    planned.extend(plan);
                    outcomes.push(Some(outs));
                }
                Err(e) => {
                    if let Some(reply) = replies[b].take() {
                        reply.send(Err(e));
                    }
                    outcomes.push(None);
                }
            }
        }
        drop(snap);
        drop(overlay);
        // The secondary keys move to the index with their records.
        let keys: FrameKeys = planned
            .iter()
            .map(|p| {
                batches[p.batch][p.op]
                    .put
                    .as_mut()
                    .filter(|_| p.has_body())
                    .map(|b| std::mem::take(&mut b.keys))
            })
            .collect();
        // Encode the frame.
        let mut payload = Vec::with_capacity(
            planned
                .iter()
                .map(|p| {
                    batches[p.batch][p.op]
                        .put
                        .as_ref()
                        .map_or(0, |x| x.enc.stored.len())
                        + RECORD_OVERHEAD_BYTES
                })
                .sum(),
        );
        let mut lsn_of = HashMap::with_capacity(planned.len());
        for (i, p) in planned.iter().enumerate() {
            let op = &batches[p.batch][p.op];
            let (codec, dict_id, raw_len, raw_crc, sealed, stored): (
                BodyCodec,
                u32,
                u32,
                u32,
                bool,
                &[u8],
            ) = match &op.put {
                Some(body) if p.has_body() => (
                    body.enc.codec,
                    body.enc.dict_id,
                    body.raw.len() as u32,
                    body.raw_crc,
                    body.enc.sealed,
                    &body.enc.stored,
                ),
                _ => (BodyCodec::Raw, 0, 0, 0, false, &[]),
            };
            match p.record {
                PlannedRecord::Version(kind, version) => put_resource(
                    &mut payload,
                    &ResourceRef {
                        op: kind,
                        codec,
                        resource_type: &op.resource_type,
                        id: &op.id,
                        version,
                        dict_id,
                        raw_len,
                        raw_crc,
                        sealed,
                        stored,
                    },
                ),
                PlannedRecord::Rekey => put_record(
                    &mut payload,
                    &RecordRef::Rekey {
                        resource_type: &op.resource_type,
                        id: &op.id,
                    },
                ),
            }

            lsn_of.insert((p.batch, p.op), self.log.next_lsn + i as u64);
        }
        if !planned.is_empty() {
            self.log.last_ts = ts;
            // Below the disk reserve a client commit is refused before
            // anything is written; like a failed write, it fails only this
            // group.
            let written = self
                .reserve
                .admit(payload.len() as u64)
                .and_then(|()| self.write_frame(&payload, planned.len() as u32, ts, Some(keys)));
            if let Err(e) = written {
                // A failed fsync stops the store before anyone hears back. A
                // failed write changed no state (the next frame overwrites
                // the same offset), so only this group fails.
                let fatal = e.is_fatal() || !e.fails_only_this_write();
                if fatal {
                    self.inner.poison(e.to_string());
                }
                for (b, reply) in replies.iter_mut().enumerate() {
                    if outcomes[b].is_some()
                        && let Some(reply) = reply.take()
                    {
                        reply.send(Err(e.duplicate()));
                    }
                }
                return if fatal { Err(e) } else { Ok(()) };
            }
            for p in &planned {
                if let Some(body) = &batches[p.batch][p.op].put
                    && p.has_body()
                {
                    self.sample(&body.raw);
                }
            }
        }
        for (b, reply) in replies.into_iter().enumerate() {
            let (Some(mut outs), Some(reply)) = (outcomes[b].take(), reply) else {
                continue;
            };
            let mut last = None;
            for (j, o) in outs.iter_mut().enumerate() {
                if let OpOutcome::Written { lsn, .. } | OpOutcome::Rekeyed { lsn } = o {
                    *lsn = lsn_of[&(b, j)];
                    last = Some(*lsn);
                }
            }
            reply.send(Ok(Committed {
                outcomes: outs,
                last_lsn: last,
            }));
        }
        Ok(())
    }

    /// Checks one batch's preconditions and plans its records against the
    /// index and the batches before it in the group. Nothing is changed
    /// unless the whole batch passes.
    #[expect(
        clippy::type_complexity,
        reason = "a private triple returned to one caller"
    )]
    fn plan_batch<'a>(
        &self,
        snap: &Snapshot,
        batches: &[Vec<PreparedOp>],
        b: usize,
        ops: &'a [PreparedOp],
        overlay: &HashMap<(&'a str, &'a str), Head>,
        ts: u64,
    ) -> Result<(
        Vec<OpOutcome>,
        Vec<Planned>,
        HashMap<(&'a str, &'a str), Head>,
    )> {
        let mut local: HashMap<(&'a str, &'a str), Head> = HashMap::new();
        let mut outs = Vec::with_capacity(ops.len());
        let mut plan = Vec::new();
        for (j, op) in ops.iter().enumerate() {
            if op.rekey {
                outs.push(OpOutcome::Rekeyed { lsn: 0 });
                plan.push(Planned {
                    batch: b,
                    op: j,
                    record: PlannedRecord::Rekey,
                });
                continue;
            }
            let key = (op.resource_type.as_str(), op.id.as_str());
            let head = match local.get(&key).or_else(|| overlay.get(&key)) {
                Some(h) => Some(*h),
                None => match self.unapplied.get(&op.resource_type, &op.id) {
                    Some(e) => Some(e),
                    None => snap.head(&op.resource_type, &op.id)?,
                }
                .map(|e| Head {
                    version: e.version,
                    live: e.is_live(),
                    raw_len: e.raw_len,
                    raw_crc: e.raw_crc,
                    last_updated_us: e.timestamp_us,
                    body: BodyAt::Index(e),
                }),
            };
            let ok = match op.expect {
                Precondition::None => true,
                Precondition::Version(v) => head.is_some_and(|h| h.version == v),
                Precondition::Absent => head.is_none(),
            };
            if !ok {
                return Err(Error::VersionConflict {
                    resource_type: op.resource_type.clone(),
                    id: op.id.clone(),
                    expected: op.expect,
                    actual: head.map(|h| h.version),
                });
            }
            let next_version = next_version(head.map(|h| h.version), self.log.epoch).ok_or_else(|| {
                Error::Invalid {
                    what: "resource",
                    value: format!("{}/{}", op.resource_type, op.id),
                    reason: format!(
                        "{EPOCH_VERSIONS} versions written in epoch {}: the epoch's version numbers are used up (a switchover starts a new epoch)",
                        self.log.epoch
                    ),
                }
            })?;
            // What this op writes, if anything: its kind and the head after it.
            let write = match (&op.put, head) {
                (Some(body), Some(h))
                    if h.live
                        && h.raw_len as usize == body.raw.len()
                        && h.raw_crc == body.raw_crc
                        && self.same_body(h.body, batches, &body.raw)? =>
                {
                    outs.push(OpOutcome::Unchanged {
                        version: h.version,
                        last_updated_us: h.last_updated_us,
                    });
                    None
                }
                (Some(body), _) => Some((
                    if head.is_none() {
                        OpKind::Create
                    } else {
                        OpKind::Update
                    },
                    Head {
                        version: next_version,
                        live: true,
                        raw_len: body.raw.len() as u32,
                        raw_crc: body.raw_crc,
                        last_updated_us: ts,
                        body: BodyAt::Pending(b, j),
                    },
                )),
                (None, None) => {
                    outs.push(OpOutcome::NotFound);
                    None
                }
                (None, Some(h)) if !h.live => {
                    outs.push(OpOutcome::AlreadyDeleted { version: h.version });
                    None
                }
                (None, Some(_)) => Some((
                    OpKind::Delete,
                    Head {
                        version: next_version,
                        live: false,
                        raw_len: 0,
                        raw_crc: 0,
                        last_updated_us: ts,
                        body: BodyAt::Nowhere,
                    },
                )),
            };
            if let Some((kind, new_head)) = write {
                outs.push(OpOutcome::Written {
                    kind,
                    version: next_version,
                    lsn: 0,
                    last_updated_us: ts,
                });
                plan.push(Planned {
                    batch: b,
                    op: j,
                    record: PlannedRecord::Version(kind, next_version),
                });
                local.insert(key, new_head);
            }
        }
        Ok((outs, plan, local))
    }

    /// Whether the body at `at` equals `raw`, byte for byte (the CRCs and
    /// lengths already matched).
    fn same_body(&self, at: BodyAt, batches: &[Vec<PreparedOp>], raw: &[u8]) -> Result<bool> {
        Ok(match at {
            BodyAt::Index(e) => self.inner.read_body(&e)? == raw,
            BodyAt::Pending(b, j) => batches[b][j].put.as_ref().is_some_and(|p| p.raw == raw),
            BodyAt::Nowhere => false,
        })
    }

    /// Waits until the applier has indexed everything written, so that the
    /// writer may rely on the index alone. Frames held for the leader's
    /// confirmation go first: whoever drains (a promotion's new epoch, a
    /// local commit, a reindex) makes this log its own.
    fn drain_applier(&mut self) -> Result<()> {
        let applier = self.applier.as_ref().ok_or(Error::Closed)?;
        self.replica.release_through(applier, u64::MAX);
        applier.drain(self.log.next_lsn - 1)
    }

    /// Frames, appends and fsyncs one payload, hands the frame to the
    /// applier and records it as acknowledged. The caller answers its
    /// committers after this returns.
    fn write_frame(
        &mut self,
        payload: &[u8],
        count: u32,
        ts: u64,
        keys: Option<FrameKeys>,
    ) -> Result<()> {
        let first_lsn = self.log.next_lsn;
        // `ts` is the time the committers were told: the frame must carry it.
        assert!(
            ts >= self.log.last_ts,
            "frame timestamps never go backwards"
        );
        let frame = encode_frame(first_lsn, count, self.log.epoch, ts, payload);
        let header = parse_header(&frame)
            .map_err(|e| Error::Corrupt(format!("writer built a bad frame: {e}")))?;
        let segment_before = self.log.appender.segment();
        let (segment, offset) = self.log.appender.write(&header, &frame)?;
        self.log.last_ts = ts;
        self.log.next_lsn = header.end_lsn();
        let facts = self.note_unapplied(&header, segment, offset, &frame)?;
        // Written: replication's in-memory tail gets the frame and the
        // written end moves, so a follower receives and fsyncs it while
        // this fsync runs (it shows the frame only once this leader says
        // it is durable). A failed fsync below stops the store.
        self.inner.log.tail.push(header, segment, &frame, facts);
        self.inner.log.ends.set_written(header.end_lsn() - 1);
        let (file, path) = self.log.appender.file();
        sync_data(&file, &path)?;
        // Durable: the applier gets the frame, the durable end moves once
        // it is queued, and only then is it acknowledged (so the read
        // barrier covers it).
        let inner = &self.inner;
        self.applier()?.submit(
            ApplyJob {
                bytes: frame,
                frames: vec![(0, header, segment, offset)],
                keys,
            },
            APPLY_QUEUE_BYTES_MAX,
            || inner.log.ends.set_durable(&header),
        );
        self.inner
            .index
            .acked_lsn
            .store(header.end_lsn() - 1, Ordering::Release);
        if segment != segment_before {
            self.new_data_key("a new segment");
        }
        Ok(())
    }

    /// An encrypted store takes a new data key with each new segment and
    /// each new epoch, so one key seals about a segment's worth of bodies,
    /// and only one node's. A failure leaves the current key in use (it
    /// takes a new one when it has sealed its most, failing those writes
    /// if it still cannot).
    fn new_data_key(&self, why: &str) {
        if let Some(keys) = self.inner.log.dicts.keys() {
            match keys.rotate() {
                Ok(id) => tracing::debug!("data key {id:016x} for {why}"),
                Err(e) => tracing::warn!("no new data key for {why}: {e}"),
            }
        }
    }

    /// Records the newest version of every resource the frame writes, as
    /// the index will hold it once applied. Returns what replication
    /// needs to know of the frame.
    fn note_unapplied(
        &mut self,
        header: &FrameHeader,
        segment: u64,
        offset: u64,
        frame: &[u8],
    ) -> Result<FrameFacts> {
        let payload = &frame[FRAME_HEADER_BYTES..header.frame_len() as usize];
        let records = decode_records(header, payload)
            .map_err(|e| Error::Corrupt(format!("writer built a bad frame: {e}")))?;
        let mut facts = FrameFacts::default();
        for (lsn, rec, body_offset) in &records {
            facts.note(rec);
            if let RecordRef::Resource(r) = rec {
                let e = entry_of(header, segment, offset, *lsn, r, *body_offset);
                self.unapplied.insert(r.resource_type, r.id, e);
            }
        }
        Ok(facts)
    }
}

/// The version a write in `epoch` gives a resource whose newest version is
/// `last`: the next number, but never below the epoch's own range, so
/// versions stay increasing per resource and a failover never reissues a
/// number a deposed leader may have acknowledged. `None` when the epoch's
/// range is used up.
pub(crate) fn next_version(last: Option<u64>, epoch: u64) -> Option<u64> {
    let base = epoch.saturating_sub(1).checked_mul(EPOCH_VERSIONS)? + 1;
    let next = last.map_or(1, |v| v + 1).max(base);
    (next < base.checked_add(EPOCH_VERSIONS)?).then_some(next)
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn each_epoch_numbers_versions_in_its_own_range() {
        assert_eq!(next_version(None, 1), Some(1));
        assert_eq!(next_version(Some(7), 1), Some(8));
        assert_eq!(next_version(Some(7), 2), Some(EPOCH_VERSIONS + 1));
        assert_eq!(next_version(None, 3), Some(2 * EPOCH_VERSIONS + 1));
        assert_eq!(
            next_version(Some(EPOCH_VERSIONS + 4), 2),
            Some(EPOCH_VERSIONS + 5)
        );
        assert_eq!(
            next_version(Some(EPOCH_VERSIONS), 1),
            None,
            "epoch 1's range is used up"
        );
        assert_eq!(next_version(Some(1), u64::MAX), None, "no overflow");
    }
}
