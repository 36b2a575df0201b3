//! The ringshare client node: the shell's command language, the node that
//! carries commands out, its record of shared files and its link to the
//! trackers. The `ringshare` binary is a thin driver over this library.

/// Prints a line on standard output. A closed standard output (`| head`,
/// `| true`) is not the command's failure: the line is dropped and the
/// command goes on, its exit status its own (`println!` panicked).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

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
