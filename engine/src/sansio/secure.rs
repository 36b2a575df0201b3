//! Encrypted, authenticated links: the Noise XX handshake and its record
//! layer over any byte stream, with no I/O.
//!
//! Construction: `Noise_XX_25519_AESGCM_SHA256` from the `snow` crate (the
//! `ring` resolver, so AES-GCM runs on the CPU's AES instructions), chosen
//! by measurement on the machine it ships for (docs/SECURITY.md). XX lets
//! both ends prove a long-term X25519 key without knowing it beforehand; the
//! initiator checks the responder's key against the one it expects before
//! it reveals its own (third message), and the responder learns the
//! initiator's key when the handshake ends.
//!
//! On the wire every Noise message — handshake or transport — is a record:
//! a 2-byte big-endian length, then that many bytes (at most 65535, the
//! Noise maximum, so a record can never ask for more memory than that).
//! The protocol's own frames ride inside, in order, split across records
//! however the sender likes.
//!
//! [`Link`] is the state machine: bytes in ([`Link::recv`]), bytes out,
//! plaintext queued before the handshake ends is sent as soon as it does.
//! Drivers: `crate::secure_io` (tokio streams).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The Noise protocol name (pattern, DH, cipher, hash).
pub const PATTERN: &str = "Noise_XX_25519_AESGCM_SHA256";
/// A record's length prefix.
pub const RECORD_HEADER: usize = 2;
/// The largest Noise message, so the largest record body.
pub const MAX_MESSAGE: usize = 65535;
/// The AEAD tag each transport message carries.
pub const TAG_LEN: usize = 16;
/// The most plaintext one record carries.
pub const MAX_PLAIN: usize = MAX_MESSAGE - TAG_LEN;

/// What the client↔tracker and tracker↔tracker port speaks: bound into
/// every handshake (the Noise prologue), so a handshake made for one kind
/// of link cannot be replayed on another.
pub const CONTROL_PROLOGUE: &[u8] = b"ringshare control v1";
/// What a piece server's port speaks (downloader ↔ piece server).
pub const PEER_PROLOGUE: &[u8] = b"ringshare peer v1";

/// Whether the first two bytes of a connection to a piece server open a
/// plaintext peer protocol frame (a length below 64 KiB: `00 00`) rather
/// than the first handshake record (its length, `00 20`). Served only by a
/// piece server that allows plaintext, to downloaders that asked for it.
pub fn is_plaintext_preface(first: [u8; 2]) -> bool {
    first == [0, 0]
}

/// A long-term public key (X25519), shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(s, &mut key)
            .map_err(|_| format!("{s:?} is not a public key (64 hex digits)"))?;
        Ok(PublicKey(key))
    }
}

/// A long-term key pair. `Debug` shows the public half only.
#[derive(Clone)]
pub struct Keypair {
    secret: [u8; 32],
    public: PublicKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Keypair {
    /// A fresh key pair from the OS random source.
    pub fn generate() -> Self {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        Self::from_secret(secret.to_bytes())
    }

    /// The pair whose secret half is `secret` (the public half is derived).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let s = x25519_dalek::StaticSecret::from(secret);
        let public = PublicKey(x25519_dalek::PublicKey::from(&s).to_bytes());
        Self { secret: s.to_bytes(), public }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret half, for writing the key file.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// Why a link failed. Every error is final: the connection must be closed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecureError {
    /// The handshake failed (a message that does not decrypt, a bad key,
    /// a message out of turn, a payload where none belongs).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The other end proved a key other than the one expected.
    #[error("the other end's key is {got}, expected {expected}")]
    WrongKey {
        /// The key expected (listed or pinned).
        expected: PublicKey,
        /// The key the other end proved.
        got: PublicKey,
    },
    /// A transport record did not decrypt (altered, replayed, reordered).
    #[error("a record failed authentication")]
    Decrypt,
    /// The link failed earlier and can carry nothing more.
    #[error("the link has failed")]
    Failed,
}

enum Phase {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<snow::TransportState>),
    Failed,
}

/// One end of an encrypted link: the handshake, then the record layer.
pub struct Link {
    phase: Phase,
    initiator: bool,
    local: PublicKey,
    expect: Option<PublicKey>,
    remote: Option<PublicKey>,
    /// Plaintext handed to [`Link::send`] before the handshake ended.
    pending: Vec<u8>,
    /// Handshake messages, in and out: sized to the message, not to the
    /// largest record (64 KiB for every connection before its first byte:
    /// a flood of idle connections held a tracker's memory).
    scratch: Vec<u8>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Handshake(_) => "handshake",
            Phase::Transport(_) => "transport",
            Phase::Failed => "failed",
        };
        f.debug_struct("Link")
            .field("phase", &phase)
            .field("initiator", &self.initiator)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

fn handshake_state(
    local: &Keypair,
    prologue: &[u8],
    initiator: bool,
) -> Result<snow::HandshakeState, SecureError> {
    let params: snow::params::NoiseParams =
        PATTERN.parse().map_err(|e| SecureError::Handshake(format!("{e:?}")))?;
    let resolver = Box::new(snow::resolvers::FallbackResolver::new(
        Box::new(snow::resolvers::RingResolver),
        Box::new(snow::resolvers::DefaultResolver),
    ));
    let b = snow::Builder::with_resolver(params, resolver)
        .local_private_key(local.secret())
        .prologue(prologue);
    let hs = if initiator { b.build_initiator() } else { b.build_responder() };
    hs.map_err(|e| SecureError::Handshake(format!("{e:?}")))
}

impl Link {
    /// The connecting end: writes the first handshake message to `out`.
    /// `expect` is the key the other end must prove (listed or pinned);
    /// `None` accepts any key (the caller pins it from [`Link::remote_key`]).
    pub fn initiator(
        local: &Keypair,
        prologue: &[u8],
        expect: Option<PublicKey>,
        out: &mut Vec<u8>,
    ) -> Result<Self, SecureError> {
        let hs = handshake_state(local, prologue, true)?;
        let mut link = Self {
            phase: Phase::Handshake(Box::new(hs)),
            initiator: true,
            local: local.public(),
            expect,
            remote: None,
            pending: Vec::new(),
            scratch: Vec::new(),
        };
        link.write_handshake(out)?;
        Ok(link)
    }

    /// The accepting end; it speaks once the first message arrives.
    pub fn responder(local: &Keypair, prologue: &[u8]) -> Result<Self, SecureError> {
        let hs = handshake_state(local, prologue, false)?;
        Ok(Self {
            phase: Phase::Handshake(Box::new(hs)),
            initiator: false,
            local: local.public(),
            expect: None,
            remote: None,
            pending: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// True once the handshake has ended: records carry data both ways.
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Transport(_))
    }

    /// This end's key.
    pub fn local_key(&self) -> PublicKey {
        self.local
    }

    /// The key the other end proved (known to the initiator after the
    /// second message, to the responder when the handshake ends).
    pub fn remote_key(&self) -> Option<PublicKey> {
        self.remote
    }

    fn fail(&mut self, e: SecureError) -> SecureError {
        self.phase = Phase::Failed;
        e
    }

    fn write_handshake(&mut self, out: &mut Vec<u8>) -> Result<(), SecureError> {
        let Phase::Handshake(hs) = &mut self.phase else { return Ok(()) };
        // Keys and tags: far under this.
        grow(&mut self.scratch, HANDSHAKE_ROOM);
        let n = match hs.write_message(&[], &mut self.scratch) {
            Ok(n) => n,
            Err(e) => return Err(self.fail(SecureError::Handshake(format!("{e:?}")))),
        };
        push_record(out, &self.scratch[..n]);
        self.maybe_finish(out)
    }

    /// Moves to transport once the handshake ends; sends what waited.
    fn maybe_finish(&mut self, out: &mut Vec<u8>) -> Result<(), SecureError> {
        let Phase::Handshake(hs) = &self.phase else { return Ok(()) };
        if !hs.is_handshake_finished() {
            return Ok(());
        }
        let Phase::Handshake(hs) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            unreachable!("checked above")
        };
        match hs.into_transport_mode() {
            Ok(t) => self.phase = Phase::Transport(Box::new(t)),
            Err(e) => return Err(self.fail(SecureError::Handshake(format!("{e:?}")))),
        }
        let pending = std::mem::take(&mut self.pending);
        self.send(&pending, out)
    }

    /// Consumes the whole records at the start of `input`: handshake
    /// messages advance the handshake (any reply goes to `out`), transport
    /// records are decrypted onto `plain`. Returns how many bytes were
    /// consumed; a partial record is left for the next call.
    pub fn recv(
        &mut self,
        input: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<usize, SecureError> {
        let mut used = 0;
        while let Some(body) = record_at(&input[used..]) {
            let len = body.len();
            self.recv_record(body, plain, out)?;
            used += RECORD_HEADER + len;
        }
        Ok(used)
    }

    fn recv_record(
        &mut self,
        body: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), SecureError> {
        match &mut self.phase {
            Phase::Failed => Err(SecureError::Failed),
            Phase::Transport(t) => {
                // Opened in place, at the end of `plain`.
                let at = plain.len();
                plain.resize(at + body.len(), 0);
                match t.read_message(body, &mut plain[at..]) {
                    Ok(n) => {
                        plain.truncate(at + n);
                        Ok(())
                    }
                    Err(_) => {
                        plain.truncate(at);
                        Err(self.fail(SecureError::Decrypt))
                    }
                }
            }
            Phase::Handshake(hs) => {
                if hs.is_my_turn() {
                    let e = SecureError::Handshake("a handshake message out of turn".into());
                    return Err(self.fail(e));
                }
                grow(&mut self.scratch, body.len());
                let n = match hs.read_message(body, &mut self.scratch) {
                    Ok(n) => n,
                    Err(e) => return Err(self.fail(SecureError::Handshake(format!("{e:?}")))),
                };
                if n != 0 {
                    let e = SecureError::Handshake("a handshake message with a payload".into());
                    return Err(self.fail(e));
                }
                if self.remote.is_none() {
                    if let Some(k) = hs.get_remote_static() {
                        let mut key = [0u8; 32];
                        key.copy_from_slice(k);
                        let got = PublicKey(key);
                        self.remote = Some(got);
                        if let Some(expected) = self.expect.filter(|e| *e != got) {
                            return Err(self.fail(SecureError::WrongKey { expected, got }));
                        }
                    }
                }
                if hs.is_handshake_finished() {
                    return self.maybe_finish(out);
                }
                self.write_handshake(out)
            }
        }
    }

    /// Queues `plain` to send: encrypted into records on `out` when the
    /// handshake has ended, kept until then otherwise.
    pub fn send(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SecureError> {
        match &self.phase {
            Phase::Failed => Err(SecureError::Failed),
            Phase::Handshake(_) => {
                self.pending.extend_from_slice(plain);
                Ok(())
            }
            Phase::Transport(_) => {
                let at = out.len();
                let end = self.seal_at(plain, out, at)?;
                out.truncate(end);
                Ok(())
            }
        }
    }

    /// Seals `plain` as records written into `out` from offset `at` on, and
    /// returns where they end. `out` only grows (what it already holds is
    /// overwritten, not zeroed first): a sender that keeps one buffer for
    /// every piece pays no memset. Only once the handshake has ended.
    pub fn seal_at(
        &mut self,
        plain: &[u8],
        out: &mut Vec<u8>,
        mut at: usize,
    ) -> Result<usize, SecureError> {
        let Phase::Transport(t) = &mut self.phase else {
            return Err(SecureError::Handshake("sealing before the handshake ended".into()));
        };
        let mut failed = None;
        for chunk in plain.chunks(MAX_PLAIN) {
            let need = at + RECORD_HEADER + chunk.len() + TAG_LEN;
            if out.len() < need {
                out.resize(need, 0);
            }
            match t.write_message(chunk, &mut out[at + RECORD_HEADER..need]) {
                Ok(n) => {
                    out[at..at + RECORD_HEADER].copy_from_slice(&(n as u16).to_be_bytes());
                    at += RECORD_HEADER + n;
                }
                Err(e) => {
                    failed = Some(SecureError::Handshake(format!("{e:?}")));
                    break;
                }
            }
        }
        match failed {
            Some(e) => Err(self.fail(e)),
            None => Ok(at),
        }
    }

    /// Opens the transport record `body` (a record without its length
    /// prefix) straight into `out`, and returns the plaintext length
    /// (`body.len() - TAG_LEN`). `out` must be at least `body.len()` long:
    /// the record is copied there once and opened in place (the bytes past
    /// the plaintext are clobbered); a shorter `out` makes the cipher copy
    /// through a fresh allocation. For a receiver that knows where the
    /// bytes belong (a piece's buffer).
    pub fn open_into(&mut self, body: &[u8], out: &mut [u8]) -> Result<usize, SecureError> {
        if out.len() < body.len() {
            return Err(SecureError::Handshake("no room to open a record in place".into()));
        }
        let Phase::Transport(t) = &mut self.phase else {
            return Err(SecureError::Handshake("a record before the handshake ended".into()));
        };
        match t.read_message(body, out) {
            Ok(n) => Ok(n),
            Err(_) => Err(self.fail(SecureError::Decrypt)),
        }
    }
}

/// Room for a handshake message this end writes.
const HANDSHAKE_ROOM: usize = 1024;

/// `buf` at least `len` long.
fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

/// The body of the whole record at the start of `input`, if there is one.
pub fn record_at(input: &[u8]) -> Option<&[u8]> {
    let head: [u8; RECORD_HEADER] = input.get(..RECORD_HEADER)?.try_into().ok()?;
    let len = usize::from(u16::from_be_bytes(head));
    input.get(RECORD_HEADER..RECORD_HEADER + len)
}

/// Bytes [`Link::seal_at`] writes for `plain_len` bytes of plaintext: a
/// record of at most [`MAX_PLAIN`] bytes, its length prefix and tag each.
pub fn sealed_len(plain_len: usize) -> usize {
    plain_len + plain_len.div_ceil(MAX_PLAIN) * (RECORD_HEADER + TAG_LEN)
}

fn push_record(out: &mut Vec<u8>, body: &[u8]) {
    let len = u16::try_from(body.len()).expect("a Noise message fits a record");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a handshake between two fresh links, delivering bytes whole.
    fn pair(expect: Option<PublicKey>) -> (Link, Link, Keypair, Keypair) {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let mut to_b = Vec::new();
        let mut i =
            Link::initiator(&a, CONTROL_PROLOGUE, expect.or(Some(b.public())), &mut to_b).unwrap();
        let mut r = Link::responder(&b, CONTROL_PROLOGUE).unwrap();
        let mut plain = Vec::new();
        for _ in 0..3 {
            let mut to_a = Vec::new();
            let used = r.recv(&to_b, &mut plain, &mut to_a).unwrap();
            assert_eq!(used, to_b.len());
            to_b.clear();
            i.recv(&to_a, &mut plain, &mut to_b).unwrap();
        }
        assert!(plain.is_empty());
        (i, r, a, b)
    }

    /// `sealed_len` is what sealing writes, at every record boundary.
    #[test]
    fn sealed_len_is_what_sealing_writes() {
        let (mut i, _r, _, _) = pair(None);
        for n in [0, 1, 13, MAX_PLAIN - 1, MAX_PLAIN, MAX_PLAIN + 1, 3 * MAX_PLAIN, 524_288] {
            let mut out = Vec::new();
            let end = i.seal_at(&vec![7; n], &mut out, 5).unwrap();
            assert_eq!(end - 5, sealed_len(n), "{n} bytes");
        }
    }

    #[test]
    fn a_handshake_authenticates_both_ends_and_carries_data() {
        let (mut i, mut r, a, b) = pair(None);
        assert!(i.is_ready() && r.is_ready());
        assert_eq!(i.remote_key(), Some(b.public()));
        assert_eq!(r.remote_key(), Some(a.public()));
        let data: Vec<u8> = (0..200_000u32).map(|x| (x % 251) as u8).collect();
        let mut wire = Vec::new();
        i.send(&data, &mut wire).unwrap();
        // Nothing readable crosses: the bytes differ from the data.
        assert!(!wire.windows(64).any(|w| w == &data[1000..1064]));
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let used = r.recv(&wire, &mut plain, &mut out).unwrap();
        assert_eq!((used, plain, out.len()), (wire.len(), data, 0));
    }

    #[test]
    fn plaintext_sent_before_the_handshake_ends_follows_it() {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let mut to_b = Vec::new();
        let mut i = Link::initiator(&a, CONTROL_PROLOGUE, None, &mut to_b).unwrap();
        i.send(b"hello early", &mut to_b).unwrap();
        let mut r = Link::responder(&b, CONTROL_PROLOGUE).unwrap();
        let (mut plain, mut to_a) = (Vec::new(), Vec::new());
        r.recv(&to_b, &mut plain, &mut to_a).unwrap();
        let mut to_b = Vec::new();
        i.recv(&to_a, &mut plain, &mut to_b).unwrap();
        assert!(i.is_ready());
        let mut back = Vec::new();
        r.recv(&to_b, &mut plain, &mut back).unwrap();
        assert_eq!(plain, b"hello early");
    }

    #[test]
    fn a_responder_with_another_key_is_refused_before_the_initiator_shows_its_own() {
        let (a, b, c) = (Keypair::generate(), Keypair::generate(), Keypair::generate());
        let mut to_b = Vec::new();
        let mut i = Link::initiator(&a, CONTROL_PROLOGUE, Some(c.public()), &mut to_b).unwrap();
        let mut r = Link::responder(&b, CONTROL_PROLOGUE).unwrap();
        let (mut plain, mut to_a) = (Vec::new(), Vec::new());
        r.recv(&to_b, &mut plain, &mut to_a).unwrap();
        let mut to_b = Vec::new();
        let err = i.recv(&to_a, &mut plain, &mut to_b).unwrap_err();
        assert_eq!(err, SecureError::WrongKey { expected: c.public(), got: b.public() });
        assert!(to_b.is_empty(), "the third message (the initiator's key) was not sent");
        assert_eq!(i.send(b"x", &mut to_b), Err(SecureError::Failed));
    }

    #[test]
    fn another_prologue_fails_the_handshake() {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let mut to_b = Vec::new();
        let mut i = Link::initiator(&a, CONTROL_PROLOGUE, None, &mut to_b).unwrap();
        let mut r = Link::responder(&b, b"something else").unwrap();
        let (mut plain, mut to_a) = (Vec::new(), Vec::new());
        r.recv(&to_b, &mut plain, &mut to_a).unwrap();
        let mut to_b = Vec::new();
        assert!(matches!(i.recv(&to_a, &mut plain, &mut to_b), Err(SecureError::Handshake(_))));
    }

    #[test]
    fn an_altered_or_replayed_record_is_refused() {
        let (mut i, mut r, _, _) = pair(None);
        let mut wire = Vec::new();
        i.send(b"first", &mut wire).unwrap();
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let mut bad = wire.clone();
        bad[4] ^= 1;
        assert_eq!(r.recv(&bad, &mut plain, &mut out), Err(SecureError::Decrypt));
        let (mut i, mut r, _, _) = pair(None);
        let mut wire = Vec::new();
        i.send(b"first", &mut wire).unwrap();
        r.recv(&wire, &mut plain, &mut out).unwrap();
        assert_eq!(r.recv(&wire, &mut plain, &mut out), Err(SecureError::Decrypt));
    }

    #[test]
    fn records_split_anywhere_reassemble() {
        let (mut i, mut r, _, _) = pair(None);
        let data: Vec<u8> = (0..150_000u32).map(|x| (x * 7 % 256) as u8).collect();
        let mut wire = Vec::new();
        i.send(&data, &mut wire).unwrap();
        let (mut plain, mut out, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in wire.chunks(4093) {
            buf.extend_from_slice(chunk);
            let used = r.recv(&buf, &mut plain, &mut out).unwrap();
            buf.drain(..used);
        }
        assert!(buf.is_empty());
        assert_eq!(plain, data);
    }

    #[test]
    fn records_sealed_in_place_and_opened_in_place_match_the_buffered_ones() {
        let (mut i, mut r, _, _) = pair(None);
        let data: Vec<u8> = (0..140_000u32).map(|x| (x * 13 % 256) as u8).collect();
        // A buffer already holding garbage: overwritten, never zeroed.
        let mut out = vec![0xaa; 300_000];
        let end = i.seal_at(&data[..100], &mut out, 0).unwrap();
        let end = i.seal_at(&data, &mut out, end).unwrap();
        assert_eq!(out.len(), 300_000, "no growth when it fits");
        let (mut plain, mut back) = (Vec::new(), Vec::new());
        let body = record_at(&out).unwrap();
        let used = RECORD_HEADER + body.len();
        r.recv(&out[..used], &mut plain, &mut back).unwrap();
        assert_eq!(plain, &data[..100]);
        let mut got = vec![0u8; data.len() + TAG_LEN];
        let (mut at, mut filled) = (used, 0);
        while at < end {
            let body = record_at(&out[at..end]).unwrap();
            let n = r.open_into(body, &mut got[filled..filled + body.len()]).unwrap();
            filled += n;
            at += RECORD_HEADER + body.len();
        }
        assert_eq!(&got[..data.len()], &data[..]);
        let mut tampered = out[used..end].to_vec();
        tampered[5] ^= 1;
        let body = record_at(&tampered).unwrap();
        let mut sink = vec![0u8; body.len()];
        assert_eq!(r.open_into(body, &mut sink), Err(SecureError::Decrypt));
    }

    #[test]
    fn keys_print_and_parse() {
        let k = Keypair::generate();
        assert_eq!(Keypair::from_secret(*k.secret()).public(), k.public());
        let shown = k.public().to_string();
        assert_eq!(shown.len(), 64);
        assert_eq!(shown.parse::<PublicKey>().unwrap(), k.public());
        assert!("abc".parse::<PublicKey>().is_err());
        assert!(!format!("{k:?}").contains(&hex::encode(k.secret())));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_a_responder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let b = Keypair::from_secret([7; 32]);
            let mut r = Link::responder(&b, CONTROL_PROLOGUE).unwrap();
            let (mut plain, mut out) = (Vec::new(), Vec::new());
            let _ = r.recv(&bytes, &mut plain, &mut out);
            prop_assert!(plain.is_empty());
        }
    }
}
