//! # vigil-testkit
//!
//! What Vigil's tests would otherwise each copy. Dev-only: no library or
//! binary of the project depends on it.
//!
//! - [`Rng`] — xorshift64*, seeded and reproducible.
//! - [`until`] / [`until_async`] — poll a condition with a deadline.
//! - [`free_ports`], [`free_udp_port`] — loopback ports free right now.
//! - [`frames`], [`frames_in`] — a store's whole log as bytes;
//!   [`small_store`] — options for a test store with small segments.
//! - [`etcd`] — a real etcd cluster of real `etcd` processes on loopback.
//! - [`haproxy`] — a real HAProxy on loopback.
//! - [`s3`] — a real S3 server (SeaweedFS) on loopback.
//! - [`http`] — a blocking HTTP/1.1 client, and [`http::status`].
//! - [`ChildGuard`] — a child process killed and reaped on drop (a server's
//!   listening address read as it starts); [`output_of`] — a command run to
//!   its end, its failure a panic that shows what it printed.
//! - [`source::rust_files`] — the project's source files, for checks that
//!   read code as text.
//! - [`sim`] — the one simulation harness: simulated time, a clock per
//!   node, a network that delays, drops, duplicates, reorders and cuts,
//!   crashed and paused nodes. The replication, lease and failover
//!   simulators all run on it.

pub mod azurite;
pub mod etcd;
pub mod haproxy;
pub mod http;
mod ports;
mod process;
mod rng;
pub mod s3;
pub mod sim;
pub mod source;
mod store;
mod wait;

pub use ports::{free_ports, free_udp_port};
pub use process::{ChildGuard, output_of};
pub use rng::Rng;
pub use store::{frames, frames_in, small_store};
pub use wait::{until, until_async};

/// A server the test command installs under `target/tools`: the path in
/// the environment variable `var` if set, else `target/tools/<under>` if
/// it is there, else `name` on the PATH.
pub fn installed_tool(var: &str, under: &str, name: &str) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return p.into();
    }
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools")
        .join(under);
    if tools.exists() {
        return tools;
    }
    name.into()
}
