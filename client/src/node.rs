//! A client node: one user's session with the trackers and the files this
//! node shares. [`Node::execute`] carries out one shell command and returns
//! the lines to print, or the error to print after `error: `.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};
use ringshare_engine::fetch::{Download, FetchEvent, FetchSpec, PeerError};
use ringshare_engine::hash::HashPool;
use ringshare_engine::link::PeerSecurity;
use ringshare_engine::meta::{FileMeta, Sha1Digest};
use ringshare_engine::names::{self, NameKind};
use ringshare_engine::proto::{
    FileEntry, FileLookup, PeerInfo, Refusal, Request, Response, Token, MAX_PAGE, MAX_STOPS,
};
use ringshare_engine::secure::PublicKey;
use ringshare_engine::serve::{Backend, PieceServer, ServeTable, ServedFile, ServerLimits};
use ringshare_engine::store::{part_path, PartFile, Settler};
use ringshare_engine::tracker_info::TrackerList;
use tokio::runtime::Handle;

use crate::downloads::{dest_key, resolve_dest_known, DownloadEntry, Fetch, KnownDirs};
use crate::registrar::{self, Registrar};
use crate::shares::{LocalShare, ShareBook, Staleness};
use crate::shell::{Command, HELP};
use crate::tracker_link::{LinkPool, TrackerLink, Trackers};

/// What the shell does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave the shell.
    Quit,
}

/// How long [`Node::withdraw_all`], and a `stop_share` of a file being
/// downloaded, wait for registrations on their way.
const WITHDRAW_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Withdrawal requests out at once.
const WITHDRAW_CALLS: usize = 4;

/// A logged-in user at this node.
#[derive(Debug)]
struct Session {
    user: String,
    token: Token,
    book: ShareBook,
    /// What its heartbeat found last.
    health: Arc<TrackerHealth>,
    /// Keeps the session alive at the trackers while logged in.
    heartbeat: tokio::task::JoinHandle<()>,
    /// Withdraws shared files that change on disk.
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.watcher.abort();
    }
}

/// What a session's heartbeat found last: whether the trackers answer, and
/// whether they still know the session.
#[derive(Debug, Default)]
struct TrackerHealth {
    /// Since when a heartbeat has waited for an answer (the first of those
    /// not answered since the last answer), and the last error (empty
    /// while the first still waits: a tracker that hangs).
    failing: Mutex<Option<(std::time::Instant, String)>>,
    /// A tracker answered that it does not know the session.
    ended: std::sync::atomic::AtomicBool,
}

/// How the trackers stand with a logged-in node ([`Node::tracker_news`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerNews {
    /// Not logged in.
    LoggedOut,
    /// The last heartbeat was answered.
    Answering,
    /// No tracker has answered heartbeats for this long; the last error.
    Silent(std::time::Duration, String),
    /// The trackers no longer know the session: the node is not listed.
    SessionEnded,
}

/// What this node shares now (empty while logged out), by group and file
/// name, shared with the download threads that add finished downloads to
/// it (a bulk fetch adds thousands: finding one's place costs a log, not a
/// scan of them all).
type Shares = Arc<Mutex<ShareList>>;
type ShareList = std::collections::BTreeMap<(String, String), LocalShare>;

/// A share's place in the [`ShareList`].
fn share_key(s: &LocalShare) -> (String, String) {
    (s.group.clone(), s.meta.name.clone())
}

/// A client node.
#[derive(Debug)]
pub struct Node {
    addr: SocketAddr,
    /// The address given to the trackers instead of `addr` (`--advertise`).
    advertise: Option<SocketAddr>,
    trackers: Trackers,
    link: TrackerLink,
    session: Option<Session>,
    shares: Shares,
    serve: Arc<ServeTable>,
    server: PieceServer,
    downloads: Vec<DownloadEntry>,
    /// Hashes uploads: one worker per core but one (the caller streams the
    /// whole-file SHA1).
    pool: Arc<HashPool>,
    /// Set to stop a [`Node::share_paths`] while it hashes.
    hash_stop: Arc<std::sync::atomic::AtomicBool>,
    /// Verifies (when the receiving peer thread did not) and writes
    /// downloaded pieces: two workers per core.
    verify_pool: Arc<HashPool>,
    /// The I/O driver of downloads (the piece server's, `--io`).
    io: Backend,
    state_dir: PathBuf,
    rt: Handle,
    /// The trackers' public ticket key while logged in: the piece server
    /// admits only downloaders with tickets it signed.
    ticket_key: TicketKey,
    /// The groups each served file is served in ([`ServedGroups`]).
    served_groups: ServedGroups,
    /// Links for background calls to the trackers.
    pool_links: LinkPool,
    /// Registers downloads as sharers once they hold a verified piece.
    registrar: Registrar,
    /// Told whenever a download completes or fails.
    ended: Arc<tokio::sync::Notify>,
    /// Whether a completed download prints its line on stderr.
    announce: bool,
    /// Whether a completed download's share record waits for
    /// [`Node::sync_deferred`] to be made durable.
    defer_book_sync: bool,
    /// Settles completed downloads in batches (when deferring).
    settler: Option<Arc<Settler>>,
    /// Whether downloads keep their links for the next ones.
    park_links: bool,
    /// Destination directories already looked at (a bulk `get`'s).
    known_dirs: KnownDirs,
    /// Its address was picked by the system ([`Node::set_picked`]).
    picked: bool,
    /// A one-shot `get` on an address picked for the run
    /// ([`Node::set_transient`]).
    transient: bool,
    /// The users who logged in at this node since it started.
    logged_in_here: std::collections::BTreeSet<String>,
    /// Whether a failed download prints its line on stderr (the shell's
    /// downloads run in the background; `get` says why itself).
    announce_failures: bool,
}

/// The line a completed download is announced with: `ringshare:
/// downloaded [GROUP] NAME (…)`, saying how many bytes came from which
/// peers (`ADDR=BYTES` each, sorted), or why nothing was fetched.
pub fn downloaded_line(group: &str, name: &str, len: u64, peers: &[(SocketAddr, u64)]) -> String {
    let fetched: u64 = peers.iter().map(|(_, b)| b).sum();
    let how = if len == 0 {
        "an empty file: nothing to fetch".to_owned()
    } else if peers.is_empty() {
        "nothing fetched: this node held it".to_owned()
    } else {
        let from: Vec<String> = peers.iter().map(|(a, b)| format!("{a}={b}")).collect();
        format!(
            "{fetched} byte{} fetched from {} peer(s): {}",
            if fetched == 1 { "" } else { "s" },
            peers.len(),
            from.join(" ")
        )
    };
    format!("ringshare: downloaded [{group}] {name} ({how})")
}

/// [`downloaded_line`] of a completed `download` of `name` in `group`,
/// printed by who follows it with a progress bar once the bar is gone.
pub fn completed_line(group: &str, name: &str, download: &Download) -> String {
    let mut peers: Vec<_> = download.contributions().into_iter().collect();
    peers.sort();
    downloaded_line(group, name, download.progress().total, &peers)
}

/// Whether a file shared here has `meta`'s SHA1 but other pieces.
fn claims_anothers_sha1(shares: &Shares, meta: &FileMeta) -> bool {
    lock(shares).values().any(|s| {
        s.meta.sha1 == meta.sha1
            && (s.meta.len != meta.len || s.meta.piece_hashes != meta.piece_hashes)
    })
}

/// Admits tickets for `id` from `group` too.
fn admit_group(groups: &ServedGroups, id: Sha1Digest, group: &str) {
    if let Ok(mut g) = groups.write() {
        g.entry(id).or_default().insert(group.to_owned());
    }
}

/// Whether a tracker's answer `now` to [`Request::Membership`] is a later
/// membership of the group than `was`, the one this node's shares there
/// were made in: the user left and was let in again, or the group was
/// deleted and made anew, since. Ids grow with the op that made the
/// membership; an earlier one than on record comes from a tracker that has
/// not heard of the later yet, and says nothing. Id 0 (a membership made
/// before trackers kept ids, as a tracker upgraded with it in its snapshot
/// answers) is neither earlier nor later than any: another tracker may
/// answer the same membership's own id.
fn later_membership(was: Option<u64>, now: u64) -> bool {
    was.is_some_and(|was| was != 0 && now > was)
}

/// Whether `now` (see [`later_membership`]) is to be recorded in place of
/// `was`: none recorded, or a later one (a lagging tracker's earlier one,
/// or 0 after a known one, is not).
fn worth_recording(was: Option<u64>, now: u64) -> bool {
    was.is_none_or(|was| now > was)
}

/// Admits no ticket for `id` any more (it is served no more).
fn forget_groups(groups: &ServedGroups, id: &Sha1Digest) {
    if let Ok(mut g) = groups.write() {
        g.remove(id);
    }
}

/// The trackers' public ticket key, shared with the piece server.
type TicketKey = Arc<std::sync::RwLock<Option<[u8; 32]>>>;

/// The groups each file is served in here, by file id. A ticket is for a
/// file in a group; the piece server admits it only for a group this node
/// shares or fetches the file in. (Anyone can make a group and register a
/// file's SHA1 in it: the tracker then signs a ticket for that SHA1, and
/// without this check any node holding those bytes for another group
/// served them.)
type ServedGroups = Arc<std::sync::RwLock<HashMap<Sha1Digest, BTreeSet<String>>>>;

impl Node {
    /// A node serving pieces on `listener`, talking to `trackers`, keeping
    /// its records in `state_dir`. Must be called inside a tokio runtime.
    pub fn new(
        listener: TcpListener,
        trackers: TrackerList,
        state_dir: PathBuf,
        limits: ServerLimits,
        backend: Backend,
        plaintext: bool,
    ) -> Result<Self> {
        let addr = listener.local_addr().context("read the piece server's address")?;
        let trackers = Trackers::open(trackers, &state_dir)?;
        let security = PeerSecurity { keypair: trackers.keypair_arc(), plaintext };
        let ticket_key: TicketKey = Arc::new(std::sync::RwLock::new(None));
        let served_groups: ServedGroups = Arc::default();
        let (key, groups) = (Arc::clone(&ticket_key), Arc::clone(&served_groups));
        let admit =
            Box::new(move |file_id: &_, user: &str, ticket: &[u8], holder: Option<&PublicKey>| {
                let Ok(guard) = key.read() else { return false };
                let Some(public) = guard.as_ref() else { return false };
                let holder = holder.map(|k| &k.0);
                match ringshare_engine::ticket::verify(
                    public,
                    ticket,
                    user,
                    file_id,
                    holder,
                    wall_ms(),
                ) {
                    Ok(t) => {
                        // Refused alike whether or not this node holds the
                        // file: no answer tells a stranger what it holds.
                        let ok = groups
                            .read()
                            .is_ok_and(|g| g.get(file_id).is_some_and(|g| g.contains(&t.group)));
                        if !ok {
                            tracing::info!(
                                user,
                                group = t.group,
                                "refused a downloader: a ticket for a group this file is not \
                                 shared in here"
                            );
                        }
                        ok
                    }
                    Err(e) => {
                        tracing::info!(user, "refused a downloader: {e}");
                        false
                    }
                }
            });
        let serve = ServeTable::secured(admit, security);
        // A session admitted from a group ends once the file is no longer
        // served here in that group (`stop_share`, `leave_group` there),
        // though it is in another.
        let groups = Arc::clone(&served_groups);
        serve.set_still_admits(Box::new(move |id: &Sha1Digest, group: &str| {
            groups.read().is_ok_and(|g| g.get(id).is_some_and(|g| g.contains(group)))
        }));
        let server = PieceServer::start(listener, Arc::clone(&serve), limits, backend)
            .context("start the piece server")?;
        let pool_links = LinkPool::new(trackers.clone());
        Ok(Self {
            addr,
            advertise: None,
            link: TrackerLink::new(trackers.clone()),
            registrar: Registrar::start(&Handle::current(), pool_links.clone()),
            pool_links,
            trackers,
            session: None,
            shares: Arc::new(Mutex::new(ShareList::new())),
            serve,
            server,
            downloads: Vec::new(),
            pool: Arc::new(HashPool::with_available_cores()),
            hash_stop: Arc::default(),
            // Download workers hash (when a peer does not) and write with
            // O_DIRECT, which waits on the device, not the CPU: twice the
            // cores keeps every core hashing while others wait.
            verify_pool: Arc::new(HashPool::new(
                2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            io: backend,
            state_dir,
            rt: Handle::current(),
            ticket_key,
            served_groups,
            ended: Arc::new(tokio::sync::Notify::new()),
            announce: true,
            defer_book_sync: false,
            settler: None,
            park_links: false,
            known_dirs: KnownDirs::default(),
            picked: false,
            transient: false,
            logged_in_here: Default::default(),
            announce_failures: false,
        })
    }

    /// The address this node serves pieces on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Names `addr` to the trackers as where this node serves (a node
    /// behind NAT with a forwarded port: its public address), from the next
    /// login on.
    pub fn set_advertise(&mut self, addr: Option<SocketAddr>) {
        self.advertise = addr;
    }

    /// What this node tells the trackers at login: the advertised address,
    /// else the one it listens on (`0.0.0.0:PORT` has the tracker list it
    /// under the address the login came from).
    fn listed_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.addr)
    }

    /// Carries out one command: the lines to print, or an error.
    pub async fn execute(&mut self, cmd: Command) -> (Flow, Result<Vec<String>>) {
        // Downloads that ended since the last command close their files.
        self.downloads.iter_mut().for_each(DownloadEntry::let_go_if_ended);
        let flow = if cmd == Command::Quit { Flow::Quit } else { Flow::Continue };
        (flow, self.run(cmd).await)
    }

    async fn run(&mut self, cmd: Command) -> Result<Vec<String>> {
        match cmd {
            Command::CreateUser { user, password } => {
                check_name(NameKind::User, &user)?;
                check_password(&password)?;
                self.call_done(Request::CreateUser { user: user.clone(), password }).await?;
                Ok(vec![format!("user {user} created")])
            }
            Command::Login { user, password } => self.login(user, password).await,
            Command::Logout => {
                let s = self.session()?;
                let (user, token) = (s.user.clone(), s.token);
                if self.picked {
                    // The next login may never come at this address: the
                    // files leave the listing now, and the share record
                    // stays for a login in this process to share them again.
                    self.stop_running("stopped by logout; download_file again to resume");
                    if let Err(e) = self.withdraw().await {
                        tracing::warn!("withdraw the shared files at logout: {e:#}");
                    }
                }
                // Sharing pauses whatever the tracker says: the node stops serving.
                self.pause_all("stopped by logout; download_file again to resume");
                // An unreachable tracker expires the session by itself:
                // logged out here all the same, and said so.
                match self.call_done(Request::Logout { token }).await {
                    Ok(()) => Ok(vec![format!("logged out {user}; sharing paused")]),
                    Err(e) => Ok(vec![format!(
                        "logged out {user}; sharing paused (no tracker took the logout: {}; they \
                         end the session when its heartbeats stop)",
                        crate::shell::one_line(&format!("{e:#}"))
                    )]),
                }
            }
            Command::CreateGroup { group } => {
                check_name(NameKind::Group, &group)?;
                let token = self.token()?;
                self.call_done(Request::CreateGroup { token, group: group.clone() }).await?;
                Ok(vec![format!("group {group} created; you are its owner")])
            }
            Command::JoinGroup { group } => {
                check_name(NameKind::Group, &group)?;
                let token = self.token()?;
                self.call_done(Request::JoinGroup { token, group: group.clone() }).await?;
                Ok(vec![format!("request to join {group} sent to its owner")])
            }
            Command::LeaveGroup { group } => {
                check_name(NameKind::Group, &group)?;
                let token = self.token()?;
                // Not a member, the leave withdraws a pending request to
                // join (the tracker answers alike): said so, not "left".
                let probe = Request::Membership { token, group: group.clone() };
                let member =
                    !matches!(self.call(probe).await?, Response::Refused(Refusal::NotMember(_)));
                self.call_done(Request::LeaveGroup { token, group: group.clone() }).await?;
                if !member {
                    return Ok(vec![format!("withdrew the request to join {group}")]);
                }
                let gone = self.drop_shares(|s| s.group == group);
                let stopped = gone.len();
                for s in &gone {
                    self.book_remove(s)?;
                }
                // (The tracker withdraws this user's shares of the group from
                // every node; each of the others stops serving them at its
                // next look, and says so.)
                Ok(vec![format!(
                    "left group {group}; stopped sharing {stopped} file(s) there from this node"
                )])
            }
            Command::ListRequests { group } => {
                check_name(NameKind::Group, &group)?;
                let token = self.token()?;
                self.call_names(Request::ListRequests { token, group }).await
            }
            Command::AcceptRequest { group, user } => {
                check_name(NameKind::Group, &group)?;
                check_name(NameKind::User, &user)?;
                let token = self.token()?;
                let req =
                    Request::AcceptRequest { token, group: group.clone(), user: user.clone() };
                self.call_done(req).await?;
                Ok(vec![format!("{user} is now a member of {group}")])
            }
            Command::RejectRequest { group, user } => {
                check_name(NameKind::Group, &group)?;
                check_name(NameKind::User, &user)?;
                let token = self.token()?;
                let req =
                    Request::RejectRequest { token, group: group.clone(), user: user.clone() };
                self.call_done(req).await?;
                Ok(vec![format!("rejected {user}'s request to join {group}")])
            }
            Command::ListGroups => {
                let token = self.token()?;
                self.call_names(Request::ListGroups { token }).await
            }
            Command::ListFiles { group, prefix } => {
                let prefix = prefix.unwrap_or_default();
                let files = self.list_group(&group, &prefix).await?;
                no_match(&files, &group, &prefix)?;
                Ok(files.iter().map(file_line).collect())
            }
            Command::UploadFile { path, group } => self.upload(path, group).await,
            Command::StopShare { group, file } => {
                check_name(NameKind::Group, &group)?;
                check_name(NameKind::File, &file)?;
                let token = self.token()?;
                // A download of it running here finishes, but is not
                // shared: before, its end recorded the share again, and the
                // next login shared it anew.
                let mut downloading = false;
                for d in &self.downloads {
                    if d.group == group && d.name == file && d.is_running() {
                        d.unshared.store(true, std::sync::atomic::Ordering::Release);
                        downloading = true;
                    }
                }
                if downloading {
                    // Its first piece's registration, if it is on its way,
                    // reaches the tracker before the stop does.
                    self.registrar.settled(WITHDRAW_WAIT).await;
                }
                let req = Request::StopShare { token, group: group.clone(), file: file.clone() };
                match self.call_done(req).await {
                    Ok(()) => {}
                    // Not registered yet (no piece verified): nothing to
                    // withdraw at the tracker.
                    Err(_) if downloading => {}
                    Err(e) => return Err(e),
                }
                for s in self.drop_shares(|s| s.group == group && s.meta.name == file) {
                    self.book_remove(&s)?;
                }
                if downloading {
                    // Its record as an unfinished download goes too.
                    if let Some(s) = &self.session {
                        s.book.remove(&group, &file).context("save the share record")?;
                    }
                    return Ok(vec![format!(
                        "stopped sharing {file} in {group} (its download goes on, and is not shared)"
                    )]);
                }
                Ok(vec![format!("stopped sharing {file} in {group}")])
            }
            Command::DownloadFile { group, file, dest } => self.download(group, file, dest).await,
            Command::ShowDownloads => {
                self.token()?;
                Ok(self.downloads.iter().map(DownloadEntry::line).collect())
            }
            Command::Help(None) => {
                Ok(HELP.iter().map(|(u, what)| format!("{u:<56} {what}")).collect())
            }
            Command::Help(Some(name)) => {
                let name = if name == "exit" { "quit" } else { name.as_str() };
                match HELP.iter().find(|(u, _)| u.split(' ').next() == Some(name)) {
                    Some((u, what)) => Ok(vec![format!("{u:<56} {what}")]),
                    None if name.is_empty() => {
                        Err(anyhow!("no command \"\" (type help for the list)"))
                    }
                    None => Err(anyhow!(
                        "no command {} (type help for the list)",
                        crate::shell::one_line(name)
                    )),
                }
            }
            Command::Quit => Ok(Vec::new()),
        }
    }

    async fn login(&mut self, user: String, password: String) -> Result<Vec<String>> {
        if let Some(s) = &self.session {
            if !s.health.ended.load(std::sync::atomic::Ordering::Acquire) {
                bail!("already logged in as {} (logout first)", s.user);
            }
            // The trackers forgot that session (said when it happened): a
            // login starts anew.
            self.pause_all("stopped: the session ended");
        }
        check_name(NameKind::User, &user)?;
        check_password(&password)?;
        let peer_addr = self.listed_addr().to_string();
        let req = Request::Login { user: user.clone(), password, peer_addr };
        let (token, every, key) = match self.call(req).await? {
            Response::LoggedIn { token, heartbeat_ms, ticket_key } => {
                (token, heartbeat_ms, ticket_key)
            }
            other => return Err(unexpected(other)),
        };
        set_key(&self.ticket_key, Some(key));
        self.logged_in_here.insert(user.clone());
        let book = ShareBook::new(&self.state_dir, &user, &self.addr.to_string());
        let health = Arc::new(TrackerHealth::default());
        let heartbeat = self.rt.spawn(heartbeat(
            self.trackers.clone(),
            token,
            every,
            Arc::clone(&self.ticket_key),
            Arc::clone(&health),
        ));
        let watcher = self.rt.spawn(watch_shares(
            self.trackers.clone(),
            token,
            every,
            Arc::clone(&self.shares),
            (Arc::clone(&self.serve), Arc::clone(&self.served_groups)),
            book.clone(),
        ));
        self.session = Some(Session {
            user: user.clone(),
            token,
            book: book.clone(),
            health,
            heartbeat,
            watcher,
        });

        // Resume sharing what this user shared from this node before.
        let (recorded, warning) = book.load();
        let mut resumed = Vec::new();
        let mut dropped = Vec::new();
        // Shares to stop, with why: changed, gone or refused.
        let mut stale = Vec::new();
        let (since, remade) = self.memberships_now(token, &book, &recorded).await?;
        let mut by_group: BTreeMap<String, Vec<LocalShare>> = BTreeMap::new();
        for mut share in recorded {
            if remade.contains(&share.group) {
                let why = format!("shared before you left {} or it was made anew", share.group);
                stale.push((share, why));
                continue;
            }
            let mut check = share.check();
            if check == Err(Staleness::Changed) {
                // Touched, or saved again with the same length: read again,
                // and shared on (recorded with its new time) if its bytes
                // are the same.
                if let Some(again) = same_bytes_again(&share).await {
                    if let Err(e) = book.put(&again) {
                        tracing::warn!("save the share record: {e}");
                    }
                    (share, check) = (again, Ok(()));
                }
            }
            match check {
                Ok(()) => match self.serve_file(&share) {
                    Ok(()) => by_group.entry(share.group.clone()).or_default().push(share),
                    Err(e) => dropped.push(format!("{}/{}: {e:#}", share.group, share.meta.name)),
                },
                Err(Staleness::Changed) => stale.push((share, "changed since upload".to_owned())),
                Err(Staleness::Missing(e)) => stale.push((share, format!("missing ({e})"))),
                Err(Staleness::Unfinished) => {
                    stale.push((share, "a download that did not finish here".to_owned()))
                }
            }
        }
        // Registered again in batches, a few at once.
        let mut batches = by_group.into_iter().flat_map(|(group, shares)| {
            registrar::batches(shares, |s| &s.meta).into_iter().map(move |b| (group.clone(), b))
        });
        let links = self.pool_links.clone();
        let meta: fn(&LocalShare) -> &FileMeta = |s| &s.meta;
        registrar::register_batches(&links, token, &mut batches, meta, |batch, answers| {
            // A failed request fails the login; the share record stays as it
            // was, for the next one.
            for (share, answer) in batch.into_iter().zip(answers?) {
                match answer {
                    None | Some(Refusal::AlreadySharing { .. }) => resumed.push(share),
                    Some(r) => stale.push((share, r.to_string())),
                }
            }
            Ok(())
        })
        .await?;
        // The rest are no longer served (unless resumed with the same
        // bytes under another name) and not listed.
        *self.shares_mut() = resumed.iter().map(|s| (share_key(s), s.clone())).collect();
        for (share, reason) in stale {
            self.unserve(&share.meta.sha1);
            let stop = Request::StopShare {
                token,
                group: share.group.clone(),
                file: share.meta.name.clone(),
            };
            // The tracker may not list it any more; either way it is not shared now.
            let _ = self.call(stop).await?;
            dropped.push(format!("{}/{}: {reason}", share.group, share.meta.name));
        }
        let count = resumed.len();
        // Compacted at each login: what resumed, nothing else. Logged in
        // whether or not that can be written (the record as it was still
        // holds what resumed): said, not an error for a login that was made.
        let compacted = book.replace(&resumed, &since);
        let mut line = format!("logged in as {user}");
        if count > 0 || !dropped.is_empty() {
            line += &format!("; resumed sharing {count} file(s)");
        }
        if !dropped.is_empty() {
            line += &format!("; stopped sharing {}", dropped.join(", "));
        }
        if let Some(w) = warning {
            line += &format!("; {w}");
        }
        if let Err(e) = compacted {
            line += &format!(
                "; warning: the share record cannot be written ({e}): sharing files from \
                 this node fails until it can"
            );
        }
        Ok(vec![line])
    }

    /// The user's membership now of each group `recorded` shares are in,
    /// and the groups whose membership is not the one `book` says they
    /// were made in: the user left and was let in again, or the group was
    /// deleted and made anew under its name (by anyone), since. Such
    /// shares are not resumed: they were for the members of another time.
    /// A group the user is not in is in neither (its registration is
    /// refused, file by file). Asked a few groups at once.
    async fn memberships_now(
        &self,
        token: Token,
        book: &ShareBook,
        recorded: &[LocalShare],
    ) -> Result<(BTreeMap<String, u64>, BTreeSet<String>)> {
        let groups: BTreeSet<&str> = recorded.iter().map(|s| s.group.as_str()).collect();
        let mut asking = tokio::task::JoinSet::new();
        let (mut since, mut remade) = (BTreeMap::new(), BTreeSet::new());
        let mut groups = groups.into_iter();
        loop {
            while asking.len() < 4 {
                let Some(group) = groups.next() else { break };
                let (links, group) = (self.pool_links.clone(), group.to_owned());
                asking.spawn(async move {
                    let ask = Request::Membership { token, group: group.clone() };
                    let answer = links.call(&ask).await;
                    (group, answer)
                });
            }
            let Some(joined) = asking.join_next().await else { break };
            let (group, answer) = joined.context("membership task")?;
            match answer? {
                Response::Member { since: now } => {
                    let was = book.since(&group);
                    if later_membership(was, now) {
                        remade.insert(group.clone());
                    }
                    if worth_recording(was, now) {
                        since.insert(group, now);
                    }
                }
                // Not a member: the registration says so, file by file. A
                // tracker too old to know the request: nothing known.
                Response::Refused(
                    Refusal::NotMember(_) | Refusal::NoSuchGroup(_) | Refusal::BadRequest(_),
                ) => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok((since, remade))
    }

    /// Records that what this node shares in `group` from now on is made
    /// in membership `since`. The shares recorded there in another one
    /// (this user left and was let in again from elsewhere, or the group
    /// was made anew, while this node ran) are stopped first, with a
    /// warning: they were for the members of another time.
    fn renew_membership(&mut self, group: &str, since: u64) -> Result<()> {
        let Some(book) = self.session.as_ref().map(|s| s.book.clone()) else { return Ok(()) };
        let was = book.since(group);
        if later_membership(was, since) {
            let gone = self.drop_shares(|s| s.group == group);
            for s in &gone {
                self.book_remove(s)?;
                tracing::warn!(
                    "stopped sharing {group}/{}: shared before you left {group} or it was made \
                     anew",
                    s.meta.name
                );
            }
        }
        if !worth_recording(was, since) {
            return Ok(());
        }
        if let Err(e) = book.set_since(group, since) {
            // The shares' own records fail the same way, and say so; one
            // that passes meanwhile leaves them with no membership on
            // record (as from an earlier version), recorded at the next
            // heartbeat's check.
            tracing::debug!("record the membership of {group}: {e}");
        }
        Ok(())
    }

    /// Asks for this user's membership of `group` and records it for what
    /// this node will share there (see [`Node::renew_membership`]): before
    /// a download into the group, whose file becomes a share of it. Best
    /// effort: a refusal or a failed request leaves the record as it was
    /// (the download's own requests say what is wrong).
    pub async fn note_membership(&mut self, group: &str) {
        let Ok(token) = self.token() else { return };
        let ask = Request::Membership { token, group: group.to_owned() };
        if let Ok(Response::Member { since }) = self.call(ask).await {
            if let Err(e) = self.renew_membership(group, since) {
                tracing::warn!("{e:#}");
            }
        }
    }

    /// `upload_file`: a regular file (one line, or the error), or a
    /// directory: every file under it (see [`Node::share_paths`]).
    async fn upload(&mut self, path: String, group: String) -> Result<Vec<String>> {
        let p = PathBuf::from(&path);
        let md = std::fs::metadata(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!("path not found: {} ({e})", p.display()),
            // `file.txt/`, a directory it may not search, a loop of links.
            _ => anyhow!("cannot read {}: {e}", p.display()),
        })?;
        if md.is_dir() {
            let mut report = self.share_paths(std::slice::from_ref(&p), &group).await?;
            // The shell names each file it shared before as a skip (as it
            // refuses one such file given alone).
            report.already_as_skipped(&group);
            // Every file skipped, or none there: a failure, one line.
            if let Some(why) = report.nothing_shared(&p.display().to_string()) {
                bail!("{why}");
            }
            let mut lines =
                report.skipped.iter().map(|s| format!("skipped {s}")).collect::<Vec<_>>();
            lines.push(report.summary(&group));
            return Ok(lines);
        }
        if !md.is_file() {
            bail!("not a regular file: {}", p.display());
        }
        let report = self.share_paths(&[p], &group).await?;
        match report.one_file()? {
            OneFile::Shared(s) => Ok(vec![s.uploaded(&group)]),
            OneFile::Already(s) => {
                Err(Refusal::AlreadySharing { group, file: s.name.clone() }.into())
            }
        }
    }

    /// A flag that, once set, stops [`Node::share_paths`] while it hashes:
    /// what is hashed is then not shared (a signal during a long hash).
    pub fn hash_stop(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.hash_stop)
    }

    /// Shares every file given and every regular file under every directory
    /// given (named by its path from the directory's own name on:
    /// `photos/2026/a.jpg`). Files are hashed several at once (one per
    /// core), then registered with the tracker and served. A file that
    /// cannot be shared is skipped with its reason; the rest go on. Errors
    /// only when the group cannot be shared in at all.
    pub async fn share_paths(&mut self, paths: &[PathBuf], group: &str) -> Result<ShareReport> {
        check_name(NameKind::Group, group)?;
        let token = self.token()?;
        // Membership is checked before the (possibly long) hashing. (A
        // tracker too old to know the request: the registration checks it.)
        match self.call(Request::Membership { token, group: group.to_owned() }).await? {
            Response::Member { since } => self.renew_membership(group, since)?,
            Response::Refused(Refusal::BadRequest(_)) => {}
            other => return Err(unexpected(other)),
        }
        let paths = paths.to_vec();
        let (items, mut skipped) =
            tokio::task::spawn_blocking(move || crate::bulk::collect_files(&paths))
                .await
                .context("listing task")?;
        let (pool, stop) = (Arc::clone(&self.pool), Arc::clone(&self.hash_stop));
        let clock = std::time::Instant::now();
        let hashed =
            tokio::task::spawn_blocking(move || crate::bulk::hash_all(&pool, items, &stop))
                .await
                .context("hashing task")?;
        if self.hash_stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Nothing is registered: the files hashed before the stop are
            // no more shared than the rest.
            bail!("stopped while hashing; nothing was shared");
        }
        let hash_seconds = clock.elapsed().as_secs_f64();
        let clock = std::time::Instant::now();
        // Each file is served before the tracker lists it, then registered
        // in batches (one request and one tracker log sync for up to
        // MAX_UPLOADS files), a few batches at once on the pooled links: one
        // round trip per file in turn is a long wait with a distant tracker.
        let mut ready = Vec::new();
        for (item, meta) in hashed {
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    skipped.push(Skipped::new(&item.path, format!("{e:#}")));
                    continue;
                }
            };
            let share = match LocalShare::new(group.to_owned(), item.path.clone(), meta) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    skipped.push(Skipped::new(&item.path, "gone once it was hashed".into()));
                    continue;
                }
                Err(e) => {
                    skipped.push(Skipped::new(&item.path, format!("inspect: {e}")));
                    continue;
                }
            };
            if let Err(e) = self.serve_file(&share) {
                // Opened to be served, it was not what was hashed: replaced
                // or changed since.
                let why = match share.check() {
                    Err(Staleness::Changed) => "changed once it was hashed".to_owned(),
                    _ => format!("{e:#}"),
                };
                skipped.push(Skipped::new(&item.path, why));
                continue;
            }
            ready.push((item, share));
        }
        let links = self.pool_links.clone();
        let mut batches = registrar::batches(ready, |(_, share)| &share.meta)
            .into_iter()
            .map(|batch| (group.to_owned(), batch));
        let (mut shared, mut already) = (Vec::new(), Vec::new());
        // Content the tracker refused: no longer served once every batch
        // is answered, unless another file with the same bytes was taken.
        let mut refused: Vec<Sha1Digest> = Vec::new();
        // Recorded in the share book together at the end (one sync), also
        // when the loop ends early: what the tracker took is on record.
        let mut recorded: Vec<LocalShare> = Vec::new();
        let meta: fn(&(_, LocalShare)) -> &FileMeta = |(_, share)| &share.meta;
        let outcome =
            registrar::register_batches(&links, token, &mut batches, meta, |batch, answers| {
                let answers = match answers {
                    Ok(a) => a,
                    Err(e) => {
                        // Not known to the tracker, as far as this node can tell.
                        refused.extend(batch.iter().map(|(_, share)| share.meta.sha1));
                        return Err(e);
                    }
                };
                for ((item, share), mut answer) in batch.into_iter().zip(answers) {
                    // The tracker already lists this node as sharing the
                    // file. Not in the node's own record: a request of this
                    // share that was answered but whose answer was lost
                    // (the link retries it), or a record lost since; the
                    // tracker lists it, so the node serves and records it.
                    // In the record with the same content and path (resumed
                    // at login: `share` run again): shared still, and said
                    // to be. In the record otherwise: a skip that says why.
                    if matches!(answer, Some(Refusal::AlreadySharing { .. })) {
                        match self.shares_mut().get(&share_key(&share)) {
                            None => answer = None,
                            Some(mine) if mine.meta == share.meta && mine.path == share.path => {
                                already.push((item.path.clone(), SharedLine::of(&share.meta)));
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    if let Some(r) = answer {
                        refused.push(share.meta.sha1);
                        if r == Refusal::NotLoggedIn {
                            self.pause_all("stopped: the session ended");
                            bail!("{r}");
                        }
                        skipped.push(Skipped::new(&item.path, r.to_string()));
                        continue;
                    }
                    recorded.push(share.clone());
                    shared.push(SharedLine::of(&share.meta));
                    self.shares_mut().insert(share_key(&share), share);
                }
                Ok(())
            })
            .await;
        // Batches never sent (the loop ended early) are not shared either.
        refused.extend(batches.flat_map(|(_, batch)| batch).map(|(_, share)| share.meta.sha1));
        for id in &refused {
            self.unserve(id);
        }
        let saved = match &self.session {
            Some(s) => s.book.put_all(&recorded),
            None => Ok(()),
        };
        if let Err(e) = saved {
            // Not on record, not shared: the tracker would list this node
            // for files it does not serve once restarted (a full or
            // read-only state directory said `error:` for files shared).
            for share in &recorded {
                self.shares_mut().remove(&share_key(share));
                self.unserve(&share.meta.sha1);
                let stop = Request::StopShare {
                    token,
                    group: share.group.clone(),
                    file: share.meta.name.clone(),
                };
                if let Err(e) = self.call(stop).await {
                    tracing::warn!("stop sharing {}/{}: {e:#}", share.group, share.meta.name);
                }
            }
            return Err(anyhow::Error::new(e).context(format!(
                "save the share record (nothing was shared: {} file(s) taken back)",
                recorded.len()
            )));
        }
        outcome?;
        shared.sort_by(|a, b| a.name.cmp(&b.name));
        already.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        let register_seconds = clock.elapsed().as_secs_f64();
        Ok(ShareReport { shared, already, skipped, hash_seconds, register_seconds })
    }

    /// Notified (one permit kept) each time a download completes or fails.
    pub fn download_ended(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.ended)
    }

    /// Whether each completed download prints a line on stderr (default
    /// yes; a bulk `get` shows its own progress and summary instead).
    pub fn set_announce(&mut self, announce: bool) {
        self.announce = announce;
    }

    /// Whether a completed download is made durable at once (default) or
    /// by the next [`Node::sync_deferred`]: a bulk `get` settles its files
    /// in batches (`store::Settler`: one `syncfs` for many files instead
    /// of two fsyncs each) and syncs their share records once, when it
    /// ends (an fdatasync per small file, most of them each on its own).
    pub fn set_defer_sync(&mut self, defer: bool) {
        self.defer_book_sync = defer;
        self.settler = match (defer, self.settler.take()) {
            (false, _) => None,
            (true, Some(s)) => Some(s),
            (true, None) => match Settler::new() {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!("no settling thread ({e}); each file syncs on its own");
                    None
                }
            },
        };
    }

    /// Makes every completed download and share record so far durable.
    /// Returns the files that could not be moved into place (their data
    /// stays in `.part`, for the next run to resume), and why; they are
    /// shared no longer.
    pub fn sync_deferred(&self) -> Result<Vec<(PathBuf, String)>> {
        let failed = self.settler.as_ref().map(|s| s.flush()).unwrap_or_default();
        if !failed.is_empty() {
            let mut list = lock(&self.shares);
            let gone: Vec<LocalShare> = list
                .values()
                .filter(|s| failed.iter().any(|(dest, _)| *dest == s.path))
                .cloned()
                .collect();
            for share in &gone {
                list.remove(&share_key(share));
                if !list.values().any(|s| s.meta.sha1 == share.meta.sha1) {
                    self.serve.remove(&share.meta.sha1);
                    forget_groups(&self.served_groups, &share.meta.sha1);
                }
                if let Some(s) = &self.session {
                    s.book
                        .remove(&share.group, &share.meta.name)
                        .context("save the share record")?;
                }
            }
        }
        if let Some(s) = &self.session {
            s.book.sync().context("save the share record")?;
        }
        Ok(failed)
    }

    /// Whether a completed download keeps its peer links open for the next
    /// downloads to the same nodes (`FetchSpec::park_links`; default no: a
    /// bulk `get`, whose next files come from the same nodes, says yes).
    pub fn set_park_links(&mut self, park: bool) {
        self.park_links = park;
    }

    /// Whether a destination's directories, once looked at, are taken as
    /// they were for the next downloads into them ([`KnownDirs`]; default
    /// no: a bulk `get`, which puts thousands of files into a few
    /// directories, says yes).
    pub fn set_remember_dirs(&mut self, remember: bool) {
        if remember != self.known_dirs.remembers() {
            self.known_dirs =
                if remember { KnownDirs::remembering() } else { KnownDirs::default() };
        }
    }

    /// Removes the directories this node's downloads made that are empty
    /// now (remembering directories: [`Node::set_remember_dirs`]): a
    /// one-shot `get` that failed leaves none behind.
    pub fn remove_empty_dirs_made(&mut self) {
        self.known_dirs.remove_empty_made();
    }

    /// Makes directory `dir` and those above it that are missing, as
    /// this node's downloads make theirs: remembered for
    /// [`Node::remove_empty_dirs_made`].
    pub fn make_dirs(&mut self, dir: &Path) -> std::io::Result<()> {
        self.known_dirs.make_all(dir)
    }

    /// How many files this node shares (fetched ones included).
    pub fn shared_count(&self) -> usize {
        self.shares_mut().len()
    }

    /// Whether a user is logged in here.
    pub fn logged_in(&self) -> bool {
        self.session.is_some()
    }

    /// How the trackers stand with this node's session, as its heartbeat
    /// found them last.
    pub fn tracker_news(&self) -> TrackerNews {
        let Some(s) = &self.session else { return TrackerNews::LoggedOut };
        if s.health.ended.load(std::sync::atomic::Ordering::Acquire) {
            return TrackerNews::SessionEnded;
        }
        match &*s.health.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((since, why)) => {
                let why = if why.is_empty() { "no answer yet".to_owned() } else { why.clone() };
                TrackerNews::Silent(since.elapsed(), why)
            }
            None => TrackerNews::Answering,
        }
    }

    /// What the trackers' forgetting this node's session
    /// ([`TrackerNews::SessionEnded`]) most likely means, to say so. (A
    /// node of another key is refused at a running node's address; one of
    /// the same state directory, so the same key, takes its place as a
    /// restarted node would.)
    pub fn session_ended_why(&self) -> String {
        let user = self.session.as_ref().map_or("this user", |s| s.user.as_str());
        let listed = self.listed_addr();
        // Listening on every interface, the node is listed under the
        // address its login came from, which it does not know.
        let at = if listed.ip().is_unspecified() {
            format!("port {}", listed.port())
        } else {
            listed.to_string()
        };
        format!(
            "the trackers no longer know this node's session: another node logged in as {user} \
             at this node's address, {at} (one run from the same state directory, or one \
             whose login came at the same moment), the node was silent for longer than the \
             trackers' session expiry, or a tracker lost its data"
        )
    }

    /// The driver this node's downloads run on.
    pub fn fetch_backend(&self) -> Backend {
        self.io
    }

    /// The pool that hashes uploads.
    pub fn hash_pool(&self) -> Arc<HashPool> {
        Arc::clone(&self.pool)
    }

    /// Every file of `group` whose name starts with `prefix`, in name
    /// order, fetched a page at a time.
    pub async fn list_group(&mut self, group: &str, prefix: &str) -> Result<Vec<FileEntry>> {
        let files = self.list_pages(group, prefix).await?;
        // Typed or pasted from a file system that decomposes (`cafe\u{301}`):
        // names are shared composed.
        let composed = ringshare_engine::names::nfc(prefix);
        if files.is_empty() && composed != prefix {
            return self.list_pages(group, &composed).await;
        }
        Ok(files)
    }

    async fn list_pages(&mut self, group: &str, prefix: &str) -> Result<Vec<FileEntry>> {
        check_name(NameKind::Group, group)?;
        let token = self.token()?;
        let mut files: Vec<FileEntry> = Vec::new();
        loop {
            let after = files.last().map(|f| f.name.clone()).unwrap_or_default();
            let req = Request::ListFilesPage {
                token,
                group: group.to_owned(),
                prefix: prefix.to_owned(),
                after: after.clone(),
                limit: MAX_PAGE,
            };
            match self.call(req).await? {
                Response::FilesPage { files: page, more } => {
                    // Names from the network: in order, after the position
                    // asked, matching the prefix — or the listing would loop.
                    let mut last = after;
                    for f in &page {
                        if f.name <= last || !f.name.starts_with(prefix) {
                            bail!("the tracker answered a page out of order ({:?})", f.name);
                        }
                        last = f.name.clone();
                    }
                    let empty = page.is_empty();
                    files.extend(page);
                    if !more || empty {
                        return Ok(files);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    fn session(&self) -> Result<&Session> {
        self.session.as_ref().ok_or_else(|| anyhow!("not logged in"))
    }

    fn token(&self) -> Result<Token> {
        self.session().map(|s| s.token)
    }

    /// Records in the share book that `share` is no longer shared.
    fn book_remove(&self, share: &LocalShare) -> Result<()> {
        if let Some(s) = &self.session {
            s.book.remove(&share.group, &share.meta.name).context("save the share record")?;
        }
        Ok(())
    }

    fn shares_mut(&self) -> MutexGuard<'_, ShareList> {
        lock(&self.shares)
    }

    /// A file this node shares with the bytes of `meta` (same SHA1 and
    /// length), unchanged since it was hashed, opened.
    fn local_copy(&self, meta: &FileMeta) -> Option<File> {
        let share = self
            .shares_mut()
            .values()
            .find(|s| s.meta.sha1 == meta.sha1 && s.meta.len == meta.len)
            .cloned()?;
        open_unchanged(&share).ok()
    }

    /// Starts serving a shared file's pieces. It is opened now (so a file
    /// that cannot be read is refused here) and then only while downloaders
    /// fetch from it: a node sharing 100,000 files does not hold 100,000
    /// descriptors.
    fn serve_file(&self, share: &LocalShare) -> Result<()> {
        if !self.serve.contains(&share.meta.sha1) {
            let open = opener(share);
            open().with_context(|| format!("open {}", share.path.display()))?;
            self.serve.insert_lazy(share.meta.sha1, open);
        }
        self.serve_in(share.meta.sha1, &share.group);
        Ok(())
    }

    /// Admits tickets for `id` from `group` too.
    fn serve_in(&self, id: Sha1Digest, group: &str) {
        admit_group(&self.served_groups, id, group);
    }

    /// Stops serving content nothing here shares or downloads any more, and
    /// admits tickets for it only from the groups that still share or
    /// fetch it here.
    fn unserve(&self, id: &Sha1Digest) {
        let mut groups: BTreeSet<String> = self
            .shares_mut()
            .values()
            .filter(|s| s.meta.sha1 == *id)
            .map(|s| s.group.clone())
            .collect();
        groups.extend(
            self.downloads
                .iter()
                .filter(|d| d.is_running() && d.download().is_some_and(|x| x.meta().sha1 == *id))
                .map(|d| d.group.clone()),
        );
        if groups.is_empty() {
            self.serve.remove(id);
            forget_groups(&self.served_groups, id);
        } else if let Ok(mut g) = self.served_groups.write() {
            g.insert(*id, groups);
        }
    }

    /// Removes the shares matching `pred` and stops serving their content.
    fn drop_shares(&self, pred: impl Fn(&LocalShare) -> bool) -> Vec<LocalShare> {
        let gone: Vec<LocalShare> = {
            let mut shares = self.shares_mut();
            let (gone, kept): (ShareList, ShareList) =
                std::mem::take(&mut *shares).into_iter().partition(|(_, s)| pred(s));
            *shares = kept;
            gone.into_values().collect()
        };
        for s in &gone {
            self.unserve(&s.meta.sha1);
        }
        gone
    }

    /// Logged out (or the session vanished): stop serving and downloading.
    fn pause_all(&mut self, why: &str) {
        self.session = None;
        set_key(&self.ticket_key, None);
        self.shares_mut().clear();
        self.stop_running(why);
        self.serve.clear();
        if let Ok(mut g) = self.served_groups.write() {
            g.clear();
        }
    }

    /// Withdraws every file this node shares or registered as it fetched
    /// (one [`Request::StopShares`] per group and [`MAX_STOPS`] files, a
    /// few at a time) and, when every one is answered, deletes its share
    /// record. For a node on a port the system picked as it stops: no
    /// later node will have that address, so its files would stay listed
    /// with a sharer that cannot come back, and only that address may
    /// stop sharing them. How many were withdrawn.
    pub async fn withdraw_all(&mut self) -> Result<usize> {
        let addr = self.addr.to_string();
        // Not withdrawn: the files stay listed under this address, and the
        // records stay, the one way left to stop sharing them.
        // On every interface, the trackers list the node under the address
        // its login came from (not `0.0.0.0`), with this port.
        let listed = if self.advertise.is_some() || !self.addr.ip().is_unspecified() {
            self.listed_addr().to_string()
        } else {
            format!("port {} of the address the trackers see this host at", self.addr.port())
        };
        let withdrawn = self.withdraw().await.map_err(|e| {
            anyhow!(
                "{e:#}; the rest stay listed under {listed}: a node started with --listen {addr} \
                 and this state directory can stop sharing them"
            )
        })?;
        // The records of the users who logged in here, the one logged in
        // now among them: no later node has this address. (Only theirs:
        // another user's record at this address was written by a node
        // before this one.)
        for user in &self.logged_in_here {
            if let Err(e) = ShareBook::new(&self.state_dir, user, &addr).discard() {
                tracing::warn!("delete {user}'s share record at {addr}: {e}");
            }
        }
        Ok(withdrawn)
    }

    /// [`Node::withdraw_all`] for the session, its share record kept (a
    /// later login here shares the files again).
    async fn withdraw(&mut self) -> Result<usize> {
        let Some(token) = self.session.as_ref().map(|s| s.token) else { return Ok(0) };
        // Downloads stop first: none registers after the withdrawal; nor
        // does one waiting to be registered later.
        self.stop_running("stopped: the node is leaving");
        let never = self.registrar.drop_later();
        // A download's registration still on its way would land after.
        if !self.registrar.settled(WITHDRAW_WAIT).await {
            tracing::warn!("registrations still unanswered after {WITHDRAW_WAIT:?}");
        }
        let mut held: BTreeSet<(String, String)> = self.shares_mut().keys().cloned().collect();
        held.extend(self.downloads.iter().map(|d| (d.group.clone(), d.name.clone())));
        // Nor is a file withdrawn whose registration never went out.
        held.retain(|f| !never.contains(f));
        held.extend(self.registrar.handed());
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (group, name) in held {
            by_group.entry(group).or_default().push(name);
        }
        let calls = Arc::new(tokio::sync::Semaphore::new(WITHDRAW_CALLS));
        let mut sent = tokio::task::JoinSet::new();
        for (group, names) in by_group {
            for files in names.chunks(MAX_STOPS) {
                let req =
                    Request::StopShares { token, group: group.clone(), files: files.to_vec() };
                let (links, calls) = (self.pool_links.clone(), Arc::clone(&calls));
                sent.spawn(async move {
                    let _one = calls.acquire_owned().await;
                    links.call(&req).await
                });
            }
        }
        let (mut withdrawn, mut unanswered) = (0, None);
        while let Some(answer) = sent.join_next().await {
            match answer {
                Ok(Ok(Response::Uploads(answers))) => {
                    withdrawn += answers.iter().filter(|a| a.is_none()).count();
                }
                Ok(Ok(other)) => unanswered = Some(unexpected(other)),
                Ok(Err(e)) => unanswered = Some(e.into()),
                Err(e) => unanswered = Some(anyhow!("withdraw: {e}")),
            }
        }
        self.drop_shares(|_| true);
        if let Some(e) = unanswered {
            return Err(anyhow!("{e:#} (withdrew {withdrawn} file(s), not all)"));
        }
        Ok(withdrawn)
    }

    /// Whether a failed download prints `ringshare: download failed [GROUP]
    /// NAME: reason` on stderr (default no).
    pub fn set_announce_failures(&mut self, announce: bool) {
        self.announce_failures = announce;
    }

    /// Whether the node's address was picked by the system for this run:
    /// its files are withdrawn at logout and as it stops.
    pub fn set_picked(&mut self, picked: bool) {
        self.picked = picked;
    }

    /// Waits until every registration handed to the trackers so far is
    /// answered, for at most `within`; whether they all were.
    pub async fn registrations_answered(&self, within: std::time::Duration) -> bool {
        self.registrar.settled(within).await
    }

    /// Whether this is a one-shot `get` on an address picked for the run,
    /// not seeding on after it:
    /// as it ends it withdraws every file it registered and deletes its
    /// share records, and no login comes after at this address. Its
    /// downloads then write no share record (each finished file was one
    /// append, then the whole record deleted at the end), and a file of
    /// one piece is registered only [`REGISTER_LATER`] after it is fetched
    /// ([`Registrar::register_later`]): one fetched in the run's last
    /// seconds was registered and withdrawn again, two ops at the trackers
    /// for nothing. Meanwhile others fetching it find the node as its
    /// fetcher (listed for 10 s after its last ask for peers).
    pub fn set_transient(&mut self, transient: bool) {
        self.transient = transient;
    }

    /// The share record a download writes to: the session's, but none for
    /// a transient node ([`Node::set_transient`]).
    fn download_book(&self) -> Option<ShareBook> {
        self.session.as_ref().filter(|_| !self.transient).map(|s| s.book.clone())
    }

    /// Downloads still fetching.
    pub fn running_downloads(&self) -> usize {
        self.downloads.iter().filter(|d| d.is_running()).count()
    }

    /// Waits for every running download to finish (quit, end of input);
    /// holds no borrow of the node, so that a signal can stop them
    /// meanwhile.
    pub fn finish_downloads(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let running: Vec<Arc<Download>> = self
            .downloads
            .iter()
            .filter(|d| d.is_running())
            .filter_map(|d| d.download().cloned())
            .collect();
        async move {
            if !running.is_empty() {
                let _ = tokio::task::spawn_blocking(move || running.iter().for_each(|d| d.wait()))
                    .await;
            }
        }
    }

    /// Stops every running download, keeping what it verified for a resume.
    pub fn stop_downloads(&mut self) -> usize {
        self.stop_running("interrupted; download_file again to resume")
    }

    /// Stops the running downloads, marking them paused for `why`; how many.
    fn stop_running(&mut self, why: &str) -> usize {
        let (mut n, mut stopping) = (0, Vec::new());
        for d in self.downloads.iter_mut().filter(|d| d.is_running()) {
            if let Some(x) = d.download() {
                // Every one told first, then waited for: they stop together.
                x.stop_soon();
                stopping.push(Arc::clone(x));
            }
            d.paused = Some(why.to_owned());
            n += 1;
        }
        stopping.iter().for_each(|x| x.wait());
        n
    }

    /// Stops serving: the node is going away.
    pub fn shutdown(&mut self) {
        self.serve.clear();
        self.server.stop();
    }

    /// Forgets a download that ended (a bulk `get` has recorded it): its
    /// part file's descriptors close; a completed file stays served through
    /// its own. A node fetching thousands of files would otherwise keep three
    /// descriptors per file.
    pub fn forget_download(&mut self, download: &Arc<Download>) {
        self.downloads
            .retain(|d| !d.download().is_some_and(|x| Arc::ptr_eq(x, download)) || d.is_running());
    }

    /// The downloads started here, for the demo and the one-shot commands.
    pub fn downloads(&self) -> &[DownloadEntry] {
        &self.downloads
    }

    async fn download(&mut self, group: String, file: String, dest: String) -> Result<Vec<String>> {
        check_name(NameKind::Group, &group)?;
        check_name(NameKind::File, &file)?;
        let token = self.token()?;
        let req = Request::FileInfo { token, group: group.clone(), file: file.clone() };
        let mut resp = self.call(req).await?;
        let mut file = file;
        // Typed or pasted from a file system that decomposes (`cafe\u{301}`):
        // names are shared composed.
        let composed = ringshare_engine::names::nfc(&file);
        if matches!(resp, Response::Refused(Refusal::NoSuchFile { .. })) && composed != file {
            let req = Request::FileInfo { token, group: group.clone(), file: composed.clone() };
            let again = self.call(req).await?;
            if matches!(again, Response::FileInfo { .. }) {
                (resp, file) = (again, composed);
            }
        }
        if matches!(resp, Response::Refused(Refusal::NoSuchFile { .. })) {
            // A directory's name: said so, with a file under it.
            let req = Request::ListFilesPage {
                token,
                group: group.clone(),
                prefix: format!("{file}/"),
                after: String::new(),
                limit: 1,
            };
            if let Ok(Response::FilesPage { files, .. }) = self.call(req).await {
                if let Some(f) = files.first().filter(|f| f.name.starts_with(&format!("{file}/"))) {
                    bail!(
                        "no such file in group {group}: {file} is a directory there \
                         (download_file takes a file's name, such as {}; `ringshare get` \
                         fetches whole directories)",
                        f.name
                    );
                }
            }
        }
        let info = match resp {
            Response::FileInfo { meta, peers, ticket } => FileInfo { meta, peers, ticket },
            other => return Err(unexpected(other)),
        };
        // The file becomes a share of the group: recorded with the
        // membership it is fetched in.
        self.note_membership(&group).await;
        self.download_with(group, file, dest, info)
    }

    /// Calls to the trackers that run apart from the node, on its pooled
    /// links.
    pub fn tracker_calls(&self) -> Result<TrackerCalls> {
        Ok(TrackerCalls { links: self.pool_links.clone(), token: self.token()? })
    }

    /// How many nodes other than this one the answer lists as sharing.
    pub fn listed_others(&self, info: &FileInfo) -> usize {
        self.others_in(info).count()
    }

    /// The addresses of the other nodes `info` lists (what
    /// [`listed_others`](Self::listed_others) counts).
    pub fn others_in<'a>(&self, info: &'a FileInfo) -> impl Iterator<Item = SocketAddr> + 'a {
        let (listen, listed) = (self.addr, self.listed_addr());
        info.peers
            .iter()
            .filter_map(|p| p.addr.parse::<SocketAddr>().ok())
            .filter(move |a| !is_self(*a, listen, listed))
    }

    /// `download_file` with the tracker's answer already in hand.
    pub fn download_with(
        &mut self,
        group: String,
        file: String,
        dest: String,
        info: FileInfo,
    ) -> Result<Vec<String>> {
        check_name(NameKind::Group, &group)?;
        check_name(NameKind::File, &file)?;
        let token = self.token()?;
        let user = self.session()?.user.clone();
        let others = self.listed_others(&info);
        let FileInfo { meta, peers, ticket } = info;
        // The name came over the network: it must be a plain file name before
        // it becomes part of a path.
        check_name(NameKind::File, &meta.name)?;
        if meta.name != file {
            bail!("the tracker answered for {} instead of {file}", meta.name);
        }
        meta.validate().map_err(|e| anyhow!("bad metadata from the tracker: {e}"))?;
        let dest_path = resolve_dest_known(&dest, &file, &mut self.known_dirs)?;
        let key = dest_key(&dest_path);
        // Bytes against bytes (an `OsStr` against a `PathBuf` compares as
        // paths, parsing both into components, for every download held).
        if self
            .downloads
            .iter()
            .any(|d| d.dest_key.as_os_str() == key.as_os_str() && d.is_running())
        {
            bail!("already downloading into {}", dest_path.display());
        }
        // Made where the destination was looked at, not through a
        // directory replaced since by a link to elsewhere.
        let dir = self.known_dirs.dir_of(&dest_path)?;
        let (part, mut have) = PartFile::open_at(&dest_path, &meta, dir)?;
        // (The serve table, keyed by content, answers first: a bulk get of
        // distinct files scans no share list.)
        let before_copy = have.count_ones();
        if !have.is_complete() && self.serve.contains(&meta.sha1) {
            // Bytes this node shares already (its own file, or a file of
            // the group with the same content fetched before): copied, not
            // fetched. Its only source would otherwise be itself, which a
            // download never asks.
            if let Some(local) = self.local_copy(&meta) {
                // What verifies after the copy is what the part file holds,
                // fewer pieces than before included (a copy cut short).
                match part.fill_from(&local) {
                    Ok(filled) => have = filled,
                    Err(e) => {
                        tracing::warn!("copy the local copy of {}: {e}", meta.name);
                        have = ringshare_engine::meta::Bitfield::new(have.len());
                    }
                }
            }
        }
        let resumed = have.count_ones();
        let f = match part.file().try_clone() {
            Ok(f) => f,
            Err(e) => {
                // Out of descriptors, most often: nothing verified is left
                // behind (a part file with nothing in it was left).
                if resumed == 0 {
                    part.discard();
                }
                return Err(anyhow::Error::new(e).context("share the part file"));
            }
        };
        let served = ServedFile::partial(meta.clone(), f, have.clone());
        // Served from its part file, unless the same content is served
        // already (a download of it into another destination, a file of
        // the group with the same bytes under another name, a share): this
        // download then records its pieces apart. Recording them in the
        // other's entry had the server announce them and read them from
        // the other's part file, where they were not yet — corrupt pieces
        // sent, and the node banned by its peers.
        let own = !self.serve.contains(&meta.sha1);
        if own {
            // Its own part file: served to the group it is fetched in.
            self.serve.insert(Arc::clone(&served));
            self.serve_in(meta.sha1, &group);
        }
        // Else the bytes served under this SHA1 are another's (a share in
        // another group, another download), and this download's metadata
        // is only a claim until its pieces verify: its group is admitted
        // when it completes. (Admitted at once, a made-up entry with a
        // secret file's SHA1 in a group of one's own opened that file to
        // the group as soon as a member started fetching the entry.)
        let (listen, listed) = (self.addr, self.listed_addr());
        let plaintext = self.serve.security().plaintext;
        let first = peer_list(&peers, ticket.clone(), plaintext, |a| !is_self(a, listen, listed));
        let mut spec = FetchSpec::new(meta.clone(), user, ticket, Some(self.listed_addr()));
        spec.io = self.io;
        spec.security = self.serve.security().clone();
        spec.park_links = self.park_links;
        spec.settle = self.settler.clone();
        spec.first_peers = Some(first);
        let source = self.peer_source(token, group.clone(), file.clone());
        let unshared = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A download that failed here before, into this destination or
        // another, left a record for the share watcher to withdraw its
        // registration with: this one registers anew.
        {
            let mut list = lock(&self.shares);
            let key = (group.clone(), file.clone());
            if list.get(&key).is_some_and(LocalShare::is_unfinished) {
                list.remove(&key);
            }
        }
        let events = self.download_events(
            token,
            group.clone(),
            dest_path.clone(),
            meta.clone(),
            (Arc::clone(&unshared), own, resumed > 0),
            Arc::downgrade(&served),
        );
        let download = Download::start(
            spec,
            part,
            have,
            served,
            Arc::clone(&self.verify_pool),
            source,
            events,
        );
        if resumed > 0 {
            // It holds verified pieces from the start, and their first's
            // event does not come again: a sharer now (an earlier run on
            // another port withdrew its registration, or never made one).
            let book = self.download_book();
            unfinished(&book, &self.shares, self.defer_book_sync, &group, &dest_path, &meta);
            self.registrar.register(token, group.clone(), meta.clone());
        }
        // This download takes the place of one into the same destination
        // that stopped or failed: show_downloads had a line for each try.
        self.downloads.retain(|d| d.dest_key.as_os_str() != key.as_os_str() || d.is_running());
        self.downloads.push(DownloadEntry {
            group: group.clone(),
            name: file.clone(),
            dest: dest_path.clone(),
            fetch: Fetch::Held(download),
            paused: None,
            dest_key: key,
            unshared,
        });
        let pieces = meta.piece_hashes.len();
        let copied = resumed.saturating_sub(before_copy);
        let from = if copied > 0 {
            // Not a resume: bytes this node holds already, under another
            // name or in another group.
            format!("{copied}/{pieces} pieces copied from this node's own copy")
        } else if resumed > 0 {
            format!("resuming at {resumed}/{pieces} pieces")
        } else {
            pieces_word(pieces)
        };
        Ok(vec![format!(
            "downloading {file} from {group} to {} ({from}, {others} peer(s)); see show_downloads",
            dest_path.display()
        )])
    }

    /// Where a download finds its peers: first the list its `FileInfo`
    /// answered, then the tracker again (through the node's link pool).
    fn peer_source(
        &self,
        token: Token,
        group: String,
        file: String,
    ) -> Box<dyn ringshare_engine::fetch::PeerSource> {
        let rt = self.rt.clone();
        let links = self.pool_links.clone();
        let (listen, listed) = (self.addr, self.listed_addr());
        let plaintext = self.serve.security().plaintext;
        Box::new(move || {
            let req = Request::FileInfo { token, group: group.clone(), file: file.clone() };
            match rt.block_on(links.call(&req)) {
                Ok(Response::FileInfo { peers, ticket, .. }) => {
                    Ok(peer_list(&peers, ticket, plaintext, |a| !is_self(a, listen, listed)))
                }
                // Gone for good: no use asking again for a minute.
                Ok(Response::Refused(
                    r @ (Refusal::NoSuchFile { .. }
                    | Refusal::NoSuchGroup(_)
                    | Refusal::NotMember(_)),
                )) => Err(PeerError::Gone(r.to_string())),
                Ok(Response::Refused(r)) => Err(PeerError::Unavailable(r.to_string())),
                Ok(other) => Err(PeerError::Unavailable(format!("unexpected answer: {other:?}"))),
                Err(e) => Err(PeerError::Unavailable(e.to_string())),
            }
        })
    }

    /// What a download's progress does to the node: the first verified piece
    /// registers this node as a sharer; completion records the share.
    fn download_events(
        &self,
        token: Token,
        group: String,
        dest: PathBuf,
        meta: FileMeta,
        (unshared, own, registered): (Arc<std::sync::atomic::AtomicBool>, bool, bool),
        served: std::sync::Weak<ServedFile>,
    ) -> Box<dyn Fn(FetchEvent) + Send + Sync> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let registrar = self.registrar.clone();
        let serve = Arc::clone(&self.serve);
        let served_groups = Arc::clone(&self.served_groups);
        let shares = Arc::clone(&self.shares);
        let book = self.download_book();
        let later = (self.transient && meta.piece_hashes.len() == 1).then_some(REGISTER_LATER);
        let (ended, announce) = (Arc::clone(&self.ended), self.announce);
        let announce_failures = self.announce_failures;
        let defer_sync = self.defer_book_sync;
        let unshared_now = move || unshared.load(Ordering::Acquire);
        // Listed as a sharer of its verified pieces (at its start, resumed,
        // or at its first piece).
        let registered = AtomicBool::new(registered);
        Box::new(move |event| match event {
            FetchEvent::FirstPiece if unshared_now() => {}
            FetchEvent::FirstPiece => {
                unfinished(&book, &shares, defer_sync, &group, &dest, &meta);
                registered.store(true, Ordering::Release);
                match later {
                    Some(after) => {
                        registrar.register_later(token, group.clone(), meta.clone(), after)
                    }
                    None => registrar.register(token, group.clone(), meta.clone()),
                }
            }
            FetchEvent::Complete(_) if unshared_now() => {
                // Fetched, not shared: served no more unless a share of
                // the same bytes is.
                if !lock(&shares).values().any(|s| s.meta.sha1 == meta.sha1) {
                    serve.remove(&meta.sha1);
                    forget_groups(&served_groups, &meta.sha1);
                }
                ended.notify_one();
            }
            FetchEvent::Complete(_) if !own && claims_anothers_sha1(&shares, &meta) => {
                // Its pieces verified against its own metadata, whose SHA1
                // is that of another file shared here with other pieces: a
                // made-up entry (the tracker never sees bytes). Served
                // under that SHA1, it would replace the real file's bytes
                // and get this node banned by the real file's downloaders.
                tracing::warn!(
                    group,
                    file = meta.name,
                    "fetched, not shared: its SHA1 is another file's shared here"
                );
                ended.notify_one();
            }
            FetchEvent::Complete(peers) => {
                // Its part file held open (the download's served entry)
                // tells without a look by path. Else, under a settler the
                // file is most often still `.part`, and may be moved while
                // it is looked at: the part file, then the destination (a
                // part file gone is one moved already: the move is atomic).
                let held = served
                    .upgrade()
                    .and_then(|f| f.metadata().ok())
                    .map(|md| LocalShare::of(group.clone(), dest.clone(), &md, meta.clone()));
                let part = part_path(&dest);
                let record =
                    |at: &Path| LocalShare::at(group.clone(), dest.clone(), at, meta.clone());
                match held.unwrap_or_else(|| record(&part)).or_else(|_| record(&dest)) {
                    Ok(share) => {
                        if announce {
                            crate::notice(&downloaded_line(&group, &meta.name, meta.len, &peers));
                        }
                        // Served on demand from now on: the part file's
                        // descriptor closes with its last connection. Its
                        // pieces all verified: its group is admitted.
                        serve.insert_lazy(share.meta.sha1, opener(&share));
                        admit_group(&served_groups, share.meta.sha1, &share.group);
                        // Durable (fdatasync) before it counts — or, in a
                        // bulk get, when the get ends — outside the lock
                        // other downloads' ends wait on.
                        if let Some(book) = &book {
                            let put = if defer_sync {
                                book.put_unsynced(&share)
                            } else {
                                book.put(&share)
                            };
                            if let Err(e) = put {
                                tracing::warn!("save the share record: {e}");
                            }
                        }
                        lock(&shares).insert(share_key(&share), share);
                    }
                    Err(e) => tracing::warn!("record {}: {e}", dest.display()),
                }
                ended.notify_one();
            }
            FetchEvent::Failed(why) => {
                if announce_failures {
                    crate::notice(&format!(
                        "ringshare: download failed [{group}] {}: {why}",
                        meta.name
                    ));
                }
                if own && registered.load(Ordering::Acquire) && !unshared_now() {
                    // Listed as a sharer, it will get no further: left
                    // listed, others were told of a peer that cannot finish
                    // them (their downloads waited 60 s on it rather than
                    // failing in 10 with none listed). The share watcher
                    // withdraws it, as a login does after a crash; fetching
                    // it again registers anew.
                    let record = LocalShare::unfinished(group.clone(), dest.clone(), meta.clone());
                    lock(&shares).entry(share_key(&record)).or_insert(record);
                } else if own && !registered.load(Ordering::Acquire) {
                    // Never listed (nothing verified, most often, and its
                    // part file gone): nobody will ask for it, and its
                    // entry held the part file's descriptor — and its disk
                    // space — until the process ended (a bulk get whose
                    // files nobody served held one per failed file).
                    if served.upgrade().is_some_and(|f| serve.remove_this(&f)) {
                        forget_groups(&served_groups, &meta.sha1);
                    }
                }
                ended.notify_one()
            }
        })
    }

    async fn call(&mut self, req: Request) -> Result<Response> {
        let resp = self.link.call(&req).await?;
        if let Response::Refused(Refusal::NotLoggedIn) = resp {
            // The tracker no longer knows the session: stop acting logged in.
            self.pause_all("stopped: the session ended");
        }
        if let Response::Refused(
            r @ (Refusal::UserExists(_) | Refusal::GroupExists(_) | Refusal::AlreadyMember(_)),
        ) = &resp
        {
            if self.link.resent() {
                // A first try reached a tracker that went down before
                // answering, and the next one already holds it: most
                // likely this very command's doing, not somebody else's.
                bail!(
                    "{r} (perhaps by this very command: a tracker took it and went down before \
                     answering, and the next one was asked again)"
                );
            }
        }
        Ok(resp)
    }

    async fn call_done(&mut self, req: Request) -> Result<()> {
        match self.call(req).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn call_names(&mut self, req: Request) -> Result<Vec<String>> {
        match self.call(req).await? {
            Response::Names(names) => Ok(names),
            other => Err(unexpected(other)),
        }
    }
}

/// Records in `book` that the download of `meta` to `dest` is registered as
/// a sharer and not finished ([`LocalShare::unfinished`]). Only for a file
/// of several pieces: one of one piece is finished by its first.
///
/// Not when this node shares the file already from a whole copy (the same
/// file fetched again into another place): the record holds one place per
/// file, and that copy's stays. A download stopped here is then not taken
/// for the share at the next login, which stopped sharing the file
/// although the node held it whole.
fn unfinished(
    book: &Option<ShareBook>,
    shares: &Arc<Mutex<ShareList>>,
    defer_sync: bool,
    group: &str,
    dest: &Path,
    meta: &FileMeta,
) {
    let Some(book) = book else { return };
    if meta.piece_hashes.len() < 2 {
        return;
    }
    let key = (group.to_owned(), meta.name.clone());
    if lock(shares).get(&key).is_some_and(|s| !s.is_unfinished() && s.meta.sha1 == meta.sha1) {
        return;
    }
    let record = LocalShare::unfinished(group.to_owned(), dest.to_owned(), meta.clone());
    let put = if defer_sync { book.put_unsynced(&record) } else { book.put(&record) };
    if let Err(e) = put {
        tracing::warn!("save the share record: {e}");
    }
}

/// Tells the trackers every `every_ms` that this node is alive, until the
/// session ends; keeps the ticket key current.
/// Whether a listed peer address is this node: the address it gave, or —
/// listening on every interface, and listed under the address its login
/// came from — its port on one of this host's addresses.
fn is_self(addr: SocketAddr, listen: SocketAddr, listed: SocketAddr) -> bool {
    // One spelling per address, as the trackers list them
    // (`[::ffff:10.0.0.1]:7` is `10.0.0.1:7`).
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (addr, listen, listed) = (canonical(addr), canonical(listen), canonical(listed));
    if addr == listed || addr == listen {
        return true;
    }
    listen.ip().is_unspecified()
        && addr.port() == listen.port()
        && std::net::UdpSocket::bind((addr.ip(), 0)).is_ok()
}

/// Whether a listed peer address can be a piece server at all: a tracker
/// lists only addresses it checked, but an entry that is port 0, all
/// zeros, multicast or broadcast (from a tracker that is buggy or not
/// ours) would only cost a failed connect each, or reach this host.
fn connectable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// A download's peers from a tracker's answer: each with the key its
/// encrypted link must prove. A peer listed without a key (the tracker has
/// not heard it yet) is left out, unless links are plaintext.
fn peer_list(
    peers: &[PeerInfo],
    ticket: Vec<u8>,
    plaintext: bool,
    keep: impl Fn(SocketAddr) -> bool,
) -> ringshare_engine::fetch::PeerList {
    let mut list = ringshare_engine::fetch::PeerList { ticket: Some(ticket), ..Default::default() };
    for p in peers {
        let Ok(addr) = p.addr.parse::<SocketAddr>() else {
            list.left_out += 1;
            continue;
        };
        if !keep(addr) {
            list.own += 1;
            continue;
        }
        if !connectable(addr) {
            list.left_out += 1;
            continue;
        }
        match p.key {
            Some(k) => {
                list.keys.insert(addr, PublicKey(k));
            }
            None if plaintext => {}
            None => {
                list.left_out += 1;
                continue;
            }
        }
        list.addrs.push(addr);
    }
    list
}

/// Tells the trackers every `every_ms` that the session is alive, from
/// its login on. The connection is kept between heartbeats and watched:
/// when the tracker ends it (it stopped, or restarted and so forgot the
/// keys the nodes proved), the next heartbeat goes at once, and while no
/// tracker answers it is tried again after [`HEARTBEAT_RETRY`], doubling
/// up to the period. A restarted tracker, which knows no node's key until it
/// hears from the node, used to leave this node out of its peer lists until
/// the period was out (ten seconds by default).
async fn heartbeat(
    trackers: Trackers,
    token: Token,
    every_ms: u32,
    key: TicketKey,
    health: Arc<TrackerHealth>,
) {
    let mut link = TrackerLink::new(trackers);
    let every = std::time::Duration::from_millis(u64::from(every_ms.max(100)));
    // The first goes at once: it opens the connection that is watched.
    let mut wait = std::time::Duration::ZERO;
    let mut misses = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // (After a pause: a tracker that answers and then hangs up
            // at once is not asked in a tight loop.)
            () = link.closed() => tokio::time::sleep(HEARTBEAT_RETRY).await,
        }
        let failing = || health.failing.lock().unwrap_or_else(|p| p.into_inner());
        // Silent from the moment a heartbeat goes unanswered, not from
        // when it fails: a tracker that hangs fails a call only at the
        // link's timeout, several of them in turn.
        failing().get_or_insert_with(|| (std::time::Instant::now(), String::new()));
        match link.call(&Request::Heartbeat { token }).await {
            Ok(Response::Refused(Refusal::NotLoggedIn)) => {
                health.ended.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
            Ok(resp) => {
                if let Response::Alive { ticket_key } = resp {
                    set_key(&key, Some(ticket_key));
                }
                *failing() = None;
                wait = every;
                misses = 0;
            }
            // No tracker reachable now: keep trying, sooner at first.
            Err(e) => {
                tracing::debug!("heartbeat: {e}");
                let why = format!("{e:#}");
                if let Some((_, last)) = failing().as_mut() {
                    *last = why;
                }
                wait = HEARTBEAT_RETRY.saturating_mul(1 << misses.min(16)).min(every);
                misses += 1;
            }
        }
    }
}

/// How long a transient node's file of one piece waits to be registered
/// ([`Node::set_transient`]): less than the 10 s a fetcher stays listed.
pub const REGISTER_LATER: std::time::Duration = std::time::Duration::from_secs(5);

/// The first wait before a heartbeat that found no tracker is tried again.
const HEARTBEAT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Every `every_ms` (the heartbeat's period), checks that each shared file
/// still has the length and modification time it was hashed with; one that
/// changed or vanished is withdrawn: no longer served, stopped at the
/// tracker, dropped from the share record, with one log line. Serving it
/// would hand out pieces that no longer match their SHA1.
async fn watch_shares(
    trackers: Trackers,
    token: Token,
    every_ms: u32,
    shares: Shares,
    (serve, served_groups): (Arc<ServeTable>, ServedGroups),
    book: ShareBook,
) {
    let mut link = TrackerLink::new(trackers);
    let every = std::time::Duration::from_millis(u64::from(every_ms.max(100)));
    // Each shared file's change time and inode as last seen here. A file
    // rewritten with its length and modification time put back (`rsync
    // -t`, `cp -p`, `touch -r`) or replaced by such a copy keeps the two
    // the share records, but not these: it is read again, and withdrawn if
    // its SHA1 is not the one shared. (It was served on, every piece of it
    // refused by the downloaders, and its user told nothing.)
    // (Keyed by a hash of the path: a node may share a million files.)
    let mut seen: HashMap<u64, crate::shares::ChangeMark> = HashMap::new();
    let key_of = |p: &Path| {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(p)
    };
    loop {
        tokio::time::sleep(every).await;
        // Stat calls happen outside the lock: uploads and downloads add
        // shares meanwhile.
        let current: Vec<LocalShare> = lock(&shares).values().cloned().collect();
        let mut stale: Vec<(LocalShare, String)> = Vec::new();
        let mut touched = Vec::new();
        // Same length, another modification time (`touch`, a save of the
        // same bytes): read again; withdrawn only if the bytes changed.
        let mut retimed = Vec::new();
        for s in &current {
            let why = match s.check_at() {
                Ok(Some(md)) => {
                    let now = crate::shares::change_mark(&md);
                    let was = seen.insert(key_of(&s.path), now).or(s.changed);
                    if was.is_some_and(|was| was != now) {
                        touched.push(s.clone());
                    }
                    continue;
                }
                Ok(None) => continue,
                Err(Staleness::Changed) => {
                    // Withdrawn below unless only its time moved.
                    retimed.push(s.clone());
                    continue;
                }
                Err(Staleness::Missing(e)) => format!("missing ({e})"),
                Err(Staleness::Unfinished) => "a download that did not finish".to_owned(),
            };
            stale.push((s.clone(), format!("{}: {why}", s.path.display())));
        }
        for s in retimed {
            let Some(again) = same_bytes_again(&s).await else {
                stale.push((s.clone(), format!("{}: changed on disk", s.path.display())));
                continue;
            };
            // The same bytes: shared on, recorded with the new time (unless
            // the record was replaced meanwhile).
            let key = share_key(&s);
            let kept = {
                let mut list = lock(&shares);
                let kept = list.get(&key) == Some(&s);
                if kept {
                    list.insert(key, again.clone());
                }
                kept
            };
            if kept {
                if let Err(e) = book.put(&again) {
                    tracing::warn!("save the share record: {e}");
                }
            }
        }
        if seen.len() > current.len() {
            let live: HashSet<u64> = current.iter().map(|s| key_of(&s.path)).collect();
            seen.retain(|k, _| live.contains(k));
        }
        for s in touched {
            let (path, len, sha1) = (s.path.clone(), s.meta.len, s.meta.sha1);
            let same = tokio::task::spawn_blocking(move || {
                ringshare_engine::store::holds(&path, len, &sha1)
            })
            .await
            .unwrap_or(true);
            if !same {
                let why = format!(
                    "{}: changed on disk (its content; its length and modification time were \
                     kept)",
                    s.path.display()
                );
                stale.push((s, why));
            }
        }
        // Groups this user left from another session (or that are gone):
        // the tracker lists none of its files here any more, and their
        // tickets are admitted no more. Groups left and joined again, or
        // made anew, meanwhile: what was shared here was for the members
        // of another time (the membership recorded is another).
        let groups: BTreeSet<&str> = current.iter().map(|s| s.group.as_str()).collect();
        // Memberships to record once what was shared in an earlier one is
        // off the record (a crash between the two resumes nothing).
        let mut renewed = Vec::new();
        for group in groups {
            let probe = Request::Membership { token, group: group.to_owned() };
            let why = match link.call(&probe).await {
                Ok(Response::Refused(Refusal::NotMember(_) | Refusal::NoSuchGroup(_))) => {
                    format!("no longer a member of {group}")
                }
                Ok(Response::Member { since }) => {
                    let was = book.since(group);
                    if worth_recording(was, since) {
                        renewed.push((group.to_owned(), since));
                    }
                    if !later_membership(was, since) {
                        continue;
                    }
                    format!("shared before you left {group} or it was made anew")
                }
                _ => continue,
            };
            let left = current.iter().filter(|s| s.group == group);
            let fresh: Vec<LocalShare> =
                left.filter(|s| !stale.iter().any(|(g, _)| g == *s)).cloned().collect();
            stale.extend(fresh.into_iter().map(|s| (s, why.clone())));
        }
        if !stale.is_empty() {
            let mut list = lock(&shares);
            // Only what is still as it was looked at: a share put in its
            // place meanwhile (uploaded again, fetched again) stays, and
            // stays listed.
            stale.retain(|(gone, _)| {
                let key = share_key(gone);
                let same = list.get(&key) == Some(gone);
                if same {
                    list.remove(&key);
                }
                same
            });
            for (gone, _) in &stale {
                if !list.values().any(|s| s.meta.sha1 == gone.meta.sha1) {
                    serve.remove(&gone.meta.sha1);
                    forget_groups(&served_groups, &gone.meta.sha1);
                } else if let Ok(mut g) = served_groups.write() {
                    // Still shared in other groups: not in this one (unless
                    // a share of it there is left).
                    let left_in_group = list
                        .values()
                        .any(|s| s.meta.sha1 == gone.meta.sha1 && s.group == gone.group);
                    if let (false, Some(set)) = (left_in_group, g.get_mut(&gone.meta.sha1)) {
                        set.remove(&gone.group);
                    }
                }
            }
            for (gone, _) in &stale {
                if let Err(e) = book.remove(&gone.group, &gone.meta.name) {
                    tracing::warn!("save the share record: {e}");
                }
            }
        }
        for (group, since) in renewed {
            if let Err(e) = book.set_since(&group, since) {
                tracing::warn!("save the share record: {e}");
            }
        }
        for (gone, why) in stale {
            tracing::warn!("stopped sharing {}/{}: {why}", gone.group, gone.meta.name);
            let req = Request::StopShare { token, group: gone.group, file: gone.meta.name };
            if let Err(e) = link.call(&req).await {
                // The tracker drops it from peer lists with the session anyway.
                tracing::debug!("stop_share after a change: {e}");
            }
        }
    }
}

fn lock(shares: &Shares) -> MutexGuard<'_, ShareList> {
    shares.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prints [`tcp_buffer_note`]'s line, if any, on standard error (a shell,
/// `share`, `get` without `--quiet`; not `ls`, nor the demo's nodes, all on
/// loopback).
pub fn say_tcp_buffer_note() {
    if let Some(note) = tcp_buffer_note() {
        eprintln!("ringshare: {note}");
    }
}

/// The receive buffer the kernel's autotuning may grow one TCP connection
/// to (`net.ipv4.tcp_rmem`, its third field) caps that connection at about
/// that many bytes per round trip. Below 32 MiB (100 MB/s at 300 ms) a
/// line says so, once, with the setting to raise.
fn tcp_buffer_note() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").ok()?;
    let max: u64 = text.split_whitespace().nth(2)?.parse().ok()?;
    (max < 32 << 20).then(|| tcp_buffer_line(max))
}

/// [`tcp_buffer_note`]'s line for a limit of `max` bytes: never rounded up
/// to the 32 MiB it falls short of, nor down to 0.
fn tcp_buffer_line(max: u64) -> String {
    let size = if max >= 1 << 20 {
        // Tenths of a MiB, rounded down.
        let tenths = max * 10 / (1 << 20);
        if tenths % 10 == 0 {
            format!("{} MiB", tenths / 10)
        } else {
            format!("{}.{} MiB", tenths / 10, tenths % 10)
        }
    } else {
        format!("{} KiB", max / 1024)
    };
    let rate = |secs: f64| {
        let mbps = max as f64 / secs / 1e6;
        match mbps {
            r if r < 1.0 => format!("{r:.2}"),
            r if r < 10.0 => format!("{r:.1}"),
            r => format!("{r:.0}"),
        }
    };
    format!(
        "net.ipv4.tcp_rmem allows {size} per connection: about {} MB/s from a peer 100 ms away, \
         {} MB/s at 200 ms; for distant peers raise it (README, Tuning)",
        rate(0.1),
        rate(0.2)
    )
}

fn set_key(key: &TicketKey, value: Option<[u8; 32]>) {
    if let Ok(mut k) = key.write() {
        *k = value;
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn check_name(kind: NameKind, value: &str) -> Result<()> {
    names::validate(kind, value).map_err(|e| anyhow!("{e}"))
}

/// `share` read again when its file has the length it was shared with but
/// another modification time (`touch`, the same bytes saved again): its
/// record with the new time if its bytes are the same, else `None`.
async fn same_bytes_again(share: &LocalShare) -> Option<LocalShare> {
    let (path, len, sha1) = (share.path.clone(), share.meta.len, share.meta.sha1);
    if !std::fs::metadata(&path).is_ok_and(|md| md.is_file() && md.len() == len) {
        return None;
    }
    let same =
        tokio::task::spawn_blocking(move || ringshare_engine::store::holds(&path, len, &sha1))
            .await
            .unwrap_or(false);
    same.then(|| LocalShare::new(share.group.clone(), share.path.clone(), share.meta.clone()).ok())
        .flatten()
}

/// The tracker's rule for a password, checked here first: said plainly,
/// not as the tracker's "bad request".
fn check_password(password: &str) -> Result<()> {
    let max = names::MAX_PASSWORD_LEN;
    anyhow::ensure!(
        !password.is_empty() && password.len() <= max,
        "a password must be 1 to {max} bytes (this one is {})",
        password.len()
    );
    Ok(())
}

/// The tracker's answer for a download: the file's metadata, its online
/// peers and the ticket to show them.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// The file's metadata.
    pub meta: FileMeta,
    /// Its online peers.
    pub peers: Vec<PeerInfo>,
    /// The ticket.
    pub ticket: Vec<u8>,
}

/// Requests to the trackers on the node's pooled links, apart from the node
/// (a bulk `get` asks for the next files' [`FileInfo`] ahead, a bulk share
/// registers several files at once); cheap to clone into tasks.
#[derive(Debug, Clone)]
pub struct TrackerCalls {
    links: LinkPool,
    token: Token,
}

impl TrackerCalls {
    /// Any request, on a pooled link.
    pub async fn call(&self, req: &Request) -> Result<Response> {
        Ok(self.links.call(req).await?)
    }

    /// The tracker's `FileInfo` for each of `files` of `group` (at most
    /// [`ringshare_engine::ticket::MAX_FILES`]), in one request and under
    /// one ticket: one answer per name, in order — fewer when the tracker
    /// answered only the first ones (the rest are to be asked again).
    pub async fn fetch_many(&self, group: &str, files: &[String]) -> Result<Vec<Result<FileInfo>>> {
        let req = Request::FileInfos {
            token: self.token,
            group: group.to_owned(),
            files: files.to_vec(),
        };
        let (found, ticket) = match self.links.call(&req).await? {
            Response::FileInfos { files, ticket } => (files, ticket),
            other => return Err(unexpected(other)),
        };
        if found.len() > files.len() {
            bail!("the tracker answered for {} files, {} asked", found.len(), files.len());
        }
        Ok(found
            .into_iter()
            .zip(files)
            .map(|(looked, asked)| match looked {
                FileLookup::Found { meta, .. } if meta.name != *asked => {
                    Err(anyhow!("the tracker answered for {} instead of {asked}", meta.name))
                }
                FileLookup::Found { meta, peers } => {
                    Ok(FileInfo { meta, peers, ticket: ticket.clone() })
                }
                FileLookup::Refused(r) => Err(anyhow!("{r}")),
            })
            .collect())
    }
}

/// A shared file's opener for serving ([`open_unchanged`]).
fn opener(share: &LocalShare) -> Arc<ringshare_engine::serve::Opener> {
    let share = share.clone();
    Arc::new(move || Ok(ServedFile::complete(share.meta.clone(), open_unchanged(&share)?)))
}

/// Opens a shared file, refusing one that is no longer the file that was
/// hashed (length or modification time changed).
fn open_unchanged(share: &LocalShare) -> std::io::Result<File> {
    // A file a bulk get fetched is `.part` until it is settled.
    let f = File::open(&share.path)
        .or_else(|_| File::open(part_path(&share.path)))
        .or_else(|_| File::open(&share.path))?;
    if !share.unchanged(&f.metadata()?) {
        return Err(std::io::Error::other(format!(
            "{} changed since it was shared",
            share.path.display()
        )));
    }
    Ok(f)
}

/// A prefix that matches no file is an error, as a path that is not there
/// is to `ls` (an empty group lists nothing: there is nothing to match).
pub fn no_match(files: &[FileEntry], group: &str, prefix: &str) -> Result<()> {
    if files.is_empty() && !prefix.is_empty() {
        bail!("no file in {group} starts with {prefix}");
    }
    Ok(())
}

/// A `list_files` line: `name  123 bytes  2 peers`.
pub fn file_line(f: &FileEntry) -> String {
    let s = if f.peers == 1 { "" } else { "s" };
    format!("{}  {} bytes  {} peer{s}", f.name, f.len, f.peers)
}

/// `1 piece`, `N pieces`.
pub fn pieces_word(n: usize) -> String {
    if n == 1 {
        "1 piece".to_owned()
    } else {
        format!("{n} pieces")
    }
}

/// A file shared by [`Node::share_paths`].
#[derive(Debug, Clone)]
pub struct SharedLine {
    /// Its name in the group.
    pub name: String,
    /// Its length.
    pub len: u64,
    /// Its piece count.
    pub pieces: usize,
    /// Its SHA1.
    pub sha1: Sha1Digest,
}

impl SharedLine {
    /// `uploaded NAME to GROUP: B bytes, P pieces, sha1 …`.
    pub fn uploaded(&self, group: &str) -> String {
        format!(
            "uploaded {} to {group}: {} bytes, {}, sha1 {}",
            self.name,
            self.len,
            pieces_word(self.pieces),
            self.sha1
        )
    }

    /// The line of the file `meta` describes.
    pub fn of(meta: &FileMeta) -> Self {
        Self {
            name: meta.name.clone(),
            len: meta.len,
            pieces: meta.piece_hashes.len(),
            sha1: meta.sha1,
        }
    }
}

/// A path that was not shared, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The path.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl Skipped {
    /// `path` was skipped for `reason`.
    pub fn new(path: &Path, reason: String) -> Self {
        Self { path: path.to_owned(), reason }
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A control character in a name is shown escaped (`\u{1}`), not
        // sent to the terminal; a combining mark too (`cafe\u{301}`), or two
        // spellings of one name would read the same.
        let shown = self.path.display().to_string();
        let path = ringshare_engine::names::escaped_marks(&shown);
        if path.chars().any(char::is_control) {
            write!(f, "{}: {}", path.escape_debug(), self.reason)
        } else {
            write!(f, "{path}: {}", self.reason)
        }
    }
}

/// What [`Node::share_paths`] did.
#[derive(Debug, Default)]
pub struct ShareReport {
    /// Shared, in name order.
    pub shared: Vec<SharedLine>,
    /// Shared already by this node from the same path (resumed at login),
    /// in name order, with their paths.
    pub already: Vec<(PathBuf, SharedLine)>,
    /// Skipped, each with its reason.
    pub skipped: Vec<Skipped>,
    /// Time spent hashing.
    pub hash_seconds: f64,
    /// Time spent registering with the tracker and starting to serve.
    pub register_seconds: f64,
}

/// How [`Node::share_paths`] of one file went, when it was not skipped.
#[derive(Debug)]
pub enum OneFile<'a> {
    /// Shared now.
    Shared(&'a SharedLine),
    /// Shared already by this node from the same path.
    Already(&'a SharedLine),
}

impl ShareReport {
    /// The one file of a report on one file; why it was skipped is the
    /// error.
    pub fn one_file(&self) -> Result<OneFile<'_>> {
        match (self.shared.first(), self.skipped.first(), self.already.first()) {
            (Some(s), _, _) => Ok(OneFile::Shared(s)),
            (None, Some(why), _) => Err(anyhow!("{}", why.reason)),
            (None, None, Some((_, s))) => Ok(OneFile::Already(s)),
            (None, None, None) => Err(anyhow!("nothing to share")),
        }
    }

    /// Why nothing was shared, if nothing was (nor shared before): every
    /// file skipped (the first's reason), or none found under `from`.
    pub fn nothing_shared(&self, from: &str) -> Option<String> {
        if !self.shared.is_empty() || !self.already.is_empty() {
            return None;
        }
        Some(match self.skipped.as_slice() {
            [] => format!("nothing to share: {from} holds no regular file"),
            [one] => format!("nothing shared: skipped {one}"),
            [first, ..] => format!(
                "nothing shared: all {} file(s) under {from} skipped (the first: {first})",
                self.skipped.len()
            ),
        })
    }

    /// Files shared before by this node become skips that say so.
    pub fn already_as_skipped(&mut self, group: &str) {
        for (path, s) in self.already.drain(..) {
            let why = Refusal::AlreadySharing { group: group.to_owned(), file: s.name };
            self.skipped.push(Skipped::new(&path, why.to_string()));
        }
        self.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    }

    /// `shared 12 file(s) in g: 3456 bytes, 14 pieces; skipped 1`.
    pub fn summary(&self, group: &str) -> String {
        let bytes: u64 = self.shared.iter().map(|s| s.len).sum();
        let pieces: usize = self.shared.iter().map(|s| s.pieces).sum();
        let mut line = format!(
            "shared {} file(s) in {group}: {bytes} bytes, {}",
            self.shared.len(),
            pieces_word(pieces)
        );
        if !self.already.is_empty() {
            line += &format!("; {} already shared", self.already.len());
        }
        if !self.skipped.is_empty() {
            line += &format!("; skipped {}", self.skipped.len());
        }
        line
    }
}

/// A refusal becomes its own message; any other mismatch is a protocol error.
fn unexpected(resp: Response) -> anyhow::Error {
    match resp {
        // Typed, for callers that tell a passing failure from a lasting one.
        Response::Refused(r) => anyhow::Error::new(r),
        other => anyhow!("unexpected answer from the tracker: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(addr: &str) -> PeerInfo {
        PeerInfo { user: "u".into(), addr: addr.into(), key: Some([1; 32]) }
    }

    /// A later membership is told from a tracker that has not heard of it
    /// (an earlier id) and from one upgraded with it in its snapshot (0).
    #[test]
    fn only_a_later_membership_stops_the_shares_of_the_one_on_record() {
        assert!(later_membership(Some(5), 9));
        assert!(!later_membership(Some(9), 9), "the same");
        assert!(!later_membership(Some(9), 5), "a tracker that lags");
        assert!(!later_membership(None, 9), "none on record (an earlier version's record)");
        assert!(!later_membership(Some(0), 9), "0 on record: that one, or another");
        assert!(!later_membership(Some(9), 0), "0 answered: that one, or another");
        assert!(worth_recording(None, 0) && worth_recording(None, 9));
        assert!(worth_recording(Some(0), 9) && worth_recording(Some(5), 9));
        assert!(!worth_recording(Some(9), 9) && !worth_recording(Some(9), 5));
        assert!(!worth_recording(Some(9), 0), "a known id is not forgotten for 0");
    }

    /// A node given `--advertise [::ffff:10.0.0.1]:7` is listed as
    /// `10.0.0.1:7`, and still knows itself in a peer list.
    #[test]
    fn a_node_knows_itself_in_either_spelling() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let listen = a("127.0.0.1:9");
        assert!(is_self(a("10.0.0.1:7"), listen, a("[::ffff:10.0.0.1]:7")));
        assert!(is_self(a("[::ffff:10.0.0.1]:7"), listen, a("10.0.0.1:7")));
        assert!(!is_self(a("10.0.0.2:7"), listen, a("[::ffff:10.0.0.1]:7")));
    }

    /// A file fetched again into another place while this node shares it
    /// whole: the share record keeps the whole copy, so that the next login
    /// shares it again whatever became of the second download. With no
    /// whole copy shared, the download's record is made.
    #[test]
    fn a_download_of_a_file_shared_whole_here_leaves_its_record_alone() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.bin");
        std::fs::write(&whole, vec![7u8; 1000]).unwrap();
        let meta = FileMeta {
            name: "big.bin".into(),
            len: 1000,
            sha1: Sha1Digest([1; 20]),
            piece_hashes: vec![Sha1Digest([2; 20]), Sha1Digest([3; 20])],
        };
        let book = Some(ShareBook::new(dir.path(), "b", "127.0.0.1:1"));
        let shares: Arc<Mutex<ShareList>> = Arc::default();
        let again = dir.path().join("again/big.bin");
        // Nothing shared: the download is recorded, unfinished.
        unfinished(&book, &shares, false, "g", &again, &meta);
        let (recorded, _) = book.as_ref().unwrap().load();
        assert_eq!(recorded.len(), 1);
        assert!(recorded[0].is_unfinished() && recorded[0].path == again);
        // Shared whole from `whole`: that record stays.
        let share = LocalShare::new("g".into(), whole.clone(), meta.clone()).unwrap();
        book.as_ref().unwrap().put(&share).unwrap();
        lock(&shares).insert(share_key(&share), share);
        unfinished(&book, &shares, false, "g", &again, &meta);
        let (recorded, _) = book.as_ref().unwrap().load();
        assert_eq!(recorded.len(), 1);
        assert!(!recorded[0].is_unfinished());
        assert_eq!(recorded[0].path, whole);
        assert_eq!(recorded[0].check(), Ok(()));
    }

    #[test]
    fn the_tcp_buffer_line_says_the_limit_as_it_is() {
        let line = |max| tcp_buffer_line(max);
        assert_eq!(
            line(6 << 20),
            "net.ipv4.tcp_rmem allows 6 MiB per connection: about 63 MB/s from a peer 100 ms \
             away, 31 MB/s at 200 ms; for distant peers raise it (README, Tuning)"
        );
        assert!(line((32 << 20) - 1).starts_with("net.ipv4.tcp_rmem allows 31.9 MiB "));
        assert!(line(4096).contains("allows 4 KiB per connection: about 0.04 MB/s from a peer"));
        assert!(line(4096).contains(", 0.02 MB/s at 200 ms"));
        assert!(line(300_000).contains("about 3.0 MB/s"), "{}", line(300_000));
    }

    #[test]
    fn a_skipped_name_shows_its_control_characters_escaped() {
        let s = Skipped::new(Path::new("tree/ctl\u{1}char.txt"), "bad name".into());
        assert_eq!(s.to_string(), "tree/ctl\\u{1}char.txt: bad name");
        let plain = Skipped::new(Path::new("tree/a b.txt"), "why".into());
        assert_eq!(plain.to_string(), "tree/a b.txt: why");
    }

    #[test]
    fn listed_peers_that_cannot_be_piece_servers_are_left_out() {
        let peers: Vec<PeerInfo> = [
            "10.0.0.1:7000",
            "not an address",
            "10.0.0.2:0",
            "0.0.0.0:7000",
            "[::]:7000",
            "224.0.0.1:7000",
            "[ff02::1]:7000",
            "255.255.255.255:7000",
            "10.0.0.3:7000",
            "[2001:db8::1]:7000",
        ]
        .map(listed)
        .into();
        let list = peer_list(&peers, vec![], false, |a| a.port() == 7000);
        let kept: Vec<String> = list.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(kept, ["10.0.0.1:7000", "10.0.0.3:7000", "[2001:db8::1]:7000"]);
        // Counted as left out, not as nobody: what does not parse or cannot
        // be connected to (six), not what `keep` refuses (this node).
        assert_eq!(list.left_out, 6);
        // What `keep` refuses is counted as this node's own: 10.0.0.2:0 is
        // refused before it could count as left out.
        assert_eq!(list.own, 1);
        // A peer whose key the tracker does not know yet is left out too.
        let mut keyless = listed("10.0.0.4:7000");
        keyless.key = None;
        let list = peer_list(&[keyless.clone()], vec![], false, |_| true);
        assert!(list.addrs.is_empty());
        assert_eq!(list.left_out, 1);
        let list = peer_list(&[keyless], vec![], true, |_| true);
        assert_eq!((list.addrs.len(), list.left_out), (1, 0), "plaintext takes it");
        // This node's own address, as `keep` says, is left out too.
        let list = peer_list(&peers, vec![], false, |a| a.to_string() != "10.0.0.1:7000");
        assert!(!list.addrs.iter().any(|a| a.to_string() == "10.0.0.1:7000"));
        assert_eq!(list.keys.len(), list.addrs.len());
    }

    #[test]
    fn a_download_claiming_a_shared_files_sha1_with_other_pieces_is_caught() {
        let id = Sha1Digest([3; 20]);
        let real = FileMeta { name: "secret.bin".into(), len: 2, sha1: id, piece_hashes: vec![id] };
        let share = LocalShare {
            group: "private".into(),
            path: "/data/secret.bin".into(),
            meta: real.clone(),
            mtime_ns: 1,
            changed: None,
        };
        let shares: Shares = Arc::new(Mutex::new(ShareList::new()));
        lock(&shares).insert(share_key(&share), share);
        // The same file under another name elsewhere: not a claim.
        let renamed = FileMeta { name: "copy.bin".into(), ..real.clone() };
        assert!(!claims_anothers_sha1(&shares, &renamed));
        // Its SHA1 with other pieces, or another length: a made-up entry.
        let other = Sha1Digest([4; 20]);
        let fake = FileMeta { piece_hashes: vec![other], ..renamed.clone() };
        assert!(claims_anothers_sha1(&shares, &fake));
        assert!(claims_anothers_sha1(&shares, &FileMeta { len: 1, ..renamed }));
        // A SHA1 nothing here has: nothing to claim.
        assert!(!claims_anothers_sha1(&shares, &FileMeta { sha1: other, ..fake }));
    }
}
