//! Where the hub's keys live: outside its data directory ([`patron_keydir`]), so that a
//! copy of the data directory (a database backup, a disk image) reveals no member and
//! cannot pass for the hub.
//!
//! The key directory (`key_dir`, default `<data_dir>.keys`) holds `chain.key` and
//! `stores.key` (members' keys, [`crate::keyring`]), `ca.key`, `server.key` and
//! `lan-ca.key` (the sync and store-LAN CAs and the server's TLS key,
//! [`crate::tls`]). Their certificates stay in the data directory: they are public. A
//! hub that kept its keys in its data directory, as before, moves them at its next
//! start.

use std::path::{Path, PathBuf};

/// Every key file, by its name in either directory.
const KEY_FILES: [&str; 5] = [
    crate::chain_keys::CHAIN_KEY_FILE,
    crate::keyring::STORES_KEY_FILE,
    crate::tls::CA_KEY,
    crate::tls::SERVER_KEY,
    crate::tls::LAN_CA_KEY,
];

/// Makes the key directory and moves into it any key an older hub left in the data
/// directory (see [`patron_keydir::prepare`]). Returns the key directory.
pub fn prepare(data_dir: &Path, key_dir: &Path) -> anyhow::Result<PathBuf> {
    let legacy: Vec<(PathBuf, &str)> = KEY_FILES
        .iter()
        .map(|name| (data_dir.join(name), *name))
        .collect();
    patron_keydir::prepare(data_dir, key_dir, crate::ingest::HUB_NODE, &legacy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_hub_s_keys_move_out_and_its_certificates_stay() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (data, keys) = (root.path().join("hub"), root.path().join("hub.keys"));
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
        crate::tls::init(&data, &data, &["localhost".into()]).unwrap_or_else(|e| panic!("{e}"));
        crate::chain_keys::create(&data).unwrap_or_else(|e| panic!("{e}"));
        let before = crate::keyring::Keyring::load(&data, true)
            .unwrap_or_else(|e| panic!("{e}"))
            .handout("S001", 1);
        prepare(&data, &keys).unwrap_or_else(|e| panic!("{e:#}"));
        for name in KEY_FILES {
            if name == crate::tls::LAN_CA_KEY {
                continue; // made at the first serve, not at init
            }
            assert!(!data.join(name).exists(), "{name} left the data directory");
            assert!(keys.join(name).exists(), "{name} is in the key directory");
        }
        assert!(data.join(crate::tls::CA_CERT).exists(), "certificates stay");
        let after = crate::keyring::Keyring::load(&keys, false)
            .unwrap_or_else(|e| panic!("{e}"))
            .handout("S001", 1);
        assert_eq!(before, after, "the same keys, moved");
        crate::tls::server_config(&data, &keys).unwrap_or_else(|e| panic!("{e}"));
    }
}
