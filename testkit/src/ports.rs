//! Loopback ports that are free right now, for processes that must be
//! given their ports on the command line (in-process servers bind port 0).

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bases tried before giving up.
const TRIES: u32 = 200;

/// A base port where TCP ports `base..base+tcp` and UDP ports
/// `base+100..base+100+udp` were all free when asked; returns
/// `(base, base + 100)`. Calls in one process (tests run in parallel)
/// start at different places.
pub fn free_ports(tcp: u16, udp: u16) -> (u16, u16) {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    assert!(tcp <= 100 && udp <= 100, "at most 100 ports of each kind");
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    for i in 0..TRIES {
        // Below Linux's ephemeral range (32768..61000 by default): a port
        // picked here is never taken meanwhile by the outgoing connection
        // of some other process (a server's own clients, as SeaweedFS's).
        let base = 20_000
            + ((std::process::id().wrapping_mul(13) + call * 7_919 + i * 337) % 12_000) as u16;
        let tcp_free = (0..tcp).all(|k| TcpListener::bind(("127.0.0.1", base + k)).is_ok());
        let udp_free = (0..udp).all(|k| UdpSocket::bind(("127.0.0.1", base + 100 + k)).is_ok());
        if tcp_free && udp_free {
            return (base, base + 100);
        }
    }
    panic!("no free ports after {TRIES} tries");
}

/// A UDP port free at the moment of asking, on loopback.
pub fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}
