//! A UDP relay for fault injection between two nodes: it sits in front of
//! a server address and forwards datagrams both ways, adding delay and
//! jitter, dropping, duplicating, reordering and corrupting them, or
//! cutting either direction, as the test sets at any moment. No root and
//! no change to the machine's network: the client is simply pointed at
//! the relay's address.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Faults applied to each datagram, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter` (reorders datagrams).
    pub jitter: Duration,
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// Probability of sending a datagram twice.
    pub duplicate: f64,
    /// Probability of flipping one byte of a datagram.
    pub corrupt: f64,
    /// Drop everything client -> server.
    pub cut_to_server: bool,
    /// Drop everything server -> client.
    pub cut_to_client: bool,
}

impl Faults {
    /// Every datagram dropped, both ways (a partition).
    pub const CUT: Faults = Faults {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
        cut_to_server: true,
        cut_to_client: true,
    };
}

/// Counters of what the relay did.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Datagrams forwarded.
    pub forwarded: AtomicU64,
    /// Datagrams dropped (loss or cut).
    pub dropped: AtomicU64,
    /// Datagrams corrupted.
    pub corrupted: AtomicU64,
}

/// A datagram waiting for its time: (due, sequence, towards the server, bytes).
type Pending = Reverse<(Instant, u64, bool, Vec<u8>)>;

struct Queue {
    heap: Mutex<BinaryHeap<Pending>>,
    cv: Condvar,
}

/// A running relay; stops (threads end) when dropped.
pub struct Relay {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<RelayCounters>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts a relay on an ephemeral loopback port in front of `server`.
    pub fn start(server: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        back.connect(server)?;
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            // Room for a window's worth of datagrams: the relay must not be
            // the link's bottleneck (the kernel caps it at rmem_max).
            let sock = socket2::SockRef::from(s.as_ref());
            sock.set_recv_buffer_size(8 << 20)?;
            sock.set_send_buffer_size(8 << 20)?;
        }
        let addr = front.local_addr()?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let counters = Arc::new(RelayCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let queue = Arc::new(Queue {
            heap: Mutex::new(BinaryHeap::new()),
            cv: Condvar::new(),
        });
        let seq = Arc::new(AtomicU64::new(0));
        // Receivers: client -> server on `front`, server -> client on `back`.
        for to_server in [true, false] {
            let (front, back, faults, counters, stop, client, queue, seq) = (
                front.clone(),
                back.clone(),
                faults.clone(),
                counters.clone(),
                stop.clone(),
                client.clone(),
                queue.clone(),
                seq.clone(),
            );
            let mut rng = SplitMix(seed ^ u64::from(to_server));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Acquire) {
                    let got = if to_server {
                        front.recv_from(&mut buf).map(|(n, from)| {
                            *client.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
                            n
                        })
                    } else {
                        back.recv(&mut buf)
                    };
                    let Ok(n) = got else { continue };
                    let f = *faults.lock().unwrap_or_else(|p| p.into_inner());
                    let cut = if to_server {
                        f.cut_to_server
                    } else {
                        f.cut_to_client
                    };
                    let chance = |rng: &mut SplitMix, p: f64| {
                        p > 0.0 && (rng.below(1_000_000) as f64) < p * 1_000_000.0
                    };
                    if cut || chance(&mut rng, f.loss) {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut data = buf[..n].to_vec();
                    if chance(&mut rng, f.corrupt) && n > 0 {
                        let i = rng.below(n as u64) as usize;
                        data[i] ^= 0x5a;
                        counters.corrupted.fetch_add(1, Ordering::Relaxed);
                    }
                    let copies = if chance(&mut rng, f.duplicate) { 2 } else { 1 };
                    for _ in 0..copies {
                        let jitter = if f.jitter.is_zero() {
                            Duration::ZERO
                        } else {
                            Duration::from_micros(rng.below(f.jitter.as_micros() as u64))
                        };
                        let due = Instant::now() + f.delay + jitter;
                        let s = seq.fetch_add(1, Ordering::Relaxed);
                        queue
                            .heap
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Reverse((due, s, to_server, data.clone())));
                        queue.cv.notify_one();
                    }
                }
            });
        }
        // Sender: delivers each datagram when due.
        {
            let (stop, queue, counters) = (stop.clone(), queue.clone(), counters.clone());
            std::thread::spawn(move || {
                let mut heap = queue.heap.lock().unwrap_or_else(|p| p.into_inner());
                while !stop.load(Ordering::Acquire) {
                    let now = Instant::now();
                    match heap.peek() {
                        Some(Reverse((due, ..))) if *due <= now => {
                            let Some(Reverse((_, _, to_server, data))) = heap.pop() else {
                                continue;
                            };
                            drop(heap);
                            let sent = if to_server {
                                back.send(&data).is_ok()
                            } else {
                                let to = *client.lock().unwrap_or_else(|p| p.into_inner());
                                to.is_some_and(|to| front.send_to(&data, to).is_ok())
                            };
                            if sent {
                                counters.forwarded.fetch_add(1, Ordering::Relaxed);
                            }
                            heap = queue.heap.lock().unwrap_or_else(|p| p.into_inner());
                        }
                        Some(Reverse((due, ..))) => {
                            let wait = due.saturating_duration_since(now);
                            heap = queue
                                .cv
                                .wait_timeout(heap, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        None => {
                            heap = queue
                                .cv
                                .wait_timeout(heap, Duration::from_millis(50))
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                    }
                }
            });
        }
        Ok(Self {
            addr,
            faults,
            counters,
            stop,
        })
    }

    /// The address clients send to instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the faults from now on.
    pub fn set(&self, f: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }

    /// What the relay did so far.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A small seeded generator (splitmix64) for the relay's dice.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}
