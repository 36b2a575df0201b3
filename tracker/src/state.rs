//! The tracker's state as a deterministic state machine over [`Op`]s.
//!
//! Every change to the tracker is an [`Op`] applied with [`State::apply`]: the
//! same ops applied in the same order give the same state on every tracker,
//! with no clock, randomness or I/O inside. Everything random or slow
//! (session tokens, argon2id password hashes) is computed before the op is
//! built and travels inside it, so an op can be logged and replayed or sent
//! to another tracker as it is.
//!
//! Invariants kept by `apply`:
//! - a group's owner is its first member; members are kept in join order;
//! - each member of a group has a membership id (see [`State::member_since`]),
//!   and nobody else has one there;
//! - a user is never both a member of a group and pending in it;
//! - a group with no member does not exist;
//! - a shared file has at least one sharer; the last sharer leaving removes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ringshare_engine::meta::FileMeta;
use ringshare_engine::proto::{FileEntry, PeerInfo, Refusal, Token};
use serde::{Deserialize, Serialize};

use crate::hlc::Stamp;

/// One change to the tracker's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Register a user with an argon2id PHC hash of their password.
    CreateUser {
        /// The user id.
        user: String,
        /// The PHC string of the password's argon2id hash.
        password_hash: String,
    },
    /// Start a session for `user` at node `peer_addr`, replacing any older
    /// session of the same user at the same address.
    Login {
        /// The user id.
        user: String,
        /// The new session's token.
        token: Token,
        /// The node's piece-server address.
        peer_addr: String,
    },
    /// End a session.
    Logout {
        /// The session's token.
        token: Token,
    },
    /// Create a group owned by `user`.
    CreateGroup {
        /// The creator and owner.
        user: String,
        /// The group id.
        group: String,
    },
    /// `user` asks to join `group`.
    JoinGroup {
        /// The requester.
        user: String,
        /// The group id.
        group: String,
    },
    /// `user` leaves `group`, or withdraws a pending request to join it.
    LeaveGroup {
        /// The user.
        user: String,
        /// The group id.
        group: String,
    },
    /// The owner lets `user` into `group`.
    AcceptRequest {
        /// Who accepts: must own the group.
        owner: String,
        /// The group id.
        group: String,
        /// The requester.
        user: String,
    },
    /// The owner refuses `user`'s request to join `group`.
    RejectRequest {
        /// Who refuses: must own the group.
        owner: String,
        /// The group id.
        group: String,
        /// The requester.
        user: String,
    },
    /// `user` at `peer_addr` shares a file in `group`.
    UploadFile {
        /// The sharer.
        user: String,
        /// The sharing node.
        peer_addr: String,
        /// The group id.
        group: String,
        /// The file's metadata.
        meta: FileMeta,
    },
    /// The key tickets are signed with, made by the first tracker to start.
    SetTicketKey {
        /// The ed25519 secret key.
        secret: [u8; 32],
    },
    /// `user` at `peer_addr` stops sharing a file in `group`.
    StopShare {
        /// The sharer.
        user: String,
        /// The sharing node.
        peer_addr: String,
        /// The group id.
        group: String,
        /// The file name.
        file: String,
    },
    /// A session silent for longer than the trackers' session expiry ends
    /// (`--session-expiry`), and its node's shares go with it: a node
    /// killed without logging out (a `get` stopped with `kill -9`) left its
    /// session and the shares of its address for good, counted against its
    /// user's budget. A node that comes back logs in and registers its
    /// shares again from its share record. Nothing happens if the session
    /// is gone already (replaced by a later login of the same node, ended,
    /// or expired by another tracker too). Last of the ops: a log written
    /// before it existed reads as before.
    Expire {
        /// The session's token.
        token: Token,
    },
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The argon2id PHC string.
    pub password_hash: String,
}

/// A logged-in session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who is logged in.
    pub user: String,
    /// Where their node serves pieces.
    pub peer_addr: String,
}

/// A group of users sharing files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Members in join order; the first is the owner.
    pub members: Vec<String>,
    /// Users waiting to be let in, in request order.
    pub requests: Vec<String>,
    /// Files shared in the group, by name.
    pub files: BTreeMap<String, SharedFile>,
}

impl Group {
    /// The owner: the longest-standing member.
    pub fn owner(&self) -> &str {
        // Invariant: a group always has at least one member.
        &self.members[0]
    }

    fn is_member(&self, user: &str) -> bool {
        self.members.iter().any(|m| m == user)
    }
}

/// A file shared in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    /// The file's metadata.
    pub meta: FileMeta,
    /// Who shares it, from which node.
    pub sharers: BTreeSet<Sharer>,
}

/// A user sharing a file from a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sharer {
    /// The user.
    pub user: String,
    /// The node's piece-server address.
    pub peer_addr: String,
}

/// Of the names in `files`, one that `name` cannot be beside: one named
/// as a directory of it (`a` for `a/b`), or one under it as a directory
/// (`a/b` for `a`). No destination can hold both.
pub fn name_clash<'a, V>(files: &'a BTreeMap<String, V>, name: &str) -> Option<&'a str> {
    let above = name
        .match_indices('/')
        .map(|(i, _)| &name[..i])
        .find_map(|dir| files.get_key_value(dir).map(|(k, _)| k.as_str()));
    above.or_else(|| {
        let dir = format!("{name}/");
        files.range(dir.clone()..).next().map(|(k, _)| k.as_str()).filter(|k| k.starts_with(&dir))
    })
}

/// The live sessions of a state, by user and peer address ([`Nodes`]),
/// for one request: `live` says which sessions are alive (soft state kept
/// outside).
struct Online<'a> {
    nodes: &'a Nodes,
    live: &'a dyn Fn(&Token) -> bool,
}

impl<'a> Online<'a> {
    /// The live session of the sharer's user at its address (the first in
    /// token order, if there were ever more than one).
    fn get(&self, s: &Sharer) -> Option<&'a Token> {
        self.nodes.at(&s.user, &s.peer_addr).iter().find(|t| (self.live)(t))
    }

    /// A file as `list_files` shows it, with its online sharers counted.
    fn entry(&self, f: &SharedFile) -> FileEntry {
        FileEntry {
            name: f.meta.name.clone(),
            len: f.meta.len,
            peers: f.sharers.iter().filter(|s| self.get(s).is_some()).count() as u32,
        }
    }
}

/// Each session's token by its user and node address (derived from the
/// sessions: not stored, built again by [`State::recount`] when a state is
/// read). A login replaces the pair's earlier session, so a pair has one
/// token; a list, in token order, all the same, so that a state where
/// some pair had more (none is known) still finds each one.
///
/// What a peer list or a listing looks sharers' sessions up in, and what a
/// login finds the session it replaces by: both scanned every session of
/// the tracker, so each cost O(sessions) however few the file's sharers
/// or the user's nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Nodes(HashMap<String, HashMap<String, Vec<Token>>>);

impl Nodes {
    fn at(&self, user: &str, peer_addr: &str) -> &[Token] {
        self.0.get(user).and_then(|by| by.get(peer_addr)).map_or(&[], Vec::as_slice)
    }

    fn add(&mut self, user: &str, peer_addr: &str, token: Token) {
        let tokens =
            self.0.entry(user.to_owned()).or_default().entry(peer_addr.to_owned()).or_default();
        if let Err(i) = tokens.binary_search(&token) {
            tokens.insert(i, token);
        }
    }

    /// Takes the pair's tokens out.
    fn take(&mut self, user: &str, peer_addr: &str) -> Vec<Token> {
        let Some(by) = self.0.get_mut(user) else { return Vec::new() };
        let tokens = by.remove(peer_addr).unwrap_or_default();
        if by.is_empty() {
            self.0.remove(user);
        }
        tokens
    }

    fn remove(&mut self, user: &str, peer_addr: &str, token: &Token) {
        let Some(by) = self.0.get_mut(user) else { return };
        if let Some(tokens) = by.get_mut(peer_addr) {
            tokens.retain(|t| t != token);
            if tokens.is_empty() {
                by.remove(peer_addr);
            }
        }
        if by.is_empty() {
            self.0.remove(user);
        }
    }

    fn of(sessions: &BTreeMap<Token, Session>) -> Self {
        let mut nodes = Self::default();
        for (t, s) in sessions {
            nodes.add(&s.user, &s.peer_addr, *t);
        }
        nodes
    }
}

/// The whole replicated state of a tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    users: BTreeMap<String, User>,
    sessions: BTreeMap<Token, Session>,
    groups: BTreeMap<String, Group>,
    /// The trackers' ed25519 secret key for signing tickets: the first one
    /// set (in stamp order) stays.
    ticket_key: Option<[u8; 32]>,
    /// Each group's members' membership ids, by group and user (see
    /// [`State::member_since`]). Kept apart from [`Group`]: a model of the
    /// state that knows no stamps (`nemesis`) compares groups as they are.
    memberships: BTreeMap<String, BTreeMap<String, u64>>,
    /// What shares hold (derived: not stored, counted again by
    /// [`State::recount`] when a state is read).
    #[serde(skip)]
    usage: Usage,
    /// The sessions by user and node address (derived, as `usage` is).
    #[serde(skip)]
    nodes: Nodes,
}

/// What one user's share of one file (one node's) holds of a tracker's
/// state, for the trackers' limits: the file's metadata (its name and
/// piece hashes) and a little for the entries around it. A share of a
/// file many share costs each sharer the whole of it (limits per user);
/// the state holds the metadata once (the total).
pub fn share_cost(meta: &FileMeta) -> u64 {
    SHARE_OVERHEAD + meta.name.len() as u64 + 20 * meta.piece_hashes.len() as u64
}

/// The bytes a share costs beyond its name and piece hashes.
const SHARE_OVERHEAD: u64 = 128;

/// The bytes a sharer entry costs in the total (its user and address).
const SHARER_COST: u64 = 64;

/// What shares hold: per user, [`share_cost`] of each file shared (per
/// node sharing it); in all, each file's metadata once and each sharer
/// entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Usage {
    by_user: HashMap<String, u64>,
    total: u64,
}

impl Usage {
    /// `user` shares a file of `cost` from one more node (a file the
    /// state did not hold yet if `new_file`).
    fn add(&mut self, user: &str, cost: u64, new_file: bool) {
        match self.by_user.get_mut(user) {
            Some(u) => *u += cost,
            None => {
                self.by_user.insert(user.to_owned(), cost);
            }
        }
        self.total += SHARER_COST + if new_file { cost } else { 0 };
    }

    /// `user` shares a file of `cost` from `entries` nodes fewer (and the
    /// state holds it no more if `gone`).
    fn remove(&mut self, user: &str, cost: u64, entries: u64, gone: bool) {
        if let Some(u) = self.by_user.get_mut(user) {
            *u = u.saturating_sub(cost * entries);
            if *u == 0 {
                self.by_user.remove(user);
            }
        }
        let freed = SHARER_COST * entries + if gone { cost } else { 0 };
        self.total = self.total.saturating_sub(freed);
    }
}

/// The membership id of a membership made by the op stamped `stamp`: the
/// same at every tracker (the stamp travels with the op), ordered as the
/// stamps are (a later membership of a user in a group has a larger id, so
/// a node can tell a tracker that has not heard of it yet), never 0 (the
/// id of memberships made before ids were kept, see [`StateV2`]). The
/// stamp's wall-clock milliseconds (42 bits, until 2109), its counter's
/// low 6 bits and its origin: two memberships of one user in one group
/// alike only if made in the same millisecond at one tracker with 64
/// other ops between them.
pub fn membership_id(stamp: &Stamp) -> u64 {
    let ms = stamp.wall_ms.min((1 << 42) - 1);
    ((ms << 22) | ((u64::from(stamp.counter) & 0x3f) << 16) | u64::from(stamp.origin)).max(1)
}

/// The state as trackers before membership ids kept it (snapshot versions 1
/// and 2): read, and made a [`State`] whose members have membership id 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateV2 {
    users: BTreeMap<String, User>,
    sessions: BTreeMap<Token, Session>,
    groups: BTreeMap<String, Group>,
    ticket_key: Option<[u8; 32]>,
}

impl From<StateV2> for State {
    fn from(old: StateV2) -> Self {
        let memberships = old
            .groups
            .iter()
            .map(|(name, g)| (name.clone(), g.members.iter().map(|m| (m.clone(), 0)).collect()))
            .collect();
        Self {
            users: old.users,
            sessions: old.sessions,
            groups: old.groups,
            ticket_key: old.ticket_key,
            memberships,
            usage: Usage::default(),
            nodes: Nodes::default(),
        }
        .recounted()
    }
}

#[cfg(test)]
impl From<State> for StateV2 {
    fn from(st: State) -> Self {
        Self {
            users: st.users,
            sessions: st.sessions,
            groups: st.groups,
            ticket_key: st.ticket_key,
        }
    }
}

impl State {
    /// Applies one op as a model of the state does, knowing no stamp: the
    /// memberships it makes have id 0. Trackers apply with
    /// [`State::apply_stamped`].
    pub fn apply(&mut self, op: &Op) -> Result<(), Refusal> {
        self.apply_as(op, 0)
    }

    /// Applies one op, stamped `stamp`. A refused op changes nothing.
    pub fn apply_stamped(&mut self, op: &Op, stamp: &Stamp) -> Result<(), Refusal> {
        self.apply_as(op, membership_id(stamp))
    }

    /// Applies one op; a membership it makes gets id `id`.
    fn apply_as(&mut self, op: &Op, id: u64) -> Result<(), Refusal> {
        match op {
            Op::CreateUser { user, password_hash } => {
                if self.users.contains_key(user) {
                    return Err(Refusal::UserExists(user.clone()));
                }
                self.users.insert(user.clone(), User { password_hash: password_hash.clone() });
            }
            Op::Login { user, token, peer_addr } => {
                if !self.users.contains_key(user) {
                    return Err(Refusal::BadCredentials);
                }
                // The pair's earlier session goes (found by the index, not
                // by a look at every session).
                for old in self.nodes.take(user, peer_addr) {
                    self.sessions.remove(&old);
                }
                let session = Session { user: user.clone(), peer_addr: peer_addr.clone() };
                if let Some(was) = self.sessions.insert(*token, session) {
                    // The token was another pair's (tokens are random: never
                    // seen, but the index must not keep it there).
                    self.nodes.remove(&was.user, &was.peer_addr, token);
                }
                self.nodes.add(user, peer_addr, *token);
            }
            Op::Logout { token } => {
                self.end_session(token).ok_or(Refusal::NotLoggedIn)?;
            }
            Op::CreateGroup { user, group } => {
                if self.groups.contains_key(group) {
                    return Err(Refusal::GroupExists(group.clone()));
                }
                let g = Group {
                    members: vec![user.clone()],
                    requests: Vec::new(),
                    files: BTreeMap::new(),
                };
                self.groups.insert(group.clone(), g);
                self.memberships.insert(group.clone(), BTreeMap::from([(user.clone(), id)]));
            }
            Op::JoinGroup { user, group } => {
                let g = self.group_mut(group)?;
                if g.is_member(user) {
                    return Err(Refusal::AlreadyMember(group.clone()));
                }
                if g.requests.contains(user) {
                    return Err(Refusal::AlreadyRequested(group.clone()));
                }
                g.requests.push(user.clone());
            }
            Op::LeaveGroup { user, group } => {
                let g = self.group_mut(group)?;
                if let Some(i) = g.requests.iter().position(|r| r == user) {
                    g.requests.remove(i);
                    return Ok(());
                }
                let i = g
                    .members
                    .iter()
                    .position(|m| m == user)
                    .ok_or_else(|| Refusal::NotMember(group.clone()))?;
                // Ownership passes to the next member in join order by construction.
                g.members.remove(i);
                let mut freed = Vec::new();
                g.files.retain(|_, f| {
                    let before = f.sharers.len();
                    f.sharers.retain(|s| s.user != *user);
                    let gone = f.sharers.is_empty();
                    if f.sharers.len() < before {
                        freed.push((share_cost(&f.meta), before - f.sharers.len(), gone));
                    }
                    !gone
                });
                for (cost, entries, gone) in freed {
                    self.usage.remove(user, cost, entries as u64, gone);
                }
                let g = self.group_mut(group)?;
                if g.members.is_empty() {
                    self.groups.remove(group);
                    self.memberships.remove(group);
                } else if let Some(m) = self.memberships.get_mut(group) {
                    m.remove(user);
                }
            }
            Op::AcceptRequest { owner, group, user } => {
                let g = self.owned_group_mut(owner, group)?;
                let i = g.requests.iter().position(|r| r == user).ok_or_else(|| {
                    Refusal::NoSuchRequest { group: group.clone(), user: user.clone() }
                })?;
                g.requests.remove(i);
                g.members.push(user.clone());
                self.memberships.entry(group.clone()).or_default().insert(user.clone(), id);
            }
            Op::RejectRequest { owner, group, user } => {
                let g = self.owned_group_mut(owner, group)?;
                let i = g.requests.iter().position(|r| r == user).ok_or_else(|| {
                    Refusal::NoSuchRequest { group: group.clone(), user: user.clone() }
                })?;
                g.requests.remove(i);
            }
            Op::UploadFile { user, peer_addr, group, meta } => {
                let g = self.member_group_mut(user, group)?;
                let sharer = Sharer { user: user.clone(), peer_addr: peer_addr.clone() };
                let new_file = match g.files.get_mut(&meta.name) {
                    Some(f) if f.meta != *meta => {
                        return Err(Refusal::DifferentContent {
                            group: group.clone(),
                            file: meta.name.clone(),
                        })
                    }
                    Some(f) => {
                        if !f.sharers.insert(sharer) {
                            return Err(Refusal::AlreadySharing {
                                group: group.clone(),
                                file: meta.name.clone(),
                            });
                        }
                        false
                    }
                    None => {
                        let f =
                            SharedFile { meta: meta.clone(), sharers: BTreeSet::from([sharer]) };
                        g.files.insert(meta.name.clone(), f);
                        true
                    }
                };
                self.usage.add(user, share_cost(meta), new_file);
            }
            Op::SetTicketKey { secret } => {
                if self.ticket_key.is_some() {
                    return Err(Refusal::BadRequest("the ticket key is already set".into()));
                }
                self.ticket_key = Some(*secret);
            }
            Op::StopShare { user, peer_addr, group, file } => {
                let g = self.member_group_mut(user, group)?;
                let no_file = || Refusal::NoSuchFile { group: group.clone(), file: file.clone() };
                let f = g.files.get_mut(file).ok_or_else(no_file)?;
                let sharer = Sharer { user: user.clone(), peer_addr: peer_addr.clone() };
                if !f.sharers.remove(&sharer) {
                    return Err(Refusal::NotSharing { group: group.clone(), file: file.clone() });
                }
                let (cost, gone) = (share_cost(&f.meta), f.sharers.is_empty());
                if gone {
                    g.files.remove(file);
                }
                self.usage.remove(user, cost, 1, gone);
            }
            Op::Expire { token } => {
                if let Some(s) = self.end_session(token) {
                    self.drop_shares_of(&s);
                }
            }
        }
        Ok(())
    }

    /// Removes session `token` and its index entry; the session, if it was.
    fn end_session(&mut self, token: &Token) -> Option<Session> {
        let s = self.sessions.remove(token)?;
        self.nodes.remove(&s.user, &s.peer_addr, token);
        Some(s)
    }

    /// Takes every share of `node`'s user at its address out of the groups
    /// it is a member of (the groups it left hold none), as
    /// [`Op::StopShare`] would one by one. Costs a look at each file of
    /// those groups.
    fn drop_shares_of(&mut self, node: &Session) {
        let sharer = Sharer { user: node.user.clone(), peer_addr: node.peer_addr.clone() };
        for g in self.groups.values_mut().filter(|g| g.is_member(&node.user)) {
            let mut gone = Vec::new();
            for (name, f) in g.files.iter_mut() {
                if f.sharers.remove(&sharer) {
                    let empty = f.sharers.is_empty();
                    self.usage.remove(&node.user, share_cost(&f.meta), 1, empty);
                    if empty {
                        gone.push(name.clone());
                    }
                }
            }
            for name in gone {
                g.files.remove(&name);
            }
        }
    }

    /// The key tickets are signed with.
    pub fn ticket_key(&self) -> Option<&[u8; 32]> {
        self.ticket_key.as_ref()
    }

    /// The session a token names.
    pub fn session(&self, token: &Token) -> Option<&Session> {
        self.sessions.get(token)
    }

    /// The sessions of `user` at node address `peer_addr` (at most one,
    /// as a login replaces the pair's earlier session).
    pub fn sessions_at(&self, user: &str, peer_addr: &str) -> Vec<Token> {
        self.nodes.at(user, peer_addr).to_vec()
    }

    /// The sessions of `user` at every node address but `except` (whose
    /// session a login there replaces), in address order.
    pub fn sessions_of_but(&self, user: &str, except: &str) -> Vec<Token> {
        let Some(by) = self.nodes.0.get(user) else { return Vec::new() };
        let mut tokens: Vec<(&String, Token)> = by
            .iter()
            .filter(|(addr, _)| addr.as_str() != except)
            .flat_map(|(addr, ts)| ts.iter().map(move |t| (addr, *t)))
            .collect();
        tokens.sort_unstable();
        tokens.into_iter().map(|(_, t)| t).collect()
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(|u| u.password_hash.as_str())
    }

    /// Whether a user exists.
    pub fn user_exists(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// A file of `group` that `name` cannot be shared beside (see
    /// [`name_clash`]).
    pub fn name_clash(&self, group: &str, name: &str) -> Option<&str> {
        name_clash(&self.groups.get(group)?.files, name)
    }

    /// Whether `group` holds a file named exactly `name`.
    pub fn has_file(&self, group: &str, name: &str) -> bool {
        self.groups.get(group).is_some_and(|g| g.files.contains_key(name))
    }

    /// Whether `user` shares `file` in `group` from the node at `peer_addr`.
    pub fn is_sharing(&self, group: &str, file: &str, user: &str, peer_addr: &str) -> bool {
        let sharer = Sharer { user: user.to_owned(), peer_addr: peer_addr.to_owned() };
        let f = self.groups.get(group).and_then(|g| g.files.get(file));
        f.is_some_and(|f| f.sharers.contains(&sharer))
    }

    /// A group by id.
    pub fn group(&self, group: &str) -> Option<&Group> {
        self.groups.get(group)
    }

    /// Every group id, in order.
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// The pending requests of a group `owner` owns.
    pub fn requests(&self, owner: &str, group: &str) -> Result<Vec<String>, Refusal> {
        let g = self.groups.get(group).ok_or_else(|| Refusal::NoSuchGroup(group.into()))?;
        if g.owner() != owner {
            return Err(Refusal::NotOwner(group.into()));
        }
        Ok(g.requests.clone())
    }

    /// Counts again what shares hold and indexes the sessions (a state read
    /// from bytes holds neither): one pass over every file and session.
    pub fn recount(&mut self) {
        self.nodes = Nodes::of(&self.sessions);
        let mut usage = Usage::default();
        for g in self.groups.values() {
            for f in g.files.values() {
                let cost = share_cost(&f.meta);
                for (i, s) in f.sharers.iter().enumerate() {
                    usage.add(&s.user, cost, i == 0);
                }
            }
        }
        self.usage = usage;
    }

    fn recounted(mut self) -> Self {
        self.recount();
        self
    }

    /// What `user`'s shares hold ([`share_cost`] of each, per node).
    pub fn share_bytes(&self, user: &str) -> u64 {
        self.usage.by_user.get(user).copied().unwrap_or(0)
    }

    /// What every share holds: each file's metadata once, and each
    /// sharer entry.
    pub fn total_share_bytes(&self) -> u64 {
        self.usage.total
    }

    /// The id of `user`'s membership of `group`: a node records it with
    /// what it shares there, and a node that finds another one (the user
    /// left and was let in again, or the group was deleted and made anew
    /// under its name) knows that those shares were made for members of
    /// another time and stops them. 0 for a membership made before ids
    /// were kept.
    pub fn member_since(&self, user: &str, group: &str) -> Result<u64, Refusal> {
        self.member_group(user, group)?;
        Ok(self.memberships.get(group).and_then(|m| m.get(user)).copied().unwrap_or(0))
    }

    /// Whether `user` may read `group` (it exists and they are a member).
    pub fn require_member(&self, user: &str, group: &str) -> Result<(), Refusal> {
        self.member_group(user, group).map(|_| ())
    }

    /// The files of a group `user` belongs to, with online sharer counts;
    /// `live` says which sessions are alive (soft state kept outside).
    pub fn files(
        &self,
        user: &str,
        group: &str,
        live: &dyn Fn(&Token) -> bool,
    ) -> Result<Vec<FileEntry>, Refusal> {
        let g = self.member_group(user, group)?;
        let online = self.online_sessions(live);
        Ok(g.files.values().map(|f| online.entry(f)).collect())
    }

    /// One page of the files of a group `user` belongs to, in name order:
    /// names starting with `prefix`, after `after`, at most `limit`; and
    /// whether more match. Costs O(log n + limit) however large the group.
    pub fn files_page(
        &self,
        user: &str,
        group: &str,
        prefix: &str,
        after: &str,
        limit: usize,
        live: &dyn Fn(&Token) -> bool,
    ) -> Result<(Vec<FileEntry>, bool), Refusal> {
        use std::ops::Bound;
        let g = self.member_group(user, group)?;
        let online = self.online_sessions(live);
        let start = if after >= prefix {
            Bound::Excluded(after.to_owned())
        } else {
            Bound::Included(prefix.to_owned())
        };
        let mut matching = g
            .files
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix));
        let files: Vec<FileEntry> =
            matching.by_ref().take(limit).map(|(_, f)| online.entry(f)).collect();
        let more = matching.next().is_some();
        Ok((files, more))
    }

    /// A file's metadata and online peers, for a member of its group: at
    /// most [`crate::service::MAX_LISTED`], a random choice of them
    /// (`below(n)`, a random number under `n`) if more are online. Chosen
    /// before their entries are made: a file of 1,000 sharers made 1,000
    /// for each ask and kept 200.
    pub fn file_info(
        &self,
        user: &str,
        group: &str,
        file: &str,
        live: &dyn Fn(&Token) -> bool,
        key_of: &dyn Fn(&Token) -> Option<[u8; 32]>,
        below: impl FnMut(usize) -> usize,
    ) -> Result<(FileMeta, Vec<PeerInfo>), Refusal> {
        let g = self.member_group(user, group)?;
        let f = g
            .files
            .get(file)
            .ok_or_else(|| Refusal::NoSuchFile { group: group.into(), file: file.into() })?;
        let online = self.online_sessions(live);
        let mut sharers: Vec<(&Sharer, &Token)> =
            f.sharers.iter().filter_map(|s| Some((s, online.get(s)?))).collect();
        let all = sharers.len();
        crate::service::cap_listed(&mut sharers, all, below);
        let peers = sharers
            .into_iter()
            .map(|(s, token)| PeerInfo {
                user: s.user.clone(),
                addr: s.peer_addr.clone(),
                key: key_of(token),
            })
            .collect();
        Ok((f.meta.clone(), peers))
    }

    /// The number of pending join requests of a group (0 if none).
    pub fn pending_requests(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |g| g.requests.len())
    }

    /// Every session token.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.sessions.keys()
    }

    /// Whether a sharer's node has a live session.
    /// The live sessions by user and address ([`Nodes`]). Built once per
    /// request as a map of every live session, it made each peer list and
    /// each page of a listing O(sessions), whatever the file's sharers: with
    /// 4,000 sessions in 40 groups of 100, a tracker answered about 450
    /// peer lists a second (p99 40 ms), against 6,400–7,700 (p99 2–4.5 ms)
    /// looked up in the index (`tracker_load --mix peers`).
    fn online_sessions<'a>(&'a self, live: &'a dyn Fn(&Token) -> bool) -> Online<'a> {
        Online { nodes: &self.nodes, live }
    }

    fn group_mut(&mut self, group: &str) -> Result<&mut Group, Refusal> {
        self.groups.get_mut(group).ok_or_else(|| Refusal::NoSuchGroup(group.into()))
    }

    fn owned_group_mut(&mut self, owner: &str, group: &str) -> Result<&mut Group, Refusal> {
        let g = self.group_mut(group)?;
        if g.owner() != owner {
            return Err(Refusal::NotOwner(group.into()));
        }
        Ok(g)
    }

    fn member_group(&self, user: &str, group: &str) -> Result<&Group, Refusal> {
        let g = self.groups.get(group).ok_or_else(|| Refusal::NoSuchGroup(group.into()))?;
        if !g.is_member(user) {
            return Err(Refusal::NotMember(group.into()));
        }
        Ok(g)
    }

    fn member_group_mut(&mut self, user: &str, group: &str) -> Result<&mut Group, Refusal> {
        let g = self.group_mut(group)?;
        if !g.is_member(user) {
            return Err(Refusal::NotMember(group.into()));
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringshare_engine::meta::Sha1Digest;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    fn meta(name: &str, fill: u8) -> FileMeta {
        FileMeta {
            name: s(name),
            len: 1,
            sha1: Sha1Digest([fill; 20]),
            piece_hashes: vec![Sha1Digest([fill; 20])],
        }
    }

    fn with_users(users: &[&str]) -> State {
        let mut st = State::default();
        for (i, u) in users.iter().enumerate() {
            st.apply(&Op::CreateUser { user: s(u), password_hash: s("h") }).unwrap();
            let token = Token([i as u8; 16]);
            st.apply(&Op::Login {
                user: s(u),
                token,
                peer_addr: format!("127.0.0.1:{}", 1000 + i),
            })
            .unwrap();
        }
        st
    }

    fn join(st: &mut State, owner: &str, group: &str, user: &str) {
        st.apply(&Op::JoinGroup { user: s(user), group: s(group) }).unwrap();
        st.apply(&Op::AcceptRequest { owner: s(owner), group: s(group), user: s(user) }).unwrap();
    }

    #[test]
    fn duplicate_user_refused() {
        let mut st = with_users(&["a"]);
        assert_eq!(
            st.apply(&Op::CreateUser { user: s("a"), password_hash: s("x") }),
            Err(Refusal::UserExists(s("a")))
        );
    }

    #[test]
    fn join_flow_and_its_refusals() {
        let mut st = with_users(&["a", "b", "c"]);
        st.apply(&Op::CreateGroup { user: s("a"), group: s("g") }).unwrap();
        assert_eq!(
            st.apply(&Op::CreateGroup { user: s("b"), group: s("g") }),
            Err(Refusal::GroupExists(s("g")))
        );
        assert_eq!(
            st.apply(&Op::JoinGroup { user: s("a"), group: s("g") }),
            Err(Refusal::AlreadyMember(s("g")))
        );
        st.apply(&Op::JoinGroup { user: s("b"), group: s("g") }).unwrap();
        assert_eq!(
            st.apply(&Op::JoinGroup { user: s("b"), group: s("g") }),
            Err(Refusal::AlreadyRequested(s("g")))
        );
        assert_eq!(st.requests("a", "g").unwrap(), vec![s("b")]);
        assert_eq!(st.requests("b", "g"), Err(Refusal::NotOwner(s("g"))));
        assert_eq!(
            st.apply(&Op::AcceptRequest { owner: s("b"), group: s("g"), user: s("b") }),
            Err(Refusal::NotOwner(s("g")))
        );
        assert_eq!(
            st.apply(&Op::AcceptRequest { owner: s("a"), group: s("g"), user: s("c") }),
            Err(Refusal::NoSuchRequest { group: s("g"), user: s("c") })
        );
        st.apply(&Op::AcceptRequest { owner: s("a"), group: s("g"), user: s("b") }).unwrap();
        assert!(st.requests("a", "g").unwrap().is_empty());
        st.apply(&Op::JoinGroup { user: s("c"), group: s("g") }).unwrap();
        st.apply(&Op::RejectRequest { owner: s("a"), group: s("g"), user: s("c") }).unwrap();
        assert!(st.requests("a", "g").unwrap().is_empty());
        assert_eq!(st.files("c", "g", &|_| true), Err(Refusal::NotMember(s("g"))));
        assert_eq!(st.files("b", "nope", &|_| true), Err(Refusal::NoSuchGroup(s("nope"))));
    }

    #[test]
    fn owner_leaving_hands_over_to_the_next_member_and_last_member_deletes() {
        let mut st = with_users(&["a", "b", "c"]);
        st.apply(&Op::CreateGroup { user: s("a"), group: s("g") }).unwrap();
        join(&mut st, "a", "g", "b");
        join(&mut st, "a", "g", "c");
        st.apply(&Op::LeaveGroup { user: s("a"), group: s("g") }).unwrap();
        assert_eq!(st.group("g").unwrap().owner(), "b");
        st.apply(&Op::LeaveGroup { user: s("b"), group: s("g") }).unwrap();
        assert_eq!(st.group("g").unwrap().owner(), "c");
        st.apply(&Op::LeaveGroup { user: s("c"), group: s("g") }).unwrap();
        assert!(st.group("g").is_none());
        assert!(st.group_ids().is_empty());
    }

    #[test]
    fn a_membership_has_an_id_of_its_own_that_a_leave_and_a_remade_group_change() {
        let mut st = with_users(&["a", "b", "c"]);
        let mut clock = crate::hlc::Hlc::new(1);
        let mut at = |st: &mut State, op: Op| st.apply_stamped(&op, &clock.now(1_000));
        let (a, b) = (|| s("a"), || s("b"));
        at(&mut st, Op::CreateGroup { user: a(), group: s("g") }).unwrap();
        at(&mut st, Op::JoinGroup { user: b(), group: s("g") }).unwrap();
        at(&mut st, Op::AcceptRequest { owner: a(), group: s("g"), user: b() }).unwrap();
        let (owner, first) =
            (st.member_since("a", "g").unwrap(), st.member_since("b", "g").unwrap());
        assert!(owner != 0 && first != 0 && owner != first, "{owner} {first}");
        assert_eq!(st.member_since("c", "g"), Err(Refusal::NotMember(s("g"))));
        assert_eq!(st.member_since("a", "h"), Err(Refusal::NoSuchGroup(s("h"))));
        // A refused op makes no membership: b asks again while a member.
        assert!(at(&mut st, Op::JoinGroup { user: b(), group: s("g") }).is_err());
        assert_eq!(st.member_since("b", "g"), Ok(first));
        // b leaves and is let in again: another membership.
        at(&mut st, Op::LeaveGroup { user: b(), group: s("g") }).unwrap();
        assert_eq!(st.member_since("b", "g"), Err(Refusal::NotMember(s("g"))));
        at(&mut st, Op::JoinGroup { user: b(), group: s("g") }).unwrap();
        at(&mut st, Op::AcceptRequest { owner: a(), group: s("g"), user: b() }).unwrap();
        let second = st.member_since("b", "g").unwrap();
        assert!(second != first && second != 0);
        assert_eq!(st.member_since("a", "g"), Ok(owner), "the owner's is kept");
        // Everyone leaves; b makes a group of the same name.
        at(&mut st, Op::LeaveGroup { user: a(), group: s("g") }).unwrap();
        at(&mut st, Op::LeaveGroup { user: b(), group: s("g") }).unwrap();
        assert!(st.memberships.is_empty(), "{:?}", st.memberships);
        at(&mut st, Op::CreateGroup { user: b(), group: s("g") }).unwrap();
        let remade = st.member_since("b", "g").unwrap();
        assert!(![0, first, second].contains(&remade));
        assert!(first < second && second < remade, "ids grow with their ops' stamps");
        // The same ops with the same stamps give the same ids (trackers
        // replaying a log, or receiving it from another, agree).
        let again = |wall_ms, counter, origin| membership_id(&Stamp { wall_ms, counter, origin });
        assert_eq!(again(5, 1, 2), again(5, 1, 2));
        let ids: BTreeSet<u64> = [(5, 1, 2), (5, 2, 1), (5, 1, 1), (6, 1, 2), (5, 0, 2)]
            .map(|(w, c, o)| again(w, c, o))
            .into();
        assert_eq!(ids.len(), 5, "{ids:?}");
    }

    #[test]
    fn leaving_stops_that_users_shares_and_rejoin_works() {
        let mut st = with_users(&["a", "b"]);
        st.apply(&Op::CreateGroup { user: s("a"), group: s("g") }).unwrap();
        join(&mut st, "a", "g", "b");
        let up = |u: &str, p: &str| Op::UploadFile {
            user: s(u),
            peer_addr: s(p),
            group: s("g"),
            meta: meta("f", 1),
        };
        st.apply(&up("b", "127.0.0.1:1001")).unwrap();
        st.apply(&up("a", "127.0.0.1:1000")).unwrap();
        assert_eq!(st.files("a", "g", &|_| true).unwrap()[0].peers, 2);
        st.apply(&Op::LeaveGroup { user: s("b"), group: s("g") }).unwrap();
        assert_eq!(st.files("a", "g", &|_| true).unwrap()[0].peers, 1);
        join(&mut st, "a", "g", "b");
        assert!(st.group("g").unwrap().is_member("b"));
    }

    #[test]
    fn files_are_keyed_by_group_and_name() {
        let mut st = with_users(&["a"]);
        for g in ["g1", "g2"] {
            st.apply(&Op::CreateGroup { user: s("a"), group: s(g) }).unwrap();
        }
        let up = |g: &str, fill| Op::UploadFile {
            user: s("a"),
            peer_addr: s("127.0.0.1:1000"),
            group: s(g),
            meta: meta("f", fill),
        };
        st.apply(&up("g1", 1)).unwrap();
        st.apply(&up("g2", 2)).unwrap();
        assert_eq!(
            st.apply(&up("g1", 1)),
            Err(Refusal::AlreadySharing { group: s("g1"), file: s("f") })
        );
        assert_eq!(
            st.apply(&up("g1", 3)),
            Err(Refusal::DifferentContent { group: s("g1"), file: s("f") })
        );
        // The last sharer stopping removes the file; it comes back when shared again.
        let stop = Op::StopShare {
            user: s("a"),
            peer_addr: s("127.0.0.1:1000"),
            group: s("g1"),
            file: s("f"),
        };
        st.apply(&stop).unwrap();
        assert!(st.files("a", "g1", &|_| true).unwrap().is_empty());
        assert_eq!(st.apply(&stop), Err(Refusal::NoSuchFile { group: s("g1"), file: s("f") }));
        st.apply(&up("g1", 3)).unwrap();
        assert_eq!(st.files("a", "g1", &|_| true).unwrap().len(), 1);
    }

    #[test]
    fn file_pages_walk_a_prefix_in_name_order() {
        let mut st = with_users(&["a", "b"]);
        st.apply(&Op::CreateGroup { user: s("a"), group: s("g") }).unwrap();
        let names = ["c", "b2", "b/2", "a", "b/1", "b/10", "ba"];
        for (i, n) in names.iter().enumerate() {
            st.apply(&Op::UploadFile {
                user: s("a"),
                peer_addr: s("127.0.0.1:1000"),
                group: s("g"),
                meta: meta(n, i as u8 + 1),
            })
            .unwrap();
        }
        let walk = |prefix: &str, limit: usize| {
            let (mut all, mut after, mut pages) = (Vec::new(), String::new(), 0);
            loop {
                let (page, more) =
                    st.files_page("a", "g", prefix, &after, limit, &|_| true).unwrap();
                assert!(page.len() <= limit);
                pages += 1;
                all.extend(page.iter().map(|f| f.name.clone()));
                match (more, page.last()) {
                    (true, Some(last)) => after = last.name.clone(),
                    _ => break,
                }
            }
            (all, pages)
        };
        let mut sorted: Vec<String> = names.iter().map(|n| s(n)).collect();
        sorted.sort();
        for limit in 1..9 {
            assert_eq!(walk("", limit).0, sorted, "limit {limit}");
        }
        assert_eq!(walk("", 7).1, 1, "an exact fit needs no second page");
        assert_eq!(walk("b/", 2).0, ["b/1", "b/10", "b/2"]);
        assert_eq!(walk("b", 100).0, ["b/1", "b/10", "b/2", "b2", "ba"]);
        assert!(walk("zz", 3).0.is_empty());
        // A position before the prefix starts at the prefix.
        let (page, more) = st.files_page("a", "g", "b/", "a", 10, &|_| true).unwrap();
        assert_eq!((page.len(), more), (3, false));
        assert_eq!(st.files_page("b", "g", "", "", 10, &|_| true), Err(Refusal::NotMember(s("g"))));
    }

    #[test]
    fn logout_pauses_sharing_in_peer_lists() {
        let mut st = with_users(&["a", "b"]);
        st.apply(&Op::CreateGroup { user: s("a"), group: s("g") }).unwrap();
        join(&mut st, "a", "g", "b");
        st.apply(&Op::UploadFile {
            user: s("a"),
            peer_addr: s("127.0.0.1:1000"),
            group: s("g"),
            meta: meta("f", 1),
        })
        .unwrap();
        assert_eq!(st.file_info("b", "g", "f", &|_| true, &|_| None, |_| 0).unwrap().1.len(), 1);
        st.apply(&Op::Logout { token: Token([0; 16]) }).unwrap();
        assert!(st.file_info("b", "g", "f", &|_| true, &|_| None, |_| 0).unwrap().1.is_empty());
        assert_eq!(st.files("b", "g", &|_| true).unwrap()[0].peers, 0);
        st.apply(&Op::Login {
            user: s("a"),
            token: Token([9; 16]),
            peer_addr: s("127.0.0.1:1000"),
        })
        .unwrap();
        assert_eq!(st.file_info("b", "g", "f", &|_| true, &|_| None, |_| 0).unwrap().1.len(), 1);
    }

    /// A file with more online sharers than an answer lists gets a
    /// random choice of them, each once, none offline.
    #[test]
    fn a_peer_list_of_many_sharers_is_a_choice_of_the_online_ones() {
        let mut st = with_users(&["a", "b"]);
        st.apply(&Op::CreateGroup { user: s("a"), group: s("g") }).unwrap();
        join(&mut st, "a", "g", "b");
        let n = crate::service::MAX_LISTED + 100;
        for i in 0..n {
            let (peer_addr, token) = (
                format!("10.0.0.1:{i}"),
                Token([(i % 250) as u8, (i / 250) as u8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]),
            );
            st.apply(&Op::Login { user: s("a"), token, peer_addr: peer_addr.clone() }).unwrap();
            let meta = meta("f", 1);
            st.apply(&Op::UploadFile { user: s("a"), peer_addr, group: s("g"), meta }).unwrap();
        }
        // Every tenth node is offline.
        let offline = |t: &Token| t.0[0] % 10 == 3;
        let mut x = 1u64;
        let below = |k: usize| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as usize % k
        };
        let (_, peers) = st.file_info("b", "g", "f", &|t| !offline(t), &|_| None, below).unwrap();
        assert_eq!(peers.len(), crate::service::MAX_LISTED);
        let addrs: BTreeSet<&str> = peers.iter().map(|p| p.addr.as_str()).collect();
        assert_eq!(addrs.len(), peers.len(), "each once");
        for p in &peers {
            let i: usize = p.addr.rsplit(':').next().unwrap().parse().unwrap();
            assert!(i % 250 % 10 != 3, "{} is offline", p.addr);
        }
        assert!(addrs.iter().any(|a| a.ends_with(":299")), "the choice reaches the last sharers");
    }

    #[test]
    fn an_expired_session_takes_its_nodes_shares_and_nothing_else() {
        let mut st = with_users(&["a", "b"]);
        st.apply(&Op::CreateGroup { user: s("a"), group: s("g") }).unwrap();
        st.apply(&Op::JoinGroup { user: s("b"), group: s("g") }).unwrap();
        st.apply(&Op::AcceptRequest { owner: s("a"), group: s("g"), user: s("b") }).unwrap();
        let gone = Token([7; 16]);
        st.apply(&Op::Login { user: s("a"), token: gone, peer_addr: s("127.0.0.1:7") }).unwrap();
        let share = |user: &str, at: &str, name: &str| Op::UploadFile {
            user: s(user),
            peer_addr: s(at),
            group: s("g"),
            meta: meta(name, 1),
        };
        // Only the expired node holds "alone"; "both" also another node of
        // the same user and a node of another user.
        st.apply(&share("a", "127.0.0.1:7", "alone")).unwrap();
        st.apply(&share("a", "127.0.0.1:7", "both")).unwrap();
        st.apply(&share("a", "127.0.0.1:1000", "both")).unwrap();
        st.apply(&share("b", "127.0.0.1:7", "both")).unwrap();
        let bytes = st.share_bytes("a");
        st.apply(&Op::Expire { token: gone }).unwrap();
        assert!(st.session(&gone).is_none());
        assert!(st.session(&Token([0; 16])).is_some(), "another session stays");
        let g = &st.groups["g"];
        assert!(!g.files.contains_key("alone"), "its last sharer gone, the file goes");
        let left: Vec<_> = g.files["both"].sharers.iter().cloned().collect();
        assert_eq!(
            left,
            [
                Sharer { user: s("a"), peer_addr: s("127.0.0.1:1000") },
                Sharer { user: s("b"), peer_addr: s("127.0.0.1:7") }
            ]
        );
        assert!(st.share_bytes("a") < bytes);
        assert_eq!(st.usage, st.clone().recounted().usage);
        // Expired again (by the other tracker too): nothing more happens.
        let before = st.clone();
        st.apply(&Op::Expire { token: gone }).unwrap();
        assert_eq!(st, before);
    }

    #[test]
    fn relogin_at_the_same_node_replaces_the_old_session() {
        let mut st = with_users(&["a"]);
        st.apply(&Op::Login {
            user: s("a"),
            token: Token([9; 16]),
            peer_addr: s("127.0.0.1:1000"),
        })
        .unwrap();
        assert!(st.session(&Token([0; 16])).is_none());
        assert!(st.session(&Token([9; 16])).is_some());
    }

    /// A session's token byte: often one of a few (so that logouts and
    /// expiries find sessions), sometimes any.
    fn tok() -> impl Strategy<Value = u8> + Clone {
        prop_oneof![0u8..4, any::<u8>()]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let user = prop::sample::select(vec!["a", "b", "c"]).prop_map(s);
        let group = prop::sample::select(vec!["g", "h"]).prop_map(s);
        let addr = prop::sample::select(vec!["127.0.0.1:1", "127.0.0.1:2"]).prop_map(s);
        let file = prop::sample::select(vec!["f", "a-longer-name"]).prop_map(s);
        prop_oneof![
            user.clone().prop_map(|user| Op::CreateUser { user, password_hash: s("h") }),
            (user.clone(), tok(), addr.clone()).prop_map(|(user, t, peer_addr)| Op::Login {
                user,
                token: Token([t; 16]),
                peer_addr
            }),
            tok().prop_map(|t| Op::Logout { token: Token([t; 16]) }),
            tok().prop_map(|t| Op::Expire { token: Token([t; 16]) }),
            (user.clone(), group.clone()).prop_map(|(user, group)| Op::CreateGroup { user, group }),
            (user.clone(), group.clone()).prop_map(|(user, group)| Op::JoinGroup { user, group }),
            (user.clone(), group.clone()).prop_map(|(user, group)| Op::LeaveGroup { user, group }),
            (user.clone(), group.clone(), user.clone())
                .prop_map(|(owner, group, user)| Op::AcceptRequest { owner, group, user }),
            (user.clone(), group.clone(), user.clone())
                .prop_map(|(owner, group, user)| Op::RejectRequest { owner, group, user }),
            (user.clone(), addr.clone(), group.clone(), file.clone(), 1u8..3).prop_map(
                |(user, peer_addr, group, name, fill)| Op::UploadFile {
                    user,
                    peer_addr,
                    group,
                    meta: meta(&name, fill)
                }
            ),
            (user, addr, group, file).prop_map(|(user, peer_addr, group, file)| Op::StopShare {
                user,
                peer_addr,
                group,
                file
            }),
        ]
    }

    proptest! {
        /// Any op sequence keeps the invariants; a refused op changes nothing;
        /// replaying the same sequence gives the same state; what shares
        /// hold, counted as the state changes, is what a count from
        /// scratch finds.
        #[test]
        fn invariants_hold_and_replay_is_deterministic(ops in proptest::collection::vec(arb_op(), 0..60)) {
            let mut st = State::default();
            for op in &ops {
                let before = st.clone();
                if st.apply(op).is_err() {
                    prop_assert_eq!(&st, &before);
                }
                if let Op::Expire { token } = op {
                    // The session and every share of its node are gone.
                    prop_assert!(st.session(token).is_none());
                    if let Some(was) = before.session(token) {
                        let node = Sharer { user: was.user.clone(), peer_addr: was.peer_addr.clone() };
                        prop_assert!(st.groups.values().all(|g| g.files.values().all(|f| !f.sharers.contains(&node))));
                    }
                }
                for g in st.groups.values() {
                    prop_assert!(!g.members.is_empty());
                    prop_assert!(g.requests.iter().all(|r| !g.members.contains(r)));
                    prop_assert!(g.files.values().all(|f| !f.sharers.is_empty()));
                    prop_assert!(g.files.values().all(|f| f.sharers.iter().all(|s| g.members.contains(&s.user))));
                }
                prop_assert_eq!(&st.usage, &st.clone().recounted().usage, "after {:?}", op);
                // The sessions' index, kept as ops apply, is the one built
                // from the sessions; a pair has one session at most.
                prop_assert_eq!(&st.nodes, &Nodes::of(&st.sessions), "after {:?}", op);
                prop_assert!(st.sessions.iter().all(|(_, s)| st.sessions_at(&s.user, &s.peer_addr).len() == 1));
            }
            let mut again = State::default();
            for op in &ops {
                let _ = again.apply(op);
            }
            prop_assert_eq!(st, again);
        }
    }
}
