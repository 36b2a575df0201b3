//! The io_uring piece server (placeholder until the driver lands: the probe
//! reports io_uring as unavailable, so [`crate::serve::Backend::choose`]
//! falls back to threads).

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use crate::serve::{ServeTable, ServerLimits};

/// Checks that io_uring and every opcode the driver uses are available.
pub(crate) fn probe() -> Result<(), String> {
    Err("the io_uring driver is not built yet".into())
}

/// A running io_uring piece server.
#[derive(Debug)]
pub(crate) struct UringServer {}

impl UringServer {
    /// Starts serving `table` on `listener`.
    pub(crate) fn start(
        _listener: TcpListener,
        _table: Arc<ServeTable>,
        _limits: ServerLimits,
    ) -> io::Result<Self> {
        Err(io::Error::other("the io_uring driver is not built yet"))
    }

    /// Stops serving and joins the ring thread.
    pub(crate) fn stop(&mut self) {}
}
