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
    /// Frames being read at this end already hold all the memory set
    /// aside for them ([`FrameBudget`]).
    #[error("busy: too many requests being received; try again")]
    Busy,
    /// The frame was read past and dropped, unkept: its first bytes told
    /// the reader it did not want it ([`read_frame_gated`]).
    #[error("a frame of {0} bytes was not wanted")]
    Unwanted(usize),
    /// The frame is longer than its kind of message may be.
    #[error("a message of {len} bytes, longer than its kind takes ({limit})")]
    TooLong {
        /// Its length.
        len: usize,
        /// The most its kind takes.
        limit: usize,
    },
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

/// Memory shared by the frames being read on many connections at once
/// (a tracker's clients): each payload's growth past its first
/// [`FIRST_STEP`] bytes takes from it until the frame is dropped, and a
/// frame that finds it spent fails with [`FrameIoError::Busy`]. Without it
/// 8,192 connections, each sending most of a 16 MiB frame, could hold
/// 128 GiB.
#[derive(Debug, Clone)]
pub struct FrameBudget(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl FrameBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(bytes)))
    }

    /// Bytes left.
    pub fn left(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n)).is_ok()
    }

    fn give(&self, n: usize) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A frame's payload read under a [`FrameBudget`]; what it took goes back
/// when it is dropped.
#[derive(Debug)]
pub struct BudgetedPayload {
    payload: Vec<u8>,
    taken: usize,
    budget: FrameBudget,
}

impl std::ops::Deref for BudgetedPayload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.payload
    }
}

impl Drop for BudgetedPayload {
    fn drop(&mut self) {
        self.budget.give(self.taken);
    }
}

/// [`read_frame`] under `budget`.
pub async fn read_frame_within<R>(
    r: &mut R,
    budget: &FrameBudget,
) -> Result<Option<(u32, BudgetedPayload)>, FrameIoError>
where
    R: AsyncRead + Unpin,
{
    read_frame_gated(r, budget, 0, |_, _, _| true).await
}

/// [`read_frame_within`], asking `keep(type, payload length, first bytes)`
/// once the payload's first `head` bytes (or all of a shorter one) are in:
/// if it says no, the rest is read and dropped as it comes, and the frame
/// ends as [`FrameIoError::Unwanted`]; the stream is at the next frame. A
/// tracker looks at a large upload's token this way: 30 links sending 16
/// MiB frames from no session held 442 MiB while each was read whole to
/// be refused. (`head` 0: no question.)
pub async fn read_frame_gated<R>(
    r: &mut R,
    budget: &FrameBudget,
    head: usize,
    keep: impl FnMut(u32, usize, &[u8]) -> bool,
) -> Result<Option<(u32, BudgetedPayload)>, FrameIoError>
where
    R: AsyncRead + Unpin,
{
    let mut out = BudgetedPayload { payload: Vec::new(), taken: 0, budget: budget.clone() };
    let grow = |out: &mut BudgetedPayload, to: usize| {
        let more = to.saturating_sub(FIRST_STEP.max(out.taken + FIRST_STEP));
        if more > 0 {
            if !out.budget.take(more) {
                return false;
            }
            out.taken += more;
        }
        true
    };
    let gate = (head > 0).then_some((head, keep));
    let Some(k) = read_into(r, &mut out, |o| &mut o.payload, grow, gate).await? else {
        return Ok(None);
    };
    Ok(Some((k, out)))
}

/// Reads one frame of any type: `(type, payload)`; `Ok(None)` on a clean
/// end of stream before the first byte of a frame.
pub async fn read_frame<R>(r: &mut R) -> Result<Option<(u32, Vec<u8>)>, FrameIoError>
where
    R: AsyncRead + Unpin,
{
    let mut payload = Vec::new();
    let Some(k) = read_into(r, &mut payload, |p| p, |_, _| true, None::<(usize, Keep)>).await?
    else {
        return Ok(None);
    };
    Ok(Some((k, payload)))
}

/// A frame reader's question of a frame's first bytes
/// ([`read_frame_gated`]): type, payload length, first bytes.
type Keep = fn(u32, usize, &[u8]) -> bool;

/// Reads one frame into `into`'s payload buffer (`buf`), asking `grow`
/// before the buffer grows to a new length, and `gate`'s question once its
/// first bytes are in ([`read_frame_gated`]); its type, or `None` at a
/// clean end of stream.
async fn read_into<R, T, K>(
    r: &mut R,
    into: &mut T,
    buf: impl Fn(&mut T) -> &mut Vec<u8>,
    grow: impl Fn(&mut T, usize) -> bool,
    mut gate: Option<(usize, K)>,
) -> Result<Option<u32>, FrameIoError>
where
    R: AsyncRead + Unpin,
    K: FnMut(u32, usize, &[u8]) -> bool,
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
    let mut filled = 0;
    loop {
        if let Some((head, keep)) = gate.as_mut() {
            let head = (*head).min(want);
            if filled >= head {
                if !keep(k, want, &buf(into)[..head]) {
                    skip(r, want - filled).await?;
                    return Err(FrameIoError::Unwanted(want));
                }
                gate = None;
            }
        }
        if filled >= want {
            break;
        }
        if filled == buf(into).len() {
            // Doubling from 4 KiB, each step zeroed once: at most twice
            // what arrived (plus 4 KiB) is allocated, and a large frame
            // takes a dozen steps.
            let to = want.min((2 * filled).max(FIRST_STEP));
            if !grow(into, to) {
                return Err(FrameIoError::Busy);
            }
            let payload = buf(into);
            payload.reserve_exact(to - filled);
            payload.resize(to, 0);
        }
        // Up to the gate's bytes first, then as much as is there.
        let end = match &gate {
            Some((head, _)) => (*head).min(want).max(filled + 1),
            None => buf(into).len(),
        };
        let end = end.min(buf(into).len());
        let n = r.read(&mut buf(into)[filled..end]).await?;
        if n == 0 {
            return Err(FrameIoError::Truncated);
        }
        filled += n;
    }
    Ok(Some(k))
}

/// Reads `n` bytes and drops them.
async fn skip<R: AsyncRead + Unpin>(r: &mut R, mut n: usize) -> Result<(), FrameIoError> {
    const STEP: usize = 8192;
    let mut scratch = [0u8; STEP];
    while n > 0 {
        let m = r.read(&mut scratch[..n.min(STEP)]).await?;
        if m == 0 {
            return Err(FrameIoError::Truncated);
        }
        n -= m;
    }
    Ok(())
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

    /// A frame its first bytes show unwanted is read past, not kept: the
    /// budget (smaller than the frame) is untouched, and the next frame is
    /// read as usual.
    #[tokio::test]
    async fn an_unwanted_frame_is_read_past_not_kept() {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = tokio::io::duplex(64 << 10);
        let big = vec![7u8; 1 << 20];
        let req = Request::ListGroups { token: Token([1; 16]) };
        let sent = req.clone();
        let writer = tokio::spawn(async move {
            let mut frame = Vec::new();
            crate::wire::encode(REQUEST, &big, &mut frame);
            a.write_all(&frame).await?;
            write_msg(&mut a, REQUEST, &sent).await.map_err(std::io::Error::other)
        });
        let budget = FrameBudget::new(64 << 10);
        let mut asked = Vec::new();
        let err = read_frame_gated(&mut b, &budget, 17, |k, len, head: &[u8]| {
            asked.push((k, len, head.to_vec()));
            false
        })
        .await
        .unwrap_err();
        assert!(matches!(err, FrameIoError::Unwanted(n) if n == 1 << 20), "{err}");
        assert_eq!(asked, [(REQUEST, 1 << 20, vec![7u8; 17])]);
        assert_eq!(budget.left(), 64 << 10);
        let (k, payload) =
            read_frame_gated(&mut b, &budget, 17, |_, _, _| true).await.unwrap().unwrap();
        assert_eq!((k, decode_msg::<Request>(&payload).unwrap()), (REQUEST, req));
        writer.await.unwrap().unwrap();
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

    /// Frames read under one budget hold what they grew past their first
    /// 4 KiB until dropped; one that would take more than is left fails as
    /// busy, and small frames need none of it.
    #[tokio::test]
    async fn frames_read_under_a_budget_share_it() {
        let budget = FrameBudget::new(500_000);
        let frame_of = |len: usize| {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut frame = Vec::new();
            wire::encode(7, &payload, &mut frame);
            (payload, frame)
        };
        let read = |frame: Vec<u8>| {
            let budget = budget.clone();
            async move {
                let (mut a, mut b) = tokio::io::duplex(1 << 20);
                tokio::io::AsyncWriteExt::write_all(&mut a, &frame).await.unwrap();
                read_frame_within(&mut b, &budget).await
            }
        };
        let (payload, frame) = frame_of(300_000);
        let (kind, first) = read(frame.clone()).await.unwrap().unwrap();
        assert_eq!((kind, &first[..]), (7, &payload[..]));
        let held = 500_000 - budget.left();
        assert!((300_000 - 4096..=2 * 300_000).contains(&held), "{held}");
        // A second one does not fit beside it; a small one does.
        assert!(matches!(read(frame.clone()).await, Err(FrameIoError::Busy)));
        assert_eq!(500_000 - budget.left(), held, "a refused frame gives back what it took");
        let (small, small_frame) = frame_of(4000);
        assert_eq!(&read(small_frame).await.unwrap().unwrap().1[..], &small[..]);
        drop(first);
        assert_eq!(budget.left(), 500_000);
        assert!(read(frame).await.unwrap().is_some());
        assert_eq!(budget.left(), 500_000);
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
