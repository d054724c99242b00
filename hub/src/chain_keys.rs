//! The chain's member keys: one blind-index key for phones and one key that wraps each
//! member's data key. The hub indexes every phone under the first (so a phone
//! registered at two stores is one member) and keeps members' data keys under the
//! second ([`crate::keyring`]). Stores enrolled before keys were per store were handed
//! them too and keep them; every other store gets keys of its own.

use std::path::Path;

use anyhow::{Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};

/// The key file in the hub's data directory (0600).
pub const CHAIN_KEY_FILE: &str = "chain.key";
const MAGIC: &[u8; 8] = b"PATRONC1";
/// Two 256-bit keys.
pub const KEYS_LEN: usize = 64;

/// Creates the chain keys (`patron-hub init`); refuses if they exist.
pub fn create(dir: &Path) -> Result<()> {
    let path = dir.join(CHAIN_KEY_FILE);
    if path.exists() {
        bail!("{} exists: stores hold these keys already", path.display());
    }
    let mut keys = [0u8; KEYS_LEN];
    SystemRandom::new()
        .fill(&mut keys)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    let mut buf = zeroize::Zeroizing::new(MAGIC.to_vec());
    buf.extend_from_slice(&keys);
    zeroize::Zeroize::zeroize(&mut keys);
    patron_keydir::write_secret(&path, &buf)
}

/// The chain keys (base64). Never created here: keys that went missing must come back
/// from a backup, as new ones would split the chain (every member's key is wrapped
/// under them, and older stores hold them).
pub fn load(dir: &Path) -> Result<String> {
    let path = dir.join(CHAIN_KEY_FILE);
    let bytes = zeroize::Zeroizing::new(patron_keydir::read_secret(
        &path,
        "created by `patron-hub init`; restore it from a backup if it is lost",
    )?);
    if bytes.len() != MAGIC.len() + KEYS_LEN || &bytes[..MAGIC.len()] != MAGIC {
        bail!("{} is not a Patron chain key file", path.display());
    }
    Ok(B64.encode(&bytes[MAGIC.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(load(dir.path()).is_err(), "never created by loading");
        create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(create(dir.path()).is_err(), "never replaced");
        let a = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(dir.path()).ok(), Some(a.clone()));
        assert_eq!(B64.decode(&a).map(|k| k.len()).ok(), Some(KEYS_LEN));
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        create(other.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(load(other.path()).ok(), Some(a));
        let mode = std::fs::metadata(dir.path().join(CHAIN_KEY_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
    }
}
