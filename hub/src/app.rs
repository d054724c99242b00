//! The hub's composition root: everything `patron-hub serve` runs — storage, the hub's
//! rules with their policies, the HQ admin token, TLS, the router with request tracing
//! — wired from a [`HubConfig`], so an in-process test runs the real application.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::config::HubConfig;
use crate::service::Hub;
use crate::store::sqlite::SqliteStore;

/// Hex SHA-256 of the HQ admin token, written by `patron-hub init`.
pub const ADMIN_HASH: &str = "admin.sha256";

/// Opens the hub in `dir` (its keys in `key_dir`) for a command. `need_ca`: the hub
/// hands out its CA and the stores' member keys (enrollment), so both must exist;
/// commands that hand out neither, and a development hub never initialised, run
/// without.
pub fn open_hub(dir: &Path, key_dir: &Path, need_ca: bool) -> anyhow::Result<Hub> {
    let store = SqliteStore::open(dir).context("opening the hub database")?;
    let (pem, fp) = match crate::tls::ca(dir) {
        Ok(ca) => ca,
        Err(e) if need_ca => return Err(e),
        // A development hub without a CA: stores enroll over plain HTTP only.
        Err(_) => (String::new(), "insecure".to_string()),
    };
    // The stores' root key is made beside the chain's the first time a hub with the
    // chain's keys opens (before it, every store held the chain's keys), and never once
    // a store holds keys derived from it: lost, it must come back from a backup.
    let derived = crate::store::Stores::list_stores(&store, 0)?
        .iter()
        .any(|s| s.key_generation.unwrap_or(0) > 0 || s.key_offered.unwrap_or(0) > 0);
    let hub = Hub::new(Arc::new(store), pem, fp);
    match crate::keyring::Keyring::load(key_dir, !derived) {
        Ok(ring) => Ok(hub.with_keyring(Arc::new(ring))),
        Err(_) if !need_ca && !key_dir.join(crate::chain_keys::CHAIN_KEY_FILE).exists() => Ok(hub),
        Err(e) => Err(e.context("the member keys")),
    }
}

/// The HQ admin token's hash in `dir`, if `init` wrote one.
pub fn admin_hash(dir: &Path) -> Option<[u8; 32]> {
    let hex = std::fs::read_to_string(dir.join(ADMIN_HASH)).ok()?;
    let bytes = hex::decode(hex.trim()).ok()?;
    bytes.try_into().ok()
}

/// The hub wired from its configuration, ready to serve.
pub struct App {
    /// The hub (tests reach behind the API through it).
    pub hub: Arc<Hub>,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Connection limits and request deadlines.
    limits: patron_web::serve::Limits,
    stream_retention_ms: i64,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens everything `cfg` names.
    pub fn open(cfg: &HubConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let dir = &cfg.data_dir;
        let key_dir = &crate::keys::prepare(dir, &cfg.key_dir())?;
        let tls = if cfg.insecure_dev {
            tracing::warn!("serving plain HTTP (insecure_dev): never do this beyond one machine");
            None
        } else {
            Some(crate::tls::server_config(dir, key_dir)?)
        };
        let lan_ca =
            Arc::new(crate::tls::LanCa::load_or_create(dir, key_dir).context("the store-LAN CA")?);
        let hub = Arc::new(
            open_hub(dir, key_dir, !cfg.insecure_dev)?
                .with_lan_ca(lan_ca)
                .with_lease_policy(cfg.lease_policy())
                .with_fact_limits(cfg.fact_limits())
                .with_max_unsynced(cfg.max_unsynced_points)
                .with_fetch_limit(cfg.fetches_per_minute),
        );
        let state = AppState {
            hub: hub.clone(),
            admin_hash: admin_hash(dir),
            store_requests: Arc::new(crate::api::StoreRequests::new(
                cfg.store_requests_per_second,
            )),
        };
        Ok(Self {
            hub,
            state,
            tls,
            limits: cfg.http.limits(),
            stream_retention_ms: i64::from(cfg.stream_retention_days) * 86_400_000,
        })
    }

    /// The routes, traced by matched route.
    pub fn router(&self) -> axum::Router {
        patron_web::traced(router(self.state.clone()))
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the requests in
    /// flight.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = self.router();
        // Upkeep: what stores leave unacknowledged past the retention is forgotten.
        let upkeep = {
            let (hub, retention) = (self.hub.clone(), self.stream_retention_ms);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
                loop {
                    every.tick().await;
                    let hub = hub.clone();
                    match tokio::task::spawn_blocking(move || hub.expire_streams(retention)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "expiring streams failed"),
                        Err(e) => tracing::error!(error = %e, "expiring streams panicked"),
                    }
                }
            })
        };
        // Projections behind the ingest cursor follow pushes in their own thread.
        let runner = crate::projections::Runner::spawn(
            self.hub.behind(),
            self.hub.projection_waker(),
            std::time::Duration::from_secs(5),
        )?;
        let hub = self.hub.clone();
        let shutdown = async move {
            shutdown.await;
            hub.close();
        };
        let served = patron_web::serve::serve(listener, app, self.tls, self.limits, shutdown).await;
        upkeep.abort();
        let _ = tokio::task::spawn_blocking(move || runner.stop()).await;
        served?;
        Ok(())
    }
}

/// Opens the hub `cfg` describes and serves it on `listener` until `shutdown`.
pub async fn run(
    cfg: HubConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    App::open(&cfg)?.run(listener, shutdown).await
}
