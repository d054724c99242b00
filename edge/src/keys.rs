//! Where the edge's keys live: outside the data directory ([`patron_keydir`]), so that a
//! copy of the data directory reveals no personal data without them.
//!
//! The key directory (`key_dir`, default `<data_dir>.keys`) holds `edge.key` (this
//! store's keys, [`crate::crypto`]), `store.key` (its keys from the hub, once enrolled;
//! `store-<n>.key` after rotations; `chain.key` at a store enrolled before keys were
//! per store) and `lan.key` (the POS API's TLS key, [`crate::lan_tls`]). An edge that
//! kept them in its data directory, as before, moves them at its next start.

use std::path::{Path, PathBuf};

/// This store's own keys.
pub const EDGE_KEY_FILE: &str = "edge.key";
/// The POS API's TLS key.
pub const LAN_KEY_FILE: &str = "lan.key";

/// Where each key file used to live in the data directory, and its name in the key
/// directory.
fn legacy(data_dir: &Path) -> [(PathBuf, &'static str); 3] {
    [
        (data_dir.join(EDGE_KEY_FILE), EDGE_KEY_FILE),
        (
            data_dir.join(crate::crypto::CHAIN_KEY_FILE),
            crate::crypto::CHAIN_KEY_FILE,
        ),
        (
            data_dir.join(crate::lan_tls::TLS_DIR).join(LAN_KEY_FILE),
            LAN_KEY_FILE,
        ),
    ]
}

/// Makes the key directory for `store_id` and moves into it any key an older edge left
/// in the data directory (see [`patron_keydir::prepare`]). Returns the key directory.
pub fn prepare(data_dir: &Path, key_dir: &Path, store_id: &str) -> anyhow::Result<PathBuf> {
    patron_keydir::prepare(data_dir, key_dir, store_id, &legacy(data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_edge_s_keys_move_out_of_the_data_directory() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (data, keys) = (root.path().join("data"), root.path().join("keys"));
        std::fs::create_dir_all(data.join(crate::lan_tls::TLS_DIR))
            .unwrap_or_else(|e| panic!("{e}"));
        for (old, _) in legacy(&data) {
            std::fs::write(&old, "k").unwrap_or_else(|e| panic!("{e}"));
        }
        prepare(&data, &keys, "S001").unwrap_or_else(|e| panic!("{e:#}"));
        for (old, name) in legacy(&data) {
            assert!(!old.exists() && keys.join(name).exists(), "{name}");
        }
    }
}
