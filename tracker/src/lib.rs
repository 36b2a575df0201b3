//! The ringshare tracker: users, groups, the files each group shares and the
//! peers that hold them. It never stores file data.
//!
//! - [`state`]: the deterministic state machine over [`state::Op`]s.
//! - [`fetchers`]: which nodes are fetching each file (soft state).
//! - [`expiry`]: which silent sessions to end (soft state).
//! - [`service`]: requests in, state reads or ops out.
//! - [`guard`]: attempt limits and the password-hashing budget.
//! - [`server`]: the tokio TCP driver.

pub mod durable;
pub mod expiry;
pub mod fetchers;
pub mod guard;
pub mod hlc;
pub mod links;
pub mod oplog;
pub mod password;
pub mod replica;
pub mod server;
pub mod service;
pub mod state;
pub mod sync;
