//! ringshare's engine: everything the tracker and the client share.
//!
//! - [`wire`]: the frame format every protocol uses.
//! - [`meta`]: file metadata, piece geometry, bitfields.
//! - [`hash`]: the parallel hashing pool.
//! - [`names`]: the rules for user, group and file names.
//! - [`tracker_info`]: parsing the list of trackers.
//! - [`proto`]: the client↔tracker messages; [`control`] reads and writes
//!   them on a tokio stream.

pub mod control;
pub mod hash;
pub mod meta;
pub mod names;
pub mod proto;
pub mod tracker_info;
pub mod wire;
