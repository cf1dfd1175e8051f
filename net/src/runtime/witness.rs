//! The witness on the network: [`serve`] answers QUIC connections with
//! [`crate::proto::witness::Witness`] (every claimed sender checked against
//! its certificate first), and [`WitnessClient`] is how a data node asks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::proto::lease::LeaseConfig;
use crate::proto::wire::Message;
use crate::proto::witness::{Witness, check_sender};
use crate::runtime::error::NetError;
use crate::runtime::tls::{Identity, transport_config};
use crate::runtime::transport::{any_address_for, ask, read_message, write_message};

/// Runs a witness on `listen` until `stop` turns true: each connection
/// opens one stream and sends requests, each answered in order.
pub async fn serve(
    dir: &Path,
    id: Identity,
    cfg: LeaseConfig,
    listen: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), NetError> {
    let started = Instant::now();
    let now = move || started.elapsed().as_micros() as u64;
    let witness = Witness::open(dir, &id.node, cfg, now()).map_err(|source| NetError::Io {
        op: format!("open the witness state in {}", dir.display()),
        source,
    })?;
    tracing::info!(epoch = witness.state().epoch, "witness open");
    let witness = Arc::new(Mutex::new(witness));
    let server = id.server_config(transport_config(
        1 << 20,
        std::time::Duration::from_secs(10),
    ))?;
    let endpoint = quinn::Endpoint::server(server, listen).map_err(|source| NetError::Io {
        op: format!("witness endpoint on {listen}"),
        source,
    })?;
    let local = endpoint.local_addr().map_err(|source| NetError::Io {
        op: "witness address".into(),
        source,
    })?;
    on_ready(local);
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = stop.changed() => break,
        };
        let witness = witness.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, "witness peer refused during the handshake: {e}");
                    return;
                }
            };
            let chain = crate::runtime::tls::peer_chain(&conn);
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            loop {
                let m = match read_message(&mut recv, None).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(NetError::Wire(e)) => {
                        tracing::warn!(%remote, "witness: undecodable message ({e}); closing");
                        return;
                    }
                    Err(_) => return,
                };
                let answer = match check_sender(&m, |name| {
                    crate::runtime::tls::peer_is(&chain, name)
                }) {
                    Ok(()) => {
                        let mut w = witness.lock().unwrap_or_else(|p| p.into_inner());
                        w.answer(m, now())
                    }
                    Err(refusal) => {
                        tracing::warn!(%remote, kind = m.kind(), claimed = ?m.claimed_sender(), "witness: refused a message whose claimed sender the certificate does not prove");
                        Ok(Some(refusal))
                    }
                };
                match answer {
                    Ok(Some(a)) => {
                        if write_message(&mut send, &a).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(%remote, "witness: a message it does not take; closing");
                        return;
                    }
                    Err(e) => {
                        // Nothing is answered that is not durable.
                        tracing::error!("witness cannot record its state: {e}");
                        return;
                    }
                }
            }
        });
    }
    endpoint.close(0u32.into(), b"witness stopping");
    Ok(())
}

/// A connection to a witness: one request at a time, each answered.
#[derive(Debug)]
pub struct WitnessClient {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl WitnessClient {
    /// Connects to the witness at `addr`, whose certificate must carry
    /// `name`, as the node `id`.
    pub async fn connect(id: &Identity, addr: SocketAddr, name: &str) -> Result<Self, NetError> {
        let bind = any_address_for(addr);
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|source| NetError::Io {
            op: "witness client endpoint".into(),
            source,
        })?;
        endpoint.set_default_client_config(id.client_config(transport_config(
            1 << 20,
            std::time::Duration::from_secs(10),
        ))?);
        let conn = endpoint
            .connect(addr, name)
            .map_err(|e| NetError::Connection(format!("witness {addr}: {e}")))?
            .await
            .map_err(|e| NetError::Connection(format!("witness {addr}: {e}")))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| NetError::Connection(format!("witness {addr}: {e}")))?;
        Ok(Self { conn, send, recv })
    }

    /// Sends `m` and waits for the answer.
    pub async fn ask(&mut self, m: &Message) -> Result<Message, NetError> {
        ask(&mut self.send, &mut self.recv, m)
            .await
            .map_err(|e| match e {
                NetError::Connection(e) => NetError::Connection(format!("witness: {e}")),
                e => e,
            })
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }
}
