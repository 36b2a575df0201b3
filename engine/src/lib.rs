//! ringshare's engine: everything the tracker and the client share.
//!
//! The source tree shows the split the design asks for: protocol logic
//! with no I/O in `src/sansio/`, the drivers that carry it out over sockets
//! and files in `src/driver/`, and the resources both use at the top. Every
//! module is re-exported at the crate root (`ringshare_engine::peer`, …).
//!
//! Protocol cores without I/O (`sansio/`: no sockets, threads, files or
//! clock reads; `now` is passed in):
//! - [`wire`]: the frame format every protocol uses.
//! - [`meta`]: file metadata, piece geometry, bitfields.
//! - [`names`]: the rules for user, group and file names.
//! - [`tracker_info`]: parsing the list of trackers.
//! - [`proto`]: the client↔tracker messages.
//! - [`peer`]: the peer protocol and the server's session state machine.
//! - [`picker`]: rarest-first piece selection with an endgame.
//! - [`flow`]: requests outstanding per peer, sized to bandwidth × delay.
//! - [`download`]: the downloader: sessions, requests, endgame, bans, timeouts.
//! - [`seeding`]: which pieces a seed offers each downloader of a crowd.
//! - [`slots`]: how many connections of a node send piece data at once.
//! - [`secure`]: encrypted, authenticated links (Noise XX) and their records.
//!
//! Drivers (`driver/`), each direction with an io_uring and a threads
//! driver over the same core:
//! - [`serve`]: the piece server: the threads driver and the
//!   [`PieceServer`](serve::PieceServer) front; the io_uring server is
//!   `driver/uring` (it and the threads driver share [`share`], not each
//!   other).
//! - [`fetch`]: downloads: the threads driver and the io_uring driver
//!   (`driver/fetch/ring.rs`), both over [`download::DownloadCore`].
//!
//! Resources:
//! - [`share`]: what a node shares, connection caps, handshake admission.
//! - [`control`]: control-plane frames on tokio streams.
//! - [`secure_io`]: key files, pinned keys, encrypted tokio streams.
//! - [`fsio`]: file errors with their path, atomic file replacement.
//! - [`hash`]: the parallel hashing pool.
//! - [`store`]: a download's `.part` file and persisted bitfield.
//! - [`metrics`]: latency histograms.
//! - [`sample`]: pseudo-random sample files.
//! - [`ticket`]: signed permissions to fetch a file.
//! - [`usage`]: command-line usage errors on one line.

/// Protocol logic with no I/O.
pub mod sansio {
    pub mod download;
    pub mod flow;
    pub mod meta;
    pub mod names;
    pub mod peer;
    pub mod picker;
    pub mod proto;
    pub mod secure;
    pub mod seeding;
    pub mod slots;
    pub mod tracker_info;
    pub mod wire;
}

/// The I/O drivers: piece serving and fetching, io_uring and threads.
pub mod driver {
    pub mod fetch;
    pub mod link;
    pub mod serve;
    pub(crate) mod uring;
}

pub(crate) use driver::uring;
pub use driver::{fetch, link, serve};
pub use sansio::{
    download, flow, meta, names, peer, picker, proto, secure, seeding, slots, tracker_info, wire,
};

pub mod control;
pub mod fsio;
pub mod hash;
pub mod metrics;
pub mod sample;
pub mod secure_io;
pub mod share;
pub mod store;
pub mod ticket;
pub mod usage;
