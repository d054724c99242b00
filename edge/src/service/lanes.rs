//! Lanes and their tokens. A token is 32 random bytes shown once when the lane is
//! created; only its SHA-256 is stored, so a copy of the database grants nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::{Edge, EdgeError};
use crate::config::Config;
use crate::domain::clock::now_millis;
use crate::store::{self, StoreError, lanes};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A POS lane: sales, refunds, members, points.
    Pos,
    /// A cashier at the local UI: the same as a lane.
    Cashier,
    /// Store administration (rule sets, lanes): everything.
    Admin,
}

impl Role {
    /// Parses a stored or typed role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "pos" => Some(Role::Pos),
            "cashier" => Some(Role::Cashier),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pos => "pos",
            Role::Cashier => "cashier",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// Row id; scopes idempotency keys.
    pub id: i64,
    /// Name, for logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

fn token_hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Creates a lane in the configured data directory and returns its token (shown once).
/// Works whether or not the edge is running: SQLite serializes the two writers.
pub fn add_lane(cfg: &Config, name: &str, role: Role) -> anyhow::Result<String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        anyhow::bail!("lane name must be 1-64 characters of A-Z, a-z, 0-9, - _ .");
    }
    let (path, mut conn) = open_db(cfg)?;
    store::migrate(&mut conn, &path)?;
    if lanes::name_taken(&conn, name)? {
        anyhow::bail!("a lane named {name:?} exists already");
    }
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("random source failed"))?;
    let token = format!("pt_{}", URL_SAFE_NO_PAD.encode(raw));
    lanes::insert(
        &conn,
        name,
        role.as_str(),
        &token_hash(&token),
        now_millis(),
    )?;
    Ok(token)
}

/// Revokes a lane in the configured data directory; a running edge stops accepting its
/// token within [`LANE_CACHE_TTL`]. `false` if no active lane has that name.
pub fn revoke_lane(cfg: &Config, name: &str) -> anyhow::Result<bool> {
    let (path, mut conn) = open_db(cfg)?;
    store::migrate(&mut conn, &path)?;
    Ok(lanes::revoke(&conn, name, now_millis())?)
}

/// The configured database, for a lane command (see [`store::connect_at`]).
fn open_db(cfg: &Config) -> anyhow::Result<(std::path::PathBuf, rusqlite::Connection)> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let key_dir = crate::keys::prepare(&cfg.data_dir, &cfg.key_dir(), &cfg.store_id)?;
    store::connect_at(&cfg.data_dir, &key_dir, false)
}

/// How long a verified token is trusted from memory before the database is asked again
/// (so a revocation takes effect within this, without a lookup on every request).
pub const LANE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl Edge {
    /// The lane a bearer token belongs to, if any. Verified tokens are cached in memory
    /// for [`LANE_CACHE_TTL`].
    pub async fn authenticate(&self, token: &str) -> Result<Option<Lane>, EdgeError> {
        let hash = token_hash(token);
        if let Ok(cache) = self.lanes.read()
            && let Some((l, at)) = cache.get(&hash)
            && at.elapsed() < LANE_CACHE_TTL
        {
            return Ok(Some(l.clone()));
        }
        let row = self
            .store
            .readers
            .read(move |c| Ok::<_, EdgeError>(lanes::by_token_hash(c, &hash)?))
            .await?;
        let Some(row) = row else {
            if let Ok(mut cache) = self.lanes.write() {
                cache.remove(&hash);
            }
            return Ok(None);
        };
        let role = Role::parse(&row.role)
            .ok_or_else(|| StoreError::Corrupt(format!("lanes.role {:?}", row.role)))?;
        let lane = Lane {
            id: row.id,
            name: row.name,
            role,
        };
        if let Ok(mut cache) = self.lanes.write() {
            cache.insert(hash, (lane.clone(), std::time::Instant::now()));
        }
        Ok(Some(lane))
    }
}
