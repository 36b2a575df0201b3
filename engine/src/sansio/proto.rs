//! The control-plane protocol between clients and trackers.
//!
//! Each message is one [`crate::wire`] frame whose payload is a postcard-encoded
//! [`Request`] (frame type [`REQUEST`]) or [`Response`] (frame type
//! [`RESPONSE`]). One request, one response, in order, per connection.
//! Requests that need a logged-in user carry the session [`Token`] from
//! [`Response::LoggedIn`]. New variants go at the end of each enum: postcard
//! numbers variants by position, and the golden tests pin the numbers.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::meta::FileMeta;

/// Frame type of a request.
pub const REQUEST: u32 = 1;
/// Frame type of a response.
pub const RESPONSE: u32 = 2;

/// Largest control frame: 16 MiB, room for the piece hashes of a file of
/// about 400 GiB (16 MiB / 20 bytes per hash × 512 KiB per piece).
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// A session token: 128 random bits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub [u8; 16]);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a whole token: logs are not a place for credentials.
        write!(f, "Token({}…)", hex::encode(&self.0[..2]))
    }
}

/// A request from a client to a tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Register a new user.
    CreateUser {
        /// The new user id.
        user: String,
        /// The password, hashed by the tracker with argon2id.
        password: String,
    },
    /// Start a session; `peer_addr` is where this node serves pieces.
    Login {
        /// The user id.
        user: String,
        /// The password.
        password: String,
        /// The node's piece-server address, `IP:PORT`.
        peer_addr: String,
    },
    /// End a session; the user's shares pause until the next login.
    Logout {
        /// The session.
        token: Token,
    },
    /// Create a group owned by the caller.
    CreateGroup {
        /// The session.
        token: Token,
        /// The new group id.
        group: String,
    },
    /// Ask the owner of a group to let the caller in.
    JoinGroup {
        /// The session.
        token: Token,
        /// The group.
        group: String,
    },
    /// Leave a group (or withdraw a pending request to join it).
    LeaveGroup {
        /// The session.
        token: Token,
        /// The group.
        group: String,
    },
    /// The pending join requests of a group the caller owns.
    ListRequests {
        /// The session.
        token: Token,
        /// The group.
        group: String,
    },
    /// Let a user with a pending request into a group the caller owns.
    AcceptRequest {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The requesting user.
        user: String,
    },
    /// Refuse a pending join request to a group the caller owns.
    RejectRequest {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The requesting user.
        user: String,
    },
    /// Every group in the network.
    ListGroups {
        /// The session.
        token: Token,
    },
    /// The files shared in a group the caller belongs to.
    ListFiles {
        /// The session.
        token: Token,
        /// The group.
        group: String,
    },
    /// Register a file this node shares in a group.
    UploadFile {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The file's metadata.
        meta: FileMeta,
    },
    /// Stop sharing a file from this node.
    StopShare {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The file name.
        file: String,
    },
    /// Metadata and online peers of a file, for a download.
    FileInfo {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The file name.
        file: String,
    },
    /// The node is alive: keeps its files in peer lists.
    Heartbeat {
        /// The session.
        token: Token,
    },
    /// A digest of the tracker's replicated state (`ringshare-tracker
    /// --digest`): trackers that hold the same ops answer the same. Served
    /// to this host and the listed trackers' addresses only.
    StateDigest,
    /// One page of a group's files in name order: those starting with
    /// `prefix` and sorting after `after` (empty: from the first), at most
    /// `limit` of them (the tracker caps it at [`MAX_PAGE`]).
    ListFilesPage {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// Only names starting with this (empty: every file).
        prefix: String,
        /// Only names after this one (the last name of the previous page).
        after: String,
        /// Most entries wanted.
        limit: u32,
    },
    /// The whole replicated state (`ringshare-tracker --dump-state`), for
    /// checkers that compare trackers: served like [`Request::StateDigest`].
    StateImage,
    /// What [`Request::FileInfo`] answers, for several files of a group at
    /// once (at most [`crate::ticket::MAX_FILES`]), under one ticket: a bulk
    /// fetch's tracker requests and ticket checks, one per batch instead of
    /// one per file.
    FileInfos {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The file names.
        files: Vec<String>,
    },
    /// What [`Request::UploadFile`] does, for several files of a group at
    /// once (at most [`MAX_UPLOADS`]): a bulk share's, a bulk fetch's and a
    /// login's registrations, one request and one log sync per batch
    /// instead of one per file. Answered by [`Response::Uploads`].
    UploadFiles {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The files' metadata.
        files: Vec<FileMeta>,
    },
    /// What [`Request::StopShare`] does, for several files of a group at
    /// once (at most [`MAX_STOPS`]): a node on a port that no later node
    /// will have (a one-shot `get` or `share`) withdraws everything it
    /// shares as it stops, in one request and one log sync per batch.
    /// Answered by [`Response::Uploads`].
    StopShares {
        /// The session.
        token: Token,
        /// The group.
        group: String,
        /// The file names.
        files: Vec<String>,
    },
    /// The id of the caller's membership of a group, answered by
    /// [`Response::Member`] (refused for a non-member). A node records it
    /// with what it shares there: a later membership has another id (the
    /// user left and was let in again, or the group was deleted and made
    /// anew under its name), and the shares of the earlier one are not
    /// resumed into it.
    Membership {
        /// The session.
        token: Token,
        /// The group.
        group: String,
    },
}

impl Request {
    /// The session token it carries (all but `CreateUser`, `Login` and the
    /// trackers' own requests).
    pub fn token(&self) -> Option<Token> {
        match self {
            Self::CreateUser { .. } | Self::Login { .. } | Self::StateDigest | Self::StateImage => {
                None
            }
            Self::Logout { token }
            | Self::CreateGroup { token, .. }
            | Self::JoinGroup { token, .. }
            | Self::LeaveGroup { token, .. }
            | Self::ListRequests { token, .. }
            | Self::AcceptRequest { token, .. }
            | Self::RejectRequest { token, .. }
            | Self::ListGroups { token }
            | Self::ListFiles { token, .. }
            | Self::UploadFile { token, .. }
            | Self::StopShare { token, .. }
            | Self::FileInfo { token, .. }
            | Self::Heartbeat { token }
            | Self::ListFilesPage { token, .. }
            | Self::FileInfos { token, .. }
            | Self::UploadFiles { token, .. }
            | Self::StopShares { token, .. }
            | Self::Membership { token, .. } => Some(*token),
        }
    }

    /// Whether carrying it out changes nothing a client can see (a lookup,
    /// a listing, a heartbeat): one whose answer was lost was harmless to
    /// send, and is harmless to send again.
    pub fn only_reads(&self) -> bool {
        matches!(
            self,
            Self::ListRequests { .. }
                | Self::ListGroups { .. }
                | Self::ListFiles { .. }
                | Self::ListFilesPage { .. }
                | Self::FileInfo { .. }
                | Self::FileInfos { .. }
                | Self::Heartbeat { .. }
                | Self::StateDigest
                | Self::StateImage
                | Self::Membership { .. }
        )
    }
}

/// Most files in one [`Request::StopShares`]: names of up to 1 KiB keep it
/// near 1 MiB, far below [`MAX_FRAME`].
pub const MAX_STOPS: usize = 1024;

/// Most files in one [`Request::UploadFiles`]. Their piece hashes are
/// bounded by [`MAX_FRAME`] as any request's are; senders also keep a
/// batch's hashes to a few MiB, so that one slow batch holds little.
pub const MAX_UPLOADS: usize = 64;

/// Most entries in one [`Response::FilesPage`]: with names of up to 1 KiB,
/// a page stays near 2 MiB, far below [`MAX_FRAME`].
pub const MAX_PAGE: u32 = 2000;

/// A file as `list_files` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file name.
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// Peers sharing it that are online now.
    pub peers: u32,
}

/// A peer that shares a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The user the peer is logged in as.
    pub user: String,
    /// Its piece-server address.
    pub addr: String,
    /// The node key its encrypted links prove (`None` if the tracker has not
    /// heard it yet; such a peer is not connected to).
    pub key: Option<[u8; 32]>,
}

/// A tracker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request was carried out.
    Done,
    /// A session started.
    LoggedIn {
        /// Carry this in every further request.
        token: Token,
        /// Send a request (a heartbeat if nothing else) at least this often,
        /// or this node's files drop out of peer lists.
        heartbeat_ms: u32,
        /// The trackers' public key: the piece server admits downloaders
        /// whose tickets it signed.
        ticket_key: [u8; 32],
    },
    /// A list of names (groups, pending users).
    Names(Vec<String>),
    /// The files of a group.
    Files(Vec<FileEntry>),
    /// What a downloader needs.
    FileInfo {
        /// The file's metadata.
        meta: FileMeta,
        /// Online peers that share it.
        peers: Vec<PeerInfo>,
        /// The ticket to present to those peers in the handshake.
        ticket: Vec<u8>,
    },
    /// The request was refused.
    Refused(Refusal),
    /// Answer to a heartbeat: the session is alive.
    Alive {
        /// The trackers' current public ticket key.
        ticket_key: [u8; 32],
    },
    /// The digest of the replicated state.
    StateDigest {
        /// SHA1 of the state's canonical encoding (postcard of ordered maps).
        digest: [u8; 20],
        /// Ops applied: the sum over origins of what the tracker holds.
        ops: u64,
    },
    /// One page of a group's files, in name order.
    FilesPage {
        /// The files.
        files: Vec<FileEntry>,
        /// Whether more files match after the last one.
        more: bool,
    },
    /// The replicated state itself.
    StateImage {
        /// As in [`Response::StateDigest`].
        digest: [u8; 20],
        /// How many entries of each origin tracker it holds.
        known: Vec<(u16, u64)>,
        /// The state's canonical encoding (postcard), the bytes digested.
        state: Vec<u8>,
    },
    /// The answer to [`Request::FileInfos`]: the first `files.len()` names
    /// asked, in order (fewer than asked when the answer would grow too
    /// large: the rest are asked for again).
    FileInfos {
        /// One per name.
        files: Vec<FileLookup>,
        /// The ticket for every file found, to present to their peers.
        ticket: Vec<u8>,
    },
    /// The answer to [`Request::UploadFiles`] and [`Request::StopShares`]:
    /// one per file, in order, `None` where the file was registered (or
    /// withdrawn), else why not.
    Uploads(Vec<Option<Refusal>>),
    /// The answer to [`Request::Membership`].
    Member {
        /// The membership's id: the same at every tracker, another for
        /// each membership (0: made before trackers kept ids).
        since: u64,
    },
}

/// One file of a [`Response::FileInfos`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileLookup {
    /// What [`Response::FileInfo`] says of it, but the ticket.
    Found {
        /// The file's metadata.
        meta: FileMeta,
        /// Online peers that share it.
        peers: Vec<PeerInfo>,
    },
    /// Not answered for this file (no such file, a bad name).
    Refused(Refusal),
}

/// Why a tracker refused a request. The messages are what the shell prints
/// after `error: `.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Refusal {
    /// The session token is unknown or ended.
    #[error("not logged in")]
    NotLoggedIn,
    /// The user id is taken.
    #[error("user {0} already exists")]
    UserExists(String),
    /// Login with an unknown user or a wrong password.
    #[error("wrong user id or password")]
    BadCredentials,
    /// The group does not exist.
    #[error("no such group: {0}")]
    NoSuchGroup(String),
    /// The group id is taken.
    #[error("group {0} already exists")]
    GroupExists(String),
    /// The caller is not a member of the group.
    #[error("not a member of group {0}")]
    NotMember(String),
    /// The caller already belongs to the group.
    #[error("already a member of group {0}")]
    AlreadyMember(String),
    /// The caller already asked to join the group.
    #[error("already requested to join group {0}")]
    AlreadyRequested(String),
    /// Only the owner may do this.
    #[error("not the owner of group {0}")]
    NotOwner(String),
    /// The user has no pending request to join the group.
    #[error("no pending request from {user} to join {group}")]
    NoSuchRequest {
        /// The group.
        group: String,
        /// The user.
        user: String,
    },
    /// No file of that name is shared in the group.
    #[error("no such file in group {group}: {file}")]
    NoSuchFile {
        /// The group.
        group: String,
        /// The file name.
        file: String,
    },
    /// This node already shares the file in the group.
    #[error("file {file} is already shared in group {group} by this node")]
    AlreadySharing {
        /// The group.
        group: String,
        /// The file name.
        file: String,
    },
    /// Another file with this name, with different content, is shared there.
    #[error("a different file named {file} is already shared in group {group}")]
    DifferentContent {
        /// The group.
        group: String,
        /// The file name.
        file: String,
    },
    /// This node does not share the file.
    #[error("not sharing {file} in group {group}")]
    NotSharing {
        /// The group.
        group: String,
        /// The file name.
        file: String,
    },
    /// A name breaks the naming rules.
    #[error("{0}")]
    BadName(String),
    /// The request is malformed (bad metadata, bad address, undecodable).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The tracker failed to carry the request out.
    #[error("tracker failure: {0}")]
    Internal(String),
    /// A limit was reached (pending join requests, metadata size).
    #[error("{0}")]
    Limit(String),
    /// The tracker lost its data and is catching up from the others: it
    /// takes no changes yet (reads still work).
    #[error("{0}")]
    CatchingUp(String),
    /// Another node, with another node key, is logged in as the user at
    /// the address a login names, and is still heard from: the login would
    /// end its session (a login replaces the pair's earlier session).
    #[error("{0}")]
    AddressInUse(String),
    /// The tracker is stopping (SIGTERM, SIGINT, `quit`): it did nothing
    /// with the request, which the client asks of the next tracker.
    #[error("{0}")]
    Stopping(String),
}

/// Encodes a message as one complete frame of type `kind`.
pub fn encode_frame<T: Serialize>(kind: u32, msg: &T) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_stdvec(msg)?;
    let mut out = Vec::with_capacity(crate::wire::HEADER_LEN + payload.len());
    crate::wire::encode(kind, &payload, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Sha1Digest;
    use crate::wire;
    use proptest::prelude::*;

    /// A lost answer to a lookup is harmless; to a change, it may have
    /// been carried out (the client says so only then).
    #[test]
    fn lookups_only_read() {
        let token = Token([1; 16]);
        assert!(Request::ListGroups { token }.only_reads());
        assert!(Request::Heartbeat { token }.only_reads());
        assert!(Request::FileInfo { token, group: "g".into(), file: "f".into() }.only_reads());
        assert!(!Request::CreateGroup { token, group: "g".into() }.only_reads());
        assert!(!Request::Logout { token }.only_reads());
        assert!(!Request::CreateUser { user: "u".into(), password: "p".into() }.only_reads());
    }

    #[test]
    fn golden_request_bytes() {
        let req = Request::ListGroups { token: Token([0xab; 16]) };
        let frame = encode_frame(REQUEST, &req).unwrap();
        let mut expected = vec![
            0, 0, 0, 25, // len: 8 header + 17 payload
            0, 0, 0, 1, // type: REQUEST
            9, // postcard varint: variant 9 = ListGroups
        ];
        expected.extend([0xab; 16]); // the token's 16 bytes, no length prefix
        assert_eq!(frame, expected);
    }

    #[test]
    fn golden_response_bytes() {
        let resp = Response::Names(vec!["g1".into()]);
        let frame = encode_frame(RESPONSE, &resp).unwrap();
        let expected = vec![
            0, 0, 0, 13, // len: 8 header + 5 payload
            0, 0, 0, 2, // type: RESPONSE
            2, // variant 2 = Names
            1, // one element
            2, b'g', b'1', // string of length 2
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn golden_batched_file_info_bytes() {
        let req = Request::FileInfos {
            token: Token([1; 16]),
            group: "g".into(),
            files: vec!["a".into()],
        };
        let mut expected = vec![18]; // variant 18 = FileInfos
        expected.extend([1; 16]);
        expected.extend([1, b'g', 1, 1, b'a']);
        assert_eq!(postcard::to_stdvec(&req).unwrap(), expected);
        let resp = Response::FileInfos {
            files: vec![FileLookup::Refused(Refusal::NotLoggedIn)],
            ticket: vec![9],
        };
        // variant 10 = FileInfos; one lookup, variant 1 = Refused, variant
        // 0 = NotLoggedIn; a ticket of one byte.
        assert_eq!(postcard::to_stdvec(&resp).unwrap(), vec![10, 1, 1, 0, 1, 9]);
    }

    #[test]
    fn golden_batched_upload_bytes() {
        let meta = FileMeta {
            name: "a".into(),
            len: 1,
            sha1: Sha1Digest([2; 20]),
            piece_hashes: vec![Sha1Digest([3; 20])],
        };
        let req =
            Request::UploadFiles { token: Token([1; 16]), group: "g".into(), files: vec![meta] };
        let mut expected = vec![19]; // variant 19 = UploadFiles
        expected.extend([1; 16]);
        expected.extend([1, b'g', 1]); // the group; one file
        expected.extend([1, b'a', 1]); // its name and length
        expected.extend([2; 20]); // its sha1
        expected.push(1); // one piece hash
        expected.extend([3; 20]);
        assert_eq!(postcard::to_stdvec(&req).unwrap(), expected);
        let resp = Response::Uploads(vec![None, Some(Refusal::NotLoggedIn)]);
        // variant 11 = Uploads; two answers: none, then some NotLoggedIn.
        assert_eq!(postcard::to_stdvec(&resp).unwrap(), vec![11, 2, 0, 1, 0]);
        let req = Request::StopShares {
            token: Token([1; 16]),
            group: "g".into(),
            files: vec!["a".into(), "b".into()],
        };
        let mut expected = vec![20]; // variant 20 = StopShares
        expected.extend([1; 16]);
        expected.extend([1, b'g', 2, 1, b'a', 1, b'b']); // the group; two names
        assert_eq!(postcard::to_stdvec(&req).unwrap(), expected);
        let req = Request::Membership { token: Token([1; 16]), group: "g".into() };
        let mut expected = vec![21]; // variant 21 = Membership
        expected.extend([1; 16]);
        expected.extend([1, b'g']);
        assert_eq!(postcard::to_stdvec(&req).unwrap(), expected);
        // variant 12 = Member; its id a varint.
        assert_eq!(postcard::to_stdvec(&Response::Member { since: 300 }).unwrap(), [12, 172, 2]);
    }

    fn arb_string() -> impl Strategy<Value = String> {
        "[a-z0-9_.-]{0,12}"
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let token = any::<[u8; 16]>().prop_map(Token);
        prop_oneof![
            (arb_string(), arb_string())
                .prop_map(|(user, password)| Request::CreateUser { user, password }),
            Just(Request::StateDigest),
            Just(Request::StateImage),
            (arb_string(), arb_string(), arb_string()).prop_map(|(user, password, peer_addr)| {
                Request::Login { user, password, peer_addr }
            }),
            (token.clone(), arb_string())
                .prop_map(|(token, group)| Request::JoinGroup { token, group }),
            (token.clone(), arb_string(), arb_string(), arb_string(), any::<u32>()).prop_map(
                |(token, group, prefix, after, limit)| Request::ListFilesPage {
                    token,
                    group,
                    prefix,
                    after,
                    limit
                }
            ),
            (token.clone(), arb_string(), arb_string())
                .prop_map(|(token, group, user)| Request::AcceptRequest { token, group, user }),
            (token.clone(), arb_string(), proptest::collection::vec(arb_string(), 0..4))
                .prop_map(|(token, group, files)| Request::FileInfos { token, group, files }),
            (token.clone(), arb_string(), arb_meta())
                .prop_map(|(token, group, meta)| Request::UploadFile { token, group, meta }),
            (token.clone(), arb_string(), proptest::collection::vec(arb_meta(), 0..4))
                .prop_map(|(token, group, files)| Request::UploadFiles { token, group, files }),
            (token.clone(), arb_string(), proptest::collection::vec(arb_string(), 0..4))
                .prop_map(|(token, group, files)| Request::StopShares { token, group, files }),
            (token, arb_string()).prop_map(|(token, group)| Request::Membership { token, group }),
        ]
    }

    fn arb_meta() -> impl Strategy<Value = FileMeta> {
        (arb_string(), any::<u64>(), proptest::collection::vec(any::<[u8; 20]>(), 0..4)).prop_map(
            |(name, len, hashes)| FileMeta {
                name,
                len,
                sha1: Sha1Digest([7; 20]),
                piece_hashes: hashes.into_iter().map(Sha1Digest).collect(),
            },
        )
    }

    proptest! {
        #[test]
        fn request_round_trips(req in arb_request()) {
            let frame = encode_frame(REQUEST, &req).unwrap();
            let (f, used) = wire::decode(&frame, MAX_FRAME).unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(f.kind, REQUEST);
            let back: Request = postcard::from_bytes(f.payload).unwrap();
            prop_assert_eq!(back, req);
        }

        #[test]
        fn garbage_payload_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = postcard::from_bytes::<Request>(&bytes);
            let _ = postcard::from_bytes::<Response>(&bytes);
        }
    }
}
