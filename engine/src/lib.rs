//! ringshare's engine: everything the tracker and the client share.
//!
//! Protocol cores without I/O:
//! - [`wire`]: the frame format every protocol uses.
//! - [`meta`]: file metadata, piece geometry, bitfields.
//! - [`names`]: the rules for user, group and file names.
//! - [`tracker_info`]: parsing the list of trackers.
//! - [`proto`]: the client↔tracker messages.
//! - [`peer`]: the peer protocol and the server's session state machine.
//! - [`picker`]: rarest-first piece selection with an endgame.
//! - [`flow`]: requests outstanding per peer, sized to bandwidth × delay.
//! - [`download`]: the downloader: sessions, requests, endgame, bans, timeouts.
//!
//! Drivers and resources:
//! - [`control`]: control-plane frames on tokio streams.
//! - [`fsio`]: file errors with their path, atomic file replacement.
//! - [`hash`]: the parallel hashing pool.
//! - [`store`]: a download's `.part` file and persisted bitfield.
//! - [`serve`]: what a node shares and the piece server.
//! - [`fetch`]: the threads driver of the download core.
//! - [`metrics`]: latency histograms.
//! - [`sample`]: pseudo-random sample files.
//! - [`ticket`]: signed permissions to fetch a file.

pub mod control;
pub mod download;
pub mod fetch;
pub mod flow;
pub mod fsio;
pub mod hash;
pub mod meta;
pub mod metrics;
pub mod names;
pub mod peer;
pub mod picker;
pub mod proto;
pub mod sample;
pub mod serve;
pub mod share;
pub mod store;
pub mod ticket;
pub mod tracker_info;
pub(crate) mod uring;
pub mod wire;
