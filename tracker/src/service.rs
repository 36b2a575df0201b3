//! Turning client requests into reads of the [`State`] or [`Op`]s applied to it.
//!
//! [`Tracker::handle`] validates a request (names, addresses, metadata),
//! resolves its session token to a user, does the slow or random work
//! (argon2id, token generation) outside the state lock, and then either reads
//! the state or builds an [`Op`] and applies it. Every op passes through
//! [`Tracker::commit`], the one place the durability layer hooks into.
//!
//! Lock order: there is one lock, the state mutex; it is never held across
//! an `.await`.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ringshare_engine::names::{self, NameKind, MAX_PASSWORD_LEN};
use ringshare_engine::proto::{Refusal, Request, Response, Token};

use crate::state::{Op, State};

/// A tracker: the state and the request handler around it.
#[derive(Debug, Default)]
pub struct Tracker {
    state: Mutex<State>,
}

impl Tracker {
    /// A tracker with an empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the current state (for tests and snapshots).
    pub fn snapshot(&self) -> State {
        self.lock().clone()
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request) -> Response {
        match self.dispatch(req).await {
            Ok(resp) => resp,
            Err(refusal) => Response::Refused(refusal),
        }
    }

    async fn dispatch(&self, req: Request) -> Result<Response, Refusal> {
        match req {
            Request::CreateUser { user, password } => {
                name(NameKind::User, &user)?;
                password_ok(&password)?;
                if self.lock().user_exists(&user) {
                    return Err(Refusal::UserExists(user));
                }
                let password_hash = blocking(move || hash_password(&password)).await??;
                self.commit(Op::CreateUser { user, password_hash })?;
                Ok(Response::Done)
            }
            Request::Login { user, password, peer_addr } => {
                name(NameKind::User, &user)?;
                let peer_addr = peer_addr
                    .parse::<SocketAddr>()
                    .map_err(|_| Refusal::BadRequest(format!("bad peer address {peer_addr:?}")))?
                    .to_string();
                let stored = self.lock().password_hash(&user).map(str::to_owned);
                let Some(stored) = stored else {
                    return Err(Refusal::BadCredentials);
                };
                if !blocking(move || verify_password(&password, &stored)).await? {
                    return Err(Refusal::BadCredentials);
                }
                let mut raw = [0u8; 16];
                OsRng.fill_bytes(&mut raw);
                let token = Token(raw);
                self.commit(Op::Login { user, token, peer_addr })?;
                Ok(Response::LoggedIn { token })
            }
            Request::Logout { token } => {
                self.commit(Op::Logout { token })?;
                Ok(Response::Done)
            }
            Request::CreateGroup { token, group } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                self.commit(Op::CreateGroup { user, group })?;
                Ok(Response::Done)
            }
            Request::JoinGroup { token, group } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                self.commit(Op::JoinGroup { user, group })?;
                Ok(Response::Done)
            }
            Request::LeaveGroup { token, group } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                self.commit(Op::LeaveGroup { user, group })?;
                Ok(Response::Done)
            }
            Request::ListRequests { token, group } => {
                let (user, _) = self.session(&token)?;
                Ok(Response::Names(self.lock().requests(&user, &group)?))
            }
            Request::AcceptRequest { token, group, user } => {
                let (owner, _) = self.session(&token)?;
                name(NameKind::User, &user)?;
                self.commit(Op::AcceptRequest { owner, group, user })?;
                Ok(Response::Done)
            }
            Request::RejectRequest { token, group, user } => {
                let (owner, _) = self.session(&token)?;
                name(NameKind::User, &user)?;
                self.commit(Op::RejectRequest { owner, group, user })?;
                Ok(Response::Done)
            }
            Request::ListGroups { token } => {
                self.session(&token)?;
                Ok(Response::Names(self.lock().group_ids()))
            }
            Request::ListFiles { token, group } => {
                let (user, _) = self.session(&token)?;
                Ok(Response::Files(self.lock().files(&user, &group)?))
            }
            Request::UploadFile { token, group, meta } => {
                let (user, peer_addr) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                name(NameKind::File, &meta.name)?;
                meta.validate().map_err(|e| Refusal::BadRequest(e.to_string()))?;
                self.commit(Op::UploadFile { user, peer_addr, group, meta })?;
                Ok(Response::Done)
            }
            Request::StopShare { token, group, file } => {
                let (user, peer_addr) = self.session(&token)?;
                self.commit(Op::StopShare { user, peer_addr, group, file })?;
                Ok(Response::Done)
            }
            Request::FileInfo { token, group, file } => {
                let (user, _) = self.session(&token)?;
                let (meta, peers) = self.lock().file_info(&user, &group, &file)?;
                // An opaque ticket naming the user and file; signed tickets
                // checked by the peers come with the access-control work.
                let mut ticket = meta.sha1.0.to_vec();
                ticket.extend(user.as_bytes());
                Ok(Response::FileInfo { meta, peers, ticket })
            }
        }
    }

    /// Applies an op: the single path by which the state changes.
    fn commit(&self, op: Op) -> Result<(), Refusal> {
        self.lock().apply(&op)
    }

    /// The user and peer address of a live session.
    fn session(&self, token: &Token) -> Result<(String, String), Refusal> {
        let st = self.lock();
        let s = st.session(token).ok_or(Refusal::NotLoggedIn)?;
        Ok((s.user.clone(), s.peer_addr.clone()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in `apply`, which
        // leaves the state unchanged on refusal; keep serving the data.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn name(kind: NameKind, value: &str) -> Result<(), Refusal> {
    names::validate(kind, value).map_err(|e| Refusal::BadName(e.to_string()))
}

fn password_ok(password: &str) -> Result<(), Refusal> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Refusal::BadRequest(format!("password must be 1 to {MAX_PASSWORD_LEN} bytes")));
    }
    Ok(())
}

/// Runs CPU-heavy work (argon2id) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Refusal::Internal(e.to_string()))
}

fn hash_password(password: &str) -> Result<String, Refusal> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Refusal::Internal(format!("hash password: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_are_argon2id_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret", "not a phc string"));
    }

    #[tokio::test]
    async fn session_flow_through_requests() {
        let t = Tracker::new();
        let create = Request::CreateUser { user: "al".into(), password: "pw".into() };
        assert_eq!(t.handle(create.clone()).await, Response::Done);
        assert_eq!(t.handle(create).await, Response::Refused(Refusal::UserExists("al".into())));
        let login = |pw: &str| Request::Login {
            user: "al".into(),
            password: pw.into(),
            peer_addr: "127.0.0.1:4000".into(),
        };
        assert_eq!(t.handle(login("bad")).await, Response::Refused(Refusal::BadCredentials));
        let Response::LoggedIn { token } = t.handle(login("pw")).await else { panic!("no login") };
        assert_eq!(t.handle(Request::ListGroups { token }).await, Response::Names(vec![]));
        assert_eq!(t.handle(Request::Logout { token }).await, Response::Done);
        assert_eq!(
            t.handle(Request::ListGroups { token }).await,
            Response::Refused(Refusal::NotLoggedIn)
        );
    }

    #[tokio::test]
    async fn bad_names_and_addresses_are_refused() {
        let t = Tracker::new();
        let r = t.handle(Request::CreateUser { user: "a b".into(), password: "pw".into() }).await;
        assert!(matches!(r, Response::Refused(Refusal::BadName(_))), "{r:?}");
        let r = t.handle(Request::CreateUser { user: "a".into(), password: String::new() }).await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
        t.handle(Request::CreateUser { user: "a".into(), password: "p".into() }).await;
        let r = t
            .handle(Request::Login {
                user: "a".into(),
                password: "p".into(),
                peer_addr: "nowhere".into(),
            })
            .await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
    }
}
