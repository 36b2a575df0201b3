//! The client's connection to the trackers, with failover.
//!
//! The link talks to one tracker at a time, starting with the first of the
//! list. When the connection fails it moves on through the list (wrapping
//! around) and retries the request once on each tracker before giving up
//! with [`LinkError::Unreachable`].

use std::time::Duration;

use ringshare_engine::control::{read_msg, write_msg, FrameIoError};
use ringshare_engine::proto::{Request, Response, REQUEST, RESPONSE};
use ringshare_engine::tracker_info::TrackerList;
use tokio::net::TcpStream;

/// How long a connection attempt to one tracker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may wait for its response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No tracker in the list could be reached.
    #[error("tracker unreachable: {0}")]
    Unreachable(String),
}

/// A connection to one of the trackers.
#[derive(Debug)]
pub struct TrackerLink {
    trackers: TrackerList,
    current: usize,
    stream: Option<TcpStream>,
}

impl TrackerLink {
    /// A link over the given trackers; nothing is connected yet.
    pub fn new(trackers: TrackerList) -> Self {
        Self { trackers, current: 0, stream: None }
    }

    /// Sends a request and waits for its response, failing over between
    /// trackers when a connection breaks.
    pub async fn call(&mut self, req: &Request) -> Result<Response, LinkError> {
        let n = self.trackers.0.len();
        let mut failures = Vec::new();
        // A kept connection may have gone stale (the tracker restarted): on
        // failure, the current tracker is tried again on a fresh connection.
        if let Some(stream) = self.stream.as_mut() {
            let addr = self.trackers.0[self.current];
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, req)).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                Err(_) => failures.push(format!("{addr}: no answer in {REQUEST_TIMEOUT:?}")),
            }
            self.stream = None;
        }
        for attempt in 0..n {
            if attempt > 0 {
                self.current = (self.current + 1) % n;
            }
            let addr = self.trackers.0[self.current];
            let mut stream =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        failures.push(format!("{addr}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        failures.push(format!("{addr}: connect timed out"));
                        continue;
                    }
                };
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut stream, req)).await {
                Ok(Ok(resp)) => {
                    self.stream = Some(stream);
                    return Ok(resp);
                }
                Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                Err(_) => failures.push(format!("{addr}: no answer in {REQUEST_TIMEOUT:?}")),
            }
        }
        Err(LinkError::Unreachable(failures.join("; ")))
    }
}

async fn exchange(stream: &mut TcpStream, req: &Request) -> Result<Response, FrameIoError> {
    write_msg(stream, REQUEST, req).await?;
    read_msg::<Response, _>(stream, RESPONSE).await?.ok_or(FrameIoError::Truncated)
}
