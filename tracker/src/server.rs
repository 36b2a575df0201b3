//! The tracker's network driver: accepts client connections and answers
//! their requests, one at a time per connection, in order.

use std::net::SocketAddr;
use std::sync::Arc;

use ringshare_engine::control::{read_msg, write_msg, FrameIoError};
use ringshare_engine::proto::{Refusal, Request, Response, REQUEST, RESPONSE};
use tokio::net::{TcpListener, TcpStream};

use crate::service::Tracker;

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
            if let Err(e) = connection(stream, peer, &tracker).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    tracker: &Tracker,
) -> Result<(), FrameIoError> {
    stream.set_nodelay(true)?;
    tracing::debug!(%peer, "client connected");
    loop {
        let req = match read_msg::<Request, _>(&mut stream, REQUEST).await {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
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
