//! The replication protocol's messages and their bytes.
//!
//! Every message travels on the replication stream as a 4-byte
//! little-endian body length followed by the body: a one-byte kind and the
//! kind's fields, little-endian, strings as a u16 length and UTF-8, byte
//! strings as a u32 length. Encoding is written out by hand so the bytes are
//! exactly what `docs/format.md` draws; golden files pin them. Decoding
//! never panics and never allocates more than the bytes it was given.
//! Log frames inside [`Message::Frames`] are the leader's on-disk bytes,
//! checked again by the follower's engine before anything is written.

/// ALPN of the replication protocol: a peer speaking anything else is refused
/// during the TLS handshake.
pub const ALPN: &[u8] = b"vigil-repl";
/// The protocol version this build speaks, carried in [`Message::Hello`].
/// Version 2: frames may be shipped before the leader's fsync, and shown by
/// the follower only once the leader's durable end covers them. Version 3:
/// [`Message::Eligibility`] names its sender, which the witness checks
/// against the sender's certificate and the leader it allocated the epoch
/// to, and carries a number so that a record given up on cannot land after
/// a later one ([`RefuseCode::Stale`]). Version 4: [`Message::DataKeys`]
/// carries an encrypted leader's data keys ahead of the frames sealed
/// under them.
pub const PROTOCOL_VERSION: u16 = 4;
/// Most data keys in one [`Message::DataKeys`] (a chunk uses one or two).
pub const DATA_KEYS_PER_MESSAGE_MAX: usize = 64;
/// Largest message body accepted (a frames chunk plus its fields).
pub const MESSAGE_BYTES_MAX: usize = CHUNK_BYTES_MAX + 1024;
/// Largest chunk of log frames in one [`Message::Frames`].
pub const CHUNK_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest string field (names, reasons, URLs).
pub const STRING_BYTES_MAX: usize = 1024;

/// Why a peer refused a session; carried in [`Message::Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// The peers speak different protocol versions.
    ProtocolVersion = 1,
    /// The peer belongs to another cluster.
    WrongCluster = 2,
    /// The follower's log is not a prefix of the leader's; rejoin needed.
    Diverged = 3,
    /// The leader no longer holds what the follower needs; reseed needed.
    ReseedNeeded = 4,
    /// The node asked is not the leader.
    NotLeader = 5,
    /// A message that breaks the protocol.
    Protocol = 6,
    /// An eligibility record numbered below one the witness already took
    /// from that leader (one its sender gave up on; never retried).
    Stale = 7,
}

impl RefuseCode {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::ProtocolVersion,
            2 => Self::WrongCluster,
            3 => Self::Diverged,
            4 => Self::ReseedNeeded,
            5 => Self::NotLeader,
            6 => Self::Protocol,
            7 => Self::Stale,
            _ => return None,
        })
    }
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Follower -> leader, first message: who it is and where its log ends.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        protocol: u16,
        /// The cluster the sender belongs to.
        cluster: String,
        /// The sender's node name.
        node: String,
        /// Epoch of the follower's last frame (0: empty log).
        last_epoch: u64,
        /// The follower's last durable LSN (0: empty log).
        last_lsn: u64,
        /// CRC of the follower's last frame.
        last_crc: u32,
    },
    /// Leader -> follower: accepted; frames follow from `start_lsn`.
    Welcome {
        /// The leader's node name.
        leader: String,
        /// The leader's epoch.
        epoch: u64,
        /// The leader's last durable LSN.
        last_lsn: u64,
        /// The first LSN the leader will send.
        start_lsn: u64,
        /// Where the leader answers FHIR requests (writes are forwarded there).
        http_url: String,
    },
    /// Either side: the session is refused, with why.
    Refused {
        /// Machine-readable reason.
        code: RefuseCode,
        /// For `Diverged`: the last LSN both logs may share; else 0.
        lsn: u64,
        /// Human-readable reason, logged by the receiver.
        reason: String,
    },
    /// Leader -> follower: consecutive whole frames, as on the leader's disk.
    Frames {
        /// LSN of the chunk's first record.
        first_lsn: u64,
        /// The LSN after the chunk's last record.
        end_lsn: u64,
        /// The leader's last durable LSN when sent. Frames past it were
        /// shipped before the leader's fsync: the follower makes them
        /// durable but shows them only once a later `leader_lsn` (or a
        /// heartbeat's `last_lsn`) covers them.
        leader_lsn: u64,
        /// The frames.
        bytes: Vec<u8>,
    },
    /// Leader -> follower, before the first [`Message::Frames`] that seals
    /// under them (an encrypted leader): data keys, unwrapped. The link is
    /// mutual TLS; the follower wraps each under its own key-encryption
    /// key and makes it durable before it appends those frames.
    DataKeys {
        /// Each key's id and bytes (1..=[`DATA_KEYS_PER_MESSAGE_MAX`]).
        keys: Vec<(u64, vigil_engine::crypt::DataKey)>,
    },
    /// Leader -> follower, when idle (and at once when its durable end
    /// passes frames the follower holds unconfirmed): the leader is alive
    /// and where it is.
    Heartbeat {
        /// The leader's epoch.
        epoch: u64,
        /// The leader's last durable LSN.
        last_lsn: u64,
        /// Commit time of that LSN (µs since the Unix epoch, leader clock).
        last_commit_us: u64,
    },
    /// Follower -> leader: its watermarks. Never decrease within a session.
    Ack {
        /// Highest LSN received (in memory).
        received: u64,
        /// Highest LSN fsynced.
        durable: u64,
        /// Highest LSN indexed and readable.
        applied: u64,
    },
    /// Follower -> leader: frames from `from_lsn` failed their checks on
    /// receipt and were not written; send them again.
    Refetch {
        /// First LSN to send again.
        from_lsn: u64,
        /// What failed.
        reason: String,
    },
    /// Candidate -> voter: a lease promise, please (see `lease`).
    LeaseAsk {
        /// Who asks.
        candidate: String,
        /// The epoch it asks in.
        epoch: u64,
        /// The round, echoed in the answer.
        round: u64,
    },
    /// Voter -> candidate: the answer.
    LeaseAnswer {
        /// Who answers.
        voter: String,
        /// The round answered.
        round: u64,
        /// Whether the promise was given.
        granted: bool,
        /// The highest epoch the voter knows.
        epoch: u64,
        /// Whom the voter has promised ("" for nobody).
        holder: String,
    },
    /// Candidate -> witness: move the epoch from `expected` to the next.
    EpochCas {
        /// Who asks (it must hold the witness's promise).
        candidate: String,
        /// The epoch it believes current.
        expected: u64,
    },
    /// Witness -> candidate: the new epoch, or the current one if refused.
    EpochCasAnswer {
        /// Whether the epoch moved.
        ok: bool,
        /// The epoch now.
        epoch: u64,
    },
    /// Leader -> witness: a follower's eligibility and durable watermark.
    /// Taken only from the node the witness allocated `epoch` to.
    Eligibility {
        /// The sending leader's node name (checked against its certificate).
        leader: String,
        /// The follower's node name.
        follower: String,
        /// Whether it may be promoted.
        eligible: bool,
        /// Its durable LSN as the leader last heard.
        durable_lsn: u64,
        /// The epoch the sender won: a record from an older epoch (a
        /// deposed leader's), or from a node that did not win this one, is
        /// refused.
        epoch: u64,
        /// The record's number, increasing within the sender's epoch: one
        /// not above the last taken is refused as stale.
        seq: u64,
    },
    /// Witness -> leader: the eligibility is recorded durably.
    EligibilityRecorded {
        /// The follower's node name.
        follower: String,
    },
    /// Leader -> voter: forget the promise made to `holder` (a planned
    /// switchover: the leader has stopped acknowledging writes). Answered
    /// with [`Message::Released`].
    LeaseRelease {
        /// The node giving up its lease.
        holder: String,
    },
    /// Voter -> leader: the promise to `holder`, if any, is gone.
    Released {
        /// Who answers.
        voter: String,
    },
    /// Leader -> follower in a switchover: the leader has stopped
    /// acknowledging writes at `last_lsn` and released its lease; take over
    /// once that LSN is durable here. Answered with [`Message::Released`].
    HandOver {
        /// The epoch being handed over.
        epoch: u64,
        /// The leader's last LSN; nothing after it was acknowledged.
        last_lsn: u64,
    },
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad replication message: {0}")]
pub struct WireError(pub String);

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_REFUSED: u8 = 3;
const KIND_FRAMES: u8 = 4;
const KIND_HEARTBEAT: u8 = 5;
const KIND_ACK: u8 = 6;
const KIND_REFETCH: u8 = 7;
const KIND_LEASE_ASK: u8 = 8;
const KIND_LEASE_ANSWER: u8 = 9;
const KIND_EPOCH_CAS: u8 = 10;
const KIND_EPOCH_CAS_ANSWER: u8 = 11;
const KIND_ELIGIBILITY: u8 = 12;
const KIND_ELIGIBILITY_RECORDED: u8 = 13;
const KIND_LEASE_RELEASE: u8 = 14;
const KIND_RELEASED: u8 = 15;
const KIND_HAND_OVER: u8 = 16;
const KIND_DATA_KEYS: u8 = 17;

impl Message {
    /// Encodes the message with its length prefix, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.payload_len());
        b.extend_from_slice(&[0; 4]);
        match self {
            Message::Hello {
                protocol,
                cluster,
                node,
                last_epoch,
                last_lsn,
                last_crc,
            } => {
                b.push(KIND_HELLO);
                b.extend_from_slice(&protocol.to_le_bytes());
                put_str(&mut b, cluster);
                put_str(&mut b, node);
                b.extend_from_slice(&last_epoch.to_le_bytes());
                b.extend_from_slice(&last_lsn.to_le_bytes());
                b.extend_from_slice(&last_crc.to_le_bytes());
            }
            Message::Welcome {
                leader,
                epoch,
                last_lsn,
                start_lsn,
                http_url,
            } => {
                b.push(KIND_WELCOME);
                put_str(&mut b, leader);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&last_lsn.to_le_bytes());
                b.extend_from_slice(&start_lsn.to_le_bytes());
                put_str(&mut b, http_url);
            }
            Message::Refused { code, lsn, reason } => {
                b.push(KIND_REFUSED);
                b.extend_from_slice(&(*code as u16).to_le_bytes());
                b.extend_from_slice(&lsn.to_le_bytes());
                put_str(&mut b, reason);
            }
            Message::Frames {
                first_lsn,
                end_lsn,
                leader_lsn,
                bytes,
            } => {
                b.push(KIND_FRAMES);
                b.extend_from_slice(&first_lsn.to_le_bytes());
                b.extend_from_slice(&end_lsn.to_le_bytes());
                b.extend_from_slice(&leader_lsn.to_le_bytes());
                b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                b.extend_from_slice(bytes);
            }
            Message::DataKeys { keys } => {
                assert!(
                    (1..=DATA_KEYS_PER_MESSAGE_MAX).contains(&keys.len()),
                    "senders split keys into messages"
                );
                b.push(KIND_DATA_KEYS);
                b.extend_from_slice(&(keys.len() as u16).to_le_bytes());
                for (id, key) in keys {
                    b.extend_from_slice(&id.to_le_bytes());
                    b.extend_from_slice(key.bytes());
                }
            }
            Message::Heartbeat {
                epoch,
                last_lsn,
                last_commit_us,
            } => {
                b.push(KIND_HEARTBEAT);
                for v in [epoch, last_lsn, last_commit_us] {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
            Message::Ack {
                received,
                durable,
                applied,
            } => {
                b.push(KIND_ACK);
                for v in [received, durable, applied] {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
            Message::Refetch { from_lsn, reason } => {
                b.push(KIND_REFETCH);
                b.extend_from_slice(&from_lsn.to_le_bytes());
                put_str(&mut b, reason);
            }
            Message::LeaseAsk {
                candidate,
                epoch,
                round,
            } => {
                b.push(KIND_LEASE_ASK);
                put_str(&mut b, candidate);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&round.to_le_bytes());
            }
            Message::LeaseAnswer {
                voter,
                round,
                granted,
                epoch,
                holder,
            } => {
                b.push(KIND_LEASE_ANSWER);
                put_str(&mut b, voter);
                b.extend_from_slice(&round.to_le_bytes());
                b.push(u8::from(*granted));
                b.extend_from_slice(&epoch.to_le_bytes());
                put_str(&mut b, holder);
            }
            Message::EpochCas {
                candidate,
                expected,
            } => {
                b.push(KIND_EPOCH_CAS);
                put_str(&mut b, candidate);
                b.extend_from_slice(&expected.to_le_bytes());
            }
            Message::EpochCasAnswer { ok, epoch } => {
                b.push(KIND_EPOCH_CAS_ANSWER);
                b.push(u8::from(*ok));
                b.extend_from_slice(&epoch.to_le_bytes());
            }
            Message::Eligibility {
                leader,
                follower,
                eligible,
                durable_lsn,
                epoch,
                seq,
            } => {
                b.push(KIND_ELIGIBILITY);
                put_str(&mut b, leader);
                put_str(&mut b, follower);
                b.push(u8::from(*eligible));
                b.extend_from_slice(&durable_lsn.to_le_bytes());
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&seq.to_le_bytes());
            }
            Message::EligibilityRecorded { follower } => {
                b.push(KIND_ELIGIBILITY_RECORDED);
                put_str(&mut b, follower);
            }
            Message::LeaseRelease { holder } => {
                b.push(KIND_LEASE_RELEASE);
                put_str(&mut b, holder);
            }
            Message::Released { voter } => {
                b.push(KIND_RELEASED);
                put_str(&mut b, voter);
            }
            Message::HandOver { epoch, last_lsn } => {
                b.push(KIND_HAND_OVER);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&last_lsn.to_le_bytes());
            }
        }
        let body = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&body.to_le_bytes());
        debug_assert!(b.len() - 4 <= MESSAGE_BYTES_MAX, "encoded beyond the limit");
        b
    }

    fn payload_len(&self) -> usize {
        match self {
            Message::Frames { bytes, .. } => bytes.len(),
            _ => 0,
        }
    }

    /// Reads the body length from a 4-byte prefix, refusing one above
    /// [`MESSAGE_BYTES_MAX`] before anything is allocated for it.
    pub fn body_len(prefix: [u8; 4]) -> Result<usize, WireError> {
        let n = u32::from_le_bytes(prefix) as usize;
        if n == 0 || n > MESSAGE_BYTES_MAX {
            return Err(WireError(format!(
                "message of {n} bytes (limit {MESSAGE_BYTES_MAX})"
            )));
        }
        Ok(n)
    }

    /// Decodes one message body (without its length prefix). Every byte
    /// must be used.
    pub fn decode(body: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { b: body, pos: 0 };
        let msg = match r.u8("kind")? {
            KIND_HELLO => Message::Hello {
                protocol: r.u16("protocol")?,
                cluster: r.string("cluster")?,
                node: r.string("node")?,
                last_epoch: r.u64("last epoch")?,
                last_lsn: r.u64("last lsn")?,
                last_crc: r.u32("last crc")?,
            },
            KIND_WELCOME => Message::Welcome {
                leader: r.string("leader")?,
                epoch: r.u64("epoch")?,
                last_lsn: r.u64("last lsn")?,
                start_lsn: r.u64("start lsn")?,
                http_url: r.string("http url")?,
            },
            KIND_REFUSED => {
                let code = r.u16("code")?;
                Message::Refused {
                    code: RefuseCode::from_u16(code)
                        .ok_or_else(|| WireError(format!("unknown refusal code {code}")))?,
                    lsn: r.u64("lsn")?,
                    reason: r.string("reason")?,
                }
            }
            KIND_FRAMES => {
                let first_lsn = r.u64("first lsn")?;
                let end_lsn = r.u64("end lsn")?;
                let leader_lsn = r.u64("leader lsn")?;
                let len = r.u32("frames length")? as usize;
                if len == 0 || len > CHUNK_BYTES_MAX || first_lsn == 0 || end_lsn <= first_lsn {
                    return Err(WireError(format!(
                        "frames {first_lsn}..{end_lsn} of {len} bytes out of range"
                    )));
                }
                Message::Frames {
                    first_lsn,
                    end_lsn,
                    leader_lsn,
                    bytes: r.take(len, "frames")?.to_vec(),
                }
            }
            KIND_HEARTBEAT => Message::Heartbeat {
                epoch: r.u64("epoch")?,
                last_lsn: r.u64("last lsn")?,
                last_commit_us: r.u64("last commit")?,
            },
            KIND_ACK => {
                let (received, durable, applied) =
                    (r.u64("received")?, r.u64("durable")?, r.u64("applied")?);
                if durable > received || applied > durable {
                    return Err(WireError(format!(
                        "watermarks out of order: received {received}, durable {durable}, applied {applied}"
                    )));
                }
                Message::Ack {
                    received,
                    durable,
                    applied,
                }
            }
            KIND_REFETCH => Message::Refetch {
                from_lsn: r.u64("from lsn")?,
                reason: r.string("reason")?,
            },
            KIND_LEASE_ASK => Message::LeaseAsk {
                candidate: r.string("candidate")?,
                epoch: r.u64("epoch")?,
                round: r.u64("round")?,
            },
            KIND_LEASE_ANSWER => Message::LeaseAnswer {
                voter: r.string("voter")?,
                round: r.u64("round")?,
                granted: r.flag("granted")?,
                epoch: r.u64("epoch")?,
                holder: r.string("holder")?,
            },
            KIND_EPOCH_CAS => Message::EpochCas {
                candidate: r.string("candidate")?,
                expected: r.u64("expected")?,
            },
            KIND_EPOCH_CAS_ANSWER => Message::EpochCasAnswer {
                ok: r.flag("ok")?,
                epoch: r.u64("epoch")?,
            },
            KIND_ELIGIBILITY => Message::Eligibility {
                leader: r.string("leader")?,
                follower: r.string("follower")?,
                eligible: r.flag("eligible")?,
                durable_lsn: r.u64("durable lsn")?,
                epoch: r.u64("epoch")?,
                seq: r.u64("seq")?,
            },
            KIND_ELIGIBILITY_RECORDED => Message::EligibilityRecorded {
                follower: r.string("follower")?,
            },
            KIND_LEASE_RELEASE => Message::LeaseRelease {
                holder: r.string("holder")?,
            },
            KIND_RELEASED => Message::Released {
                voter: r.string("voter")?,
            },
            KIND_HAND_OVER => Message::HandOver {
                epoch: r.u64("epoch")?,
                last_lsn: r.u64("last lsn")?,
            },
            KIND_DATA_KEYS => {
                let n = usize::from(r.u16("key count")?);
                if !(1..=DATA_KEYS_PER_MESSAGE_MAX).contains(&n) {
                    return Err(WireError(format!("{n} data keys in one message")));
                }
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = r.u64("key id")?;
                    let bytes = r.take(vigil_engine::crypt::DATA_KEY_BYTES, "data key")?;
                    let mut key = [0u8; vigil_engine::crypt::DATA_KEY_BYTES];
                    key.copy_from_slice(bytes);
                    if id == 0 {
                        return Err(WireError("data key id 0".into()));
                    }
                    keys.push((id, vigil_engine::crypt::DataKey::from_bytes(key)));
                }
                Message::DataKeys { keys }
            }
            other => return Err(WireError(format!("unknown message kind {other}"))),
        };
        if r.pos != body.len() {
            return Err(WireError(format!(
                "{} bytes after the message",
                body.len() - r.pos
            )));
        }
        Ok(msg)
    }

    /// A refusal that names no LSN (every code but `Diverged`), with why.
    pub fn refusal(code: RefuseCode, reason: impl Into<String>) -> Message {
        Message::Refused {
            code,
            lsn: 0,
            reason: reason.into(),
        }
    }

    /// The node a message sent to a voter says it comes from: the
    /// candidate of a lease ask or an epoch CAS, the leader of an
    /// eligibility record, the holder giving up its lease. A receiver acts
    /// on such a message only once the sender's certificate proves this
    /// name (see [`crate::runtime::tls::peer_is`]). `None` for every other kind.
    pub fn claimed_sender(&self) -> Option<&str> {
        match self {
            Message::LeaseAsk { candidate, .. } | Message::EpochCas { candidate, .. } => {
                Some(candidate)
            }
            Message::Eligibility { leader, .. } => Some(leader),
            Message::LeaseRelease { holder } => Some(holder),
            _ => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Refused { .. } => "refused",
            Message::Frames { .. } => "frames",
            Message::DataKeys { .. } => "data-keys",
            Message::Heartbeat { .. } => "heartbeat",
            Message::Ack { .. } => "ack",
            Message::Refetch { .. } => "refetch",
            Message::LeaseAsk { .. } => "lease-ask",
            Message::LeaseAnswer { .. } => "lease-answer",
            Message::EpochCas { .. } => "epoch-cas",
            Message::EpochCasAnswer { .. } => "epoch-cas-answer",
            Message::Eligibility { .. } => "eligibility",
            Message::EligibilityRecorded { .. } => "eligibility-recorded",
            Message::LeaseRelease { .. } => "lease-release",
            Message::Released { .. } => "released",
            Message::HandOver { .. } => "hand-over",
        }
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Longer strings are cut at a character boundary: they are names and
    // reasons, never data.
    let mut end = s.len().min(STRING_BYTES_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.extend_from_slice(&(end as u16).to_le_bytes());
    b.extend_from_slice(&s.as_bytes()[..end]);
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        let rest = self.b.len() - self.pos;
        if n > rest {
            return Err(WireError(format!(
                "{what}: needs {n} bytes at offset {}, {rest} remain",
                self.pos
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn flag(&mut self, what: &str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError(format!("{what}: {v} is not 0 or 1"))),
        }
    }
    fn string(&mut self, what: &str) -> Result<String, WireError> {
        let n = self.u16(what)? as usize;
        if n > STRING_BYTES_MAX {
            return Err(WireError(format!(
                "{what}: {n} bytes (limit {STRING_BYTES_MAX})"
            )));
        }
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| WireError(format!("{what}: not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                protocol: PROTOCOL_VERSION,
                cluster: "c".into(),
                node: "b".into(),
                last_epoch: 1,
                last_lsn: 9,
                last_crc: 7,
            },
            Message::Frames {
                first_lsn: 1,
                end_lsn: 3,
                leader_lsn: 9,
                bytes: vec![1, 2, 3],
            },
            Message::Ack {
                received: 3,
                durable: 2,
                applied: 2,
            },
        ]
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        assert!(Message::body_len([0, 0, 0, 0]).is_err());
        assert!(Message::body_len(u32::MAX.to_le_bytes()).is_err());
        for m in samples() {
            let b = m.encode();
            let n = Message::body_len([b[0], b[1], b[2], b[3]]).expect("length");
            assert_eq!(n, b.len() - 4);
            assert_eq!(Message::decode(&b[4..]), Ok(m));
            assert!(Message::decode(&b[4..b.len() - 1]).is_err(), "short body");
        }
    }

    #[test]
    fn acks_with_watermarks_out_of_order_are_refused() {
        let b = Message::Ack {
            received: 1,
            durable: 2,
            applied: 2,
        }
        .encode();
        assert!(Message::decode(&b[4..]).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(m) = Message::decode(&bytes) {
                prop_assert_eq!(&m.encode()[4..], &bytes[..]);
            }
        }
    }
}
