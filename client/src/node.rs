//! A client node: one user's session with the trackers and the files this
//! node shares. [`Node::execute`] carries out one shell command and returns
//! the lines to print, or the error to print after `error: `.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ringshare_engine::hash::HashPool;
use ringshare_engine::names::{self, NameKind};
use ringshare_engine::proto::{Refusal, Request, Response, Token};
use ringshare_engine::tracker_info::TrackerList;

use crate::shares::{LocalShare, ShareBook, Staleness};
use crate::shell::{Command, HELP};
use crate::tracker_link::TrackerLink;

/// What the shell does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave the shell.
    Quit,
}

/// A logged-in user at this node.
#[derive(Debug)]
struct Session {
    user: String,
    token: Token,
    book: ShareBook,
}

/// A client node.
#[derive(Debug)]
pub struct Node {
    addr: SocketAddr,
    link: TrackerLink,
    session: Option<Session>,
    /// What this node serves now: empty while logged out.
    shares: Vec<LocalShare>,
    pool: Arc<HashPool>,
    state_dir: PathBuf,
}

impl Node {
    /// A node serving pieces at `addr`, talking to `trackers`, keeping its
    /// records in `state_dir`.
    pub fn new(addr: SocketAddr, trackers: TrackerList, state_dir: PathBuf) -> Self {
        Self {
            addr,
            link: TrackerLink::new(trackers),
            session: None,
            shares: Vec::new(),
            pool: Arc::new(HashPool::with_available_cores()),
            state_dir,
        }
    }

    /// The address this node serves pieces on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Carries out one command: the lines to print, or an error.
    pub async fn execute(&mut self, cmd: Command) -> (Flow, Result<Vec<String>>) {
        let flow = if cmd == Command::Quit { Flow::Quit } else { Flow::Continue };
        (flow, self.run(cmd).await)
    }

    async fn run(&mut self, cmd: Command) -> Result<Vec<String>> {
        match cmd {
            Command::CreateUser { user, password } => {
                check_name(NameKind::User, &user)?;
                self.call_done(Request::CreateUser { user: user.clone(), password }).await?;
                Ok(vec![format!("user {user} created")])
            }
            Command::Login { user, password } => self.login(user, password).await,
            Command::Logout => {
                let s = self.session()?;
                let (user, token) = (s.user.clone(), s.token);
                // Sharing pauses whatever the tracker says: the node stops serving.
                self.session = None;
                self.shares.clear();
                // An unreachable tracker expires the session by itself.
                let _ = self.call_done(Request::Logout { token }).await;
                Ok(vec![format!("logged out {user}; sharing paused")])
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
                self.call_done(Request::LeaveGroup { token, group: group.clone() }).await?;
                let before = self.shares.len();
                self.shares.retain(|s| s.group != group);
                let stopped = before - self.shares.len();
                self.save_book()?;
                Ok(vec![format!("left group {group}; stopped sharing {stopped} file(s) there")])
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
            Command::ListFiles { group } => {
                check_name(NameKind::Group, &group)?;
                let token = self.token()?;
                match self.call(Request::ListFiles { token, group }).await? {
                    Response::Files(files) => Ok(files
                        .iter()
                        .map(|f| {
                            let s = if f.peers == 1 { "" } else { "s" };
                            format!("{}  {} bytes  {} peer{s}", f.name, f.len, f.peers)
                        })
                        .collect()),
                    other => Err(unexpected(other)),
                }
            }
            Command::UploadFile { path, group } => self.upload(path, group).await,
            Command::StopShare { group, file } => {
                check_name(NameKind::Group, &group)?;
                check_name(NameKind::File, &file)?;
                let token = self.token()?;
                let req = Request::StopShare { token, group: group.clone(), file: file.clone() };
                self.call_done(req).await?;
                self.shares.retain(|s| !(s.group == group && s.meta.name == file));
                self.save_book()?;
                Ok(vec![format!("stopped sharing {file} in {group}")])
            }
            Command::DownloadFile { .. } | Command::ShowDownloads => {
                self.token()?;
                bail!("downloads are not available in this build yet")
            }
            Command::Help => Ok(HELP.iter().map(|(u, what)| format!("{u:<56} {what}")).collect()),
            Command::Quit => Ok(Vec::new()),
        }
    }

    async fn login(&mut self, user: String, password: String) -> Result<Vec<String>> {
        if let Some(s) = &self.session {
            bail!("already logged in as {} (logout first)", s.user);
        }
        check_name(NameKind::User, &user)?;
        let req = Request::Login { user: user.clone(), password, peer_addr: self.addr.to_string() };
        let token = match self.call(req).await? {
            Response::LoggedIn { token } => token,
            other => return Err(unexpected(other)),
        };
        let book = ShareBook::new(&self.state_dir, &user, &self.addr.to_string());
        self.session = Some(Session { user: user.clone(), token, book: book.clone() });

        // Resume sharing what this user shared from this node before.
        let (recorded, warning) = book.load();
        let mut resumed = Vec::new();
        let mut dropped = Vec::new();
        for share in recorded {
            let label = format!("{}/{}", share.group, share.meta.name);
            let reason = match share.check() {
                Ok(()) => {
                    let req = Request::UploadFile {
                        token,
                        group: share.group.clone(),
                        meta: share.meta.clone(),
                    };
                    match self.call(req).await? {
                        Response::Done | Response::Refused(Refusal::AlreadySharing { .. }) => {
                            resumed.push(share);
                            continue;
                        }
                        Response::Refused(r) => r.to_string(),
                        other => unexpected(other).to_string(),
                    }
                }
                Err(Staleness::Changed) => "changed since upload".to_owned(),
                Err(Staleness::Missing(e)) => format!("missing ({e})"),
            };
            let stop = Request::StopShare {
                token,
                group: share.group.clone(),
                file: share.meta.name.clone(),
            };
            // The tracker may not list it any more; either way it is not shared now.
            let _ = self.call(stop).await?;
            dropped.push(format!("{label}: {reason}"));
        }
        self.shares = resumed;
        self.save_book()?;
        let mut line = format!("logged in as {user}");
        if !self.shares.is_empty() || !dropped.is_empty() {
            line += &format!("; resumed sharing {} file(s)", self.shares.len());
        }
        if !dropped.is_empty() {
            line += &format!("; stopped sharing {}", dropped.join(", "));
        }
        if let Some(w) = warning {
            line += &format!("; {w}");
        }
        Ok(vec![line])
    }

    async fn upload(&mut self, path: String, group: String) -> Result<Vec<String>> {
        check_name(NameKind::Group, &group)?;
        let token = self.token()?;
        let path = Path::new(&path);
        let md = std::fs::metadata(path)
            .map_err(|e| anyhow!("path not found: {} ({e})", path.display()))?;
        if !md.is_file() {
            bail!("not a regular file: {}", path.display());
        }
        let path =
            std::fs::canonicalize(path).with_context(|| format!("resolve {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("file name of {} is not valid UTF-8", path.display()))?
            .to_owned();
        check_name(NameKind::File, &name)?;
        // Membership is checked before the (possibly long) hashing.
        match self.call(Request::ListFiles { token, group: group.clone() }).await? {
            Response::Files(_) => {}
            other => return Err(unexpected(other)),
        }
        let pool = Arc::clone(&self.pool);
        let (hash_path, hash_name) = (path.clone(), name.clone());
        let meta = tokio::task::spawn_blocking(move || pool.hash_file(&hash_path, &hash_name))
            .await
            .context("hashing task")??;
        let share = LocalShare::new(group.clone(), path, meta.clone())
            .with_context(|| format!("inspect {name}"))?;
        let pieces = meta.piece_hashes.len();
        let (len, sha1) = (meta.len, meta.sha1);
        self.call_done(Request::UploadFile { token, group: group.clone(), meta }).await?;
        self.shares.push(share);
        self.save_book()?;
        Ok(vec![format!("uploaded {name} to {group}: {len} bytes, {pieces} pieces, sha1 {sha1}")])
    }

    fn session(&self) -> Result<&Session> {
        self.session.as_ref().ok_or_else(|| anyhow!("not logged in"))
    }

    fn token(&self) -> Result<Token> {
        self.session().map(|s| s.token)
    }

    fn save_book(&self) -> Result<()> {
        if let Some(s) = &self.session {
            s.book.save(&self.shares).context("save the share record")?;
        }
        Ok(())
    }

    async fn call(&mut self, req: Request) -> Result<Response> {
        let resp = self.link.call(&req).await?;
        if let Response::Refused(Refusal::NotLoggedIn) = resp {
            // The tracker no longer knows the session: stop acting logged in.
            self.session = None;
            self.shares.clear();
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

fn check_name(kind: NameKind, value: &str) -> Result<()> {
    names::validate(kind, value).map_err(|e| anyhow!("{e}"))
}

/// A refusal becomes its own message; any other mismatch is a protocol error.
fn unexpected(resp: Response) -> anyhow::Error {
    match resp {
        Response::Refused(r) => anyhow!("{r}"),
        other => anyhow!("unexpected answer from the tracker: {other:?}"),
    }
}
