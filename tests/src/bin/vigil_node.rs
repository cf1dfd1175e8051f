//! A Vigil server process for the cross-crate tests: exactly what
//! `vigil serve --config FILE` runs, started from a test as a child it can
//! kill -9.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: vigil_node CONFIG.toml")?;
    let cfg = vigil_fhir::config::Config::from_file(std::path::Path::new(&path))?;
    vigil_tests::init_logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(vigil_fhir::server::run(cfg, |addr| {
        println!("vigil listening on http://{addr}");
    }))?;
    Ok(())
}
