//! `net/src/proto` decides; it does no I/O beyond std files. This reads
//! every source file there and fails on anything that would let a decision
//! depend on a socket, a task or the wall clock, which the simulators could
//! then not reproduce.

use std::path::Path;

/// Words a decision module must not contain (outside comments).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "quinn",
    "crate::runtime",
    "std::net",
    "std::thread",
    "Instant::now",
    "SystemTime::now",
];

/// The lines of `text` that use a forbidden word, comments left out.
fn offences(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for w in FORBIDDEN {
            if code.contains(w) {
                found.push((i + 1, *w));
            }
        }
    }
    found
}

#[test]
fn the_protocol_modules_use_no_runtime() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto");
    let files = vigil_testkit::source::rust_files(&dir);
    assert!(files.len() >= 7, "proto/ holds {files:?}");
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        for (line, w) in offences(&text) {
            bad.push(format!("{}:{line}: {w}", f.display()));
        }
    }
    assert!(bad.is_empty(), "runtime in proto/:\n{}", bad.join("\n"));
}

#[test]
fn the_check_sees_a_runtime_word_in_code_but_not_in_a_comment() {
    assert_eq!(offences("let x = tokio::spawn(f);"), vec![(1, "tokio")]);
    assert!(offences("// tokio drives this in production").is_empty());
    assert_eq!(
        offences("ok\nlet t = std::time::Instant::now();"),
        vec![(2, "Instant::now")]
    );
}
