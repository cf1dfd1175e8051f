//! A witness process for the cross-crate tests: what `vigil witness` runs.
//! Usage: `vigil_witness DIR CERTS NAME LISTEN LEASE_MS`; prints
//! `witness listening on ADDR` once it listens.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, certs, name, listen, lease_ms] = args.as_slice() else {
        return Err("usage: vigil_witness DIR CERTS NAME LISTEN LEASE_MS".into());
    };
    vigil_tests::init_logs();
    let id = vigil_net::runtime::tls::Identity::load(std::path::Path::new(certs), name)?;
    let cfg = vigil_net::proto::lease::LeaseConfig::with_duration_ms(lease_ms.parse()?);
    let listen = listen.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    rt.block_on(vigil_net::runtime::witness::serve(
        std::path::Path::new(dir),
        id,
        cfg,
        listen,
        stop,
        |addr| println!("witness listening on {addr}"),
    ))?;
    Ok(())
}
