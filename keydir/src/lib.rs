//! Where a Patron server keeps its keys: a directory outside its data directory, so
//! that a copy of the data directory (a backup, a disk image, the database taken off a
//! stolen drive's data partition) reveals nothing without them.
//!
//! The key directory (by default the data directory's sibling `<data_dir>.keys`, e.g.
//! `/var/lib/patron-edge.keys`; an installer may put it on another volume or in
//! `/etc/patron`) is mode 0700, names the node whose keys it holds, and must lie
//! outside the data directory. Keys an older version kept in its data directory are
//! moved in at the next start, durably and whole.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The default key directory: the data directory's sibling `<name>.keys`
/// (`/var/lib/patron-hub` → `/var/lib/patron-hub.keys`); `fallback` names it when the
/// data directory has no name.
pub fn beside(data_dir: &Path, fallback: &str) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| fallback.into());
    name.push(".keys");
    data_dir.with_file_name(name)
}

/// Whether `key_dir` lies outside `data_dir` and does not hold it, as the paths are
/// written (`prepare` checks again with links resolved).
pub fn apart(data_dir: &Path, key_dir: &Path) -> bool {
    !key_dir.starts_with(data_dir) && !data_dir.starts_with(key_dir)
}

/// The file naming the node whose keys a key directory holds.
const OWNER_FILE: &str = "store";

/// Makes the key directory (0700; one readable by others is refused) for node `owner`
/// (a store id, `hub`), and moves into it each key of `legacy` (where an older version
/// kept it, and its name in the key directory) found there. The directory must lie
/// outside the data directory (checked on the real paths, links resolved) and belong
/// to this node (two nodes never share keys). Returns the key directory.
pub fn prepare(
    data_dir: &Path,
    key_dir: &Path,
    owner: &str,
    legacy: &[(PathBuf, &str)],
) -> anyhow::Result<PathBuf> {
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
    let marker = key_dir.join(OWNER_FILE);
    match std::fs::read_to_string(&marker) {
        Ok(held) if held.trim() == owner => {}
        Ok(held) => bail!(
            "the key directory {} holds {}'s keys, not {owner}'s",
            key_dir.display(),
            held.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&marker, format!("{owner}\n"))?;
        }
        Err(e) => return Err(e.into()),
    }
    for (old, name) in legacy {
        if old.exists() {
            move_key(old, &key_dir.join(name))?;
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
        write_secret(to, &bytes)?;
    }
    std::fs::remove_file(from)?;
    if let Some(dir) = from.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a key file only its owner may read (mode 0600 or stricter; one others may
/// read is refused: the key is no longer the node's alone). `missing` says, when the
/// file does not exist, where it comes from.
pub fn read_secret(path: &Path, missing: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("reading {} ({missing})", path.display()))?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        bail!("{} must be mode 0600", path.display());
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes a key file whole or not at all (a torn one would stop its node from
/// starting): a 0600 copy beside it, synced and renamed into place, the directory
/// synced.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(data: &Path) -> Vec<(PathBuf, &'static str)> {
        vec![
            (data.join("edge.key"), "edge.key"),
            (data.join("chain.key"), "chain.key"),
            (data.join("tls/lan.key"), "lan.key"),
        ]
    }

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
        prepare(&data, &keys, "S001", &legacy(&data)).unwrap_or_else(|e| panic!("{e:#}"));
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
        prepare(&data, &keys, "S001", &legacy(&data)).unwrap_or_else(|e| panic!("{e:#}"));
        // A different key in both places: refused, neither touched.
        std::fs::write(data.join("edge.key"), "other").unwrap_or_else(|e| panic!("{e}"));
        assert!(prepare(&data, &keys, "S001", &legacy(&data)).is_err());
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        assert_eq!(read(keys.join("edge.key")).as_deref(), Some("edge"));
        assert_eq!(read(data.join("edge.key")).as_deref(), Some("other"));
        // The same key in both places (a move cut short after its copy): the old goes.
        std::fs::write(data.join("edge.key"), "edge").unwrap_or_else(|e| panic!("{e}"));
        prepare(&data, &keys, "S001", &legacy(&data)).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!data.join("edge.key").exists());
        // Another store's edge given this key directory is refused.
        let e = prepare(&data, &keys, "S002", &legacy(&data))
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|m| m.contains("S001")), "{e:?}");
        // A key directory reached through a link into the data directory is refused.
        let inside = data.join("keys-inside");
        std::fs::create_dir_all(&inside).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{e}"));
        let link = root.path().join("innocent-keys");
        std::os::unix::fs::symlink(&inside, &link).unwrap_or_else(|e| panic!("{e}"));
        let e = prepare(&data, &link, "S001", &legacy(&data))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("inside the data directory")),
            "{e:?}"
        );
        // A key directory others may read is refused.
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(prepare(&data, &keys, "S001", &legacy(&data)).is_err());
    }
}
