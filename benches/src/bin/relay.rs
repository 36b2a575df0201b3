//! `ringshare-relay`: a TCP relay that delays each direction, for a
//! wide-area testbed on one machine (this kernel has no `netem`).
//!
//! It accepts connections on `--listen`; each one is relayed to the
//! connection's original destination (`SO_ORIGINAL_DST`, when an nftables
//! DNAT rule steered it here) or to `--to`. Bytes read from either side
//! are written to the other `--rtt-ms / 2` later, so a request and its
//! answer take one extra round trip of `--rtt-ms`. Its own outgoing
//! connections carry the socket mark `--mark` (so a DNAT rule can skip
//! them). At most `--queue-mib` per direction wait in a delay line; past
//! that it stops reading, and TCP's flow control takes over.
//!
//! Because the delay is added above TCP, a testbed built on it measures
//! what the application keeps in flight, not TCP's own window.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A TCP relay adding a fixed round-trip delay.
#[derive(Debug, Parser)]
struct Args {
    /// Where to accept connections.
    #[arg(long)]
    listen: SocketAddr,
    /// Round trip added, milliseconds (half each way).
    #[arg(long)]
    rtt_ms: f64,
    /// Relay here instead of the original destination.
    #[arg(long)]
    to: Option<SocketAddr>,
    /// Socket mark of the relay's outgoing connections.
    #[arg(long, default_value_t = 0x52)]
    mark: u32,
    /// Bytes per direction and connection that may wait in the delay line.
    #[arg(long, default_value_t = 64)]
    queue_mib: usize,
}

const CHUNK: usize = 64 * 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await.context("bind")?;
    let one_way = Duration::from_secs_f64(args.rtt_ms / 2000.0);
    let slots = (args.queue_mib << 20) / CHUNK;
    println!("relay listening on {}", listener.local_addr()?);
    loop {
        let (inbound, from) = listener.accept().await?;
        let to = match args.to {
            Some(t) => t,
            None => match original_dst(&inbound) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("relay: {from}: no original destination: {e}");
                    continue;
                }
            },
        };
        let mark = args.mark;
        tokio::spawn(async move {
            if let Err(e) = relay(inbound, to, mark, one_way, slots).await {
                eprintln!("relay {from} -> {to}: {e:#}");
            }
        });
    }
}

async fn relay(
    inbound: TcpStream,
    to: SocketAddr,
    mark: u32,
    one_way: Duration,
    slots: usize,
) -> Result<()> {
    let sock = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    set_mark(&sock, mark)?;
    let outbound = sock.connect(to).await.with_context(|| format!("connect {to}"))?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    let up = tokio::spawn(pump(ir, ow, one_way, slots));
    let down = tokio::spawn(pump(or, iw, one_way, slots));
    let _ = tokio::join!(up, down);
    Ok(())
}

/// Copies `r` to `w`, each chunk written `delay` after it was read.
async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, delay: Duration, slots: usize) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(slots.max(1));
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((Instant::now() + delay, buf)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, buf)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if w.write_all(&buf).await.is_err() {
            break;
        }
    }
    // The reader ended (end of stream): pass the half-close on.
    let _ = w.shutdown().await;
    reader.abort();
}

fn set_mark(sock: &TcpSocket, mark: u32) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `mark` for its stated size; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The destination a DNAT rule rewrote (IPv4).
fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddr> {
    // SAFETY: a zeroed sockaddr_in is a valid value for getsockopt to fill.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `addr`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(addr.sin_port))))
}
