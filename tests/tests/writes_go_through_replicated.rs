//! A client's write reaches the store only through replication's one face,
//! `vigil_net::runtime::replicated::Replicated::commit` (admission, the
//! commit, the synchronous wait or `max_lag` record, the lease check):
//! nothing in the FHIR server or the commands calls the engine's commit or
//! append directly. This reads their sources and fails on any other call.

use std::path::Path;

/// Engine write calls the server must not make itself.
const ENGINE_WRITES: &[&str] = &[".commit(", "commit_with(", "append_log"];

/// The calls in `text` that write to the engine without going through
/// `Replicated` (comments left out).
fn direct_writes(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or("");
            let writes = ENGINE_WRITES.iter().any(|w| code.contains(w));
            let through_the_face = code.contains("replicated.commit(")
                || code.contains("Replicated::standalone().commit(");
            (writes && !through_the_face).then(|| (i + 1, line.trim().to_owned()))
        })
        .collect()
}

#[test]
fn the_server_writes_only_through_replicated() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files: Vec<_> = ["fhir/src", "vigil/src"]
        .iter()
        .flat_map(|dir| vigil_testkit::source::rust_files(&root.join(dir)))
        .collect();
    assert!(files.len() > 30, "only {} files read", files.len());
    let mut found = Vec::new();
    let mut through = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        through += text.matches("replicated.commit(").count()
            + text.matches("Replicated::standalone().commit(").count();
        for (line, code) in direct_writes(&text) {
            found.push(format!("{}:{line}: {code}", f.display()));
        }
    }
    assert!(
        through > 0,
        "no write goes through Replicated: the check is stale"
    );
    assert!(
        found.is_empty(),
        "writes that bypass Replicated:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_direct_commit() {
    assert_eq!(direct_writes("store.commit(batch)?;").len(), 1);
    assert_eq!(direct_writes("s.commit_with(b, done)").len(), 1);
    assert!(direct_writes("r.replicated.commit(store, batch).await").is_empty());
    assert!(direct_writes("// store.commit(batch)").is_empty());
}
