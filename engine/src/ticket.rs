//! Tickets: the tracker's signed permission for one user to fetch some files.
//!
//! A ticket binds a user, a group, the ids (whole-file SHA1s) of the files it
//! allows — one for a `FileInfo`, up to [`MAX_FILES`] for the files of one
//! `FileInfos` — an expiry and
//! the downloader's node key (the key its tracker connection proved), signed
//! with the trackers' ed25519 key. A piece server admits it only on a link
//! authenticated by that key: a ticket copied off a node is useless to
//! anyone without the node's private key. Piece servers hold the trackers'
//! public key (handed out at login) and admit a downloader only with a valid,
//! unexpired ticket for that file in that user's name — checked locally, with
//! no round trip to a tracker. Pure: the caller passes the time in.
//!
//! Wire form: postcard([`Ticket`]) followed by the 64-byte signature over it.
//!
//! A bulk fetch presents one ticket for many files, often to the same piece
//! server: each thread remembers the tickets it verified (their exact bytes,
//! under the key that verified them), so a ticket's signature is checked
//! once, not once per file.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::meta::Sha1Digest;

/// Bytes of an ed25519 signature.
const SIG_LEN: usize = 64;

/// Most files one ticket allows: 64 ids of 20 bytes keep a ticket near
/// 1.5 KiB, far below the handshake's `MAX_TICKET`.
pub const MAX_FILES: usize = 64;

/// Verified tickets a thread remembers.
const REMEMBERED: usize = 512;

thread_local! {
    /// The tickets this thread verified, by signature.
    static VERIFIED: std::cell::RefCell<std::collections::HashMap<[u8; SIG_LEN], Verified>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// A ticket whose signature a thread verified.
struct Verified {
    /// The key that verified it.
    public: [u8; 32],
    /// Its signed bytes.
    body: Box<[u8]>,
    /// What they say.
    ticket: Ticket,
}

/// What a ticket allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Who may fetch.
    pub user: String,
    /// The group the permission comes from.
    pub group: String,
    /// The files it allows (at most [`MAX_FILES`]).
    pub files: Vec<Sha1Digest>,
    /// Until when (ms since the Unix epoch).
    pub expires_ms: u64,
    /// The downloader's node key (X25519 public key): only a link that
    /// proves it may present the ticket. `None` (a ticket asked for on no
    /// authenticated link, in-process tools) is refused on every encrypted
    /// link.
    pub holder: Option<[u8; 32]>,
}

/// Why a ticket is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TicketError {
    /// Not a ticket at all.
    #[error("malformed ticket")]
    Malformed,
    /// The signature is not the trackers'.
    #[error("ticket not signed by the trackers")]
    BadSignature,
    /// Past its expiry.
    #[error("ticket expired")]
    Expired,
    /// For another user or file.
    #[error("ticket is for another user or file")]
    Mismatch,
    /// Presented on a link that proved another key than the ticket's holder.
    #[error("ticket is bound to another node's key")]
    WrongHolder,
}

/// Signs `t` with the trackers' secret key.
pub fn sign(secret: &[u8; 32], t: &Ticket) -> Vec<u8> {
    // A tracker signs with one key: expanding it (SHA-512 and a base-point
    // multiply) once per thread instead of once per ticket.
    thread_local! {
        static KEY: std::cell::RefCell<Option<SigningKey>> = const { std::cell::RefCell::new(None) };
    }
    let key = KEY.with_borrow_mut(|k| match k {
        Some(key) if key.to_bytes() == *secret => key.clone(),
        _ => k.insert(SigningKey::from_bytes(secret)).clone(),
    });
    let mut out = postcard::to_stdvec(t).unwrap_or_default();
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// The public key of a secret key.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    // Asked for by every heartbeat and login a tracker answers: derived
    // (a base-point multiply) once per thread and key, not each time (it
    // was a tenth of a tracker's CPU with 4,000 nodes heartbeating).
    thread_local! {
        static PUBLIC: std::cell::Cell<Option<([u8; 32], [u8; 32])>> = const { std::cell::Cell::new(None) };
    }
    PUBLIC.with(|p| match p.get() {
        Some((s, public)) if s == *secret => public,
        _ => {
            let public = SigningKey::from_bytes(secret).verifying_key().to_bytes();
            p.set(Some((*secret, public)));
            public
        }
    })
}

/// Checks a ticket presented by `user` for `file_id` at `now_ms`, on a link
/// that proved key `holder` (`None`: a plaintext link both ends asked for,
/// where the ticket is a bearer credential).
pub fn verify(
    public: &[u8; 32],
    bytes: &[u8],
    user: &str,
    file_id: &Sha1Digest,
    holder: Option<&[u8; 32]>,
    now_ms: u64,
) -> Result<Ticket, TicketError> {
    if bytes.len() <= SIG_LEN {
        return Err(TicketError::Malformed);
    }
    let (body, sig) = bytes.split_at(bytes.len() - SIG_LEN);
    let sig_bytes: [u8; SIG_LEN] = sig.try_into().map_err(|_| TicketError::Malformed)?;
    // The same bytes under the same key verify the same: checked once.
    let known = VERIFIED.with_borrow(|v| {
        v.get(&sig_bytes)
            .filter(|e| e.public == *public && *e.body == *body)
            .map(|e| e.ticket.clone())
    });
    let t = match known {
        Some(t) => t,
        None => {
            let t = verify_signature(public, body, &sig_bytes)?;
            VERIFIED.with_borrow_mut(|v| {
                if v.len() >= REMEMBERED {
                    v.retain(|_, e| e.ticket.expires_ms > now_ms);
                    if v.len() >= REMEMBERED {
                        v.clear();
                    }
                }
                v.insert(
                    sig_bytes,
                    Verified { public: *public, body: body.into(), ticket: t.clone() },
                );
            });
            t
        }
    };
    if t.user != user || !t.files.contains(file_id) {
        return Err(TicketError::Mismatch);
    }
    if holder.is_some_and(|h| t.holder != Some(*h)) {
        return Err(TicketError::WrongHolder);
    }
    if now_ms >= t.expires_ms {
        return Err(TicketError::Expired);
    }
    Ok(t)
}

/// The group a ticket's permission comes from, read without checking its
/// signature: for a piece server that admitted the ticket already
/// ([`verify`]) and keeps the group with the session, to end it once the
/// file is no longer shared here in that group.
pub fn group_of(bytes: &[u8]) -> Option<String> {
    let body = bytes.get(..bytes.len().checked_sub(SIG_LEN)?)?;
    // The user and the group lead the ticket: its file ids (up to 64) are
    // not decoded, once per file a bulk fetch asks for.
    let ((_user, group), _) = postcard::take_from_bytes::<(&str, &str)>(body).ok()?;
    Some(group.to_owned())
}

/// Checks `sig` over `body` with `public` and decodes the ticket.
fn verify_signature(
    public: &[u8; 32],
    body: &[u8],
    sig: &[u8; SIG_LEN],
) -> Result<Ticket, TicketError> {
    // A piece server checks tickets of one tracker key: its point is
    // decompressed once per thread instead of once per ticket.
    thread_local! {
        static KEY: std::cell::RefCell<Option<VerifyingKey>> = const { std::cell::RefCell::new(None) };
    }
    let key = KEY.with_borrow_mut(|k| match k {
        Some(key) if key.as_bytes() == public => Ok(*key),
        _ => VerifyingKey::from_bytes(public).map(|key| *k.insert(key)),
    });
    let key = key.map_err(|_| TicketError::BadSignature)?;
    let sig = Signature::from_bytes(sig);
    key.verify(body, &sig).map_err(|_| TicketError::BadSignature)?;
    let t: Ticket = postcard::from_bytes(body).map_err(|_| TicketError::Malformed)?;
    if t.files.len() > MAX_FILES {
        return Err(TicketError::Malformed);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ticket() -> Ticket {
        Ticket {
            user: "bob".into(),
            group: "g".into(),
            files: vec![Sha1Digest([7; 20])],
            expires_ms: 1000,
            holder: Some([9; 32]),
        }
    }

    /// The public key kept per thread is the one of the key asked about,
    /// whichever was asked last.
    #[test]
    fn a_public_key_is_its_own_secrets() {
        for secret in [[1u8; 32], [2; 32], [1; 32], [1; 32], [3; 32]] {
            let derived = SigningKey::from_bytes(&secret).verifying_key().to_bytes();
            assert_eq!(public_key(&secret), derived);
        }
    }

    #[test]
    fn a_tickets_group_reads_back() {
        let secret = [7u8; 32];
        let bytes = sign(&secret, &ticket());
        assert_eq!(group_of(&bytes).as_deref(), Some("g"));
        assert_eq!(group_of(&bytes[..10]), None);
        assert_eq!(group_of(b""), None);
    }

    #[test]
    fn valid_ticket_verifies() {
        let secret = [3u8; 32];
        let bytes = sign(&secret, &ticket());
        let id = Sha1Digest([7; 20]);
        let t = verify(&public_key(&secret), &bytes, "bob", &id, Some(&[9; 32]), 999).unwrap();
        assert_eq!(t, ticket());
        // On a plaintext link (no key proved) it is a bearer credential.
        assert!(verify(&public_key(&secret), &bytes, "bob", &id, None, 999).is_ok());
    }

    #[test]
    fn every_refusal() {
        let secret = [3u8; 32];
        let pk = public_key(&secret);
        let bytes = sign(&secret, &ticket());
        let id = Sha1Digest([7; 20]);
        let h = Some(&[9u8; 32]);
        assert_eq!(verify(&pk, &bytes, "bob", &id, h, 1000), Err(TicketError::Expired));
        assert_eq!(
            verify(&pk, &bytes, "bob", &id, Some(&[8; 32]), 1),
            Err(TicketError::WrongHolder)
        );
        assert_eq!(verify(&pk, &bytes, "eve", &id, h, 1), Err(TicketError::Mismatch));
        assert_eq!(
            verify(&pk, &bytes, "bob", &Sha1Digest([8; 20]), h, 1),
            Err(TicketError::Mismatch)
        );
        assert_eq!(
            verify(&public_key(&[4u8; 32]), &bytes, "bob", &id, h, 1),
            Err(TicketError::BadSignature)
        );
        let mut forged = bytes.clone();
        forged[2] ^= 1;
        assert_eq!(verify(&pk, &forged, "bob", &id, h, 1), Err(TicketError::BadSignature));
        assert_eq!(verify(&pk, b"short", "bob", &id, h, 1), Err(TicketError::Malformed));
        assert_eq!(verify(&pk, &[], "bob", &id, h, 1), Err(TicketError::Malformed));
    }

    #[test]
    fn a_ticket_for_many_files_allows_each_of_them_only() {
        let secret = [3u8; 32];
        let pk = public_key(&secret);
        let ids: Vec<Sha1Digest> = (0..MAX_FILES as u8).map(|i| Sha1Digest([i; 20])).collect();
        let t = Ticket { files: ids.clone(), ..ticket() };
        let bytes = sign(&secret, &t);
        let h = Some(&[9u8; 32]);
        // Checked twice each: the second time from what the thread remembers,
        // with the same answers.
        for _ in 0..2 {
            for id in &ids {
                assert_eq!(verify(&pk, &bytes, "bob", id, h, 999), Ok(t.clone()));
            }
            let other = Sha1Digest([200; 20]);
            assert_eq!(verify(&pk, &bytes, "bob", &other, h, 999), Err(TicketError::Mismatch));
            assert_eq!(verify(&pk, &bytes, "eve", &ids[0], h, 999), Err(TicketError::Mismatch));
            assert_eq!(
                verify(&pk, &bytes, "bob", &ids[0], Some(&[8; 32]), 999),
                Err(TicketError::WrongHolder)
            );
            assert_eq!(verify(&pk, &bytes, "bob", &ids[0], h, 1000), Err(TicketError::Expired));
            // Remembered under its key only.
            assert_eq!(
                verify(&public_key(&[4u8; 32]), &bytes, "bob", &ids[0], h, 999),
                Err(TicketError::BadSignature)
            );
        }
        // The signature of a remembered ticket over other bytes is no ticket.
        let mut other = sign(&secret, &Ticket { user: "eve".into(), ..t.clone() });
        let sig_at = other.len() - SIG_LEN;
        other[sig_at..].copy_from_slice(&bytes[bytes.len() - SIG_LEN..]);
        assert_eq!(verify(&pk, &other, "eve", &ids[0], h, 999), Err(TicketError::BadSignature));
        // More files than a ticket may hold: refused even though signed.
        let ids: Vec<Sha1Digest> = (0..=MAX_FILES as u8).map(|i| Sha1Digest([i; 20])).collect();
        let big = sign(&secret, &Ticket { files: ids, ..ticket() });
        assert_eq!(
            verify(&pk, &big, "bob", &Sha1Digest([0; 20]), h, 999),
            Err(TicketError::Malformed)
        );
    }

    #[test]
    fn many_tickets_are_remembered_within_a_bound() {
        let secret = [3u8; 32];
        let pk = public_key(&secret);
        for i in 0..(3 * REMEMBERED as u64) {
            let t = Ticket { expires_ms: 1000 + i, ..ticket() };
            let bytes = sign(&secret, &t);
            assert!(verify(&pk, &bytes, "bob", &Sha1Digest([7; 20]), None, 999).is_ok());
        }
        let held = std::thread::spawn(move || {
            for i in 0..(3 * REMEMBERED as u64) {
                let bytes = sign(&secret, &Ticket { expires_ms: 1000 + i, ..ticket() });
                let _ = verify(&pk, &bytes, "bob", &Sha1Digest([7; 20]), None, 999);
            }
            VERIFIED.with_borrow(|v| v.len())
        })
        .join()
        .unwrap();
        assert!(held <= REMEMBERED, "{held} remembered");
    }

    proptest! {
        #[test]
        fn garbage_never_verifies(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let pk = public_key(&[3u8; 32]);
            prop_assert!(verify(&pk, &bytes, "bob", &Sha1Digest([7; 20]), None, 0).is_err());
        }
    }
}
