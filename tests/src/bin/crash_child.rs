//! Commits batches in a loop and prints `ACK <batch> <n> <id> <version>` for
//! every operation of every acknowledged batch, flushing after each batch.
//! The crash test kills it with SIGKILL at random moments. With a third
//! argument, a key file, the store is encrypted at rest under it.

use std::io::Write;
use std::sync::Arc;

use vigil_engine::crypt::Kek;
use vigil_engine::crypt::keyfile::KeyFile;
use vigil_engine::{Batch, Op, OpOutcome, Options, Store};
use vigil_tests::crash_body;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: crash_child DIR ROUND [KEK_FILE]";
    let dir = args.next().ok_or(usage)?;
    let round: u64 = args.next().ok_or(usage)?.parse()?;
    let kek: Option<Arc<dyn Kek>> = match args.next() {
        Some(path) => Some(Arc::new(KeyFile::load(std::path::Path::new(&path))?)),
        None => None,
    };
    let store = Store::open_with(
        &dir,
        Options {
            kek,
            ..Options::default()
        },
    )?;
    let stdout = std::io::stdout();
    let mut n = round * 1_000_000;
    for b in 0.. {
        let batch_no = round * 1_000_000 + b;
        let size = 1 + b % 3;
        let mut batch = Batch::new();
        let first = n;
        for _ in 0..size {
            batch.push(Op::put(
                "Observation",
                format!("c{}", n % 40),
                crash_body(n, batch_no, size),
            ));
            n += 1;
        }
        let done = store.commit(batch)?;
        let mut out = stdout.lock();
        for (i, o) in done.outcomes.iter().enumerate() {
            if let OpOutcome::Written { version, .. } = o {
                let k = first + i as u64;
                writeln!(out, "ACK {batch_no} {k} c{} {version}", k % 40)?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
