//! Framed messages on QUIC streams: the one way the node, the witness and
//! its clients read and write [`Message`]s. A message travels as its
//! encoding (`Message::encode`: a 4-byte length, then the body); a read
//! checks the length against [`crate::proto::wire::MESSAGE_BYTES_MAX`]
//! (`Message::body_len`) before it allocates anything.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::wire::Message;
use crate::runtime::error::NetError;

/// Reads the next message from `recv`; `None` when the stream ended
/// cleanly between messages. `progress`, when given, counts body bytes as
/// they arrive, inside a message too (a large chunk on a slow link shows
/// progress before it is whole).
pub async fn read_message(
    recv: &mut quinn::RecvStream,
    progress: Option<&AtomicU64>,
) -> Result<Option<Message>, NetError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(NetError::Connection(e.to_string())),
    }
    let n = Message::body_len(len)?;
    let mut body = vec![0u8; n];
    let mut pos = 0;
    while pos < n {
        match recv.read(&mut body[pos..]).await {
            Ok(Some(k)) => {
                pos += k;
                if let Some(p) = progress {
                    p.fetch_add(k as u64, Ordering::Relaxed);
                }
            }
            Ok(None) => {
                return Err(NetError::Connection(format!(
                    "stream ended inside a message ({pos} of {n} bytes)"
                )));
            }
            Err(e) => return Err(NetError::Connection(e.to_string())),
        }
    }
    Ok(Some(Message::decode(&body)?))
}

/// Writes `m` to `send`.
pub async fn write_message(send: &mut quinn::SendStream, m: &Message) -> Result<(), NetError> {
    send.write_all(&m.encode())
        .await
        .map_err(|e| NetError::Connection(e.to_string()))
}

/// Sends `m` and reads the one answer; a stream that ends first is an
/// error.
pub async fn ask(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    m: &Message,
) -> Result<Message, NetError> {
    write_message(send, m).await?;
    read_message(recv, None)
        .await?
        .ok_or_else(|| NetError::Connection("the stream closed before the answer".into()))
}

/// The unspecified address of `peer`'s family, port 0: where a client
/// endpoint binds to reach `peer`.
pub fn any_address_for(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    }
}
