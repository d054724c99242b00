//! The edge's one configuration: built-in defaults, then a TOML file, then
//! `PATRON_EDGE__…` environment variables (`PATRON_EDGE__POINTS__EXPIRY_MONTHS=6`),
//! then command-line flags. Tests build a [`Config`] in code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The commented example configuration shipped with the binary.
pub const EXAMPLE_TOML: &str = include_str!("../edge.example.toml");

/// Everything an edge node is told at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This store's id; written into the database at first start and checked after.
    pub store_id: String,
    /// Where the SQLite file lives.
    pub data_dir: PathBuf,
    /// Where the keys live (`crate::keys`): outside `data_dir`, so that a copy of the
    /// data directory reveals no personal data. Unset: `<data_dir>.keys`.
    pub key_dir: Option<PathBuf>,
    /// The address the POS API listens on (the store LAN).
    pub listen: SocketAddr,
    /// The store's UTC offset, `+08:00`: days for check-ins and expiry end at local midnight.
    pub utc_offset: String,
    /// Earning, redemption and expiry of points, while not enrolled with a hub.
    pub points: PointsConfig,
    /// Tier thresholds, while not enrolled with a hub.
    pub tiers: TiersConfig,
    /// Points for behaviour events.
    pub events: EventsConfig,
    /// Storage tuning.
    pub storage: StorageConfig,
    /// A rule set (JSON) loaded at start; until the hub distributes rule sets, this and
    /// `PUT /v1/admin/rule-set` are how promotions reach a store.
    pub rules_file: Option<PathBuf>,
    /// Sync with the hub (once enrolled: `patron-edge enroll`).
    pub sync: SyncConfig,
    /// Who may allow a redemption, and the offline limits.
    pub redemption: RedemptionConfig,
    /// Connection limits and request deadlines of the POS API.
    pub http: patron_web::serve::HttpConfig,
    /// HTTPS on the POS API.
    pub tls: TlsConfig,
    /// Lookups of members.
    pub privacy: PrivacyConfig,
    /// What one sale, and one lane in a store day, may earn, redeem, refund and give.
    pub limits: crate::domain::limits::Limits,
    /// When a lane's day is an anomaly worth an alert.
    pub alerts: crate::domain::anomaly::AlertRules,
    /// Manual adjustments and transfers at the front desk.
    pub member_service: MemberServiceConfig,
}

/// Manual points adjustments and member-to-member transfers (docs/member-service.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemberServiceConfig {
    /// An adjustment of more points than this, either way, waits for a manager other
    /// than the one who asked for it (0: every adjustment waits).
    pub approve_adjustments_above: i64,
    /// Most points one transfer moves.
    pub transfer_max_points: i64,
    /// Most points one member sends in a calendar month, across the chain.
    pub transfer_monthly_points: i64,
}

impl Default for MemberServiceConfig {
    fn default() -> Self {
        Self {
            approve_adjustments_above: 500,
            transfer_max_points: 5_000,
            transfer_monthly_points: 20_000,
        }
    }
}

/// Lookups of members (every one is recorded; see `patron-edge audit lookups`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Lookups by phone each lane may make per minute, a budget that refills
    /// continuously (0: unlimited). A sale needs one; a lane harvesting members by
    /// trying phones is held to this.
    pub phone_lookups_per_lane_per_minute: u32,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            phone_lookups_per_lane_per_minute: 30,
        }
    }
}

/// HTTPS on the store LAN (see `patron-edge tls show`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve the POS API over HTTPS. `false` serves plain HTTP, which the edge accepts
    /// only on a loopback `listen` address unless `plain_http_on_lan` says otherwise.
    pub enabled: bool,
    /// Allow plain HTTP on a LAN address (lane tokens and member data then cross the
    /// store network in the clear; `GET /healthz` reports it).
    pub plain_http_on_lan: bool,
    /// Names and addresses the POS reaches this edge at, put in its certificate
    /// besides localhost, the listen address and the host name.
    pub hosts: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            plain_http_on_lan: false,
            hosts: Vec::new(),
        }
    }
}

impl TlsConfig {
    /// The names the edge's certificate is for.
    pub fn names(&self, listen: &SocketAddr) -> Vec<String> {
        crate::lan_tls::default_names(&self.hosts, listen.ip())
    }

    /// How the POS API is served on `listen`, or why this configuration may not serve.
    pub fn transport(&self, listen: &SocketAddr) -> Result<Transport, String> {
        if self.enabled {
            return Ok(Transport::Https);
        }
        if listen.ip().is_loopback() {
            Ok(Transport::HttpLoopback)
        } else if self.plain_http_on_lan {
            Ok(Transport::HttpLan)
        } else {
            Err(format!(
                "tls.enabled = false would serve plain HTTP on {listen}, sending lane tokens \
                 and member data across the store network in the clear: keep HTTPS (the \
                 default), listen on a loopback address, or set tls.plain_http_on_lan = true"
            ))
        }
    }
}

/// How the POS API is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS (the default).
    Https,
    /// Plain HTTP on a loopback address: nothing crosses the network.
    HttpLoopback,
    /// Plain HTTP on the LAN, by explicit configuration.
    HttpLan,
}

impl Transport {
    /// The name `/healthz` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Https => "https",
            Transport::HttpLoopback => "http-loopback",
            Transport::HttpLan => "http-lan",
        }
    }
}

/// Redemption authority (enrolled edges only: a standalone edge is its own authority).
///
/// Worst case while the hub is away, per member: `offline_floor_points` × the number of
/// stores the member redeems at before any of them syncs; per store, per local day:
/// `offline_daily_cap_points`. See docs/redemption.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedemptionConfig {
    /// How long a redemption waits for the hub's authorization before falling back to
    /// the offline limits.
    pub authorize_timeout_ms: u64,
    /// Points one member may redeem here without the hub, until the hub has
    /// acknowledged those redemptions (the "offline period").
    pub offline_floor_points: i64,
    /// Points this store may redeem without the hub per local day, all members.
    pub offline_daily_cap_points: i64,
    /// Ask the hub for a lease on a member's points when the member is identified here
    /// while the hub is reachable (redeemable offline within the lease).
    pub leases: bool,
}

impl Default for RedemptionConfig {
    fn default() -> Self {
        Self {
            authorize_timeout_ms: 300,
            offline_floor_points: 500,
            offline_daily_cap_points: 20_000,
            leases: true,
        }
    }
}

/// How the edge syncs with the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Wait this long after a commit before pushing, to gather the commits around it.
    pub push_delay_ms: u64,
    /// With nothing to push, report to the hub this often (its view of our lag).
    pub heartbeat_ms: u64,
    /// First retry delay after a failure; doubles up to `retry_max_ms` (with jitter).
    pub retry_min_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// One request to the hub may take this long.
    pub timeout_ms: u64,
    /// Alert when a fact stays unacknowledged this long while the hub is reachable.
    pub watchdog_secs: u64,
    /// Facts per push (at most 1000, the protocol's batch limit).
    pub batch: usize,
    /// A lookup of a phone this store does not hold waits this long for the hub to send
    /// the member (then answers not found, as offline).
    pub fetch_timeout_ms: u64,
    /// A member registered at another store leaves this store's set after this many days
    /// without a sale or a fetch here (and with no lease here).
    pub keep_members_days: u32,
    /// A stream poll with nothing new is held open by the hub this long, waiting for
    /// news (at most 25,000): the longer, the fewer idle requests.
    pub stream_wait_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            push_delay_ms: 20,
            heartbeat_ms: 10_000,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
            timeout_ms: 10_000,
            watchdog_secs: 300,
            batch: 1000,
            fetch_timeout_ms: 1_000,
            keep_members_days: 90,
            stream_wait_ms: 20_000,
        }
    }
}

/// Points rules for a store not enrolled with a hub (an enrolled store uses what HQ
/// publishes, or the documented defaults: `patron_domain::settings`). Every division
/// rounds down (see `docs/points.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PointsConfig {
    /// Points earned per `earn_per_fen` fen actually paid in money.
    pub earn_points: i64,
    /// The spend unit for earning, in fen (100 = ¥1).
    pub earn_per_fen: i64,
    /// A lot earned on day D expires at the end of day D plus this many months.
    pub expiry_months: u32,
    /// The member view lists lots expiring within this many days.
    pub expiring_notice_days: u32,
    /// `redeem_points` points are worth `redeem_value_fen` fen (default 100 = ¥1).
    pub redeem_points: i64,
    /// See `redeem_points`.
    pub redeem_value_fen: i64,
}

/// Tier thresholds on qualifying spend in a rolling window, for a store not enrolled
/// with a hub (an enrolled store uses what HQ publishes, or the documented defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    /// The rolling window, in calendar months.
    pub window_months: u32,
    /// Qualifying spend for silver, in fen.
    pub silver: i64,
    /// Qualifying spend for gold, in fen.
    pub gold: i64,
    /// Qualifying spend for diamond, in fen.
    pub diamond: i64,
}

impl TiersConfig {
    /// The thresholds as the tier derivation takes them.
    pub fn rules(&self) -> patron_domain::tiers::TierRules {
        patron_domain::tiers::TierRules {
            window_months: self.window_months,
            silver: self.silver,
            gold: self.gold,
            diamond: self.diamond,
        }
    }

    /// Refuses thresholds out of order or a window out of range (one rule for
    /// configured and HQ-published thresholds).
    pub fn validate(&self) -> Result<(), String> {
        self.rules().validate()
    }
}

/// Points for behaviour events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Daily check-in, once per local calendar day.
    pub check_in: i64,
    /// A share.
    pub share: i64,
    /// Shares rewarded per member per local day.
    pub share_daily_limit: u32,
    /// Completing the profile (name and birthday), once per member.
    pub profile_completed: i64,
    /// What the store allows of the check-in, shares, the profile reward, upgrade gifts
    /// and referral rewards while it cannot ask the hub (`once`, `local`, `refuse`;
    /// docs/claims.md). Rules and benefits say their own.
    pub offline_claims: patron_domain::claims::OfflinePolicy,
}

/// Storage tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most requests one group commit may carry.
    pub max_batch: usize,
    /// Read-only connections for quotes and lookups.
    pub read_connections: usize,
    /// How often the background checkpointer folds the WAL into the database, in ms.
    pub checkpoint_interval_ms: u64,
    /// WAL size (pages) past which the checkpointer briefly holds the writer back so the
    /// WAL restarts from its beginning instead of growing.
    pub wal_restart_pages: u32,
    /// Encrypt the database at rest (SQLCipher, docs/keys.md). `false` keeps a new or
    /// plaintext database in plaintext (a machine whose disk is encrypted otherwise;
    /// the commit benchmark's comparison); an encrypted one stays encrypted. `/healthz`
    /// reports which.
    pub encrypt_at_rest: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store_id: "S001".into(),
            data_dir: PathBuf::from("/var/lib/patron-edge"),
            key_dir: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            utc_offset: "+08:00".into(),
            points: PointsConfig::default(),
            tiers: TiersConfig::default(),
            events: EventsConfig::default(),
            storage: StorageConfig::default(),
            rules_file: None,
            sync: SyncConfig::default(),
            redemption: RedemptionConfig::default(),
            // On the store LAN every lane may share one IPv6 /64: count each address.
            http: patron_web::serve::HttpConfig {
                ipv6_client_prefix_len: 128,
                ..patron_web::serve::HttpConfig::default()
            },
            tls: TlsConfig::default(),
            privacy: PrivacyConfig::default(),
            member_service: MemberServiceConfig::default(),
            limits: crate::domain::limits::Limits::default(),
            alerts: crate::domain::anomaly::AlertRules::default(),
        }
    }
}

impl Default for PointsConfig {
    fn default() -> Self {
        let d = patron_domain::settings::PointsRules::default();
        Self {
            earn_points: d.earn_points,
            earn_per_fen: d.earn_per_fen,
            expiry_months: d.expiry_months,
            expiring_notice_days: d.expiring_notice_days,
            redeem_points: d.redeem_points,
            redeem_value_fen: d.redeem_value_fen,
        }
    }
}

impl PointsConfig {
    /// The settings as pricing and expiry take them.
    pub fn rules(&self) -> patron_domain::settings::PointsRules {
        patron_domain::settings::PointsRules {
            earn_points: self.earn_points,
            earn_per_fen: self.earn_per_fen,
            expiry_months: self.expiry_months,
            expiring_notice_days: self.expiring_notice_days,
            redeem_points: self.redeem_points,
            redeem_value_fen: self.redeem_value_fen,
        }
    }
}

impl Default for TiersConfig {
    fn default() -> Self {
        let d = patron_domain::tiers::TierRules::default();
        Self {
            window_months: d.window_months,
            silver: d.silver,
            gold: d.gold,
            diamond: d.diamond,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            check_in: 5,
            share: 20,
            share_daily_limit: 3,
            profile_completed: 50,
            offline_claims: patron_domain::claims::OfflinePolicy::Once,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            read_connections: 4,
            checkpoint_interval_ms: 50,
            wal_restart_pages: 16384,
            encrypt_at_rest: true,
        }
    }
}

pub use patron_web::config::ConfigError;

impl Config {
    /// Loads defaults, then `file` (or `/etc/patron/edge.toml` if present), then env.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: Config = patron_web::config::layered(
            Config::default(),
            file,
            Path::new("/etc/patron/edge.toml"),
            "PATRON_EDGE__",
        )?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The key directory: `key_dir`, or `<data_dir>.keys` beside the data directory.
    pub fn key_dir(&self) -> PathBuf {
        self.key_dir
            .clone()
            .unwrap_or_else(|| patron_keydir::beside(&self.data_dir, "patron-edge"))
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if !patron_keydir::apart(&self.data_dir, &self.key_dir()) {
            return bad(
                "key_dir must be outside data_dir (and not contain it): a copy of the data directory must reveal nothing without the keys",
            );
        }
        self.http.check().map_err(ConfigError::Invalid)?;
        let ms = &self.member_service;
        if ms.approve_adjustments_above < 0
            || !(1..=patron_domain::adjustment::MAX_POINTS).contains(&ms.transfer_max_points)
            || ms.transfer_monthly_points < ms.transfer_max_points
        {
            return bad(
                "member_service: approve_adjustments_above must be >= 0, transfer_max_points 1-100000, transfer_monthly_points >= transfer_max_points",
            );
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.alerts.validate().map_err(ConfigError::Invalid)?;
        if let Some(h) = self
            .tls
            .hosts
            .iter()
            .find(|h| !patron_protocol::hub::valid_lan_name(h))
        {
            return Err(ConfigError::Invalid(format!(
                "tls.hosts: {h:?} is not an IP address or a DNS name without wildcards"
            )));
        }
        if self.tls.hosts.len() > patron_protocol::hub::MAX_LAN_NAMES - 4 {
            return bad("tls.hosts: at most 12 names (the certificate holds 16 with the defaults)");
        }
        if !crate::domain::validate::is_store_id(&self.store_id) {
            return bad("store_id must be 1-16 characters of A-Z, a-z, 0-9, - or _");
        }
        if crate::domain::clock::parse_offset(&self.utc_offset).is_none() {
            return bad("utc_offset must look like +08:00");
        }
        self.points
            .rules()
            .validate()
            .map_err(ConfigError::Invalid)?;
        self.tiers.validate().map_err(ConfigError::Invalid)?;
        let e = &self.events;
        if e.check_in < 0 || e.share < 0 || e.profile_completed < 0 {
            return bad("events: points must be >= 0");
        }
        if e.share_daily_limit > patron_domain::claims::MAX_LIMIT {
            return bad("events.share_daily_limit must be at most 1000");
        }
        let y = &self.sync;
        if y.batch == 0 || y.batch > patron_sync::session::MAX_BATCH {
            return bad("sync.batch must be 1-1000");
        }
        if y.retry_min_ms == 0
            || y.retry_min_ms > y.retry_max_ms
            || y.timeout_ms == 0
            || y.fetch_timeout_ms == 0
            || y.heartbeat_ms == 0
        {
            return bad(
                "sync: need 0 < retry_min_ms <= retry_max_ms, timeout_ms > 0, fetch_timeout_ms > 0, heartbeat_ms > 0",
            );
        }
        if y.keep_members_days == 0 {
            return bad("sync.keep_members_days must be >= 1");
        }
        if self.storage.max_batch == 0 || self.storage.read_connections == 0 {
            return bad("storage: max_batch and read_connections must be >= 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    use super::*;

    #[test]
    fn example_file_parses_to_the_defaults() {
        let cfg: Result<Config, _> = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(EXAMPLE_TOML))
            .extract();
        assert_eq!(cfg.ok(), Some(Config::default()));
    }

    #[test]
    fn plain_http_is_served_on_loopback_or_on_the_lan_only_when_said() {
        let addr = |a: &str| a.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
        let tls = TlsConfig::default();
        assert_eq!(tls.transport(&addr("0.0.0.0:7400")), Ok(Transport::Https));
        let plain = TlsConfig {
            enabled: false,
            ..TlsConfig::default()
        };
        assert_eq!(
            plain.transport(&addr("127.0.0.1:7400")),
            Ok(Transport::HttpLoopback)
        );
        assert_eq!(
            plain.transport(&addr("[::1]:7400")),
            Ok(Transport::HttpLoopback)
        );
        for lan in ["0.0.0.0:7400", "192.168.1.10:7400", "[::]:7400"] {
            assert!(
                plain
                    .transport(&addr(lan))
                    .is_err_and(|e| e.contains("plain_http_on_lan")),
                "{lan}"
            );
        }
        let said = TlsConfig {
            enabled: false,
            plain_http_on_lan: true,
            ..TlsConfig::default()
        };
        assert_eq!(
            said.transport(&addr("0.0.0.0:7400")),
            Ok(Transport::HttpLan)
        );
        let c = Config {
            tls: TlsConfig {
                hosts: vec!["*.evil.example".into()],
                ..TlsConfig::default()
            },
            ..Config::default()
        };
        assert!(
            c.validate().is_err(),
            "a wildcard is not a name for the certificate"
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut c = Config::default();
        c.tiers.gold = 1;
        assert!(c.validate().is_err());
        let c = Config {
            utc_offset: "CST".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }
}
