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

/// Where [`notice`] prints, when not on standard error.
type NoticePrinter = Box<dyn FnMut(&str) -> bool + Send>;

static NOTICE_PRINTER: std::sync::Mutex<Option<NoticePrinter>> = std::sync::Mutex::new(None);

/// Prints a line that comes at any moment, not as a command's answer (a
/// background download done or failed, the session ended): on standard
/// error, or through the printer [`set_notice_printer`] installed — the
/// interactive shell's, which prints it above the prompt and the line
/// being typed instead of across them.
pub fn notice(line: &str) {
    let mut printer = NOTICE_PRINTER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(print) = printer.as_mut() {
        if print(line) {
            return;
        }
    }
    eprintln!("{line}");
}

/// Sends [`notice`]'s lines to `print` (which says whether it printed the
/// line; if not, it goes to standard error).
pub fn set_notice_printer(print: NoticePrinter) {
    *NOTICE_PRINTER.lock().unwrap_or_else(|p| p.into_inner()) = Some(print);
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
