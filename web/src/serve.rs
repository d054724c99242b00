//! Accepting connections with the limits a server facing untrusted clients needs, for
//! both of Patron's servers: TLS when given a config, plain HTTP otherwise; a cap on
//! the connections served at once and on those one client address may hold; a
//! deadline for each request's headers (which is also how long a kept-alive
//! connection may sit idle) and for its body; and a graceful shutdown.
//!
//! Why each limit: a slowloris client opens many connections and sends headers a
//! byte at a time, holding a task and a file descriptor each; the header deadline cuts
//! them, and the per-client cap keeps one address from taking the connections the
//! POS lanes (or the stores) need. Authentication runs in extractors, before a
//! handler reads the body, so an unauthenticated client cannot make the server read a
//! large body; an authenticated one that sends it slowly meets the body deadline.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed as they come.
    pub max_per_client: usize,
    /// How long a client may take to send a request's headers, and to begin its next
    /// request on a kept-alive connection.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a shutdown waits for the requests in flight.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_client: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The `[http]` section of a server's configuration: [`Limits`] in configuration
/// units.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_connections_per_client: usize,
    /// Milliseconds a client may take to send a request's headers (or to begin the
    /// next request on a kept-alive connection).
    pub header_timeout_ms: u64,
    /// Milliseconds a request's body may take to arrive.
    pub body_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = Limits::default();
        HttpConfig {
            max_connections: d.max_connections,
            max_connections_per_client: d.max_per_client,
            header_timeout_ms: d.header_timeout.as_millis() as u64,
            body_timeout_ms: d.body_timeout.as_millis() as u64,
        }
    }
}

impl HttpConfig {
    /// Why these values cannot be served, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return Err("http.max_connections and max_connections_per_client must be >= 1".into());
        }
        if self.max_connections > 1_000_000 || self.max_connections_per_client > 1_000_000 {
            return Err(
                "http.max_connections and max_connections_per_client must be <= 1000000".into(),
            );
        }
        let hour = 3_600_000;
        if !(100..=hour).contains(&self.header_timeout_ms)
            || !(100..=hour).contains(&self.body_timeout_ms)
        {
            return Err("http.header_timeout_ms and body_timeout_ms must be 100..=3600000".into());
        }
        Ok(())
    }

    /// The limits these values give.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_client: self.max_connections_per_client,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            ..Limits::default()
        }
    }
}

/// Connections per client address, and the guard that gives one back.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

struct ClientSlot(Arc<PerClient>, IpAddr);

impl PerClient {
    /// A slot for `ip`, or `None` if it holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.1);
            }
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then lets the
/// requests in flight finish (up to the drain timeout). With `tls`, every connection
/// is TLS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(PerClient::default());
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let http = Arc::new(http);
    // Connections are watched so that a shutdown lets the requests in flight finish
    // (HTTP/1 keep-alive connections close after their current request).
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: past the cap, connections wait in the backlog and cost nothing.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(client) = per_client.take(peer.ip(), limits.max_per_client) else {
            // Closed at once, before TLS or HTTP: one address may not take the rest.
            tracing::debug!("a client over its connection cap was refused");
            continue;
        };
        let (acceptor, app, http) = (acceptor.clone(), app.clone(), http.clone());
        let watcher = graceful.watcher();
        let handshake = limits.handshake_timeout;
        tokio::spawn(async move {
            let _held = (slot, client);
            let svc = TowerToHyperService::new(app);
            let served = match acceptor {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(tcp), svc).into_owned())
                        .await
                }
                Some(acceptor) => {
                    let Some(tls) = handshake_within(handshake, &acceptor, tcp, peer).await else {
                        return;
                    };
                    watcher
                        .watch(http.serve_connection(TokioIo::new(tls), svc).into_owned())
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Long polls hold a request up to 25 s; past the drain time the rest are cut.
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at shutdown were cut");
    }
    Ok(())
}

/// The TLS stream, if the handshake finishes within `limit`.
async fn handshake_within(
    limit: Duration,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}
