//! The tracker's network driver: accepts client connections and answers
//! their requests, one at a time per connection, in order.

use std::net::SocketAddr;
use std::sync::Arc;

use ringshare_engine::control::{decode_msg, read_frame, write_msg, FrameIoError};
use ringshare_engine::proto::{Refusal, Request, Response, REQUEST, RESPONSE};
use tokio::net::{TcpListener, TcpStream};

use crate::service::Tracker;
use crate::sync::{self, SyncMsg, SYNC};

/// Accepts connections on `listener` forever, serving each on its own task.
pub async fn serve(listener: TcpListener, tracker: Arc<Tracker>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Running out of file descriptors and the like: log, back off, go on.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, tracker).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Serves one connection: a client's requests, or (when the first frame is
/// of type [`SYNC`]) another tracker's replication pull.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    tracker: Arc<Tracker>,
) -> Result<(), FrameIoError> {
    stream.set_nodelay(true)?;
    tracing::debug!(%peer, "connected");
    loop {
        let req = match read_frame(&mut stream).await {
            Ok(Some((REQUEST, payload))) => decode_msg::<Request>(&payload),
            Ok(Some((SYNC, payload))) => {
                let hello = decode_msg::<SyncMsg>(&payload)?;
                return sync::serve_pull(stream, tracker, hello).await;
            }
            Ok(Some((kind, _))) => Err(FrameIoError::Kind(kind)),
            Ok(None) => return Ok(()),
            Err(e) => Err(e),
        };
        let req = match req {
            Ok(req) => req,
            Err(FrameIoError::Io(e)) => return Err(FrameIoError::Io(e)),
            Err(e) => {
                // Garbage from the client: one error frame, then disconnect.
                let refusal = Refusal::BadRequest(e.to_string());
                let _ = write_msg(&mut stream, RESPONSE, &Response::Refused(refusal)).await;
                return Err(e);
            }
        };
        let resp = tracker.handle(req).await;
        write_msg(&mut stream, RESPONSE, &resp).await?;
    }
}
