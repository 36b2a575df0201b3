//! The peer protocol: messages between a downloader and a piece server, and
//! the server side's session state machine. No I/O here.
//!
//! Every message is one [`crate::wire`] frame. Payload layouts (integers are
//! big-endian):
//!
//! | type | message | payload |
//! |---|---|---|
//! | 1 | handshake | version u32, file id (whole-file SHA1) \[20\], user len u8, user, ticket len u16, ticket |
//! | 2 | bitfield | the server's [`Bitfield`] bytes for the file |
//! | 3 | have | piece u32 |
//! | 4 | request | piece u32, offset u32, len u32 |
//! | 5 | piece | piece u32, offset u32, data |
//! | 6 | cancel | piece u32, offset u32, len u32 |
//! | 7 | error | code u32, UTF-8 text |
//! | 8 | reject | piece u32, offset u32, len u32 |
//! | 9 | busy | piece u32, offset u32, len u32 |
//!
//! A session: the downloader sends `handshake`; the server answers `bitfield`
//! (or `error` and closes); then the downloader sends `request`s and the server
//! answers each with `piece` or, for a piece it does not have or does not
//! offer, `reject` naming the request (so that answers to requests the
//! downloader has cancelled can never be taken for another's), and sends
//! `have` as it gains pieces. A server whose upload slots
//! ([`crate::slots`]) kept a request waiting longer than
//! [`crate::slots::BUSY_AFTER`] answers it with `busy` (version 3): it
//! still has the piece but will not send it soon, and the downloader asks
//! another peer (and this one again later). The
//! downloader, in turn, tells the server what it holds: its `bitfield`
//! right after the handshake (when it holds any piece) and a `have` for
//! each piece it verifies. A server that seeds under a plan
//! ([`crate::seeding`]) uses them to choose what to offer; any other
//! checks and ignores them.
//!
//! One link carries one file at a time, and may go on to another: a
//! downloader done with a file sends a new `handshake` on the same link
//! (a bulk fetch of many files from the same nodes pays for one
//! connection and one Noise handshake per node, not per file). The
//! server ends the first session there and answers the new handshake as
//! on a fresh link (`bitfield`, or `error` and close). From version 4 it
//! first answers every request of the session before (a version 3 server
//! dropped those it had not started), so a downloader that has asked for
//! everything it wants of a file may send the next file's handshake and
//! requests right behind (pipelined: a far server then serves two files
//! per round trip on one link): what arrives up to the answer to the new
//! handshake is the file before's. A downloader that switches files only
//! when done drops whatever arrives between its new handshake and that
//! answer. A node from before this answered a second handshake with an
//! `error` and closed; the downloader then connects again.

use thiserror::Error;

use std::time::Instant;

use crate::meta::{Bitfield, Geometry, Sha1Digest, PIECE_LEN, SHA1_LEN};
use crate::seeding::{SeedPlan, SeedView};
use crate::wire::{self, DecodeError, HEADER_LEN};

/// Protocol version sent in the handshake (2: `reject`, and the
/// downloader's bitfield and `have`s; 3: `busy`; 4: every request taken
/// before a new handshake on the link is answered, so a downloader may
/// send the next file's handshake behind its last requests).
pub const VERSION: u32 = 4;
/// The first version whose server answers every request taken before a
/// new handshake on the link (a version 3 server dropped the ones it had
/// not started).
pub const PIPELINE_VERSION: u32 = 4;
/// Oldest version a server still admits: a downloader of version 2 is
/// served as before, without `busy` answers.
pub const MIN_VERSION: u32 = 2;
/// Largest block a request may ask for: one whole piece.
pub const MAX_BLOCK: u32 = PIECE_LEN as u32;
/// Largest peer frame: a piece message carrying [`MAX_BLOCK`] bytes.
pub const MAX_FRAME: u32 = HEADER_LEN as u32 + 8 + MAX_BLOCK;
/// Longest error text.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Longest ticket.
pub const MAX_TICKET: usize = 4096;

/// Frame types.
pub mod kind {
    /// handshake
    pub const HANDSHAKE: u32 = 1;
    /// bitfield
    pub const BITFIELD: u32 = 2;
    /// have
    pub const HAVE: u32 = 3;
    /// request
    pub const REQUEST: u32 = 4;
    /// piece
    pub const PIECE: u32 = 5;
    /// cancel
    pub const CANCEL: u32 = 6;
    /// error
    pub const ERROR: u32 = 7;
    /// reject
    pub const REJECT: u32 = 8;
    /// busy
    pub const BUSY: u32 = 9;
}

/// Why a peer refuses or ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message is malformed or out of sequence.
    BadMessage,
    /// The protocol version is not supported.
    Version,
    /// This node does not share that file.
    UnknownFile,
    /// The ticket does not admit this user to this file.
    BadTicket,
    /// The piece, offset or length is outside the file.
    OutOfRange,
    /// This node does not have that piece. Version 1 answered requests
    /// with it (the downloader took it for its oldest request); version 2
    /// answers with a `reject` naming the request, and an error with this
    /// code, like any, ends the session.
    NotAvailable,
    /// Too many connections or outstanding requests.
    Busy,
    /// Any other code (from a newer peer).
    Other(u32),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn to_u32(self) -> u32 {
        match self {
            ErrorCode::BadMessage => 1,
            ErrorCode::Version => 2,
            ErrorCode::UnknownFile => 3,
            ErrorCode::BadTicket => 4,
            ErrorCode::OutOfRange => 5,
            ErrorCode::NotAvailable => 6,
            ErrorCode::Busy => 7,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code from the wire.
    pub fn from_u32(n: u32) -> Self {
        match n {
            1 => ErrorCode::BadMessage,
            2 => ErrorCode::Version,
            3 => ErrorCode::UnknownFile,
            4 => ErrorCode::BadTicket,
            5 => ErrorCode::OutOfRange,
            6 => ErrorCode::NotAvailable,
            7 => ErrorCode::Busy,
            n => ErrorCode::Other(n),
        }
    }
}

/// A peer message, borrowing its variable parts from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// Opens a session for one file.
    Handshake {
        /// Protocol version.
        version: u32,
        /// The file's whole-file SHA1.
        file_id: Sha1Digest,
        /// The downloading user.
        user: &'a str,
        /// The tracker-issued ticket.
        ticket: &'a [u8],
    },
    /// The pieces the server has.
    Bitfield(&'a [u8]),
    /// The server gained a piece.
    Have(u32),
    /// Asks for `len` bytes of `piece` from `offset`.
    Request {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Bytes wanted.
        len: u32,
    },
    /// Bytes of a piece.
    Piece {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// The bytes.
        data: &'a [u8],
    },
    /// Withdraws a request.
    Cancel {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Bytes wanted.
        len: u32,
    },
    /// The server will not send this request's bytes: it does not have
    /// the piece, or does not offer it to this downloader. Not fatal.
    Reject {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Bytes asked for.
        len: u32,
    },
    /// The server will not send this request's bytes soon: its upload
    /// slots are taken by others. It still has the piece; the downloader
    /// asks elsewhere, and this peer again later. Not fatal.
    Busy {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Bytes asked for.
        len: u32,
    },
    /// A refusal or the reason for a disconnect.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        text: &'a str,
    },
}

/// Why bytes are not a valid peer message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeerDecodeError {
    /// More bytes are needed (not an error of the peer).
    #[error("need {0} more bytes")]
    NeedMore(usize),
    /// The frame header is invalid.
    #[error("bad frame: {0}")]
    Frame(DecodeError),
    /// The frame type is unknown.
    #[error("unknown message type {0}")]
    UnknownKind(u32),
    /// The payload does not fit its message type.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Decodes the message at the start of `buf`; returns it and the bytes used.
pub fn decode(buf: &[u8]) -> Result<(Message<'_>, usize), PeerDecodeError> {
    let (frame, used) = wire::decode(buf, MAX_FRAME).map_err(|e| match e {
        DecodeError::NeedMore(n) => PeerDecodeError::NeedMore(n),
        e => PeerDecodeError::Frame(e),
    })?;
    Ok((decode_payload(frame.kind, frame.payload)?, used))
}

/// Decodes a message from its frame type and payload.
pub fn decode_payload(kind: u32, p: &[u8]) -> Result<Message<'_>, PeerDecodeError> {
    let mut r = Reader(p);
    let msg = match kind {
        kind::HANDSHAKE => {
            let bad = PeerDecodeError::Malformed("handshake");
            let version = r.u32().ok_or(bad.clone())?;
            let id: [u8; SHA1_LEN] =
                r.take(SHA1_LEN).ok_or(bad.clone())?.try_into().map_err(|_| bad.clone())?;
            let ulen = r.u8().ok_or(bad.clone())? as usize;
            let user =
                std::str::from_utf8(r.take(ulen).ok_or(bad.clone())?).map_err(|_| bad.clone())?;
            let tlen = r.u16().ok_or(bad.clone())? as usize;
            let ticket = r.take(tlen).ok_or(bad.clone())?;
            if !r.0.is_empty() || tlen > MAX_TICKET {
                return Err(bad);
            }
            Message::Handshake { version, file_id: Sha1Digest(id), user, ticket }
        }
        kind::BITFIELD => Message::Bitfield(p),
        kind::HAVE => {
            let piece =
                r.u32().filter(|_| r.0.is_empty()).ok_or(PeerDecodeError::Malformed("have"))?;
            Message::Have(piece)
        }
        kind::REQUEST | kind::CANCEL | kind::REJECT | kind::BUSY => {
            let name = match kind {
                kind::REQUEST => "request",
                kind::CANCEL => "cancel",
                kind::REJECT => "reject",
                _ => "busy",
            };
            let (piece, offset, len) = r.three().ok_or(PeerDecodeError::Malformed(name))?;
            match kind {
                kind::REQUEST => Message::Request { piece, offset, len },
                kind::CANCEL => Message::Cancel { piece, offset, len },
                kind::REJECT => Message::Reject { piece, offset, len },
                _ => Message::Busy { piece, offset, len },
            }
        }
        kind::PIECE => {
            let bad = PeerDecodeError::Malformed("piece");
            let piece = r.u32().ok_or(bad.clone())?;
            let offset = r.u32().ok_or(bad)?;
            Message::Piece { piece, offset, data: r.0 }
        }
        kind::ERROR => {
            let bad = PeerDecodeError::Malformed("error");
            let code = r.u32().ok_or(bad.clone())?;
            if r.0.len() > MAX_ERROR_TEXT {
                return Err(bad);
            }
            let text = std::str::from_utf8(r.0).map_err(|_| bad)?;
            Message::Error { code: ErrorCode::from_u32(code), text }
        }
        other => return Err(PeerDecodeError::UnknownKind(other)),
    };
    Ok(msg)
}

/// Appends the frame of `msg` to `out`.
pub fn encode(msg: &Message<'_>, out: &mut Vec<u8>) {
    let mut p = Vec::new();
    let kind = match msg {
        Message::Handshake { version, file_id, user, ticket } => {
            // Lengths are bounded by the name rules and MAX_TICKET; clamp anyway.
            let user = &user.as_bytes()[..user.len().min(255)];
            let ticket = &ticket[..ticket.len().min(MAX_TICKET)];
            p.extend(version.to_be_bytes());
            p.extend(file_id.0);
            p.push(user.len() as u8);
            p.extend(user);
            p.extend((ticket.len() as u16).to_be_bytes());
            p.extend(ticket);
            kind::HANDSHAKE
        }
        Message::Bitfield(bits) => {
            p.extend(*bits);
            kind::BITFIELD
        }
        Message::Have(piece) => {
            p.extend(piece.to_be_bytes());
            kind::HAVE
        }
        Message::Request { piece, offset, len }
        | Message::Cancel { piece, offset, len }
        | Message::Reject { piece, offset, len }
        | Message::Busy { piece, offset, len } => {
            p.extend(piece.to_be_bytes());
            p.extend(offset.to_be_bytes());
            p.extend(len.to_be_bytes());
            match msg {
                Message::Request { .. } => kind::REQUEST,
                Message::Cancel { .. } => kind::CANCEL,
                Message::Reject { .. } => kind::REJECT,
                _ => kind::BUSY,
            }
        }
        Message::Piece { piece, offset, data } => {
            if encode_piece_header(*piece, *offset, data.len(), out).is_some() {
                out.extend(*data);
            }
            return;
        }
        Message::Error { code, text } => {
            let mut end = text.len().min(MAX_ERROR_TEXT);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            p.extend(code.to_u32().to_be_bytes());
            p.extend(&text.as_bytes()[..end]);
            kind::ERROR
        }
    };
    wire::encode(kind, &p, out);
}

/// Appends the header of a piece message whose `len` data bytes the caller
/// sends from elsewhere (sendfile, splice): frame header, piece, offset.
pub fn encode_piece_header(piece: u32, offset: u32, len: usize, out: &mut Vec<u8>) -> Option<()> {
    out.extend(wire::header(kind::PIECE, 8 + len)?);
    out.extend(piece.to_be_bytes());
    out.extend(offset.to_be_bytes());
    Some(())
}

/// Bytes before a piece's data in a piece message.
pub const PIECE_HEADER_LEN: usize = HEADER_LEN + 8;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn three(&mut self) -> Option<(u32, u32, u32)> {
        let t = (self.u32()?, self.u32()?, self.u32()?);
        self.0.is_empty().then_some(t)
    }
}

/// What the server driver should do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    /// Look up the file and check the ticket; then call
    /// [`ServerSession::accept`] (and send the bitfield) or refuse.
    Admit {
        /// The wanted file.
        file_id: Sha1Digest,
        /// The downloading user.
        user: String,
        /// The ticket.
        ticket: Vec<u8>,
    },
    /// Send these bytes of the file (already range-checked); when sent, call
    /// [`ServerSession::served`].
    Serve {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Byte offset within the file.
        file_offset: u64,
        /// Bytes to send.
        len: u32,
    },
    /// Drop a queued request for this block, if not sent yet.
    Cancel {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
    },
    /// Send a `reject` for this request, after what is queued: this node
    /// does not have or does not offer the piece.
    Reject {
        /// Piece index.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Bytes asked for.
        len: u32,
    },
    /// Nothing to do.
    Nothing,
}

/// A refusal: send an error frame with this code and text; close the
/// connection when `fatal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    /// The code to send.
    pub code: ErrorCode,
    /// The text to send.
    pub text: String,
    /// Whether to disconnect after sending it.
    pub fatal: bool,
}

impl Refuse {
    fn fatal(code: ErrorCode, text: impl Into<String>) -> Self {
        Self { code, text: text.into(), fatal: true }
    }
}

/// The server side of one peer session.
#[derive(Debug)]
pub struct ServerSession {
    geometry: Option<Geometry>,
    outstanding: u32,
    max_outstanding: u32,
    /// For a file served under a [`SeedPlan`]: what this downloader was
    /// offered and is known to hold.
    seeding: Option<SeedView>,
    /// The downloader's protocol version (0 before its handshake).
    version: u32,
    /// The user its ticket names, once admitted (the server counts each
    /// user's sessions of a file).
    user: Option<Box<str>>,
}

impl ServerSession {
    /// A session that allows up to `max_outstanding` unanswered requests.
    pub fn new(max_outstanding: u32) -> Self {
        Self {
            geometry: None,
            outstanding: 0,
            max_outstanding,
            seeding: None,
            version: 0,
            user: None,
        }
    }

    /// The user admitted on this session (its last handshake's).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Records the user admitted on this session.
    pub fn set_user(&mut self, user: &str) {
        self.user = Some(user.into());
    }

    /// Whether the downloader understands `busy` (version 3 on): only then
    /// may a request that waited too long for an upload slot
    /// ([`crate::slots::SendSlots::overdue`]) be answered with one; an
    /// older downloader waits.
    pub fn takes_busy(&self) -> bool {
        self.geometry.is_some() && self.version >= 3
    }

    /// Whether every request taken before a new handshake on the link is
    /// to be answered before the handshake is (the downloader's version is
    /// [`PIPELINE_VERSION`] or later): else those not started yet are
    /// dropped.
    pub fn answers_all_before_switch(&self) -> bool {
        self.version >= PIPELINE_VERSION
    }

    /// The driver admitted the downloader to a file it seeds under a plan
    /// ([`crate::seeding`]): `view` is the plan's new session, whose
    /// [`SeedView::told`] is the bitfield to send. Later messages go
    /// through [`on_message_at`](Self::on_message_at) with the same plan.
    pub fn accept_seeding(&mut self, geometry: Geometry, mut view: SeedView) {
        self.geometry = Some(geometry);
        view.set_defers(self.version >= 3);
        self.seeding = Some(view);
    }

    /// The driver admitted the downloader: under `plan` (a file it seeds,
    /// and the time now) as [`accept_seeding`](Self::accept_seeding) does,
    /// returning the bitfield to send (the plan's first offers); without,
    /// as [`accept`](Self::accept) does, returning `None` (send the pieces
    /// held).
    pub fn accept_with(
        &mut self,
        geometry: Geometry,
        plan: Option<(&mut SeedPlan, Instant)>,
    ) -> Option<Bitfield> {
        match plan {
            Some((plan, now)) => {
                let view = plan.open(now);
                let told = view.told().clone();
                self.accept_seeding(geometry, view);
                Some(told)
            }
            None => {
                self.accept(geometry);
                None
            }
        }
    }

    /// Pieces offered since the last call (seeding sessions only): send a
    /// `have` for each, in order.
    pub fn take_offers(&mut self) -> Vec<u32> {
        self.seeding.as_mut().map(SeedView::take_offers).unwrap_or_default()
    }

    /// Whether the handshake was accepted.
    pub fn is_open(&self) -> bool {
        self.geometry.is_some()
    }

    /// The driver admitted the downloader to a file of this geometry.
    pub fn accept(&mut self, geometry: Geometry) {
        self.geometry = Some(geometry);
    }

    /// The session ended: a plan it was opened under forgets its offers.
    /// Any later call is a no-op.
    pub fn close_at(&mut self, plan: &mut SeedPlan) {
        if let Some(view) = self.seeding.take() {
            plan.close(view);
        }
    }

    /// A request was answered (sent or refused).
    pub fn served(&mut self) {
        self.served_at(None);
    }

    /// [`served`](Self::served) for a session accepted with
    /// [`accept_seeding`](Self::accept_seeding): the plan learns that the
    /// piece left, and may offer more (see [`take_offers`](Self::take_offers)).
    pub fn served_at(&mut self, plan: Option<(&mut SeedPlan, Instant)>) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if let (Some(view), Some((plan, now))) = (&mut self.seeding, plan) {
            plan.on_sent(view, now);
        }
    }

    /// The next request to go out is answered with a `reject` whatever the
    /// plan says (the file is no longer served): it counts as answered.
    pub fn rejected(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// The request for `piece` is next to go out of a session accepted
    /// with [`accept_seeding`](Self::accept_seeding): true if the plan
    /// keeps it back ([`SeedPlan::withhold`]) — answer it with a `reject`
    /// instead (it counts as answered), then send the offers
    /// ([`take_offers`](Self::take_offers)).
    pub fn withhold_at(&mut self, piece: u32, plan: Option<(&mut SeedPlan, Instant)>) -> bool {
        let (Some(view), Some((plan, now))) = (&mut self.seeding, plan) else { return false };
        if !plan.withhold(view, piece, now) {
            return false;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        true
    }

    /// The request for `piece` is next to go out of a session accepted
    /// with [`accept_seeding`](Self::accept_seeding), and not
    /// [withheld](Self::withhold_at): true if the plan defers it
    /// ([`SeedPlan::defer`]; only a downloader that
    /// [takes `busy`](Self::takes_busy)) — answer it with a `busy` instead
    /// (it counts as answered), then send the offers.
    pub fn defers_at(&mut self, piece: u32, plan: Option<(&mut SeedPlan, Instant)>) -> bool {
        let (Some(view), Some((plan, now))) = (&mut self.seeding, plan) else { return false };
        if !plan.defer(view, piece, now) {
            return false;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        true
    }

    /// `piece` starts going out on this session, which serves a file
    /// under `plan`: counted for the session if it accepted seeding.
    pub fn sending_at(&mut self, piece: u32, plan: &mut SeedPlan) {
        match &mut self.seeding {
            Some(view) => plan.note_sent_to(view, piece),
            None => plan.note_sent(piece),
        }
    }

    /// Handles one message from the downloader. `has(piece)` says whether
    /// this node has a piece.
    pub fn on_message(
        &mut self,
        msg: &Message<'_>,
        has: impl Fn(u32) -> bool,
    ) -> Result<ServerAction, Refuse> {
        self.on_message_at(msg, has, None)
    }

    /// [`on_message`](Self::on_message) for a session accepted with
    /// [`accept_seeding`](Self::accept_seeding): `plan` is the file's
    /// [`SeedPlan`] and the time now. Requests for pieces the plan does
    /// not offer this downloader are answered with a `reject`; its
    /// bitfield and `have`s tell the plan what it holds.
    pub fn on_message_at(
        &mut self,
        msg: &Message<'_>,
        has: impl Fn(u32) -> bool,
        plan: Option<(&mut SeedPlan, Instant)>,
    ) -> Result<ServerAction, Refuse> {
        let Some(geometry) = self.geometry else {
            return match msg {
                Message::Handshake { version, .. } if !(MIN_VERSION..=VERSION).contains(version) => {
                    Err(Refuse::fatal(
                        ErrorCode::Version,
                        format!(
                            "protocol version {version} not supported (this node speaks {MIN_VERSION} to {VERSION})"
                        ),
                    ))
                }
                Message::Handshake { version, file_id, user, ticket } => {
                    self.version = *version;
                    Ok(ServerAction::Admit {
                        file_id: *file_id,
                        user: (*user).to_owned(),
                        ticket: ticket.to_vec(),
                    })
                }
                _ => Err(Refuse::fatal(ErrorCode::BadMessage, "expected a handshake first")),
            };
        };
        match msg {
            // The downloader goes on to another file on this link: this
            // session ends as if closed, and the handshake is answered as
            // on a new link.
            Message::Handshake { version, .. } if (MIN_VERSION..=VERSION).contains(version) => {
                if let (Some(view), Some((plan, _))) = (self.seeding.take(), plan) {
                    plan.close(view);
                }
                self.geometry = None;
                self.outstanding = 0;
                self.on_message_at(msg, has, None)
            }
            Message::Request { piece, offset, len } => {
                let Some(index) = geometry.piece(u64::from(*piece)) else {
                    return Err(Refuse::fatal(ErrorCode::OutOfRange, format!("no piece {piece}")));
                };
                let piece_len = geometry.len_of(index);
                let end = u64::from(*offset) + u64::from(*len);
                if *len == 0 || *len > MAX_BLOCK || end > piece_len {
                    return Err(Refuse::fatal(
                        ErrorCode::OutOfRange,
                        format!(
                            "bytes {offset}..{end} are outside piece {piece} ({piece_len} bytes)"
                        ),
                    ));
                }
                if self.outstanding >= self.max_outstanding {
                    return Err(Refuse::fatal(ErrorCode::Busy, "too many outstanding requests"));
                }
                let offered = has(*piece)
                    && match (&mut self.seeding, plan) {
                        (Some(view), Some((plan, now))) => plan.on_request(view, *piece, now),
                        _ => true,
                    };
                if !offered {
                    return Ok(ServerAction::Reject { piece: *piece, offset: *offset, len: *len });
                }
                self.outstanding += 1;
                let file_offset = geometry.range(index).start + u64::from(*offset);
                Ok(ServerAction::Serve { piece: *piece, offset: *offset, file_offset, len: *len })
            }
            Message::Cancel { piece, offset, .. } => {
                Ok(ServerAction::Cancel { piece: *piece, offset: *offset })
            }
            // What the downloader holds: its bitfield after the handshake,
            // a `have` per piece it verifies.
            Message::Have(piece) => {
                if geometry.piece(u64::from(*piece)).is_none() {
                    return Err(Refuse::fatal(ErrorCode::OutOfRange, format!("have {piece}")));
                }
                if let (Some(view), Some((plan, now))) = (&mut self.seeding, plan) {
                    plan.on_have(view, *piece, now);
                }
                Ok(ServerAction::Nothing)
            }
            Message::Bitfield(bytes) => {
                let Some(bits) = parse_bitfield(bytes, geometry.piece_count() as u32) else {
                    return Err(Refuse::fatal(ErrorCode::BadMessage, "bad bitfield"));
                };
                if let (Some(view), Some((plan, now))) = (&mut self.seeding, plan) {
                    plan.on_bitfield(view, &bits, now);
                }
                Ok(ServerAction::Nothing)
            }
            Message::Error { .. } => Ok(ServerAction::Nothing),
            Message::Handshake { version, .. } => Err(Refuse::fatal(
                ErrorCode::Version,
                format!(
                    "protocol version {version} not supported (this node speaks {MIN_VERSION} to {VERSION})"
                ),
            )),
            Message::Piece { .. } | Message::Reject { .. } | Message::Busy { .. } => {
                Err(Refuse::fatal(ErrorCode::BadMessage, "unexpected message"))
            }
        }
    }
}

/// Checks a bitfield message against the file's piece count.
pub fn parse_bitfield(bytes: &[u8], pieces: u32) -> Option<Bitfield> {
    Bitfield::from_bytes(bytes, pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(msg: Message<'_>) {
        let mut out = Vec::new();
        encode(&msg, &mut out);
        let (back, used) = decode(&out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(back, msg);
    }

    #[test]
    fn golden_request() {
        let mut out = Vec::new();
        encode(&Message::Request { piece: 2, offset: 0, len: 524_288 }, &mut out);
        assert_eq!(
            out,
            [
                0, 0, 0, 20, // len: 8 header + 12 payload
                0, 0, 0, 4, // type 4: request
                0, 0, 0, 2, // piece 2
                0, 0, 0, 0, // offset 0
                0, 8, 0, 0, // len 524288 = 0x80000
            ]
        );
    }

    #[test]
    fn golden_handshake() {
        let mut out = Vec::new();
        let msg = Message::Handshake {
            version: 1,
            file_id: Sha1Digest([0xaa; 20]),
            user: "bo",
            ticket: b"t",
        };
        encode(&msg, &mut out);
        let mut want = vec![0, 0, 0, 38, 0, 0, 0, 1]; // len 8 + 30, type 1
        want.extend([0, 0, 0, 1]); // version 1
        want.extend([0xaa; 20]); // file id
        want.extend([2, b'b', b'o']); // user "bo"
        want.extend([0, 1, b't']); // ticket "t"
        assert_eq!(out, want);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Handshake {
            version: 1,
            file_id: Sha1Digest([3; 20]),
            user: "alice",
            ticket: &[1, 2, 3],
        });
        round_trip(Message::Bitfield(&[0xf0, 0x80]));
        round_trip(Message::Have(77));
        round_trip(Message::Request { piece: 1, offset: 2, len: 3 });
        round_trip(Message::Piece { piece: 9, offset: 0, data: b"bytes" });
        round_trip(Message::Cancel { piece: 1, offset: 0, len: 5 });
        round_trip(Message::Reject { piece: 2, offset: 0, len: 7 });
        round_trip(Message::Busy { piece: 3, offset: 0, len: 9 });
        round_trip(Message::Error { code: ErrorCode::NotAvailable, text: "later" });
        round_trip(Message::Error { code: ErrorCode::Other(99), text: "" });
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert_eq!(decode_payload(kind::HAVE, &[0, 0, 1]), Err(PeerDecodeError::Malformed("have")));
        assert_eq!(
            decode_payload(kind::REQUEST, &[0; 13]),
            Err(PeerDecodeError::Malformed("request"))
        );
        assert_eq!(
            decode_payload(kind::ERROR, &[0, 0, 0, 1, 0xff]),
            Err(PeerDecodeError::Malformed("error"))
        );
        assert_eq!(decode_payload(99, &[]), Err(PeerDecodeError::UnknownKind(99)));
        // Oversized frames never reach the payload decoder.
        let mut big = (MAX_FRAME + 1).to_be_bytes().to_vec();
        big.extend(kind::PIECE.to_be_bytes());
        assert!(matches!(decode(&big), Err(PeerDecodeError::Frame(DecodeError::TooLong { .. }))));
    }

    #[test]
    fn server_session_checks_sequence_range_and_caps() {
        let g = Geometry::new(PIECE_LEN + 10);
        let mut s = ServerSession::new(2);
        let req = |piece, offset, len| Message::Request { piece, offset, len };
        assert!(
            s.on_message(&req(0, 0, 1), |_| true).unwrap_err().fatal,
            "request before handshake"
        );
        let hs = Message::Handshake {
            version: VERSION,
            file_id: Sha1Digest([1; 20]),
            user: "u",
            ticket: b"",
        };
        assert!(matches!(s.on_message(&hs, |_| true), Ok(ServerAction::Admit { .. })));
        let old =
            Message::Handshake { version: 1, file_id: Sha1Digest([1; 20]), user: "u", ticket: b"" };
        assert_eq!(
            ServerSession::new(1).on_message(&old, |_| true).unwrap_err().code,
            ErrorCode::Version
        );
        s.accept(g);
        assert_eq!(
            s.on_message(&req(1, 0, 10), |_| true),
            Ok(ServerAction::Serve { piece: 1, offset: 0, file_offset: PIECE_LEN, len: 10 })
        );
        assert_eq!(s.on_message(&req(1, 0, 11), |_| true).unwrap_err().code, ErrorCode::OutOfRange);
        assert_eq!(s.on_message(&req(2, 0, 1), |_| true).unwrap_err().code, ErrorCode::OutOfRange);
        assert_eq!(s.on_message(&req(0, 0, 0), |_| true).unwrap_err().code, ErrorCode::OutOfRange);
        assert_eq!(
            s.on_message(&req(0, 0, 5), |_| false),
            Ok(ServerAction::Reject { piece: 0, offset: 0, len: 5 })
        );
        s.on_message(&req(0, 0, 5), |_| true).unwrap();
        assert_eq!(s.on_message(&req(0, 0, 5), |_| true).unwrap_err().code, ErrorCode::Busy);
        s.served();
        s.on_message(&req(0, 0, 5), |_| true).unwrap();
        // A second handshake goes on to another file: the session starts
        // over (admission, then requests of the new file's geometry).
        assert!(matches!(s.on_message(&hs, |_| true), Ok(ServerAction::Admit { .. })));
        assert!(!s.is_open());
        assert!(s.on_message(&req(0, 0, 1), |_| true).unwrap_err().fatal, "before admission");
        s.accept(Geometry::new(10));
        assert_eq!(s.on_message(&req(1, 0, 1), |_| true).unwrap_err().code, ErrorCode::OutOfRange);
        for _ in 0..2 {
            assert!(matches!(
                s.on_message(&req(0, 0, 5), |_| true),
                Ok(ServerAction::Serve { .. })
            ));
        }
        assert_eq!(s.on_message(&old, |_| true).unwrap_err().code, ErrorCode::Version);
    }

    /// Versions 2 and 3 are admitted; only a downloader of version 3 may
    /// be answered `busy`, and only once admitted.
    #[test]
    fn busy_answers_go_only_to_downloaders_that_understand_them() {
        let hs = |version| Message::Handshake {
            version,
            file_id: Sha1Digest([1; 20]),
            user: "u",
            ticket: b"",
        };
        for (version, admitted, busy) in [(1, false, false), (2, true, false), (3, true, true)] {
            let mut s = ServerSession::new(4);
            let answer = s.on_message(&hs(version), |_| true);
            assert_eq!(matches!(answer, Ok(ServerAction::Admit { .. })), admitted, "{version}");
            assert!(!s.takes_busy(), "not before admission");
            if admitted {
                s.accept(Geometry::new(10));
                assert_eq!(s.takes_busy(), busy, "{version}");
            }
        }
        let refused = ServerSession::new(1).on_message(&hs(VERSION + 1), |_| true).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Version);
        // A busy from a downloader is out of place.
        let mut s = ServerSession::new(4);
        s.on_message(&hs(VERSION), |_| true).unwrap();
        s.accept(Geometry::new(10));
        let busy = Message::Busy { piece: 0, offset: 0, len: 1 };
        assert!(s.on_message(&busy, |_| true).unwrap_err().fatal);
    }

    /// A session under a seeding plan that goes on to another file gives
    /// its offers back to the plan, like a closed one.
    #[test]
    fn a_new_handshake_closes_the_seeding_session() {
        use crate::seeding::SeedPlan;
        let g = Geometry::new(4 * PIECE_LEN);
        let t = Instant::now();
        let mut plan = SeedPlan::new(4, 1);
        let _first = plan.open(t);
        let mut s = ServerSession::new(8);
        let view = plan.open(t);
        let offered = (0..4).find(|&i| view.told().get(i)).unwrap();
        s.accept_seeding(g, view);
        assert_eq!(plan.copies(offered), 1);
        let hs = Message::Handshake {
            version: VERSION,
            file_id: Sha1Digest([2; 20]),
            user: "u",
            ticket: b"",
        };
        assert!(matches!(
            s.on_message_at(&hs, |_| true, Some((&mut plan, t))),
            Ok(ServerAction::Admit { .. })
        ));
        assert_eq!(plan.copies(offered), 0, "the offer no longer counts as on its way");
        s.close_at(&mut plan);
        assert_eq!(plan.copies(offered), 0);
    }

    #[test]
    fn server_session_checks_what_the_downloader_holds_and_follows_a_plan() {
        use crate::seeding::SeedPlan;
        let g = Geometry::new(4 * PIECE_LEN);
        let t = Instant::now();
        let mut s = ServerSession::new(8);
        s.accept(g);
        assert_eq!(s.on_message(&Message::Have(3), |_| true), Ok(ServerAction::Nothing));
        assert_eq!(s.on_message(&Message::Bitfield(&[0xf0]), |_| true), Ok(ServerAction::Nothing));
        assert_eq!(
            s.on_message(&Message::Have(4), |_| true).unwrap_err().code,
            ErrorCode::OutOfRange
        );
        let bad = s.on_message(&Message::Bitfield(&[0xf8]), |_| true).unwrap_err();
        assert!(bad.fatal && bad.code == ErrorCode::BadMessage, "a spare bit set");
        // Under a plan: a piece offered elsewhere is not available here.
        let mut plan = SeedPlan::new(4, 1);
        let _first = plan.open(t);
        let mut a = ServerSession::new(8);
        a.accept_seeding(g, plan.open(t));
        let mut b = ServerSession::new(8);
        let b_view = plan.open(t);
        let b_offer = (0..4).find(|&i| b_view.told().get(i)).unwrap();
        b.accept_seeding(g, b_view);
        let req = Message::Request { piece: b_offer, offset: 0, len: 1 };
        assert_eq!(
            a.on_message_at(&req, |_| true, Some((&mut plan, t))),
            Ok(ServerAction::Reject { piece: b_offer, offset: 0, len: 1 })
        );
        assert!(matches!(
            b.on_message_at(&req, |_| true, Some((&mut plan, t))),
            Ok(ServerAction::Serve { .. })
        ));
        // Asking took b's offer and raised its target to two; with the
        // piece sent, both are new offers.
        b.served_at(Some((&mut plan, t)));
        assert_eq!(b.take_offers().len(), 2);
        b.close_at(&mut plan);
        b.close_at(&mut plan);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
            for k in 0..9 {
                let _ = decode_payload(k, &bytes);
            }
        }

        #[test]
        fn every_prefix_needs_more(piece: u32, offset: u32, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            encode(&Message::Piece { piece, offset, data: &data }, &mut out);
            for n in 0..out.len() {
                let is_need_more = matches!(decode(&out[..n]), Err(PeerDecodeError::NeedMore(_)));
                prop_assert!(is_need_more);
            }
            let (msg, _) = decode(&out).unwrap();
            prop_assert_eq!(msg, Message::Piece { piece, offset, data: &data });
        }

        #[test]
        fn request_cancel_round_trip(piece: u32, offset: u32, len: u32) {
            round_trip(Message::Request { piece, offset, len });
            round_trip(Message::Cancel { piece, offset, len });
        }
    }
}
