//! `hub.json`: the hub address, this store's credential and the pinned CA.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SyncError;

/// File name in the data directory.
pub const LINK_FILE: &str = "hub.json";

/// What enrollment leaves behind. The credential is a secret: the file is owner-only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubLink {
    /// Base URL, `https://hub.example:7443`.
    pub url: String,
    /// The store id the hub enrolled.
    pub store_id: String,
    /// Rollout ring.
    pub ring: String,
    /// Bearer credential for sync.
    pub credential: String,
    /// The hub CA (PEM) this edge trusts, and nothing else; empty for a plain-HTTP
    /// development hub.
    pub ca_pem: String,
}

impl std::fmt::Debug for HubLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubLink")
            .field("url", &self.url)
            .field("store_id", &self.store_id)
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(LINK_FILE)
}

impl HubLink {
    /// The link in `data_dir`, if this edge is enrolled.
    pub fn load(data_dir: &Path) -> Result<Option<HubLink>, SyncError> {
        let p = path(data_dir);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SyncError::Setup(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SyncError::Setup(format!("{}: {e}", p.display()))),
        }
    }

    /// Writes the link atomically (temp file, fsync, rename), owner-only.
    pub fn save(&self, data_dir: &Path) -> Result<(), SyncError> {
        let setup = |e: std::io::Error| SyncError::Setup(format!("writing {LINK_FILE}: {e}"));
        std::fs::create_dir_all(data_dir).map_err(setup)?;
        let tmp = data_dir.join(format!("{LINK_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(setup)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| SyncError::Setup(e.to_string()))?;
        f.write_all(&json).map_err(setup)?;
        f.sync_all().map_err(setup)?;
        std::fs::rename(&tmp, path(data_dir)).map_err(setup)?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(setup)?;
        Ok(())
    }
}
