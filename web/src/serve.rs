//! Accepting connections with the limits a server facing untrusted clients needs, for
//! both of Patron's servers: TLS when given a config, plain HTTP otherwise; a cap on
//! the connections served at once and on those one client address may hold; a
//! deadline for each request's headers (which is also how long a kept-alive
//! connection may sit idle) and for its body; and a graceful shutdown.
//!
//! Why each limit: a slowloris client opens many connections and sends headers a
//! byte at a time, holding a task and a file descriptor each; the header deadline cuts
//! them, and the per-client cap keeps one address (one /64 for IPv6, where a client
//! picks its own address within its network) from taking the connections the POS
//! lanes (or the stores) need. Authentication runs in extractors, before a handler
//! reads the body, so an unauthenticated client cannot make the server read a large
//! body; an authenticated one that sends it slowly meets the body deadline. A client
//! that stops reading its answers holds its connection no longer than the maximum
//! connection age and a grace after it: every connection is closed gracefully at that
//! age (after its request in flight) and cut if that does not end it.

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
    /// How old a connection may grow before it is closed (gracefully: after its
    /// request in flight, which then has [`Limits::close_grace`] to finish).
    pub max_connection_age: Duration,
    /// IPv6 clients are counted by this prefix of their address: 64 on the internet,
    /// where a client picks any address in its /64; 128 on a store LAN, where every
    /// lane may share one /64.
    pub ipv6_client_prefix: u8,
}

impl Limits {
    /// How long a connection being closed may take to finish its request in flight
    /// before it is cut: the body deadline and [`CLOSE_GRACE`] more.
    pub fn close_grace(&self) -> Duration {
        self.body_timeout + CLOSE_GRACE
    }
}

/// Beyond the body deadline, how long a connection being closed (for its age, or at
/// shutdown) may take to finish its request in flight before it is cut: longer than
/// the hub's 25 s long poll.
pub const CLOSE_GRACE: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_client: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(120),
            ipv6_client_prefix: 64,
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
    /// Milliseconds a TLS handshake may take (a client that never finishes one holds
    /// its connection no longer).
    pub handshake_timeout_ms: u64,
    /// Milliseconds a connection may stay open before it is closed after its request
    /// in flight (a POS or store simply opens another).
    pub max_connection_age_ms: u64,
    /// IPv6 clients are counted by this prefix length (64: by network; 128: by
    /// address, on a LAN where the lanes share one network).
    pub ipv6_client_prefix_len: u8,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = Limits::default();
        HttpConfig {
            max_connections: d.max_connections,
            max_connections_per_client: d.max_per_client,
            header_timeout_ms: d.header_timeout.as_millis() as u64,
            body_timeout_ms: d.body_timeout.as_millis() as u64,
            handshake_timeout_ms: d.handshake_timeout.as_millis() as u64,
            max_connection_age_ms: d.max_connection_age.as_millis() as u64,
            ipv6_client_prefix_len: d.ipv6_client_prefix,
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
            || !(100..=hour).contains(&self.handshake_timeout_ms)
        {
            return Err(
                "http.header_timeout_ms, body_timeout_ms and handshake_timeout_ms must be 100..=3600000"
                    .into(),
            );
        }
        if !(100..=24 * hour).contains(&self.max_connection_age_ms) {
            return Err("http.max_connection_age_ms must be 100..=86400000".into());
        }
        if !(32..=128).contains(&self.ipv6_client_prefix_len) {
            return Err("http.ipv6_client_prefix_len must be 32..=128".into());
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
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            max_connection_age: Duration::from_millis(self.max_connection_age_ms),
            ipv6_client_prefix: self.ipv6_client_prefix_len,
            ..Limits::default()
        }
    }
}

/// The client a connection is counted against: its IPv4 address, or the first
/// `v6_prefix` bits of its IPv6 address (an IPv4-mapped one counts as the IPv4
/// address).
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let keep = u32::from(v6_prefix.min(128));
                let mask = if keep == 0 {
                    0
                } else {
                    u128::MAX << (128 - keep)
                };
                IpAddr::V6(std::net::Ipv6Addr::from(bits & mask))
            }
        },
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
    // A shutdown tells every connection to close after its request in flight.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
        let Some(client) = per_client.take(
            client_key(peer.ip(), limits.ipv6_client_prefix),
            limits.max_per_client,
        ) else {
            // Closed at once, before TLS or HTTP: one address may not take the rest.
            tracing::debug!("a client over its connection cap was refused");
            continue;
        };
        let (acceptor, app, http) = (acceptor.clone(), app.clone(), http.clone());
        let (stop, max_age, grace) = (
            stop_rx.clone(),
            limits.max_connection_age,
            limits.close_grace(),
        );
        let handshake = limits.handshake_timeout;
        tokio::spawn(async move {
            let _held = (slot, client);
            let io: Box<dyn Io> = match acceptor {
                None => Box::new(tcp),
                Some(acceptor) => match handshake_within(handshake, &acceptor, tcp, peer).await {
                    Some(tls) => Box::new(tls),
                    None => return,
                },
            };
            let svc = TowerToHyperService::new(app);
            let conn = http.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            // Served until it ends, reaches its age, or the server stops; then closed
            // after its request in flight, and cut if that takes longer than the grace
            // (a client that does not read its answer holds nothing longer).
            let mut stop = stop;
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                () = tokio::time::sleep(max_age) => None,
                _ = stop.wait_for(|s| *s) => None,
            };
            let served = match ended {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(grace, conn).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::info!(%peer, "a connection closing was cut after its grace");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Every connection holds a slot: when all are back, every request has finished.
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at shutdown were cut");
    }
    Ok(())
}

/// A connection's byte stream: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn an_ipv6_client_is_counted_by_its_network_or_its_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        // On the internet every address a client may pick within its /64 is one client.
        assert_eq!(client_key(ip("2001:db8:1:2::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64),
            ip("2001:db8:1:2::")
        );
        assert_ne!(client_key(ip("2001:db8:1:3::1"), 64), ip("2001:db8:1:2::"));
        // On a store LAN (the edge's default) each lane is its own client.
        assert_eq!(
            client_key(ip("2001:db8:1:2::1"), 128),
            ip("2001:db8:1:2::1")
        );
        assert_ne!(
            client_key(ip("fe80::1"), 128),
            client_key(ip("fe80::2"), 128)
        );
        assert_eq!(client_key(ip("2001:db8:1:2::1"), 48), ip("2001:db8:1::"));
    }

    /// A kept-alive connection is closed at its age, but only after the request in
    /// flight is answered whole.
    #[tokio::test]
    async fn connections_close_at_their_age_after_their_request_in_flight() {
        let app = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "done"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_millis(300),
            ..Limits::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, None, limits, async {
            let _ = stopped.await;
        }));
        let mut c = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The answer comes whole although the age passed during the request, then the
        // connection is closed: read to its end, within well under the header timeout.
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection outlived its age");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("done"), "{text}");
        let _ = stop.send(());
        let _ = server.await;
    }
}
