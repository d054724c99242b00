//! The hub's one configuration, layered as the edge's is: built-in defaults, then a
//! TOML file (`--config`, else `/etc/patron/hub.toml` if present), then
//! `PATRON_HUB__…` environment variables (`PATRON_HUB__FETCHES_PER_MINUTE=300`), then
//! command-line flags. Tests build a [`HubConfig`] in code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The commented example configuration.
pub const EXAMPLE_TOML: &str = include_str!("../hub.example.toml");

/// Everything `patron-hub serve` is told at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Database, certificates and the HQ admin token's hash.
    pub data_dir: PathBuf,
    /// The keys (members', the CAs', the server's), outside the data directory;
    /// default `<data_dir>.keys` ([`crate::keys`]).
    pub key_dir: Option<PathBuf>,
    /// The address stores and HQ reach the hub at.
    pub listen: SocketAddr,
    /// Plain HTTP instead of TLS: development on one machine only (a loopback
    /// `listen` address; refused on any other).
    pub insecure_dev: bool,
    /// Share of a member's free points a store may lease, per mille (0: no leases).
    pub lease_share_permille: i64,
    /// How long a lease lasts at the store, in minutes (the hub counts it 10 minutes
    /// longer).
    pub lease_minutes: i64,
    /// Member fetches (lookups of other stores' members) each store may make per
    /// minute; 0: no limit.
    pub fetches_per_minute: u32,
    /// Requests each store may send a second (bursts of 5 seconds' worth); beyond it:
    /// 429 `rate_limited` with `Retry-After`. 0: no limit.
    pub store_requests_per_second: u32,
    /// A store's stream keeps what it has not acknowledged this many days; a store
    /// away longer refetches its members when it comes back.
    pub stream_retention_days: u32,
    /// Points one store fact may earn, spend or reverse; a fact beyond it is
    /// quarantined for review.
    pub max_points_per_fact: i64,
    /// Amount (fen) one store fact's qualifying spend may be; beyond: quarantined.
    pub max_amount_fen_per_fact: i64,
    /// Points one store's facts may credit a day, on average (its budget refills at
    /// this rate); beyond: quarantined.
    pub max_points_per_store_day: i64,
    /// How many days' worth a store's budget holds at most (a store back from days
    /// offline pushes up to this many days of earning at once).
    pub store_budget_days: i64,
    /// Points a store's unsynced earns may add to a member's balance when it asks to
    /// redeem (it pushes within a second while online; its claim is not taken beyond
    /// this).
    pub max_unsynced_points: i64,
    /// Connection limits and request deadlines.
    pub http: patron_web::serve::HttpConfig,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("hub-data"),
            key_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            insecure_dev: false,
            lease_share_permille: crate::authority::LEASE_POLICY.share_permille,
            lease_minutes: crate::authority::LEASE_POLICY.duration_ms / 60_000,
            fetches_per_minute: crate::directory::DEFAULT_FETCHES_PER_MINUTE,
            store_requests_per_second: 100,
            max_points_per_fact: crate::ingest::FactLimits::default().max_points,
            max_amount_fen_per_fact: crate::ingest::FactLimits::default().max_amount_fen,
            max_points_per_store_day: crate::ingest::FactLimits::default().max_points_per_store_day,
            store_budget_days: crate::ingest::FactLimits::default().store_budget_days,
            max_unsynced_points: crate::authority::MAX_UNSYNCED_POINTS,
            http: patron_web::serve::HttpConfig::default(),
            stream_retention_days: 30,
        }
    }
}

pub use patron_web::config::ConfigError;

impl HubConfig {
    /// The key directory: `key_dir`, or `<data_dir>.keys` beside the data directory.
    pub fn key_dir(&self) -> PathBuf {
        self.key_dir
            .clone()
            .unwrap_or_else(|| patron_keydir::beside(&self.data_dir, "patron-hub"))
    }

    /// Loads defaults, then `file` (or `/etc/patron/hub.toml` if present), then env.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: HubConfig = patron_web::config::layered(
            HubConfig::default(),
            file,
            Path::new("/etc/patron/hub.toml"),
            "PATRON_HUB__",
        )?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !patron_keydir::apart(&self.data_dir, &self.key_dir()) {
            return Err(ConfigError::Invalid(
                "key_dir must be outside data_dir (and not contain it): a copy of the data directory must reveal nothing without the keys".into(),
            ));
        }
        if self.insecure_dev && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "insecure_dev serves plain HTTP and is allowed on a loopback address only, not {}",
                self.listen
            )));
        }
        if !(0..=1000).contains(&self.lease_share_permille) {
            return Err(ConfigError::Invalid(
                "lease_share_permille must be 0..=1000".into(),
            ));
        }
        if self.stream_retention_days == 0 {
            return Err(ConfigError::Invalid(
                "stream_retention_days must be >= 1".into(),
            ));
        }
        if self.max_points_per_store_day < self.max_points_per_fact
            || !(1..=365).contains(&self.store_budget_days)
        {
            return Err(ConfigError::Invalid(
                "max_points_per_store_day must be at least max_points_per_fact, store_budget_days 1..=365".into(),
            ));
        }
        if self.max_points_per_fact < 1 || self.max_amount_fen_per_fact < 1 {
            return Err(ConfigError::Invalid(
                "max_points_per_fact and max_amount_fen_per_fact must be >= 1".into(),
            ));
        }
        self.http.check().map_err(ConfigError::Invalid)?;
        if self.max_unsynced_points < 0 {
            return Err(ConfigError::Invalid(
                "max_unsynced_points must be >= 0".into(),
            ));
        }
        if !(1..=7 * 24 * 60).contains(&self.lease_minutes) {
            return Err(ConfigError::Invalid(
                "lease_minutes must be 1..=10080 (a week)".into(),
            ));
        }
        Ok(())
    }

    /// What one store fact may carry under this configuration.
    pub fn fact_limits(&self) -> crate::ingest::FactLimits {
        crate::ingest::FactLimits {
            max_points: self.max_points_per_fact,
            max_amount_fen: self.max_amount_fen_per_fact,
            max_points_per_store_day: self.max_points_per_store_day,
            store_budget_days: self.store_budget_days,
        }
    }

    /// How members' points are leased under this configuration.
    pub fn lease_policy(&self) -> patron_sync::rights::LeasePolicy {
        patron_sync::rights::LeasePolicy {
            share_permille: self.lease_share_permille,
            duration_ms: self.lease_minutes * 60_000,
            ..crate::authority::LEASE_POLICY
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    /// The file overrides the defaults, the environment overrides the file; the
    /// example file parses and says what the defaults are; bad values are refused.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn layers_apply_in_order_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("hub.toml");
        std::fs::write(&f, "fetches_per_minute = 42\nlease_minutes = 30\n")
            .unwrap_or_else(|e| panic!("{e}"));
        figment::Jail::expect_with(|jail| {
            jail.set_env("PATRON_HUB__LEASE_MINUTES", "45");
            let cfg = HubConfig::load(Some(&f)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.fetches_per_minute, 42);
            assert_eq!(cfg.lease_minutes, 45);
            assert_eq!(cfg.lease_policy().duration_ms, 45 * 60_000);
            jail.set_env("PATRON_HUB__LEASE_SHARE_PERMILLE", "1001");
            assert!(matches!(
                HubConfig::load(Some(&f)),
                Err(ConfigError::Invalid(_))
            ));
            Ok(())
        });
        let example: HubConfig = Figment::new()
            .merge(Toml::string(EXAMPLE_TOML))
            .extract()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(example, HubConfig::default());
        std::fs::write(&f, "fetches_per_minut = 1\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            HubConfig::load(Some(&f)),
            Err(ConfigError::Load(_))
        ));
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        let dev = |listen: &str| HubConfig {
            insecure_dev: true,
            listen: listen.parse().unwrap_or_else(|e| panic!("{e}")),
            ..HubConfig::default()
        };
        assert!(dev("127.0.0.1:7443").validate().is_ok());
        assert!(dev("[::1]:7443").validate().is_ok());
        assert!(matches!(
            dev("0.0.0.0:7443").validate(),
            Err(ConfigError::Invalid(m)) if m.contains("loopback")
        ));
        assert!(matches!(
            dev("192.168.1.2:7443").validate(),
            Err(ConfigError::Invalid(_))
        ));
        let tls = HubConfig {
            listen: "0.0.0.0:7443".parse().unwrap_or_else(|e| panic!("{e}")),
            ..HubConfig::default()
        };
        assert!(tls.validate().is_ok(), "TLS may listen anywhere");
    }
}
