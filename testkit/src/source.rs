//! The project's own source files, for the tests that read code as text
//! (no import circles, no runtime in `proto/`, one write path).

use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`, depth first; panics naming `dir` when it
/// cannot be read (a check that read nothing must not pass).
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for e in entries {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
