//! The edge's composition root: everything `patron-edge serve` runs — the store, the
//! rule set named in the configuration, the hub worker when enrolled, the POS API with
//! request tracing — wired from a [`Config`], so an in-process test runs the real
//! application.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Transport;
use crate::domain::promo::ruleset::RuleSet;
use crate::hub::link::HubLink;
use crate::lan_tls::LanIdentity;
use crate::{Config, Edge};

/// The edge with its background tasks started, ready to serve.
pub struct App {
    /// The edge (the demo seeds through it; tests reach behind the API).
    pub edge: Arc<Edge>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Opens the store `cfg` names and starts the application on it.
    pub async fn open(cfg: Config) -> anyhow::Result<Self> {
        let edge = Arc::new(Edge::open(cfg).context("opening the store")?);
        Self::start(edge).await
    }

    /// Starts the application on an opened edge: puts the configured rule set in force
    /// and, when the store is enrolled, re-keys members registered before enrollment
    /// and starts the sync worker.
    pub async fn start(edge: Arc<Edge>) -> anyhow::Result<Self> {
        if let Some(path) = edge.core.cfg.rules_file.clone() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let set: RuleSet = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?;
            let (info, _) = edge
                .load_rules(set)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            tracing::info!(version = %info.version, rules = info.rules, "rule set in force");
        }
        edge.spawn_anomaly_scan();
        match HubLink::load(&edge.core.cfg.data_dir)? {
            Some(link) => {
                // Before the first push, so the hub learns these members' chain-wide
                // phone indexes with the rest of the backlog.
                if let Err(e) = edge.rekey_for_chain().await {
                    tracing::error!(error = %e, "re-keying members registered before enrollment");
                }
                crate::hub::worker::spawn(edge.clone(), link)?;
            }
            None => tracing::info!("not enrolled with a hub: running on our own"),
        }
        Ok(Self { edge })
    }

    /// The POS API, traced by matched route.
    pub fn router(&self) -> axum::Router {
        patron_web::traced(crate::api::router(self.edge.clone()))
    }

    /// How the POS API would be served on `addr`: HTTPS with this edge's LAN identity
    /// (made on first use), or plain HTTP where the configuration allows it; an error
    /// for plain HTTP on the LAN that the configuration does not allow.
    pub fn transport(&self, addr: SocketAddr) -> anyhow::Result<(Transport, Option<TlsServer>)> {
        let cfg = &self.edge.core.cfg;
        let transport = cfg
            .tls
            .transport(&addr)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if transport != Transport::Https {
            tracing::warn!(
                transport = transport.as_str(),
                "serving the POS API over plain HTTP"
            );
            return Ok((transport, None));
        }
        let identity = LanIdentity::load_or_create(
            &cfg.data_dir,
            // `Edge::open` prepared the key directory.
            &cfg.key_dir().join(crate::keys::LAN_KEY_FILE),
            &cfg.store_id,
            &cfg.tls.names(&addr),
        )
        .context("the LAN certificate")?;
        Ok((transport, Some(identity.server_config()?)))
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the requests in
    /// flight. Taking a bound listener lets tests bind port 0 and read it back.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (_, tls) = self.transport(listener.local_addr()?)?;
        self.serve(listener, tls, shutdown).await
    }

    /// Serves on `listener` as [`App::transport`] decided.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<TlsServer>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let limits = self.edge.core.cfg.http.limits();
        patron_web::serve::serve(listener, self.router(), tls, limits, shutdown).await?;
        Ok(())
    }
}

/// A rustls server configuration.
pub type TlsServer = Arc<rustls::ServerConfig>;

/// Opens the edge `cfg` describes and serves it on `listener` until `shutdown`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    App::open(cfg).await?.run(listener, shutdown).await
}
