//! Encryption of personal data at rest, and the keyed hashes that let us find it.
//!
//! The key file (`edge.key`, mode 0600, created at first start) holds three 256-bit
//! keys: the *master* key wraps each member's own data key (AES-256-GCM), so erasing a
//! member later is destroying one wrapped key (crypto-shredding); the *phone index*
//! key makes the blind index `HMAC-SHA256(key, normalized phone)` through which phones
//! are found without being stored; the *request* key hashes idempotent request bodies
//! (which may hold a phone) without making them brute-forceable.
//!
//! Every ciphertext is `nonce (12 bytes) ‖ ciphertext ‖ tag`, with associated data that
//! binds it to its member and field, so a ciphertext cannot be moved to another row.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

const KEY_LEN: usize = 32;
const FILE_MAGIC: &[u8; 8] = b"PATRONK1";
const FILE_LEN: usize = FILE_MAGIC.len() + 3 * KEY_LEN;

/// Crypto failures. Messages never carry key or plaintext material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Reading or creating the key file failed.
    #[error("key file {path}: {source}")]
    KeyFileIo {
        /// The key file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but is not one of ours.
    #[error("key file {0} is malformed")]
    KeyFileMalformed(String),
    /// The key file may be read by others.
    #[error("key file {0} must be mode 0600 (readable by its owner only)")]
    KeyFileMode(String),
    /// The system random source failed.
    #[error("random source failed")]
    Random,
    /// A ciphertext did not authenticate: wrong key, wrong row, or corrupted.
    #[error("ciphertext failed to authenticate")]
    Open,
}

/// The edge's keys, loaded once at start.
pub struct Vault {
    master: LessSafeKey,
    phone_index: hmac::Key,
    request: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(<redacted>)")
    }
}

/// A member's own data key, unwrapped for the duration of one operation.
pub struct MemberKey(LessSafeKey);

impl Vault {
    /// Opens `path`, creating it with fresh random keys (mode 0600) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self, CryptoError> {
        let io = |source| CryptoError::KeyFileIo {
            path: path.display().to_string(),
            source,
        };
        let rng = SystemRandom::new();
        let bytes = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => {
                let mut buf = vec![0u8; FILE_LEN];
                buf[..FILE_MAGIC.len()].copy_from_slice(FILE_MAGIC);
                rng.fill(&mut buf[FILE_MAGIC.len()..])
                    .map_err(|_| CryptoError::Random)?;
                f.write_all(&buf).map_err(io)?;
                f.sync_all().map_err(io)?;
                buf
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut f = OpenOptions::new().read(true).open(path).map_err(io)?;
                let mode = f.metadata().map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(CryptoError::KeyFileMode(path.display().to_string()));
                }
                let mut buf = Vec::with_capacity(FILE_LEN);
                f.read_to_end(&mut buf).map_err(io)?;
                buf
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_bytes(&bytes, rng)
            .ok_or_else(|| CryptoError::KeyFileMalformed(path.display().to_string()))
    }

    fn from_bytes(bytes: &[u8], rng: SystemRandom) -> Option<Self> {
        if bytes.len() != FILE_LEN || &bytes[..FILE_MAGIC.len()] != FILE_MAGIC {
            return None;
        }
        let keys = &bytes[FILE_MAGIC.len()..];
        let master = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &keys[..KEY_LEN]).ok()?);
        Some(Self {
            master,
            phone_index: hmac::Key::new(hmac::HMAC_SHA256, &keys[KEY_LEN..2 * KEY_LEN]),
            request: hmac::Key::new(hmac::HMAC_SHA256, &keys[2 * KEY_LEN..]),
            rng,
        })
    }

    /// The blind index of a normalized phone number.
    pub fn phone_index(&self, normalized_phone: &str) -> [u8; 32] {
        tag32(hmac::sign(&self.phone_index, normalized_phone.as_bytes()))
    }

    /// A keyed hash of an idempotent request: its route and its exact body.
    pub fn request_hash(&self, route: &str, body: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.request);
        ctx.update(route.as_bytes());
        ctx.update(&[0]);
        ctx.update(body);
        tag32(ctx.sign())
    }

    /// Fresh random bytes.
    pub fn random<const N: usize>(&self) -> Result<[u8; N], CryptoError> {
        let mut b = [0u8; N];
        self.rng.fill(&mut b).map_err(|_| CryptoError::Random)?;
        Ok(b)
    }

    /// Makes a new member data key; returns it and its wrapped (storable) form.
    pub fn new_member_key(&self, member: &[u8; 16]) -> Result<(MemberKey, Vec<u8>), CryptoError> {
        let raw: [u8; KEY_LEN] = self.random()?;
        let wrapped = seal(&self.master, &self.rng, &aad(member, "member-key"), &raw)?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| CryptoError::Open)?;
        Ok((MemberKey(LessSafeKey::new(key)), wrapped))
    }

    /// Unwraps a stored member data key.
    pub fn member_key(&self, member: &[u8; 16], wrapped: &[u8]) -> Result<MemberKey, CryptoError> {
        let raw = open(&self.master, &aad(member, "member-key"), wrapped)?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| CryptoError::Open)?;
        Ok(MemberKey(LessSafeKey::new(key)))
    }

    /// Encrypts store-level data (e.g. a stored idempotent response) under the master key.
    pub fn seal_store(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal(&self.master, &self.rng, context.as_bytes(), plaintext)
    }

    /// Decrypts what [`Vault::seal_store`] produced.
    pub fn open_store(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open(&self.master, context.as_bytes(), sealed)
    }

    /// Encrypts one field of a member's profile under the member's key.
    pub fn seal_field(
        &self,
        key: &MemberKey,
        member: &[u8; 16],
        field: &str,
        value: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        seal(&key.0, &self.rng, &aad(member, field), value.as_bytes())
    }

    /// Decrypts one field of a member's profile.
    pub fn open_field(
        &self,
        key: &MemberKey,
        member: &[u8; 16],
        field: &str,
        sealed: &[u8],
    ) -> Result<String, CryptoError> {
        let bytes = open(&key.0, &aad(member, field), sealed)?;
        String::from_utf8(bytes).map_err(|_| CryptoError::Open)
    }
}

fn tag32(tag: hmac::Tag) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag.as_ref()[..32]);
    out
}

fn aad(member: &[u8; 16], field: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + 1 + field.len());
    v.extend_from_slice(member);
    v.push(b'/');
    v.extend_from_slice(field.as_bytes());
    v
}

fn seal(
    key: &LessSafeKey,
    rng: &SystemRandom,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Open)?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Open);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Open)?;
    let n = plain.len();
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir()
            .ok()
            .unwrap_or_else(|| panic!("tempdir"));
        let v = Vault::open_or_create(&dir.path().join("edge.key"));
        (dir, v.unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn key_file_is_created_private_and_reopened_with_the_same_keys() {
        let (dir, v) = vault();
        let path = dir.path().join("edge.key");
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));
        let again = Vault::open_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v.phone_index("13800138000"),
            again.phone_index("13800138000")
        );
        assert_ne!(v.phone_index("13800138000"), v.phone_index("13800138001"));
    }

    #[test]
    fn a_readable_key_file_is_refused() {
        let (dir, _v) = vault();
        let path = dir.path().join("edge.key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).ok();
        assert!(matches!(
            Vault::open_or_create(&path),
            Err(CryptoError::KeyFileMode(_))
        ));
    }

    #[test]
    fn fields_round_trip_and_are_bound_to_member_and_field() {
        let (_d, v) = vault();
        let m1 = [1u8; 16];
        let m2 = [2u8; 16];
        let (key, wrapped) = v.new_member_key(&m1).unwrap_or_else(|e| panic!("{e}"));
        let sealed = v
            .seal_field(&key, &m1, "name", "张三")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.windows(6).any(|w| w == "张三".as_bytes()));
        let key2 = v
            .member_key(&m1, &wrapped)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v.open_field(&key2, &m1, "name", &sealed).ok().as_deref(),
            Some("张三")
        );
        assert!(
            v.open_field(&key2, &m1, "phone", &sealed).is_err(),
            "another field"
        );
        assert!(
            v.open_field(&key2, &m2, "name", &sealed).is_err(),
            "another member"
        );
        assert!(
            v.member_key(&m2, &wrapped).is_err(),
            "a wrapped key moved to another member"
        );
    }
}
