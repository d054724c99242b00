//! Where the edge's keys live: outside the data directory, so that a copy of the data
//! directory (a backup, a disk image, the database taken off a stolen drive's data
//! partition) reveals no personal data without them.
//!
//! The key directory (`key_dir`, default the data directory's sibling `<data_dir>.keys`,
//! e.g. `/var/lib/patron-edge.keys`; an installer may put it on another volume or in
//! `/etc/patron`) holds, mode 0700: `edge.key` (this store's keys, [`crate::crypto`]),
//! `chain.key` (the chain's, once enrolled) and `lan.key` (the POS API's TLS key,
//! [`crate::lan_tls`]). An edge that kept them in its data directory, as before,
//! moves them at its next start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

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

/// The file naming the store whose keys a key directory holds.
const STORE_FILE: &str = "store";

/// Makes the key directory (0700; one readable by others is refused) for `store_id`,
/// and moves into it any key an older edge left in the data directory. The directory
/// must lie outside the data directory (checked on the real paths, links resolved) and
/// belong to this store (two edges never share keys). Returns the key directory.
pub fn prepare(data_dir: &Path, key_dir: &Path, store_id: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    if !key_dir.exists() {
        std::fs::create_dir_all(key_dir)
            .with_context(|| format!("creating the key directory {}", key_dir.display()))?;
        std::fs::set_permissions(key_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mode = std::fs::metadata(key_dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "the key directory {} must be mode 0700 (its owner's only)",
            key_dir.display()
        );
    }
    let (real_data, real_keys) = (data_dir.canonicalize()?, key_dir.canonicalize()?);
    if real_keys.starts_with(&real_data) || real_data.starts_with(&real_keys) {
        bail!(
            "the key directory {} is inside the data directory {} (or holds it): a copy of the data directory must reveal nothing without the keys",
            real_keys.display(),
            real_data.display()
        );
    }
    let marker = key_dir.join(STORE_FILE);
    match std::fs::read_to_string(&marker) {
        Ok(owner) if owner.trim() == store_id => {}
        Ok(owner) => bail!(
            "the key directory {} holds store {}'s keys, not {store_id}'s",
            key_dir.display(),
            owner.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&marker, format!("{store_id}\n"))?;
        }
        Err(e) => return Err(e.into()),
    }
    for (old, name) in legacy(data_dir) {
        if old.exists() {
            move_key(&old, &key_dir.join(name))?;
            tracing::info!(key = name, "moved a key out of the data directory");
        }
    }
    Ok(key_dir.to_path_buf())
}

/// Moves a key file, durably and whole: a copy (0600) synced and renamed into place,
/// then the old one removed. Across two file systems a rename would not do.
fn move_key(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if to.exists() {
        if std::fs::read(to)? != bytes {
            bail!(
                "{} and {} both exist and differ: keep the one this database was written under and remove the other",
                from.display(),
                to.display()
            );
        }
    } else {
        let tmp = to.with_extension("key.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, to)?;
        if let Some(dir) = to.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    std::fs::remove_file(from)?;
    if let Some(dir) = from.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_left_in_the_data_directory_move_out_once_and_whole() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (data, keys) = (root.path().join("data"), root.path().join("keys"));
        std::fs::create_dir_all(data.join("tls")).unwrap_or_else(|e| panic!("{e}"));
        for (path, body) in [
            (data.join("edge.key"), "edge"),
            (data.join("chain.key"), "chain"),
            (data.join("tls/lan.key"), "lan"),
        ] {
            std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
        }
        prepare(&data, &keys, "S001").unwrap_or_else(|e| panic!("{e:#}"));
        for (name, body) in [
            ("edge.key", "edge"),
            ("chain.key", "chain"),
            ("lan.key", "lan"),
        ] {
            assert_eq!(
                std::fs::read_to_string(keys.join(name)).ok().as_deref(),
                Some(body)
            );
            let mode = std::fs::metadata(keys.join(name))
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600, "{name}");
        }
        assert!(!data.join("edge.key").exists() && !data.join("tls/lan.key").exists());
        let dir_mode = std::fs::metadata(&keys)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(dir_mode, 0o700);
        // Again: nothing to move, nothing changes.
        prepare(&data, &keys, "S001").unwrap_or_else(|e| panic!("{e:#}"));
        // A different key in both places: refused, neither touched.
        std::fs::write(data.join("edge.key"), "other").unwrap_or_else(|e| panic!("{e}"));
        assert!(prepare(&data, &keys, "S001").is_err());
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        assert_eq!(read(keys.join("edge.key")).as_deref(), Some("edge"));
        assert_eq!(read(data.join("edge.key")).as_deref(), Some("other"));
        // The same key in both places (a move cut short after its copy): the old goes.
        std::fs::write(data.join("edge.key"), "edge").unwrap_or_else(|e| panic!("{e}"));
        prepare(&data, &keys, "S001").unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!data.join("edge.key").exists());
        // Another store's edge given this key directory is refused.
        let e = prepare(&data, &keys, "S002").err().map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|m| m.contains("S001")), "{e:?}");
        // A key directory reached through a link into the data directory is refused.
        let inside = data.join("keys-inside");
        std::fs::create_dir_all(&inside).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{e}"));
        let link = root.path().join("innocent-keys");
        std::os::unix::fs::symlink(&inside, &link).unwrap_or_else(|e| panic!("{e}"));
        let e = prepare(&data, &link, "S001").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("inside the data directory")),
            "{e:?}"
        );
        // A key directory others may read is refused.
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(prepare(&data, &keys, "S001").is_err());
    }
}
