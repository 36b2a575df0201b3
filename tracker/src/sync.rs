//! Replication between trackers.
//!
//! Every tracker dials every other tracker listed in tracker_info.txt, on the
//! same port clients use; a connection whose first frame is of type [`SYNC`]
//! is a replication stream. The dialer **pulls**: it says what it holds
//! (`Hello { from, known }`), the other side answers with every entry it
//! lacks (or its whole image when the entries were compacted away), then
//! streams each new entry as it is accepted or received, and every second
//! the sessions it heard from itself in the last few seconds (`Alive`). The dialer logs what it receives
//! (fsync) and acknowledges it (`Ack { known }`); acknowledgements let the
//! sender compact. Since both sides dial, data flows both ways, and a
//! tracker that was down catches up from what it acknowledged as soon as it
//! is reachable again.
//!
//! Per origin, entries are sent in `origin_seq` order: the stream holds back
//! an entry whose predecessor it has not sent yet.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ringshare_engine::control::{read_frame, read_msg, write_msg, FrameIoError};
use ringshare_engine::proto::{Response, Token};
use ringshare_engine::secure::CONTROL_PROLOGUE;
use ringshare_engine::secure_io::SecureStream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::links::Links;
use tokio::sync::broadcast::error::RecvError;

use crate::oplog::Entry;
use crate::replica::{Known, ReplicaImage};
use crate::service::Tracker;

/// Frame type of tracker-to-tracker messages.
pub const SYNC: u32 = 3;

/// Most entries in one message, and about the most bytes: a receiver
/// merges a message whose entries come late (a tracker back from a
/// partition) with one rebuild of its state, so catch-up goes in few
/// large messages (256 entries a message made that rebuild the
/// bottleneck: about a thousand entries a second after a long partition).
const BATCH: usize = 8192;
/// Frames a puller reads ahead of what it has applied.
const FRAMES_AHEAD: usize = 64;
const BATCH_BYTES: usize = 4 << 20;

/// An entry's size on the wire.
fn wire_len(e: &Entry) -> usize {
    postcard::to_stdvec(e).map_or(BATCH_BYTES, |v| v.len())
}

/// `entries` cut into messages of at most [`BATCH`] entries and (unless
/// one entry is larger) [`BATCH_BYTES`] bytes.
fn messages(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let len = wire_len(e);
        if i > start && (i - start >= BATCH || bytes + len > BATCH_BYTES) {
            out.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// A message between trackers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Opens a pull: who is asking and what it holds.
    Hello {
        /// The dialing tracker's number.
        from: u16,
        /// What it holds.
        known: Known,
    },
    /// Entries the dialer lacks, per origin in order.
    Entries(Vec<Entry>),
    /// The sender's whole replica (when the entries were compacted away).
    Image(Box<ReplicaImage>),
    /// The dialer holds this now (durably).
    Ack {
        /// What it holds.
        known: Known,
    },
    /// Sessions heard from at the sender itself (their own requests, not
    /// gossip) in the last few seconds ([`crate::service::GOSSIP_WINDOW`]).
    Alive(Vec<Token>),
    /// The node keys of the sender's live sessions (peer lists carry them).
    Keys(Vec<(Token, [u8; 32])>),
    /// The dialer's newest entry of each origin, (origin, seq, stamp),
    /// right after its `Hello`: the server checks them against its own.
    Tips(Vec<(u16, u64, crate::hlc::Stamp)>),
}

/// Serves a pull from another tracker whose first message was `hello`.
pub async fn serve_pull<S>(
    stream: S,
    tracker: Arc<Tracker>,
    hello: SyncMsg,
) -> Result<(), FrameIoError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let SyncMsg::Hello { from, known } = hello else {
        return Err(FrameIoError::Kind(SYNC));
    };
    tracing::info!(peer = from, "tracker {from} pulls from us");
    tracker.set_acked(from, known.clone());
    // A tracker holds every op of its own it ever acknowledged. One that
    // holds fewer than its peer lost some (a data directory put back from
    // an older copy, a log that lost its end); one that holds more of this
    // tracker's own than this one did so itself.
    let ours = tracker.known();
    let theirs_own = known.get(&from).copied().unwrap_or(0);
    let held_of_theirs = ours.get(&from).copied().unwrap_or(0);
    if theirs_own < held_of_theirs {
        tracing::warn!(
            peer = from,
            "tracker {from} holds {theirs_own} op(s) of its own and this one {held_of_theirs}: \
             its data directory lost some (put back from an older copy, or a log that lost its \
             end); they are sent back to it"
        );
    }
    let me = tracker.config().me;
    let (mine, theirs_of_mine) =
        (ours.get(&me).copied().unwrap_or(0), known.get(&me).copied().unwrap_or(0));
    if theirs_of_mine > mine {
        tracing::warn!(
            peer = from,
            "tracker {from} holds {theirs_of_mine} op(s) of this tracker's own, this one only \
             {mine}: this data directory lost some (put back from an older copy, or a log that \
             lost its end); this tracker takes them back on its pull from it"
        );
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Subscribe before computing the catch-up: nothing falls between.
    let mut feed = tracker.subscribe();
    let mut sent = known.clone();
    let mut held: BTreeMap<(u16, u64), Entry> = BTreeMap::new();
    match tracker.catch_up(&known) {
        Ok(entries) => {
            for chunk in messages(&entries) {
                for e in chunk {
                    sent.insert(e.stamp.origin, e.origin_seq);
                }
                write_msg(&mut wr, SYNC, &SyncMsg::Entries(chunk.to_vec())).await?;
            }
        }
        Err(img) => {
            sent = img_known(&img);
            write_msg(&mut wr, SYNC, &SyncMsg::Image(img)).await?;
        }
    }
    // Acks and liveness come back on their own task: a read must never be
    // cancelled halfway through a frame by the select below.
    let mut acks = {
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move {
            loop {
                match read_msg::<SyncMsg, _>(&mut rd, SYNC).await {
                    Ok(Some(SyncMsg::Ack { known })) => tracker.set_acked(from, known),
                    Ok(Some(SyncMsg::Alive(tokens))) => tracker.touch_all(&tokens),
                    Ok(Some(SyncMsg::Keys(keys))) => tracker.learn_keys(&keys),
                    Ok(Some(SyncMsg::Tips(tips))) => tracker.check_tips(&tips),
                    _ => return,
                }
            }
        })
    };
    // However this ends, the ack reader goes too: it holds the read half,
    // and the socket closes (the puller sees EOF and reconnects) only when
    // both halves are gone.
    let _stop_acks = AbortOnDrop(acks.abort_handle());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            e = feed.recv() => {
                let mut batch = Vec::new();
                match e {
                    Ok(e) => queue(e, &mut sent, &mut held, &mut batch),
                    // Too far behind the feed: end; the peer reconnects and catches up.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return Ok(()),
                }
                while batch.len() < BATCH {
                    match feed.try_recv() {
                        Ok(e) => queue(e, &mut sent, &mut held, &mut batch),
                        Err(_) => break,
                    }
                }
                for chunk in messages(&batch) {
                    write_msg(&mut wr, SYNC, &SyncMsg::Entries(chunk.to_vec())).await?;
                }
            }
            _ = &mut acks => return Ok(()),
            _ = tick.tick() => {
                if !held.is_empty() {
                    // An entry still waits for its predecessor, which may
                    // never come on the feed (the replica got it otherwise:
                    // an image installed after this stream began). Fill the
                    // gap from the replica; if it was compacted away, end:
                    // the peer reconnects and gets an image.
                    let Ok(entries) = tracker.catch_up(&sent) else { return Ok(()) };
                    let mut batch = Vec::new();
                    for e in entries {
                        queue(e, &mut sent, &mut held, &mut batch);
                    }
                    for chunk in messages(&batch) {
                        write_msg(&mut wr, SYNC, &SyncMsg::Entries(chunk.to_vec())).await?;
                    }
                }
                let alive = tracker.heard_here_lately(std::time::Instant::now());
                write_msg(&mut wr, SYNC, &SyncMsg::Alive(alive)).await?;
                write_msg(&mut wr, SYNC, &SyncMsg::Keys(tracker.live_keys())).await?;
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Adds `e` to `batch` if the peer lacks it and its predecessor was sent;
/// holds it back otherwise, releasing what it unblocks.
fn queue(
    e: Entry,
    sent: &mut Known,
    held: &mut BTreeMap<(u16, u64), Entry>,
    batch: &mut Vec<Entry>,
) {
    let origin = e.stamp.origin;
    let have = sent.get(&origin).copied().unwrap_or(0);
    if e.origin_seq <= have {
        return;
    }
    held.insert((origin, e.origin_seq), e);
    let mut next = have + 1;
    while let Some(e) = held.remove(&(origin, next)) {
        batch.push(e);
        sent.insert(origin, next);
        next += 1;
    }
}

fn img_known(img: &ReplicaImage) -> Known {
    let mut k = img.base_known.clone();
    for e in &img.entries {
        let v = k.entry(e.stamp.origin).or_insert(0);
        *v = (*v).max(e.origin_seq);
    }
    k
}

/// Pulls from tracker `peer` at `addr` forever, reconnecting as needed.
pub async fn pull_forever(tracker: Arc<Tracker>, links: Arc<Links>, peer: u16, addr: SocketAddr) {
    let mut logged_down = false;
    let mut logged_refused = false;
    loop {
        match pull_once(&tracker, &links, peer, addr, &mut logged_refused).await {
            Ok(()) => tracing::info!(peer, "stream from tracker {peer} ended"),
            Err(e) => {
                // Reached, or not reachable now: this tracker's changes
                // need not wait for it.
                tracker.contacted(peer);
                if !logged_down {
                    tracing::info!(peer, "tracker {peer} at {addr} unreachable: {e}");
                    logged_down = true;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        }
        logged_down = false;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a pull waits before asking again after refusing entries (or an
/// image) stamped beyond the clock-skew bound: the clocks may agree again
/// at any moment (a clock put right), so not long.
const FUTURE_RETRY: Duration = Duration::from_secs(1);

/// How long a pull waits for any byte before reconnecting: a healthy
/// stream carries an `Alive` every second, so three missed mean the
/// serving side is gone or cut off (a large frame still arriving is not
/// silence). Ten seconds left a stream stalled by a healed partition for
/// up to that long after the heal.
const PULL_SILENCE: Duration = Duration::from_secs(3);

/// A reader that fails with `TimedOut` once no byte has arrived for
/// `limit` while a read waits (the time between reads does not count).
struct Silence<S> {
    inner: S,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl<S> Silence<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit, timer: Box::pin(tokio::time::sleep(limit)), waiting: false }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Silence<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.limit;
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Silence<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An encrypted link to tracker `peer` at `addr`, its key as yet unchecked
/// against the list and pins (2 s at most).
async fn dial(
    links: &Links,
    peer: u16,
    addr: SocketAddr,
) -> Result<SecureStream<Silence<TcpStream>>, FrameIoError> {
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let expect = links.expected(peer);
        let tcp = Silence::new(tcp, PULL_SILENCE);
        SecureStream::connect(tcp, links.keypair(), CONTROL_PROLOGUE, expect)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| FrameIoError::Io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(FrameIoError::Io)
}

/// Checks a link claiming to be tracker `peer` that proved `got`, when no
/// key is listed or pinned for it yet: this tracker dials `peer`'s listed
/// address itself, and the claim holds if what answers there proves the
/// same key (which is then pinned, as this tracker's own pull would). A
/// process that merely sends from that address is not `peer`.
pub async fn check_unmet(
    links: &Links,
    peer: u16,
    addr: SocketAddr,
    got: ringshare_engine::secure::PublicKey,
) -> Result<(), String> {
    let s = dial(links, peer, addr)
        .await
        .map_err(|e| format!("tracker {peer} at its listed address {addr}: {e}"))?;
    let there = s.remote_key();
    if there != got {
        return Err(format!(
            "tracker {peer} at its listed address {addr} proves key {there}, not {got}"
        ));
    }
    links.check(peer, there)
}

/// A frame read ahead on a pull, or a message decoded from one.
enum Next {
    Frame(Frame),
    Msg(SyncMsg),
}

/// What the reader of a pull hands on: a frame, the stream's end, or why
/// it broke.
type Frame = Result<Option<(u32, Vec<u8>)>, FrameIoError>;

/// The sync message in a pull's frame; `None` at the stream's end.
fn sync_msg(
    frame: Frame,
    peer: u16,
    addr: SocketAddr,
    logged_refused: &mut bool,
) -> Result<Option<SyncMsg>, FrameIoError> {
    let Some((kind, payload)) = frame? else { return Ok(None) };
    if kind == ringshare_engine::proto::RESPONSE {
        // The peer refuses this tracker's pulls: it does not take this
        // tracker for the one its list names here (another address or
        // key). Said once, loudly: this tracker goes on taking changes
        // that tracker will not see.
        let why = match ringshare_engine::control::decode_msg::<Response>(&payload) {
            Ok(Response::Refused(r)) => r.to_string(),
            _ => "an answer that is not a sync stream".to_owned(),
        };
        if !std::mem::replace(logged_refused, true) {
            tracing::error!(
                peer,
                "tracker {peer} at {addr} refuses this tracker's pulls ({why}): it does not \
                 list this tracker at this address with this key, so the changes made here \
                 do not reach it (or the trackers it feeds); if this tracker's key is new (a \
                 new data directory), that tracker holds the old one: give the new key \
                 (--print-key) on this tracker's line of its list, or delete this tracker's \
                 line from its known_trackers and restart it; else give every tracker the same \
                 tracker list, and each tracker its own data directory"
            );
        }
        return Err(FrameIoError::Io(std::io::Error::other(format!("refused: {why}"))));
    }
    *logged_refused = false;
    if kind != SYNC {
        return Err(FrameIoError::Kind(kind));
    }
    ringshare_engine::control::decode_msg::<SyncMsg>(&payload).map(Some)
}

async fn pull_once(
    tracker: &Tracker,
    links: &Links,
    peer: u16,
    addr: SocketAddr,
    logged_refused: &mut bool,
) -> Result<(), FrameIoError> {
    let mut s = dial(links, peer, addr).await?;
    if let Err(why) = links.check(peer, s.remote_key()) {
        return Err(FrameIoError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, why)));
    }
    let hello = SyncMsg::Hello { from: tracker.config().me, known: tracker.known() };
    write_msg(&mut s, SYNC, &hello).await?;
    write_msg(&mut s, SYNC, &SyncMsg::Tips(tracker.tips())).await?;
    // Frames are read on their own task, ahead of what is applied (a read
    // must not be cancelled halfway through a frame): the entries of every
    // frame already read when one is applied go to the log with it, one
    // sync for all. Applied a frame at a time, each waiting for its own
    // sync, a tracker took 1,800 ops a second from a peer that acknowledged
    // 3,500 (four shells writing), and fell further behind for as long as
    // they wrote.
    let (mut rd, mut s) = tokio::io::split(s);
    let (tx, mut frames) = tokio::sync::mpsc::channel(FRAMES_AHEAD);
    let reader = tokio::spawn(async move {
        loop {
            // Silence (no byte for PULL_SILENCE) fails the read: reconnect.
            let frame = read_frame(&mut rd).await;
            let last = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).await.is_err() || last {
                return;
            }
        }
    });
    let _stop_reader = AbortOnDrop(reader.abort_handle());
    let mut next = None;
    loop {
        let msg = match next.take() {
            Some(Next::Msg(m)) => Some(m),
            Some(Next::Frame(f)) => sync_msg(f, peer, addr, logged_refused)?,
            None => sync_msg(frames.recv().await.unwrap_or(Ok(None)), peer, addr, logged_refused)?,
        };
        let Some(msg) = msg else { return Ok(()) };
        match msg {
            SyncMsg::Entries(mut entries) => {
                while entries.len() < BATCH {
                    match frames.try_recv() {
                        Ok(Ok(Some((SYNC, more)))) => {
                            match ringshare_engine::control::decode_msg::<SyncMsg>(&more)? {
                                SyncMsg::Entries(more) => entries.extend(more),
                                other => {
                                    next = Some(Next::Msg(other));
                                    break;
                                }
                            }
                        }
                        Ok(other) => {
                            next = Some(Next::Frame(other));
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(gap) = tracker.receive_remote(entries).await {
                    if matches!(gap, crate::replica::ReceiveError::Stopping) {
                        return Ok(());
                    }
                    // Resynchronise from what we hold; an entry from the
                    // future stays refused until the clocks agree: ask
                    // again in a while, not at once.
                    tracing::warn!("{gap}; reconnecting");
                    if matches!(gap, crate::replica::ReceiveError::FromTheFuture { .. }) {
                        tokio::time::sleep(FUTURE_RETRY).await;
                    }
                    return Ok(());
                }
                write_msg(&mut s, SYNC, &SyncMsg::Ack { known: tracker.known() }).await?;
            }
            SyncMsg::Image(img) => {
                match tracker.install(*img) {
                    Ok(true) => {}
                    Ok(false) => {
                        // Made before the peer held this tracker's own ops
                        // (a fresh tracker beside one that ran alone and
                        // compacted everything): the stream goes on from
                        // the image as if it were taken, and the entries it
                        // holds would never come. Asked again, the peer
                        // sends one that does cover them, once its own
                        // pull from here has brought them.
                        tracing::warn!(
                            peer,
                            "tracker {peer}'s image does not cover this tracker's ops; asking \
                             again"
                        );
                        tokio::time::sleep(FUTURE_RETRY).await;
                        return Ok(());
                    }
                    Err(e) => {
                        // Refused until the clocks agree: ask again later.
                        tracing::warn!("{e}; reconnecting");
                        tokio::time::sleep(FUTURE_RETRY).await;
                        return Ok(());
                    }
                }
                write_msg(&mut s, SYNC, &SyncMsg::Ack { known: tracker.known() }).await?;
            }
            SyncMsg::Alive(tokens) => {
                tracker.touch_all(&tokens);
                tracker.gossip_from(peer);
                // The catch-up came before it on the stream.
                tracker.heard_from(peer);
            }
            SyncMsg::Keys(keys) => tracker.learn_keys(&keys),
            SyncMsg::Hello { .. } | SyncMsg::Ack { .. } | SyncMsg::Tips(_) => {
                return Err(FrameIoError::Kind(SYNC))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Stamp;
    use crate::state::Op;

    fn e(origin: u16, seq: u64) -> Entry {
        Entry {
            stamp: Stamp { wall_ms: seq, counter: 0, origin },
            origin_seq: seq,
            op: Op::Logout { token: Token([0; 16]) },
        }
    }

    #[test]
    fn messages_respect_the_count_and_the_byte_limit() {
        let many: Vec<Entry> = (1..=BATCH as u64 * 2 + 5).map(|s| e(1, s)).collect();
        let m = messages(&many);
        assert_eq!(m.iter().map(|c| c.len()).collect::<Vec<_>>(), [BATCH, BATCH, 5]);
        assert!(messages(&[]).is_empty());
        let big = |seq| Entry {
            stamp: Stamp { wall_ms: seq, counter: 0, origin: 1 },
            origin_seq: seq,
            op: Op::CreateUser { user: "u".into(), password_hash: "h".repeat(BATCH_BYTES / 3) },
        };
        let three: Vec<Entry> = (1..=3).map(big).collect();
        let m = messages(&three);
        assert_eq!(m.iter().map(|c| c.len()).collect::<Vec<_>>(), [2, 1]);
        assert!(m.iter().all(|c| c.iter().map(wire_len).sum::<usize>() <= BATCH_BYTES));
    }

    #[test]
    fn queue_keeps_per_origin_order() {
        let mut sent = Known::from([(1, 2)]);
        let mut held = BTreeMap::new();
        let mut batch = Vec::new();
        queue(e(1, 2), &mut sent, &mut held, &mut batch); // already sent
        queue(e(1, 4), &mut sent, &mut held, &mut batch); // held: 3 missing
        assert!(batch.is_empty());
        queue(e(2, 1), &mut sent, &mut held, &mut batch);
        queue(e(1, 3), &mut sent, &mut held, &mut batch);
        let order: Vec<(u16, u64)> = batch.iter().map(|x| (x.stamp.origin, x.origin_seq)).collect();
        assert_eq!(order, [(2, 1), (1, 3), (1, 4)]);
        assert!(held.is_empty());
    }
}
