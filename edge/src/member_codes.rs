//! The hub's public key for member codes ([`patron_domain::member_code`]), as this store
//! keeps it: handed over at enrollment or with a push answer, kept in the key directory
//! (`member-code.pub`), so the store checks codes while the hub is out of reach.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use patron_domain::member_code::{self, Checked, CodeError, PUBLIC_KEY_LEN};

/// The key's file in the key directory (base64 of 32 bytes).
pub const MEMBER_CODE_KEY_FILE: &str = "member-code.pub";

/// Why a member code was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefused {
    /// The store has no key to check codes with yet (not enrolled, or not synced since).
    #[error("this store cannot check member codes yet: it has not synced with the hub")]
    NoKey,
    /// The code itself.
    #[error("{0}")]
    Code(#[from] CodeError),
}

/// The key, once held.
#[derive(Debug)]
pub struct MemberCodes {
    file: PathBuf,
    key: RwLock<Option<Vec<u8>>>,
}

fn decode(b64: &str) -> anyhow::Result<Vec<u8>> {
    let key = B64.decode(b64.trim())?;
    anyhow::ensure!(
        key.len() == PUBLIC_KEY_LEN,
        "a member-code key is {PUBLIC_KEY_LEN} bytes"
    );
    Ok(key)
}

impl MemberCodes {
    /// The key kept in `key_dir`, if any.
    pub fn load(key_dir: &Path) -> anyhow::Result<MemberCodes> {
        let file = key_dir.join(MEMBER_CODE_KEY_FILE);
        let key = match std::fs::read_to_string(&file) {
            Ok(text) => Some(decode(&text).map_err(|e| e.context(file.display().to_string()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(anyhow::Error::from(e).context(file.display().to_string())),
        };
        Ok(MemberCodes {
            file,
            key: RwLock::new(key),
        })
    }

    /// Whether the key is held.
    pub fn held(&self) -> bool {
        self.key.read().is_ok_and(|k| k.is_some())
    }

    /// Keeps the key the hub handed over (base64), durably, then uses it.
    pub fn take(&self, b64: &str) -> anyhow::Result<()> {
        save(&self.file, b64)?;
        let key = decode(b64)?;
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(())
    }

    /// Checks `code` at `now_ms`.
    pub fn check(&self, code: &str, now_ms: i64) -> Result<Checked, CodeRefused> {
        let key = self.key.read().unwrap_or_else(|p| p.into_inner());
        let key = key.as_deref().ok_or(CodeRefused::NoKey)?;
        Ok(member_code::verify(key, code, now_ms)?)
    }
}

/// Writes the key (base64) to `file` atomically, after checking it is one.
pub fn save(file: &Path, b64: &str) -> anyhow::Result<()> {
    decode(b64)?;
    patron_keydir::write_secret(file, b64.trim().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn the_key_is_kept_across_a_restart_and_codes_are_refused_without_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pair = Ed25519KeyPair::from_seed_unchecked(&[3; 32]).unwrap_or_else(|e| panic!("{e}"));
        let m = uuid::Uuid::from_u128(5);
        let code = member_code::sign(&pair, &m, 2_000_000_000_000);
        let codes = MemberCodes::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!codes.held());
        assert_eq!(
            codes.check(&code, 1_999_999_999_000),
            Err(CodeRefused::NoKey)
        );
        assert!(codes.take("bm90IGEga2V5").is_err(), "not 32 bytes");
        assert!(!codes.held());
        codes
            .take(&B64.encode(pair.public_key().as_ref()))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let again = MemberCodes::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            again.check(&code, 1_999_999_999_000).map(|c| c.member),
            Ok(m)
        );
    }
}
