//! The fault-injection relay as a command, for benchmarks by hand:
//! `relay SERVER_ADDR [DELAY_MS] [LOSS]` prints the address to point the
//! client at and forwards until killed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: std::net::SocketAddr = args
        .next()
        .ok_or("usage: relay SERVER_ADDR [DELAY_MS] [LOSS]")?
        .parse()?;
    let delay_ms: u64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let loss: f64 = args.next().map_or(Ok(0.0), |a| a.parse())?;
    let relay = vigil_net::relay::Relay::start(server, 1)?;
    relay.set(vigil_net::relay::Faults {
        delay: std::time::Duration::from_millis(delay_ms),
        loss,
        ..Default::default()
    });
    println!("relay listening on {} for {server}", relay.addr());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
