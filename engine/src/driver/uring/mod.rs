//! The io_uring piece server: one ring on one thread serves every
//! connection, with the same behaviour as the threads driver in
//! `crate::serve` (limits, error frames, `have` pushes, in-order answers):
//! both apply the rules of [`crate::share`] and the protocol of
//! [`ServerSession`](crate::peer::ServerSession); neither imports the other.
//!
//! What it owns:
//! - [`UringServer`]: the handle; `stop` writes the wake eventfd (the ring
//!   always has a `Read` pending on it) and joins the ring thread.
//! - `Driver` (this file): the ring, the listener (a re-armed `Accept`), the
//!   100 ms tick (a re-armed `Timeout`), and the slab of connections.
//! - [`conn::Conn`] (`conn.rs`): one connection: receive buffer, the
//!   [`ServerSession`](crate::peer::ServerSession) protocol state, admission,
//!   `have` pushes, timeouts, closing.
//! - [`tx::Tx`] (`tx.rs`): a connection's ordered send queue and the ops that
//!   send piece data without a user-space copy ([`SendMethod`]).
//!
//! user_data layout (64 bits): `op << 56 | generation << 32 | slot`, where
//! `op` is an [`Op`] (bits 56..64), `slot` indexes the connection slab (bits
//! 0..32) and `generation` (24 bits) is the slot's occupant, checked on every
//! CQE. Driver ops (accept, wake, tick, cancels) use slot and generation 0.
//!
//! Invariants:
//! - Every buffer, iovec, timespec or descriptor an SQE points at lives in a
//!   boxed [`conn::Conn`] (or the driver's own boxes) and is neither moved nor
//!   freed until that SQE's last CQE is reaped: each connection counts the
//!   CQEs it is still owed (`inflight`, a SEND_ZC owes two: result and
//!   notification) and its slot is freed only at zero. Closing shuts the
//!   socket down and cancels its receive and delay ops, then waits.
//! - Only one send step per connection is in flight at a time, so frames on
//!   one connection leave in the order they were queued (= request order).
//! - [`Ring::inflight`] counts every CQE the kernel still owes. The thread
//!   exits only at zero; if ops are still stuck [`STOP_WAIT`] after a stop,
//!   it leaks the connections' memory rather than free buffers in use.
//! - Nothing a peer sends can panic the thread or reach another connection:
//!   the only shared state is the [`ServeTable`] and the ring itself.

mod conn;
mod tx;

use std::fs::File;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use crate::peer::{self, ErrorCode, Message};
use crate::share::{ConnCaps, ServeTable, ServerLimits, TICK};
use crate::slots::SendSlots;
use conn::{Conn, Ctx, Key};

use tx::SealBufs;
pub use tx::SendMethod;

/// How long a stop waits for the kernel to return every op before it gives
/// up and leaks the connections' buffers.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Submission queue entries.
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries (overflow is kept by the kernel anyway).
const CQ_ENTRIES: u32 = 8192;

/// What an SQE does: the top byte of its user_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Accept on the listener.
    Accept = 1,
    /// Read of the wake eventfd: a stop.
    Wake,
    /// The 100 ms tick.
    Tick,
    /// An AsyncCancel (its CQE only settles the count).
    Cancel,
    /// Receive into a connection's buffer.
    Recv,
    /// Send of queued control frames.
    SendBytes,
    /// Send of a piece message's header (MSG_MORE).
    SendHeader,
    /// Send (or SEND_ZC) of piece data from the mmap.
    SendData,
    /// Splice file → pipe.
    SpliceIn,
    /// Splice pipe → socket.
    SpliceOut,
    /// The fault-injection pause before a piece.
    Delay,
}

impl Op {
    const ALL: [Op; 11] = [
        Op::Accept,
        Op::Wake,
        Op::Tick,
        Op::Cancel,
        Op::Recv,
        Op::SendBytes,
        Op::SendHeader,
        Op::SendData,
        Op::SpliceIn,
        Op::SpliceOut,
        Op::Delay,
    ];

    /// The user_data of this op for a connection.
    pub(crate) fn data(self, key: Key) -> u64 {
        (self as u64) << 56 | u64::from(key.gen & Key::GEN_MASK) << 32 | u64::from(key.slot)
    }

    fn parse(data: u64) -> Option<(Op, Key)> {
        let op = Op::ALL.into_iter().find(|op| *op as u64 == data >> 56)?;
        Some((op, Key { slot: data as u32, gen: (data >> 32) as u32 & Key::GEN_MASK }))
    }
}

/// The ring and the count of CQEs the kernel still owes.
pub(crate) struct Ring {
    pub(crate) uring: IoUring,
    /// CQEs still to come for pushed SQEs.
    pub(crate) inflight: usize,
}

impl Ring {
    /// Queues `entries` as one unit (a linked chain is never split across
    /// submissions), submitting first if the queue lacks room.
    ///
    /// # Safety
    /// Every pointer an entry carries (buffer, timespec) must stay valid and
    /// unmoved, and every descriptor open, until the entry's last CQE is
    /// reaped.
    pub(crate) unsafe fn push(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        for _ in 0..8 {
            let mut sq = self.uring.submission();
            if sq.capacity() - sq.len() >= entries.len() {
                // SAFETY: the caller keeps what the entries point at alive
                // until their CQEs (this function's contract).
                unsafe { sq.push_multiple(entries) }
                    .map_err(|_| io::Error::other("submission queue full"))?;
                self.inflight += entries.len();
                return Ok(());
            }
            drop(sq);
            match self.uring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("submission queue stays full"))
    }

    /// Asks the kernel to cancel the op with this user_data.
    pub(crate) fn cancel(&mut self, target: u64) {
        let e = opcode::AsyncCancel::new(target).build().user_data(Op::Cancel.data(Key::DRIVER));
        // SAFETY: an AsyncCancel carries no pointer, only a user_data to match.
        if let Err(e) = unsafe { self.push(&[e]) } {
            tracing::warn!("piece server: cannot queue a cancel: {e}");
        }
    }
}

/// Opcodes every method needs, and the download ring.
fn base_opcodes() -> [(u8, &'static str); 8] {
    [
        (opcode::Accept::CODE, "accept"),
        // The download ring's (crate::fetch).
        (opcode::Connect::CODE, "connect"),
        (opcode::Write::CODE, "write"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::Read::CODE, "read"),
        (opcode::Timeout::CODE, "timeout"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ]
}

/// Checks that io_uring works here and supports every opcode the driver
/// uses with `method`.
fn probe_method(method: SendMethod) -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => " (kernel.io_uring_disabled or a seccomp filter forbids it)",
            Some(libc::ENOSYS) => " (the kernel lacks io_uring or a seccomp filter hides it)",
            _ => "",
        };
        format!("io_uring_setup failed: {e}{hint}")
    })?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| format!("io_uring probe: {e}"))?;
    let missing: Vec<&str> = base_opcodes()
        .into_iter()
        .chain(method.opcodes().iter().copied())
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("the kernel lacks io_uring ops: {}", missing.join(", ")))
    }
}

/// Checks that io_uring and every opcode the driver uses (with the default
/// send method) are available.
///
/// The probe ring is made on a short-lived thread of its own: a thread that
/// ever used a ring is sent task work when the ring is torn down, which
/// interrupts its blocking calls (reads with a timeout fail with EINTR), and
/// the caller's thread should not inherit that.
pub(crate) fn probe() -> Result<(), String> {
    thread::scope(|s| {
        s.spawn(|| probe_method(SendMethod::DEFAULT))
            .join()
            .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
    })
}

/// A running io_uring piece server.
#[derive(Debug)]
pub(crate) struct UringServer {
    wake: Arc<File>,
    thread: Option<thread::JoinHandle<()>>,
}

impl UringServer {
    /// Starts serving `table` on `listener` with the default send method.
    pub(crate) fn start(
        listener: TcpListener,
        table: Arc<ServeTable>,
        limits: ServerLimits,
    ) -> io::Result<Self> {
        Self::start_with(listener, table, limits, SendMethod::DEFAULT)
    }

    /// Starts serving `table` on `listener`, sending piece data with `method`.
    pub(crate) fn start_with(
        listener: TcpListener,
        table: Arc<ServeTable>,
        limits: ServerLimits,
        method: SendMethod,
    ) -> io::Result<Self> {
        // SAFETY: eventfd takes no pointer; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd just returned this descriptor; nothing else owns it.
        let wake = Arc::new(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = {
            let wake = Arc::clone(&wake);
            thread::Builder::new().name("piece-uring".into()).spawn(move || {
                match Driver::new(listener, table, limits, method, wake) {
                    Ok(driver) => {
                        let _ = ready_tx.send(Ok(()));
                        driver.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { wake, thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("the ring thread died at start"))
            }
        }
    }

    /// Stops serving: closes every connection and joins the ring thread.
    /// Safe to call more than once.
    pub(crate) fn stop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        if let Err(e) = (&*self.wake).write_all(&1u64.to_ne_bytes()) {
            tracing::error!("piece server: cannot wake the ring thread: {e}");
        }
        let _ = thread.join();
    }
}

impl Drop for UringServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ring thread's state.
struct Driver {
    ring: Ring,
    listener: TcpListener,
    wake: Arc<File>,
    /// The pending wake Read's buffer.
    wake_buf: Box<u64>,
    tick: Box<types::Timespec>,
    table: Arc<ServeTable>,
    limits: ServerLimits,
    method: SendMethod,
    conns: Vec<Option<Box<Conn>>>,
    /// Each slot's connection's id in the caps.
    cap_ids: Vec<Option<u64>>,
    /// The connection caps, total and per IP (`crate::share`).
    caps: ConnCaps,
    free: Vec<u32>,
    live: usize,
    next_gen: u32,
    accept_armed: bool,
    accept_retry: bool,
    wake_armed: bool,
    tick_armed: bool,
    tick_cancelled: bool,
    stopping: Option<Instant>,
    /// The node's upload slots ([`crate::slots`]).
    slots: SendSlots<Key>,
    /// Connections handed a slot, to let send ([`Driver::hand_out`]).
    handed: Vec<Key>,
    /// Buffers for sealing, shared by the connections.
    bufs: SealBufs,
}

impl Driver {
    /// The connections and, beside them, what a connection's handler may
    /// use of the driver ([`Ctx`]): split so that one can be borrowed with
    /// the other.
    fn split(&mut self, now: Instant) -> (&mut Vec<Option<Box<Conn>>>, Ctx<'_>) {
        let Driver { ring, table, limits, method, conns, slots, handed, bufs, .. } = self;
        (conns, Ctx { ring, table, limits, method: *method, now, slots, handed, bufs })
    }

    fn new(
        listener: TcpListener,
        table: Arc<ServeTable>,
        limits: ServerLimits,
        method: SendMethod,
        wake: Arc<File>,
    ) -> io::Result<Self> {
        probe_method(method).map_err(io::Error::other)?;
        // One thread submits and reaps: single issuer and cooperative task
        // work (no IPI for completions). Not DEFER_TASKRUN: it defers the
        // follow-ups of ops completed on io-wq workers (linked splices) to
        // this thread, and looked slower for them in one benchmark set
        // (docs/PERFORMANCE.md). Kernels that refuse the flags get a plain
        // ring.
        let uring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(SQ_ENTRIES)
            .or_else(|_| IoUring::builder().setup_cqsize(CQ_ENTRIES).build(SQ_ENTRIES))?;
        let mut d = Self {
            ring: Ring { uring, inflight: 0 },
            listener,
            wake,
            wake_buf: Box::new(0),
            tick: Box::new(types::Timespec::from(TICK)),
            table,
            limits,
            method,
            conns: Vec::new(),
            cap_ids: Vec::new(),
            caps: ConnCaps::new(&limits),
            free: Vec::new(),
            live: 0,
            next_gen: 1,
            accept_armed: false,
            accept_retry: false,
            wake_armed: false,
            tick_armed: false,
            tick_cancelled: false,
            stopping: None,
            slots: SendSlots::new(limits.send_slots),
            handed: Vec::new(),
            bufs: SealBufs::default(),
        };
        match d.arm_driver_ops() {
            Ok(()) => Ok(d),
            Err(e) => {
                // Some op may be in the kernel already: never free its buffer.
                d.abandon();
                Err(e)
            }
        }
    }

    fn arm_driver_ops(&mut self) -> io::Result<()> {
        let wake_read = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(Op::Wake.data(Key::DRIVER));
        // SAFETY: `wake_buf` is boxed in the driver and the eventfd is held by
        // `wake`; both outlive the Read (the driver exits only when every CQE
        // is reaped, or leaks them).
        unsafe { self.ring.push(&[wake_read]) }?;
        self.wake_armed = true;
        self.arm_accept()?;
        self.arm_tick()?;
        self.ring.uring.submit()?;
        Ok(())
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let e = opcode::Accept::new(
            types::Fd(self.listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(Op::Accept.data(Key::DRIVER));
        // SAFETY: no address buffer is passed; the listener is owned by the
        // driver, which outlives the op.
        unsafe { self.ring.push(&[e]) }?;
        self.accept_armed = true;
        Ok(())
    }

    fn arm_tick(&mut self) -> io::Result<()> {
        let e = opcode::Timeout::new(&*self.tick).build().user_data(Op::Tick.data(Key::DRIVER));
        // SAFETY: the timespec is boxed in the driver and never changed.
        unsafe { self.ring.push(&[e]) }?;
        self.tick_armed = true;
        Ok(())
    }

    fn run(mut self) {
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(256);
        loop {
            if self.stopping.is_some() && self.live == 0 && !self.accept_armed && !self.wake_armed {
                if self.tick_armed && !self.tick_cancelled {
                    self.tick_cancelled = true;
                    self.ring.cancel(Op::Tick.data(Key::DRIVER));
                }
                if self.ring.inflight == 0 {
                    return;
                }
            }
            match self.ring.uring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => {
                    tracing::error!("piece server ring failed: {e}");
                    return self.abandon();
                }
            }
            cqes.clear();
            cqes.extend(
                self.ring.uring.completion().map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(data, res, flags) in &cqes {
                self.dispatch(data, res, flags);
            }
            if self.stopping.is_some_and(|t| t.elapsed() > STOP_WAIT) {
                tracing::error!(
                    ops = self.ring.inflight,
                    "piece server: ops still in flight after a stop; leaking their buffers"
                );
                return self.abandon();
            }
        }
    }

    /// Gives up on ops still in flight: their buffers are leaked, never freed.
    fn abandon(mut self) {
        std::mem::forget(std::mem::take(&mut self.conns));
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        std::mem::forget(std::mem::replace(&mut self.tick, Box::new(types::Timespec::new())));
    }

    fn dispatch(&mut self, data: u64, res: i32, flags: u32) {
        let last = !cqueue::more(flags);
        if last {
            self.ring.inflight = self.ring.inflight.saturating_sub(1);
        }
        let Some((op, key)) = Op::parse(data) else {
            tracing::error!(data, "piece server: CQE with unknown user_data");
            return;
        };
        match op {
            Op::Accept => self.on_accept(res),
            Op::Wake => {
                self.wake_armed = false;
                self.begin_stop();
            }
            Op::Tick => {
                self.tick_armed = false;
                self.on_tick();
            }
            Op::Cancel => {}
            _ => {
                let (conns, mut ctx) = self.split(Instant::now());
                let Some(Some(c)) = conns.get_mut(key.slot as usize) else {
                    tracing::error!(?op, slot = key.slot, "piece server: CQE for an empty slot");
                    return;
                };
                if c.key() != key {
                    tracing::error!(?op, slot = key.slot, "piece server: CQE for a stale slot");
                    return;
                }
                c.on_cqe(op, res, flags, last, &mut ctx);
                if c.is_done() {
                    self.free_slot(key.slot);
                }
                self.hand_out();
            }
        }
    }

    fn on_accept(&mut self, res: i32) {
        self.accept_armed = false;
        if res >= 0 {
            // SAFETY: accept returned this new descriptor; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.admit(std::net::TcpStream::from(fd));
        } else if self.stopping.is_none() && res != -libc::ECANCELED {
            let e = io::Error::from_raw_os_error(-res);
            tracing::warn!("piece server accept: {e}");
            if matches!(-res, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) {
                // Out of descriptors or memory: try again at the next tick.
                self.accept_retry = true;
                return;
            }
        }
        if self.stopping.is_none() {
            if let Err(e) = self.arm_accept() {
                tracing::warn!("piece server: cannot re-arm accept: {e}");
                self.accept_retry = true;
            }
        }
    }

    fn admit(&mut self, mut stream: std::net::TcpStream) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        if self.caps.live() >= self.limits.max_connections {
            // Which keep their place if one must give it up.
            for (c, id) in self.conns.iter().zip(&self.cap_ids) {
                if let (Some(c), Some(id)) = (c, id) {
                    if c.opened() {
                        self.caps.opened(*id);
                    }
                }
            }
        }
        let admitted = match stream.peer_addr() {
            Ok(a) => self.caps.admit(a.ip(), now),
            Err(_) => Err("cannot read your address"),
        };
        if let Some(line) = self.caps.full_report(now) {
            tracing::warn!("{line}");
        }
        let (cap_id, evict) = match admitted {
            Ok(x) => x,
            Err(text) => {
                // A fresh socket's send buffer is empty: this small frame
                // goes out at once without blocking the ring thread.
                let mut out = Vec::new();
                peer::encode(&Message::Error { code: ErrorCode::Busy, text }, &mut out);
                let _ = stream.set_nonblocking(true);
                let _ = stream.write(&out);
                return;
            }
        };
        if let Some(victim) = evict {
            let slot = self.cap_ids.iter().position(|id| *id == Some(victim));
            if let Some(slot) = slot {
                let (conns, mut ctx) = self.split(now);
                if let Some(c) = conns[slot].as_mut() {
                    c.close(&mut ctx, "gave its place to a newcomer");
                    if c.is_done() {
                        self.free_slot(slot as u32);
                    }
                }
            }
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("piece server: nodelay: {e}");
        }

        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        let key = Key { slot, gen: self.next_gen & Key::GEN_MASK };
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let mut c = Box::new(Conn::new(stream, key, now, self.table.security()));
        c.start(&mut self.split(now).1);
        self.live += 1;
        if self.cap_ids.len() <= slot as usize {
            self.cap_ids.resize(slot as usize + 1, None);
        }
        self.cap_ids[slot as usize] = Some(cap_id);
        let done = c.is_done();
        self.conns[slot as usize] = Some(c);
        if done {
            self.free_slot(slot);
        }
        self.hand_out();
    }

    fn free_slot(&mut self, slot: u32) {
        if let Some(mut c) = self.conns.get_mut(slot as usize).and_then(Option::take) {
            debug_assert!(c.is_done());
            self.bufs.give(c.take_spare());
            self.free.push(slot);
            self.live -= 1;
            self.bufs.trim(self.live);
            if let Some(id) = self.cap_ids.get_mut(slot as usize).and_then(Option::take) {
                self.caps.release(id);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.stopping.is_none() || self.live > 0 {
            if let Err(e) = self.arm_tick() {
                tracing::error!("piece server: cannot re-arm the tick: {e}");
            }
        }
        if self.accept_retry && self.stopping.is_none() {
            self.accept_retry = false;
            if let Err(e) = self.arm_accept() {
                tracing::warn!("piece server: cannot re-arm accept: {e}");
                self.accept_retry = true;
            }
        }
        // Slots held past their time go on (`crate::slots::SLOT_HOLD`).
        let expired = self.slots.expire(now);
        self.handed.extend(expired);
        // Connections that waited too long in line are answered `busy`.
        let conns = &self.conns;
        let due = self.slots.overdue(now, |k| {
            conns
                .get(k.slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.key() == k && c.takes_busy())
        });
        for key in due {
            let (conns, mut ctx) = self.split(now);
            let Some(c) = conns[key.slot as usize].as_mut() else { continue };
            c.bounce(&mut ctx);
            if c.is_done() {
                self.free_slot(key.slot);
            }
        }
        for slot in 0..self.conns.len() {
            let (conns, mut ctx) = self.split(now);
            let Some(c) = conns[slot].as_mut() else { continue };
            c.on_tick(&mut ctx);
            if c.is_done() {
                self.free_slot(slot as u32);
            }
        }
        self.hand_out();
    }

    /// Lets each connection handed a released upload slot send; a slot
    /// handed to a connection gone since goes on to the next in line.
    fn hand_out(&mut self) {
        while let Some(key) = self.handed.pop() {
            let (conns, mut ctx) = self.split(Instant::now());
            match conns.get_mut(key.slot as usize) {
                Some(Some(c)) if c.key() == key => {
                    c.grant(&mut ctx);
                    if c.is_done() {
                        self.free_slot(key.slot);
                    }
                }
                _ => ctx.handed.extend(ctx.slots.release(key, ctx.now)),
            }
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(Instant::now());
        if self.accept_armed {
            self.ring.cancel(Op::Accept.data(Key::DRIVER));
        }
        let now = Instant::now();
        for slot in 0..self.conns.len() {
            let (conns, mut ctx) = self.split(now);
            let Some(c) = conns[slot].as_mut() else { continue };
            c.close(&mut ctx, "server stopping");
            if c.is_done() {
                self.free_slot(slot as u32);
            }
        }
        self.hand_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in Op::ALL {
            for key in
                [Key::DRIVER, Key { slot: 7, gen: 1 }, Key { slot: u32::MAX, gen: 0xff_ffff }]
            {
                assert_eq!(Op::parse(op.data(key)), Some((op, key)));
            }
        }
        assert_eq!(Op::parse(0), None);
        assert_eq!(Op::parse(0xff << 56), None);
    }
}
