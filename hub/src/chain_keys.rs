//! The chain's member keys: one blind-index key for phones and one key that wraps each
//! member's data key, the same at every store. Stores receive them at enrollment, over
//! the pinned TLS channel, so a phone registered at two stores has one index the hub can
//! match (duplicate members) and a store can read a member another store registered
//! (members fetched on demand). The hub itself never decrypts a member: it only hands
//! the keys to enrolled stores.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};

/// The key file in the hub's data directory (0600).
pub const CHAIN_KEY_FILE: &str = "chain.key";
const MAGIC: &[u8; 8] = b"PATRONC1";
/// Two 256-bit keys.
pub const KEYS_LEN: usize = 64;

/// The chain keys as enrollment hands them out (base64), created on first use.
pub fn load_or_create(dir: &Path) -> Result<String> {
    let path = dir.join(CHAIN_KEY_FILE);
    let bytes = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let mut buf = MAGIC.to_vec();
            let mut keys = [0u8; KEYS_LEN];
            SystemRandom::new()
                .fill(&mut keys)
                .map_err(|_| anyhow::anyhow!("no randomness available"))?;
            buf.extend_from_slice(&keys);
            f.write_all(&buf)?;
            f.sync_all()?;
            buf
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut f = std::fs::File::open(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if f.metadata()?.permissions().mode() & 0o077 != 0 {
                bail!("{} must be mode 0600", path.display());
            }
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            buf
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    if bytes.len() != MAGIC.len() + KEYS_LEN || &bytes[..MAGIC.len()] != MAGIC {
        bail!("{} is not a Patron chain key file", path.display());
    }
    Ok(B64.encode(&bytes[MAGIC.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = load_or_create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let b = load_or_create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert_eq!(B64.decode(&a).map(|k| k.len()).ok(), Some(KEYS_LEN));
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(load_or_create(other.path()).ok(), Some(a));
        let mode = std::fs::metadata(dir.path().join(CHAIN_KEY_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
    }
}
