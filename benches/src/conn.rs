//! One encrypted client connection to a tracker, one request at a time: what
//! the load tool and the nemesis speak.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ringshare_engine::control::read_msg;
use ringshare_engine::meta::{FileMeta, Geometry, Sha1Digest};
use ringshare_engine::proto::{encode_frame, Request, Response, REQUEST, RESPONSE};
use ringshare_engine::secure::{Keypair, CONTROL_PROLOGUE};
use ringshare_engine::secure_io::SecureStream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// A client connection (noise handshake done, the tracker's key not pinned).
pub struct Conn {
    s: SecureStream<TcpStream>,
    timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects to `addr` from `source` (if given) and shakes hands, each
    /// step within `timeout`, which also bounds every later exchange.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind to {ip}"))?;
        }
        let stream = tokio::time::timeout(timeout, socket.connect(addr))
            .await
            .map_err(|_| anyhow!("connect to {addr}: timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let me = Keypair::generate();
        let handshake = SecureStream::connect(stream, &me, CONTROL_PROLOGUE, None);
        let s = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| anyhow!("handshake with {addr}: timed out"))??;
        Ok(Self { s, timeout })
    }

    /// One request, one response.
    pub async fn call(&mut self, req: &Request) -> Result<Response> {
        let frame = encode_frame(REQUEST, req)?;
        let exchange = async {
            self.s.write_all(&frame).await?;
            self.s.flush().await?;
            read_msg::<Response, _>(&mut self.s, RESPONSE)
                .await?
                .ok_or_else(|| anyhow!("the tracker closed the connection"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {:?}", self.timeout))?
    }

    /// A request that must succeed with `Done`.
    pub async fn done(&mut self, req: &Request) -> Result<()> {
        match self.call(req).await? {
            Response::Done => Ok(()),
            Response::Refused(r) => bail!("refused: {r}"),
            other => bail!("unexpected answer {other:?}"),
        }
    }
}

/// Metadata of a made-up file of `len` bytes whose hashes are all `fill`
/// (trackers never see file data).
pub fn file_meta(name: String, len: u64, fill: u8) -> FileMeta {
    let pieces = Geometry::new(len).piece_count() as usize;
    FileMeta {
        name,
        len,
        sha1: Sha1Digest([fill; 20]),
        piece_hashes: (0..pieces).map(|p| Sha1Digest([fill ^ p as u8; 20])).collect(),
    }
}
