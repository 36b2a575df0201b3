//! The ringshare client node: the shell's command language, the node that
//! carries commands out, its record of shared files and its link to the
//! trackers. The `ringshare` binary is a thin driver over this library.

pub mod bulk;
pub mod demo;
pub mod downloads;
pub mod jobs;
pub mod node;
pub mod oneshot;
pub mod registrar;
pub mod shares;
pub mod shell;
pub mod tracker_link;
