//! One connection of the io_uring piece server: the receive buffer, the
//! protocol session, admission, `have` pushes, timeouts and closing.
//!
//! A connection is `Open` (reading and answering), `Draining` (a fatal
//! error frame is queued, or the peer stopped sending: no more reading;
//! closed once the queue is sent, or when sending stalls for [`LINGER`]) or
//! `Closing` (the socket is shut down and its ops cancelled; the slot is
//! freed once every CQE it is owed has arrived).
//!
//! Links are encrypted ([`Link`], Noise XX as responder): received bytes are
//! records, opened into `plain` before the peer protocol reads them, and the
//! send queue seals what it sends. A server that allows plaintext looks at
//! the first two bytes to tell a plaintext downloader from a handshake.
//!
//! Timeouts, checked every tick: with nothing to send, a connection silent
//! past `handshake_timeout` (before admission) or `idle_timeout` (after) gets
//! a `busy` "idle too long" frame and is closed, as in the threads driver;
//! with answers queued but none sent for as long, the peer is not reading
//! and the connection is closed without a frame.

use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::tx::{PieceJob, SealBufs, Step, Tx, TxIo};
use super::{Op, Ring, SendMethod};
use crate::link::PeerSecurity;
use crate::meta::Bitfield;
use crate::peer::{self, ErrorCode, Message, PeerDecodeError, Refuse, ServerAction, ServerSession};
use crate::secure::{is_plaintext_preface, Link, MAX_MESSAGE, PEER_PROLOGUE, RECORD_HEADER};
use crate::share::{self, ServeTable, ServedFile, ServerLimits};
use crate::slots::{SendSlots, KEEPALIVE};

/// Initial receive buffer: far more than any request; a handshake with the
/// longest ticket fits too. It grows only for a frame that needs it.
const RECV_BUF: usize = 16 * 1024;
/// How long a connection may take to send its last frames after a fatal
/// error before it is cut.
const LINGER: Duration = Duration::from_secs(5);
/// Queued control bytes (errors, haves) beyond which a peer that does not
/// read is cut off.
const MAX_QUEUED: usize = 1 << 20;

/// A connection's slot and generation: the identity in user_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl Key {
    /// Generations use 24 bits of the user_data.
    pub(crate) const GEN_MASK: u32 = 0xff_ffff;
    /// The key of the driver's own ops.
    pub(crate) const DRIVER: Key = Key { slot: 0, gen: 0 };
}

/// What a connection's handlers may use of the driver.
pub(crate) struct Ctx<'a> {
    pub(crate) ring: &'a mut Ring,
    pub(crate) table: &'a ServeTable,
    pub(crate) limits: &'a ServerLimits,
    pub(crate) method: SendMethod,
    pub(crate) now: Instant,
    /// The node's upload slots ([`crate::slots`]).
    pub(crate) slots: &'a mut SendSlots<Key>,
    /// Connections a released slot was handed to: the driver lets each
    /// send ([`Conn::grant`]) once the current handler returns.
    pub(crate) handed: &'a mut Vec<Key>,
    /// The driver's buffers for sealing ([`SealBufs`]).
    pub(crate) bufs: &'a mut SealBufs,
}

/// Where a connection stands with the upload slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotUse {
    Free,
    Waiting,
    Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Draining { until: Instant },
    Closing,
}

/// One downloader's connection.
pub(crate) struct Conn {
    stream: TcpStream,
    key: Key,
    state: State,
    /// CQEs this connection is still owed; its slot is freed at zero.
    inflight: u32,
    session: ServerSession,
    served: Option<Arc<ServedFile>>,
    /// Pieces the downloader has been told of (bitfield and haves).
    announced: Bitfield,
    seen_version: u64,
    /// Received bytes: `rbuf[..filled]`; a Recv fills `rbuf[filled..]`.
    rbuf: Vec<u8>,
    filled: usize,
    recv_armed: bool,
    delay_armed: bool,
    /// The pause before the piece being started ([`Self::kick`]): the
    /// upload rate's wait plus `limits.piece_delay`. Read by the kernel
    /// when the timeout is submitted; not changed while one is armed.
    pause: types::Timespec,
    last_activity: Instant,
    tx: Tx,
    /// The encrypted link (`None`: plaintext, or not decided yet).
    link: Option<Box<Link>>,
    /// Plaintext allowed and the first bytes not seen yet.
    undecided: bool,
    /// Opened plaintext not yet decoded (encrypted links).
    plain: Vec<u8>,
    /// A handshake for another file waits (unread, first in the buffer)
    /// until what is being sent of the file before has gone.
    paused: bool,
    slot: SlotUse,
    /// The piece first in line and when the node's upload rate lets it
    /// start ([`SendSlots::start_at`]), while that is more than
    /// [`KEEPALIVE`] away: it waits without its send armed, and its
    /// downloader hears a `have` for it every [`KEEPALIVE`] meanwhile.
    /// (The piece, its start and its length: its turn was paid for.)
    reserved: Option<(u32, Instant, u32)>,
    /// When the next of those `have`s is due.
    alive_due: Instant,
    /// The last piece started under the upload rate: when it starts, its
    /// pace (bytes a second) and length, for what it gives back if the
    /// connection ends before all of it went ([`SendSlots::unsent`]).
    pacing: Option<(Instant, u64, u32)>,
    /// A session of it was admitted ([`Self::opened`]).
    opened: bool,
    /// The group of the ticket the session was admitted with
    /// ([`ServeTable::still_admits`]).
    group: Option<String>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, key: Key, now: Instant, security: &PeerSecurity) -> Self {
        let link = (!security.plaintext).then(|| {
            // Fails only if the constant Noise pattern were unsupported.
            let l = Link::responder(&security.keypair, PEER_PROLOGUE);
            Box::new(l.expect("the Noise pattern is supported"))
        });
        let rbuf_len = if link.is_some() { RECORD_HEADER + MAX_MESSAGE } else { RECV_BUF };
        Self {
            stream,
            key,
            state: State::Open,
            inflight: 0,
            session: ServerSession::new(0),
            served: None,
            announced: Bitfield::new(0),
            seen_version: 0,
            rbuf: vec![0; rbuf_len],
            filled: 0,
            recv_armed: false,
            delay_armed: false,
            pause: types::Timespec::new(),
            last_activity: now,
            tx: Tx::default(),
            undecided: link.is_none(),
            link,
            plain: Vec::new(),
            paused: false,
            slot: SlotUse::Free,
            reserved: None,
            alive_due: now,
            pacing: None,
            opened: false,
            group: None,
        }
    }

    pub(crate) fn key(&self) -> Key {
        self.key
    }

    /// The send queue's spent sealed buffer (see [`Tx::take_spare`]).
    pub(crate) fn take_spare(&mut self) -> Vec<u8> {
        self.tx.take_spare()
    }

    /// A session of it opened (a handshake with a good ticket), now or
    /// before (a link between two files): it keeps its place when all are
    /// taken (`ConnCaps::opened`).
    pub(crate) fn opened(&self) -> bool {
        self.opened
    }

    /// Closed and owed no CQE: the slot can be freed.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Closing && self.inflight == 0
    }

    /// Starts reading.
    pub(crate) fn start(&mut self, ctx: &mut Ctx<'_>) {
        self.session = ServerSession::new(ctx.limits.max_outstanding);
        self.arm_recv(ctx);
    }

    fn arm_recv(&mut self, ctx: &mut Ctx<'_>) {
        let spare = &mut self.rbuf[self.filled..];
        let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        let e = opcode::Recv::new(types::Fd(self.stream.as_raw_fd()), spare.as_mut_ptr(), len)
            .build()
            .user_data(Op::Recv.data(self.key));
        // SAFETY: `rbuf` is neither resized nor taken while `recv_armed` (it
        // is only touched in `on_recv`, after the CQE), and the connection
        // (boxed, holding the socket) lives until every CQE it is owed.
        match unsafe { ctx.ring.push(&[e]) } {
            Ok(()) => {
                self.inflight += 1;
                self.recv_armed = true;
            }
            Err(e) => self.close(ctx, &format!("cannot queue a receive: {e}")),
        }
    }

    pub(crate) fn on_cqe(&mut self, op: Op, res: i32, flags: u32, last: bool, ctx: &mut Ctx<'_>) {
        if last {
            self.inflight = self.inflight.saturating_sub(1);
        }
        match op {
            Op::Recv => self.on_recv(res, ctx),
            Op::Delay => {
                self.delay_armed = false;
                self.on_send(op, res, flags, ctx);
            }
            _ => self.on_send(op, res, flags, ctx),
        }
    }

    fn on_recv(&mut self, res: i32, ctx: &mut Ctx<'_>) {
        self.recv_armed = false;
        if self.state != State::Open {
            return;
        }
        if res == 0 {
            // The peer is done sending: answer what it asked, then close
            // (the threads driver also answers every request it read).
            self.drain(ctx);
            return self.kick(ctx);
        }
        if res < 0 {
            return self.close(ctx, &std::io::Error::from_raw_os_error(-res).to_string());
        }
        self.filled = (self.filled + res as usize).min(self.rbuf.len());
        if self.undecided {
            if self.filled < 2 {
                return self.arm_recv(ctx);
            }
            self.undecided = false;
            if !is_plaintext_preface([self.rbuf[0], self.rbuf[1]]) {
                let security = ctx.table.security();
                match Link::responder(&security.keypair, PEER_PROLOGUE) {
                    Ok(l) => self.link = Some(Box::new(l)),
                    Err(e) => return self.close(ctx, &e.to_string()),
                }
                self.rbuf.resize(RECORD_HEADER + MAX_MESSAGE, 0);
            }
        }
        if let Some(link) = self.link.as_mut() {
            // Records in, plaintext out; a handshake reply goes out as is.
            let mut reply = Vec::new();
            let used = match link.recv(&self.rbuf[..self.filled], &mut self.plain, &mut reply) {
                Ok(n) => n,
                Err(e) => return self.close(ctx, &format!("secure link: {e}")),
            };
            self.rbuf.copy_within(used..self.filled, 0);
            self.filled -= used;
            if !reply.is_empty() {
                self.tx.push_raw(reply);
            }
            self.decode_plain(ctx);
            if self.state == State::Open && !self.paused {
                self.arm_recv(ctx);
            }
            return self.kick(ctx);
        }
        self.decode_rbuf(ctx);
        self.kick(ctx);
    }

    /// Handles every complete message opened from an encrypted link.
    fn decode_plain(&mut self, ctx: &mut Ctx<'_>) {
        let plain = std::mem::take(&mut self.plain);
        let pos = self.decode(&plain, ctx).0;
        self.plain = plain;
        self.plain.drain(..pos);
    }

    /// Handles every complete message received on a plaintext link, and
    /// receives again unless paused.
    fn decode_rbuf(&mut self, ctx: &mut Ctx<'_>) {
        // No op uses the buffer now: handle every complete message in it.
        let rbuf = std::mem::take(&mut self.rbuf);
        let (pos, need) = self.decode(&rbuf[..self.filled], ctx);
        self.rbuf = rbuf;
        self.rbuf.copy_within(pos..self.filled, 0);
        self.filled -= pos;
        if self.state == State::Open {
            // Room for the rest of the frame (its length is already checked
            // against the protocol's maximum); back to the small buffer once
            // a big frame is done.
            if self.filled + need > self.rbuf.len() {
                self.rbuf.resize(self.filled + need, 0);
            } else if self.filled == 0 && self.rbuf.len() > RECV_BUF {
                self.rbuf = vec![0; RECV_BUF];
            }
            if !self.paused {
                self.arm_recv(ctx);
            }
        }
    }

    /// What was being sent of the file before a new handshake has gone:
    /// the handshake and what follows it are handled now.
    fn resume(&mut self, ctx: &mut Ctx<'_>) {
        self.paused = false;
        if self.link.is_some() {
            self.decode_plain(ctx);
            if self.state == State::Open && !self.paused && !self.recv_armed {
                self.arm_recv(ctx);
            }
        } else if !self.recv_armed {
            self.decode_rbuf(ctx);
        }
        self.kick(ctx);
    }

    /// A handshake on an admitted session goes on to another file. Requests
    /// of the file before not yet being answered are answered first when
    /// the downloader pipelines ([`ServerSession::answers_all_before_switch`]),
    /// else dropped (it is done with the file); true when nothing of it
    /// is queued or in flight any more, so the handshake can be handled
    /// now.
    fn ready_to_switch(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if !self.session.answers_all_before_switch() {
            for _ in 0..self.tx.drop_pieces() {
                self.served_one(ctx.now);
            }
        }
        if !self.tx.is_idle() {
            return false;
        }
        self.tx.switch_file();
        true
    }

    /// Handles every complete message at the start of `buf`; returns the
    /// bytes used and how many more the next message needs.
    fn decode(&mut self, buf: &[u8], ctx: &mut Ctx<'_>) -> (usize, usize) {
        let mut pos = 0;
        let mut need = 0;
        while self.state == State::Open && !self.paused {
            match peer::decode(&buf[pos..]) {
                Ok((msg, used)) => {
                    if matches!(msg, Message::Handshake { .. })
                        && self.session.is_open()
                        && !self.ready_to_switch(ctx)
                    {
                        self.paused = true;
                        break;
                    }
                    pos += used;
                    self.last_activity = ctx.now;
                    self.on_message(&msg, ctx);
                }
                Err(PeerDecodeError::NeedMore(n)) => {
                    need = n;
                    break;
                }
                Err(e) => self.fail(ErrorCode::BadMessage, &e.to_string(), ctx),
            }
        }
        (pos, need)
    }

    fn on_message(&mut self, msg: &Message<'_>, ctx: &mut Ctx<'_>) {
        let mut offers = Vec::new();
        let answer = share::session_message(
            &mut self.session,
            self.served.as_deref(),
            msg,
            ctx.now,
            &mut offers,
        );
        if !offers.is_empty() {
            self.tx.push_bytes(offers);
            if self.tx.queued_bytes() > MAX_QUEUED {
                return self.close(ctx, "peer does not read its answers");
            }
        }
        match answer {
            Ok(ServerAction::Admit { file_id, user, ticket }) => {
                let holder = self.link.as_ref().and_then(|l| l.remote_key());
                let file = match ctx.table.admit(&file_id, &user, &ticket, holder.as_ref()) {
                    Ok(file) => file,
                    Err(Refuse { code, text, .. }) => return self.fail(code, &text, ctx),
                };
                self.seen_version = file.version();
                self.announced = file.open_session(&mut self.session, &user, ctx.now);
                self.opened = true;
                self.group = crate::ticket::group_of(&ticket);
                let mut out = Vec::new();
                peer::encode(&Message::Bitfield(self.announced.as_bytes()), &mut out);
                self.tx.push_bytes(out);
                self.served = Some(file);
            }
            Ok(ServerAction::Serve { piece, offset, file_offset, len }) => {
                self.tx.push_piece(PieceJob { piece, offset, file_offset, len });
            }
            Ok(ServerAction::Cancel { piece, offset }) => {
                if self.tx.cancel(piece, offset) {
                    self.served_one(ctx.now);
                }
            }
            // A reject went out with the offers.
            Ok(ServerAction::Reject { .. } | ServerAction::Nothing) => {}
            Err(Refuse { code, text, fatal: true }) => self.fail(code, &text, ctx),
            Err(Refuse { code, text, fatal: false }) => self.queue_error(code, &text, ctx),
        }
    }

    /// The piece next in line is kept back or deferred
    /// ([`share::session_withholds`]): it leaves the queue, a `reject` or
    /// a `busy` (and any offers) goes out instead.
    fn withhold_next(&mut self, now: Instant) -> bool {
        let Some(&PieceJob { piece, offset, len, .. }) = self.tx.next_job() else { return false };
        let mut out = Vec::new();
        let served = self.served.as_deref();
        if !share::session_withholds(&mut self.session, served, (piece, offset, len), now, &mut out)
        {
            return false;
        }
        self.tx.cancel(piece, offset);
        self.tx.push_bytes_first(out);
        true
    }

    /// A request was answered: the session (and its file's plan) learn
    /// it, and any piece that offers goes out as a `have`.
    fn served_one(&mut self, now: Instant) {
        let mut offers = Vec::new();
        share::session_served(&mut self.session, self.served.as_deref(), now, &mut offers);
        if !offers.is_empty() {
            self.tx.push_bytes(offers);
        }
    }

    fn queue_error(&mut self, code: ErrorCode, text: &str, ctx: &mut Ctx<'_>) {
        let mut out = Vec::new();
        peer::encode(&Message::Error { code, text }, &mut out);
        self.tx.push_bytes(out);
        if self.tx.queued_bytes() > MAX_QUEUED {
            self.close(ctx, "peer does not read its answers");
        }
    }

    /// A fatal refusal: the error frame goes out after what is queued, then
    /// the connection closes.
    fn fail(&mut self, code: ErrorCode, text: &str, ctx: &mut Ctx<'_>) {
        if self.state != State::Open {
            return;
        }
        tracing::debug!(?code, "piece connection refused: {text}");
        self.queue_error(code, text, ctx);
        if self.state == State::Open {
            self.drain(ctx);
            self.kick(ctx);
        }
    }

    /// Stops reading; the connection closes once its queue is sent (or
    /// when sending stalls for [`LINGER`]).
    fn drain(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::Draining { until: ctx.now + LINGER };
        if self.recv_armed {
            ctx.ring.cancel(Op::Recv.data(self.key));
        }
    }

    /// Closes now: shuts the socket down (which ends its sends and receives)
    /// and cancels the ops a shutdown does not end. The slot is freed once
    /// every CQE has arrived.
    pub(crate) fn close(&mut self, ctx: &mut Ctx<'_>, why: &str) {
        if self.state == State::Closing {
            return;
        }
        tracing::debug!(slot = self.key.slot, "piece connection closed: {why}");
        self.state = State::Closing;
        // A piece waiting for its start (far ahead, or paused) never goes:
        // its bytes go back to the node's upload budget.
        if let Some(rate) = ctx.limits.upload_rate {
            let waiting = self.reserved.take().map(|(_, _, len)| len);
            // The last piece started: waiting for its pause, being sent, or
            // given to TCP whole, perhaps not all gone (a reset throws away
            // what it held).
            let started = self.pacing.take().map(|(at, pace, len)| {
                ctx.slots.left(self.key);
                SendSlots::<Key>::unsent(at, pace, len, ctx.now)
            });
            for len in [waiting, started].into_iter().flatten() {
                ctx.slots.refund(ctx.now, rate, len);
            }
        }
        self.give_back_slot(ctx);
        share::session_closed(&mut self.session, self.served.as_deref());
        let _ = self.stream.shutdown(Shutdown::Both);
        if self.recv_armed {
            ctx.ring.cancel(Op::Recv.data(self.key));
        }
        if self.delay_armed {
            ctx.ring.cancel(Op::Delay.data(self.key));
        }
    }

    /// Starts the next send step if none is in flight; closes a draining
    /// connection whose queue is sent.
    fn kick(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == State::Closing {
            return;
        }
        // A piece whose start the upload rate put far ahead keeps its place,
        // its slot and the start it was given while it waits
        // ([`Self::wait_to_start`]).
        let reserved = match self.reserved.take() {
            Some(r) if self.tx.next_piece() == Some(r.0) => {
                if self.tx.next_job().is_none() {
                    // A `have` of it is going out: looked at again once it
                    // has (its start was lost here, and paid for twice).
                    self.reserved = Some(r);
                    return;
                }
                Some(r)
            }
            Some((_, _, len)) => {
                // Cancelled (or kept back) while it waited: its turn goes
                // back.
                if let Some(rate) = ctx.limits.upload_rate {
                    ctx.slots.refund(ctx.now, rate, len);
                }
                None
            }
            None => None,
        };
        // A piece goes out only in an upload slot; until one is handed to
        // this connection, what is queued behind the piece waits too.
        // A seed sends first, of the pieces asked for, the one it sent
        // least, and ranks it by that (first copies first,
        // `SeedPlan::sent`).
        let next = if let Some((piece, ..)) = reserved {
            Some(piece)
        } else {
            loop {
                let mut rank = 0;
                if self.slot != SlotUse::Waiting && self.tx.next_piece().is_some() {
                    let least =
                        self.served.as_ref().and_then(|f| f.least_sent(self.tx.queued_pieces()));
                    if let Some((nth, sent)) = least {
                        self.tx.send_next(nth);
                        rank = sent;
                    }
                }
                // A seed serving a crowd its first copies keeps back a piece
                // that went out since it was asked for, and defers one to a
                // downloader sent more than its share: before asking for a
                // slot, or once handed one after waiting (not while waiting).
                if self.slot != SlotUse::Waiting
                    && self.tx.next_piece().is_some()
                    && self.withhold_next(ctx.now)
                {
                    continue;
                }
                let next = self.tx.next_piece();
                if next.is_some() && self.slot != SlotUse::Held {
                    if self.slot == SlotUse::Waiting
                        || !ctx.slots.acquire_ranked(self.key, rank, ctx.now)
                    {
                        self.slot = SlotUse::Waiting;
                        return;
                    }
                    self.slot = SlotUse::Held;
                }
                break next;
            }
        };
        let mut pause = ctx.limits.piece_delay;
        // When the node's upload rate lets the piece start.
        let start = match (next, self.tx.next_job(), ctx.limits.upload_rate) {
            (Some(_), Some(job), Some(rate)) => Some(match reserved {
                Some((_, start, _)) => (start, job.len),
                None => (ctx.slots.start_at(ctx.now, rate, job.len), job.len),
            }),
            _ => None,
        };
        if let (Some(piece), Some((start, len))) = (next, start) {
            if start > ctx.now + KEEPALIVE {
                return self.wait_to_start((piece, start, len), ctx);
            }
        }
        let start = start.map(|(start, _)| start);
        if let (Some(piece), Some(f)) = (next, &self.served) {
            f.note_sent(&mut self.session, piece);
            if let (Some(rate), Some(job), Some(start)) =
                (ctx.limits.upload_rate, self.tx.next_job(), start)
            {
                let senders = ctx.slots.senders(self.key, start, rate, job.len);
                let share = rate.share(senders);
                crate::link::pace(self.stream.as_raw_fd(), share);
                pause += start - ctx.now;
                self.pacing = Some((ctx.now + pause, share, job.len));
            }
            if tracing::enabled!(tracing::Level::TRACE) {
                let to = self.stream.peer_addr().ok();
                tracing::trace!(piece, to = ?to, "piece sending");
            }
        }
        // Read only if a piece starts now (its timeout, when submitted).
        if next.is_some() {
            self.pause = types::Timespec::from(pause);
        }
        if !self.kick_tx(next.is_some() && !pause.is_zero(), ctx) {
            return;
        }
        // Handed a slot for a piece since cancelled: it goes on.
        if self.slot == SlotUse::Held && !self.tx.sending_piece() {
            self.give_back_slot(ctx);
        }
        if matches!(self.state, State::Draining { .. }) && self.tx.is_idle() {
            // Everything went to a peer that reads: nothing to give back.
            self.pacing = None;
            self.close(ctx, "refused");
        }
    }

    /// Starts the send queue's next step, after `self.pause` if `delayed`.
    /// False if that failed and the connection closed.
    fn kick_tx(&mut self, delayed: bool, ctx: &mut Ctx<'_>) -> bool {
        let mut io = TxIo {
            ring: ctx.ring,
            inflight: &mut self.inflight,
            sock: self.stream.as_raw_fd(),
            key: self.key,
            method: ctx.method,
            delay: delayed.then_some(&self.pause),
            file: self.served.as_deref(),
            seal: self.link.as_deref_mut(),
            bufs: ctx.bufs,
        };
        match self.tx.kick(&mut io) {
            Ok(delayed) => {
                self.delay_armed |= delayed;
                true
            }
            Err(e) => {
                self.close(ctx, &e);
                false
            }
        }
    }

    /// The piece first in line may start only at `start`, more than
    /// [`KEEPALIVE`] away (the node's upload rate is taken by the pieces
    /// given their start before it). Rather than arm its send that far
    /// ahead, it keeps its place and start ([`Self::reserved`]; the ticks
    /// look again), and the downloader hears a `have` for it every
    /// [`KEEPALIVE`]: a request left unanswered with no byte from the
    /// peer for [`crate::download::STALL_TIMEOUT`] counts as stalled, and
    /// a bulk get of many files from a node with `--upload-rate` kept
    /// closing links whose pieces were queued that far back (the node
    /// went on to send them to nobody, and the get wedged). Meanwhile the
    /// connection reads on, and a downloader that leaves is seen leaving.
    fn wait_to_start(&mut self, (piece, start, len): (u32, Instant, u32), ctx: &mut Ctx<'_>) {
        self.reserved = Some((piece, start, len));
        if ctx.now < self.alive_due {
            return;
        }
        self.alive_due = ctx.now + KEEPALIVE;
        let mut out = Vec::new();
        peer::encode(&Message::Have(piece), &mut out);
        // Nothing is in flight: the piece is next in line.
        self.tx.push_bytes_first(out);
        self.kick_tx(false, ctx);
    }

    fn on_send(&mut self, op: Op, res: i32, flags: u32, ctx: &mut Ctx<'_>) {
        match self.tx.on_cqe(op, res, flags) {
            Ok(Step::Pending) => {}
            Ok(Step::Done { piece_sent }) => {
                // Its sealed buffer, spent, goes to the next piece sealed,
                // whichever connection's (see [`SealBufs`]).
                ctx.bufs.give(self.tx.take_spare());
                self.last_activity = ctx.now;
                if let State::Draining { until } = &mut self.state {
                    *until = ctx.now + LINGER;
                }
                if let Some(len) = piece_sent {
                    if tracing::enabled!(tracing::Level::TRACE) {
                        let to = self.stream.peer_addr().ok();
                        tracing::trace!(to = ?to, "piece sent");
                    }
                    // One piece per turn: the next waits in line again.
                    self.give_back_slot(ctx);
                    self.served_one(ctx.now);
                    if let Some(f) = &self.served {
                        f.uploaded.fetch_add(u64::from(len), Ordering::Relaxed);
                    }
                }
                self.kick(ctx);
                if self.paused && self.state == State::Open && self.tx.is_idle() {
                    self.resume(ctx);
                }
            }
            Err(e) => self.close(ctx, &e),
        }
    }

    /// A released upload slot was handed to this connection: it sends its
    /// piece, or gives the slot on at once if it has none any more.
    pub(crate) fn grant(&mut self, ctx: &mut Ctx<'_>) {
        self.slot = SlotUse::Held;
        if self.state == State::Closing {
            return self.give_back_slot(ctx);
        }
        self.last_activity = ctx.now;
        self.kick(ctx);
    }

    /// Whether its downloader understands `busy`.
    pub(crate) fn takes_busy(&self) -> bool {
        self.state == State::Open && self.session.takes_busy()
    }

    /// It waited [`crate::slots::BUSY_AFTER`] in line for an upload slot
    /// and left the line ([`SendSlots::overdue`]): the requests it queued
    /// are answered with `busy`, and its downloader asks elsewhere.
    pub(crate) fn bounce(&mut self, ctx: &mut Ctx<'_>) {
        if self.slot != SlotUse::Waiting {
            return;
        }
        self.slot = SlotUse::Free;
        let requests: Vec<(u32, u32, u32)> =
            self.tx.take_pieces().into_iter().map(|j| (j.piece, j.offset, j.len)).collect();
        let mut out = Vec::new();
        share::session_busy(&mut self.session, self.served.as_deref(), requests, ctx.now, &mut out);
        if !out.is_empty() {
            self.tx.push_bytes(out);
        }
        self.kick(ctx);
    }

    /// Leaves the upload slots: a slot held goes to the connection that
    /// waited longest; a place in line is given up.
    fn give_back_slot(&mut self, ctx: &mut Ctx<'_>) {
        match std::mem::replace(&mut self.slot, SlotUse::Free) {
            SlotUse::Held => ctx.handed.extend(ctx.slots.release(self.key, ctx.now)),
            SlotUse::Waiting => ctx.slots.forget(self.key),
            SlotUse::Free => {}
        }
    }

    /// Every tick: push `have`s, enforce the timeouts.
    pub(crate) fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        // A connection that reads nothing — a handshake for the next file
        // waits unread ([`Self::paused`]), or the downloader stopped
        // sending — learns that its downloader reset the link only here,
        // while a piece waits for the upload rate: it would learn it at
        // the piece's send, seconds on, each such piece counted among
        // those sending and paid for meanwhile (a stopped bulk get's links
        // held the next downloader at a twentieth of the rate for two
        // seconds). A downloader that only stopped sending still reads.
        let unread = self.paused || matches!(self.state, State::Draining { .. });
        let waits = self.reserved.is_some() || self.delay_armed;
        if self.state != State::Closing
            && unread
            && waits
            && crate::link::reset(self.stream.as_raw_fd())
        {
            return self.close(ctx, "the downloader reset the link");
        }
        match self.state {
            State::Closing => return,
            State::Draining { until } => {
                if ctx.now >= until {
                    self.close(ctx, "the peer did not take its last frames");
                }
                return;
            }
            State::Open => {}
        }
        if let Some(f) = &self.served {
            let group_gone =
                self.group.as_deref().is_some_and(|g| !ctx.table.still_admits(&f.meta().sha1, g));
            if f.is_withdrawn() || group_gone {
                return self.fail(ErrorCode::UnknownFile, crate::share::WITHDRAWN, ctx);
            }
        }
        if let Some(file) = &self.served {
            let mut out = Vec::new();
            file.haves_since(&mut self.announced, &mut self.seen_version, &mut out);
            if !out.is_empty() {
                self.tx.push_bytes(out);
            }
        }
        let limit = if self.session.is_open() {
            ctx.limits.idle_timeout
        } else {
            ctx.limits.handshake_timeout
        };
        if ctx.now.duration_since(self.last_activity) > limit && self.slot != SlotUse::Waiting {
            if self.tx.is_idle() {
                return self.fail(ErrorCode::Busy, "idle too long", ctx);
            }
            // Answers queued but none sent for that long: the peer does not
            // read. (The threads driver would block in sendfile for good.)
            return self.close(ctx, "send stalled");
        }
        self.kick(ctx);
    }
}
