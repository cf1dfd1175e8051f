//! A first look at the engine: commit, read, version history, the change
//! feed, and a full verification. Run with
//! `cargo run -p vigil-engine --example quickstart [DIR]`.

use vigil_engine::{
    Batch, Current, HistoryQuery, HistoryScope, Op, OpOutcome, Precondition, Store,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quickstart-data".into());
    let store = Store::open(&dir)?;

    // A batch commits atomically and durably: both resources or neither.
    let mut batch = Batch::new();
    batch.push(Op::put(
        "Patient",
        "example",
        br#"{"resourceType":"Patient","id":"example","active":true}"#.to_vec(),
    ));
    batch.push(Op::put(
        "Observation",
        "bp-1",
        br#"{"resourceType":"Observation","id":"bp-1","status":"final"}"#.to_vec(),
    ));
    let done = store.commit(batch)?;
    println!("committed: {:?}", done.outcomes);

    // An update that expects the version it read (optimistic concurrency).
    let current = match store.get("Patient", "example")? {
        Current::Live(v) => v.version,
        other => return Err(format!("unexpected {other:?}").into()),
    };
    let update = Op::put(
        "Patient",
        "example",
        br#"{"resourceType":"Patient","id":"example","active":false}"#.to_vec(),
    )
    .expect(Precondition::Version(current));
    match store.commit(Batch::one(update))?.outcomes[0] {
        OpOutcome::Written { version, .. } => println!("Patient/example is now version {version}"),
        OpOutcome::Unchanged { version, .. } => {
            println!("Patient/example unchanged at version {version}")
        }
        other => println!("{other:?}"),
    }

    // Every version is kept; history lists them newest first.
    let page = store.history(&HistoryQuery {
        scope: HistoryScope::Instance("Patient".into(), "example".into()),
        since_us: None,
        count: 10,
        cursor: None,
    })?;
    for v in &page.entries {
        println!(
            "  v{} at lsn {} ({:?}): {}",
            v.version,
            v.lsn,
            v.op,
            String::from_utf8_lossy(&v.body)
        );
    }

    // The change feed, oldest first: what replication and backup read.
    println!("{} records in the log", store.changes(0, 1000)?.len());
    let report = store.verify()?;
    println!(
        "verified {} frames, {} bodies; the index equals a rebuild",
        report.frames, report.bodies
    );
    store.close()?;
    Ok(())
}
