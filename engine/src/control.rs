//! Reading and writing control-plane frames on an async byte stream (tokio).
//!
//! This is the thin driver around [`crate::wire`] and [`crate::proto`]: the
//! only part of the control plane that does I/O.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::{self, MAX_FRAME};
use crate::wire::{self, DecodeError, HEADER_LEN};

/// The first payload buffer of a frame; it doubles as bytes arrive.
const FIRST_STEP: usize = 4096;

/// Why a message could not be read or written.
#[derive(Debug, Error)]
pub enum FrameIoError {
    /// The connection failed. (The inner errors below are in the
    /// messages, so none is also the source: a chain printed whole said
    /// each twice.)
    #[error("connection: {0}")]
    Io(std::io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// The frame header is invalid (too long, too short).
    #[error("bad frame: {0}")]
    Frame(DecodeError),
    /// The frame is of an unexpected type.
    #[error("unexpected frame type {0}")]
    Kind(u32),
    /// The payload does not decode as the expected message.
    #[error("undecodable message: {0}")]
    Payload(postcard::Error),
}

impl From<std::io::Error> for FrameIoError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<DecodeError> for FrameIoError {
    fn from(e: DecodeError) -> Self {
        Self::Frame(e)
    }
}

impl From<postcard::Error> for FrameIoError {
    fn from(e: postcard::Error) -> Self {
        Self::Payload(e)
    }
}

/// Reads one message of frame type `kind`; `Ok(None)` on a clean end of
/// stream before the first byte of a frame.
pub async fn read_msg<T, R>(r: &mut R, kind: u32) -> Result<Option<T>, FrameIoError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let Some((k, payload)) = read_frame(r).await? else { return Ok(None) };
    if k != kind {
        return Err(FrameIoError::Kind(k));
    }
    decode_msg(&payload).map(Some)
}

/// Decodes a frame's payload as a message.
pub fn decode_msg<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameIoError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Reads one frame of any type: `(type, payload)`; `Ok(None)` on a clean
/// end of stream before the first byte of a frame.
pub async fn read_frame<R>(r: &mut R) -> Result<Option<(u32, Vec<u8>)>, FrameIoError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameIoError::Truncated) };
        }
        got += n;
    }
    let (len, k) = wire::parse_header(&header);
    // The length is checked before anything is allocated, and the payload
    // buffer grows with the bytes that actually arrive: a header that
    // announces 16 MiB and trickles the rest costs about what it sent, not
    // 16 MiB (1000 such connections took a tracker to 5.4 GiB).
    wire::check_len(len, MAX_FRAME)?;
    let want = len as usize - HEADER_LEN;
    let mut payload = Vec::new();
    while payload.len() < want {
        // Doubling from 4 KiB: at most twice what arrived (plus 4 KiB) is
        // allocated, and a large frame takes a dozen steps.
        let at = payload.len();
        let step = (want - at).min(at.max(FIRST_STEP));
        payload.resize(at + step, 0);
        let n = r.read(&mut payload[at..]).await?;
        if n == 0 {
            return Err(FrameIoError::Truncated);
        }
        payload.truncate(at + n);
    }
    Ok(Some((k, payload)))
}

/// Writes one message as a frame of type `kind` and flushes it.
pub async fn write_msg<T, W>(w: &mut W, kind: u32, msg: &T) -> Result<(), FrameIoError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let frame = proto::encode_frame(kind, msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Request, Response, Token, REQUEST, RESPONSE};

    #[tokio::test]
    async fn message_round_trip_over_a_pipe() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let req = Request::ListGroups { token: Token([1; 16]) };
        let sent = req.clone();
        let writer = tokio::spawn(async move { write_msg(&mut a, REQUEST, &sent).await });
        let got: Option<Request> = read_msg(&mut b, REQUEST).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(got, Some(req));
        // The writer is gone: a clean end of stream.
        assert!(read_msg::<Request, _>(&mut b, REQUEST).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_header_is_refused_without_reading_on() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut bytes = (MAX_FRAME + 1).to_be_bytes().to_vec();
        bytes.extend(REQUEST.to_be_bytes());
        tokio::io::AsyncWriteExt::write_all(&mut a, &bytes).await.unwrap();
        let err = read_msg::<Request, _>(&mut b, REQUEST).await.unwrap_err();
        assert!(matches!(err, FrameIoError::Frame(DecodeError::TooLong { .. })), "{err}");
    }

    #[tokio::test]
    async fn wrong_kind_and_truncation_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(256);
        write_msg(&mut a, RESPONSE, &Response::Done).await.unwrap();
        let err = read_msg::<Request, _>(&mut b, REQUEST).await.unwrap_err();
        assert!(matches!(err, FrameIoError::Kind(RESPONSE)), "{err}");
        tokio::io::AsyncWriteExt::write_all(&mut a, &[0, 0, 0, 20, 0]).await.unwrap();
        drop(a);
        let err = read_msg::<Request, _>(&mut b, REQUEST).await.unwrap_err();
        assert!(matches!(err, FrameIoError::Truncated), "{err}");
    }

    #[tokio::test]
    async fn a_large_frame_arriving_in_pieces_is_read_whole() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut frame = Vec::new();
        wire::encode(7, &payload, &mut frame);
        let writer = tokio::spawn(async move {
            for chunk in frame.chunks(10_000) {
                tokio::io::AsyncWriteExt::write_all(&mut a, chunk).await.unwrap();
            }
        });
        let (kind, got) = read_frame(&mut b).await.unwrap().unwrap();
        writer.await.unwrap();
        assert_eq!((kind, got), (7, payload));
    }

    #[tokio::test]
    async fn a_frame_cut_short_after_a_large_header_is_truncated() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut bytes = MAX_FRAME.to_be_bytes().to_vec();
        bytes.extend(REQUEST.to_be_bytes());
        bytes.extend([1, 2, 3]);
        tokio::io::AsyncWriteExt::write_all(&mut a, &bytes).await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(FrameIoError::Truncated)));
    }
}
