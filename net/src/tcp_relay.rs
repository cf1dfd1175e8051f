//! A TCP relay for fault injection on links that are TCP (a node's link
//! to an etcd member): it forwards a connection's bytes both ways until
//! cut. A cut is a black hole, as a partition is: connections stay open
//! and new ones are accepted, but no byte moves, so a client waits for its
//! own timeout rather than being told at once. On healing, connections
//! from before or during the cut are closed (their bytes are lost, as a
//! partition's would be) and new ones flow again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often a waiting thread looks at the cut and stop flags.
const POLL: Duration = Duration::from_millis(20);
/// Bytes copied at once.
const CHUNK: usize = 16 * 1024;
/// Most connections relayed at once; more are closed on arrival.
const CONNECTIONS_MAX: u64 = 256;

struct Shared {
    server: SocketAddr,
    cut: AtomicBool,
    /// Moves on every cut and heal: a connection from another generation
    /// is closed.
    generation: AtomicU64,
    stop: AtomicBool,
    live: AtomicU64,
}

/// A running TCP relay; stops (threads end) when dropped.
pub struct TcpRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TcpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpRelay")
            .field("addr", &self.addr)
            .field("server", &self.shared.server)
            .finish_non_exhaustive()
    }
}

impl TcpRelay {
    /// Relays connections to `server` from a new loopback port.
    pub fn start(server: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            server,
            cut: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            live: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, s));
        Ok(Self { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the link (`true`) or heals it.
    pub fn set_cut(&self, cut: bool) {
        if self.shared.cut.swap(cut, Ordering::AcqRel) != cut {
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

fn accept_loop(listener: TcpListener, s: Arc<Shared>) {
    while !s.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((client, _)) => {
                if s.live.load(Ordering::Acquire) >= CONNECTIONS_MAX {
                    continue;
                }
                let s = s.clone();
                std::thread::spawn(move || relay(client, s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Relays one connection until either side closes, the generation moves,
/// or the relay stops.
fn relay(client: TcpStream, s: Arc<Shared>) {
    s.live.fetch_add(1, Ordering::AcqRel);
    // A connection made during a cut is held, silent, until the heal.
    while s.cut.load(Ordering::Acquire) && !s.stop.load(Ordering::Acquire) {
        std::thread::sleep(POLL);
    }
    let generation = s.generation.load(Ordering::Acquire);
    if let Ok(server) = TcpStream::connect_timeout(&s.server, Duration::from_secs(2)) {
        let pairs = [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ];
        let mut threads = Vec::new();
        for (from, to) in pairs {
            if let (Ok(from), Ok(to)) = (from, to) {
                let s = s.clone();
                threads.push(std::thread::spawn(move || copy(from, to, &s, generation)));
            }
        }
        for t in threads {
            let _ = t.join();
        }
        let _ = server.shutdown(Shutdown::Both);
    }
    let _ = client.shutdown(Shutdown::Both);
    s.live.fetch_sub(1, Ordering::AcqRel);
}

fn copy(mut from: TcpStream, mut to: TcpStream, s: &Shared, generation: u64) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; CHUNK];
    loop {
        if s.stop.load(Ordering::Acquire) {
            break;
        }
        if s.cut.load(Ordering::Acquire) {
            // Hold everything; the heal closes this connection.
            std::thread::sleep(POLL);
            continue;
        }
        if s.generation.load(Ordering::Acquire) != generation {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.cut.load(Ordering::Acquire) {
                    // Cut between the check and the read: these bytes are
                    // lost, and so is the connection.
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut c = c;
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(addr: SocketAddr) -> Option<Vec<u8>> {
        let mut c = TcpStream::connect(addr).ok()?;
        c.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
        c.write_all(b"ping").ok()?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).ok()?;
        Some(buf.to_vec())
    }

    #[test]
    fn forwards_until_cut_holds_silently_while_cut_and_flows_after_the_heal() {
        let relay = TcpRelay::start(echo_server()).expect("relay");
        assert_eq!(round_trip(relay.addr()), Some(b"ping".to_vec()));
        let mut held = TcpStream::connect(relay.addr()).expect("connect");
        held.write_all(b"ab").expect("write");
        let mut two = [0u8; 2];
        held.read_exact(&mut two).expect("echo");
        relay.set_cut(true);
        assert_eq!(round_trip(relay.addr()), None, "a cut answers nothing");
        relay.set_cut(false);
        assert_eq!(round_trip(relay.addr()), Some(b"ping".to_vec()));
        // A connection from before the cut is closed by the heal.
        held.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = held.write_all(b"cd");
        let mut buf = [0u8; 2];
        assert!(
            !matches!(held.read(&mut buf), Ok(2)),
            "a connection from before the cut does not carry on"
        );
    }
}
