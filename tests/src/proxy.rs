//! A fault-injecting TCP proxy on loopback, between an edge and the hub: it passes bytes
//! through, or cuts every connection and refuses new ones (a partition), or delays
//! every chunk (latency), or holds the bytes where they are (a pause) until told
//! otherwise. TLS passes through it untouched.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass.
    None,
    /// Connections are cut and refused.
    Partition,
    /// Every chunk waits this long each way.
    Latency(Duration),
    /// Bytes wait in the proxy until the fault changes.
    Pause,
}

/// A running proxy to one target.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let fault = Arc::new(Mutex::new(Fault::None));
        let f = fault.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    if current(&f) == Fault::Partition {
                        return; // dropped: the client sees the connection close
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ri, wo, f.clone()) => {}
                        _ = pump(ro, wi, f) => {}
                    }
                });
            }
        });
        Ok(FaultProxy { addr, fault, task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault; a partition cuts open connections at their next bytes.
    pub fn set(&self, fault: Fault) {
        if let Ok(mut g) = self.fault.lock() {
            *g = fault;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn current(f: &Mutex<Fault>) -> Fault {
    f.lock().map(|g| *g).unwrap_or(Fault::Partition)
}

/// Copies one direction, applying the fault to every chunk; returns when either side
/// closes or a partition cuts the connection.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Arc<Mutex<Fault>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            match current(&fault) {
                Fault::None => break,
                Fault::Partition => return,
                Fault::Latency(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Pause => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
