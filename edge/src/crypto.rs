//! Encryption of personal data at rest, and the keyed hashes that let us find it.
//!
//! The key file (`edge.key`, mode 0600, created at first start) holds three 256-bit
//! keys: the *master* key wraps each member's own data key (AES-256-GCM), so erasing a
//! member later is destroying one wrapped key (crypto-shredding); the *phone index*
//! key makes the blind index `HMAC-SHA256(key, normalized phone)` through which phones
//! are found without being stored; the *request* key hashes idempotent request bodies
//! (which may hold a phone) without making them brute-forceable.
//!
//! Once the store is enrolled with a hub it also holds the keys the hub handed it: a
//! phone-index key and a member-key wrapping key. The hub derives them for this store
//! alone (`store.key`) and can open what they wrap, so it matches one phone registered
//! at two stores and translates a member another store registered into this store's
//! keys when it sends them (docs/keys.md). Stores enrolled before keys were per store
//! hold the chain's keys instead (`chain.key`, the same at every such store). Members
//! this store registered before it enrolled keep their own index and wrapping until
//! they are re-keyed (`service::rekey`); lookups try both.
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
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const FILE_MAGIC: &[u8; 8] = b"PATRONK1";
const FILE_LEN: usize = FILE_MAGIC.len() + 3 * KEY_LEN;
const CHAIN_MAGIC: &[u8; 8] = b"PATRONC1";
const STORE_MAGIC: &[u8; 8] = b"PATRONS1";
/// A store key file that names its generation (after a rotation): magic, generation
/// (4 bytes, big-endian), then the keys.
const STORE_GEN_MAGIC: &[u8; 8] = b"PATRONS2";
/// The chain's keys in the key directory, at a store enrolled before keys were per
/// store.
pub const CHAIN_KEY_FILE: &str = "chain.key";
/// This store's own keys from the hub, in the key directory, once enrolled.
pub const STORE_KEY_FILE: &str = "store.key";
/// The keys as the hub hands them out: phone-index key, then wrapping key.
pub const CHAIN_KEYS_LEN: usize = 2 * KEY_LEN;

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
    /// The hub's keys on file are not the ones the hub handed out.
    #[error(
        "{0} holds other keys than the hub handed out: this store's members are wrapped under them"
    )]
    ChainKeysDiffer(String),
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
    /// The keys from the hub: the current generation and, while a rotation re-wraps
    /// what this store holds, the older ones (see [`HubKeys`]).
    chain: std::sync::RwLock<HubKeys>,
    rng: SystemRandom,
}

/// The keys the hub handed this store, by generation.
#[derive(Default)]
struct HubKeys {
    /// The current generation (0: the chain's keys), under which new members are
    /// written.
    current: Option<(u32, ChainKeys)>,
    /// Older generations: they still open rows a rotation has not re-wrapped yet.
    old: Vec<ChainKeys>,
}

impl HubKeys {
    fn current(&self) -> Option<&ChainKeys> {
        self.current.as_ref().map(|(_, k)| k)
    }

    /// Every generation held, the current first.
    fn all(&self) -> impl Iterator<Item = &ChainKeys> {
        self.current().into_iter().chain(&self.old)
    }
}

/// The keys the hub handed this store: its own, or the chain's (see the module).
struct ChainKeys {
    phone_index: hmac::Key,
    wrap: LessSafeKey,
}

impl ChainKeys {
    fn check(&self) -> String {
        hex::encode(tag32(hmac::sign(
            &self.phone_index,
            b"patron:chain-key-check:v1",
        )))
    }

    fn from_bytes(keys: &[u8]) -> Option<ChainKeys> {
        (keys.len() == CHAIN_KEYS_LEN).then_some(())?;
        Some(ChainKeys {
            phone_index: hmac::Key::new(hmac::HMAC_SHA256, &keys[..KEY_LEN]),
            wrap: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &keys[KEY_LEN..]).ok()?),
        })
    }
}

/// Saves the chain's keys the hub handed out at enrollment as `path` (mode 0600). An
/// existing file must hold the same keys: a store's members are wrapped under them.
pub fn save_chain_keys(path: &Path, keys: &[u8]) -> Result<(), CryptoError> {
    save_hub_keys(path, CHAIN_MAGIC, keys)
}

/// Saves this store's own keys the hub handed out at enrollment as `path` (mode
/// 0600), under the same rule as [`save_chain_keys`].
pub fn save_store_keys(path: &Path, keys: &[u8]) -> Result<(), CryptoError> {
    save_hub_keys(path, STORE_MAGIC, keys)
}

/// The file generation `generation` of this store's own keys lives in: `store.key`
/// for the first (as enrollment writes it), `store-<n>.key` after rotations.
pub fn store_key_file(generation: u32) -> String {
    match generation {
        0 => CHAIN_KEY_FILE.to_string(),
        1 => STORE_KEY_FILE.to_string(),
        g => format!("store-{g}.key"),
    }
}

/// Saves generation `generation` (1 and up) of this store's keys, from a rotation, in
/// `dir` (see [`store_key_file`]), whole or not at all. Generation 1 comes to a store
/// that held the chain's keys.
pub fn save_store_generation(dir: &Path, generation: u32, keys: &[u8]) -> Result<(), CryptoError> {
    let sync_dir = || {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| CryptoError::KeyFileIo {
                path: dir.display().to_string(),
                source,
            })
    };
    match generation {
        0 => return Err(CryptoError::KeyFileMalformed(store_key_file(generation))),
        1 => {
            save_store_keys(&dir.join(STORE_KEY_FILE), keys)?;
            return sync_dir();
        }
        _ => {}
    }
    let mut body = Zeroizing::new(generation.to_be_bytes().to_vec());
    body.extend_from_slice(keys);
    save_hub_keys_raw(
        &dir.join(store_key_file(generation)),
        STORE_GEN_MAGIC,
        &body,
        keys.len(),
    )?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CryptoError::KeyFileIo {
            path: dir.display().to_string(),
            source,
        })
}

/// The generations of this store's keys present in `dir`, newest first (0: the
/// chain's).
pub fn hub_key_generations(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            match name.as_str() {
                CHAIN_KEY_FILE => Some(0),
                STORE_KEY_FILE => Some(1),
                n => n.strip_prefix("store-")?.strip_suffix(".key")?.parse().ok(),
            }
        })
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found
}

fn save_hub_keys(path: &Path, magic: &[u8; 8], keys: &[u8]) -> Result<(), CryptoError> {
    save_hub_keys_raw(path, magic, keys, keys.len())
}

fn save_hub_keys_raw(
    path: &Path,
    magic: &[u8; 8],
    keys: &[u8],
    key_len: usize,
) -> Result<(), CryptoError> {
    let io = |source| CryptoError::KeyFileIo {
        path: path.display().to_string(),
        source,
    };
    if key_len != CHAIN_KEYS_LEN {
        return Err(CryptoError::KeyFileMalformed(path.display().to_string()));
    }
    let mut bytes = Zeroizing::new(magic.to_vec());
    bytes.extend_from_slice(keys);
    if path.exists() {
        return if *Zeroizing::new(read_key_file(path)?) == *bytes {
            Ok(())
        } else {
            Err(CryptoError::ChainKeysDiffer(path.display().to_string()))
        };
    }
    // Whole or not at all: a torn file would make every later enrollment refuse.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The generation and keys in a file of keys from the hub (any of its formats).
fn read_hub_keys(path: &Path) -> Result<(u32, ChainKeys), CryptoError> {
    let bad = || CryptoError::KeyFileMalformed(path.display().to_string());
    let bytes = Zeroizing::new(read_key_file(path)?);
    let (generation, keys) = if let Some(k) = bytes.strip_prefix(CHAIN_MAGIC.as_slice()) {
        (0, k)
    } else if let Some(k) = bytes.strip_prefix(STORE_MAGIC.as_slice()) {
        (1, k)
    } else if let Some(k) = bytes.strip_prefix(STORE_GEN_MAGIC.as_slice()) {
        let (g, k) = k.split_at_checked(4).ok_or_else(bad)?;
        (u32::from_be_bytes(g.try_into().map_err(|_| bad())?), k)
    } else {
        return Err(bad());
    };
    Ok((generation, ChainKeys::from_bytes(keys).ok_or_else(bad)?))
}

/// Reads a key file that only its owner may read.
fn read_key_file(path: &Path) -> Result<Vec<u8>, CryptoError> {
    let io = |source| CryptoError::KeyFileIo {
        path: path.display().to_string(),
        source,
    };
    let mut f = OpenOptions::new().read(true).open(path).map_err(io)?;
    let mode = f.metadata().map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(CryptoError::KeyFileMode(path.display().to_string()));
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
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
        // Key material is wiped from memory once the keys are built (ring's own key
        // schedules are not: they live as long as the vault).
        let bytes = Zeroizing::new(
            match OpenOptions::new()
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
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path)?,
                Err(e) => return Err(io(e)),
            },
        );
        Self::from_bytes(&bytes, rng)
            .ok_or_else(|| CryptoError::KeyFileMalformed(path.display().to_string()))
    }

    /// Adds the keys the hub handed out from `path` (this store's own or the chain's)
    /// if the store has them (it is enrolled), as the current generation.
    pub fn with_chain_keys_from(self, path: &Path) -> Result<Self, CryptoError> {
        if !path.exists() {
            return Ok(self);
        }
        let (generation, keys) = read_hub_keys(path)?;
        self.install(generation, keys);
        Ok(self)
    }

    /// Adds every generation of keys from the hub found in `dir`: the newest is
    /// current, the others open what a rotation has not re-wrapped yet.
    pub fn with_hub_keys_in(self, dir: &Path) -> Result<Self, CryptoError> {
        let mut generations = hub_key_generations(dir);
        generations.reverse();
        for g in generations {
            let (found, keys) = read_hub_keys(&dir.join(store_key_file(g)))?;
            if found != g {
                return Err(CryptoError::KeyFileMalformed(store_key_file(g)));
            }
            self.install(g, keys);
        }
        Ok(self)
    }

    /// Makes `keys` (generation `generation`) the current keys from the hub; the
    /// previous current ones stay as an older generation until [`Vault::drop_old`].
    fn install(&self, generation: u32, keys: ChainKeys) {
        let mut held = self.chain.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, prev)) = held.current.replace((generation, keys)) {
            held.old.push(prev);
        }
    }

    /// Takes generation `generation` of this store's keys from the hub (a rotation): saved
    /// in `dir` durably first, then current here. Older generations still open what
    /// they wrapped until the rotation has re-wrapped it.
    pub fn take_generation(
        &self,
        dir: &Path,
        generation: u32,
        keys: &[u8],
    ) -> Result<(), CryptoError> {
        let parsed = ChainKeys::from_bytes(keys)
            .ok_or_else(|| CryptoError::KeyFileMalformed(store_key_file(generation)))?;
        save_store_generation(dir, generation, keys)?;
        self.install(generation, parsed);
        Ok(())
    }

    /// Forgets every generation but the current one (a rotation is complete); the
    /// caller deletes their files.
    pub fn drop_old(&self) {
        self.chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .old
            .clear();
    }

    /// The generation of the current keys from the hub (0: the chain's), if any.
    pub fn key_generation(&self) -> Option<u32> {
        self.chain
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .as_ref()
            .map(|(g, _)| *g)
    }

    /// Whether older generations are still held (a rotation is under way).
    pub fn rotating(&self) -> bool {
        !self
            .chain
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .old
            .is_empty()
    }

    /// Whether the store holds keys from the hub.
    pub fn has_chain_keys(&self) -> bool {
        self.key_generation().is_some()
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
            chain: Default::default(),
            rng,
        })
    }

    fn hub_keys(&self) -> std::sync::RwLockReadGuard<'_, HubKeys> {
        self.chain.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The blind index a new member's phone is stored under: under the current keys
    /// from the hub once the store holds them, else this store's own.
    pub fn phone_index(&self, normalized_phone: &str) -> [u8; 32] {
        let held = self.hub_keys();
        let key = held.current().map_or(&self.phone_index, |c| &c.phone_index);
        tag32(hmac::sign(key, normalized_phone.as_bytes()))
    }

    /// Every index a phone may be stored under here: under each generation of keys
    /// from the hub held (the current first; older ones while a rotation re-wraps), and
    /// this store's own for members registered before it enrolled.
    pub fn phone_indexes(&self, normalized_phone: &str) -> Vec<[u8; 32]> {
        let held = self.hub_keys();
        held.all()
            .map(|c| &c.phone_index)
            .chain(std::iter::once(&self.phone_index))
            .map(|k| tag32(hmac::sign(k, normalized_phone.as_bytes())))
            .collect()
    }

    /// A value that tells this key file from any other without revealing a key: the
    /// database keeps it, so an edge started with the wrong key directory (or fresh
    /// keys after the real ones were lost) refuses to run instead of writing new members
    /// under keys the old ones were not written under.
    pub fn key_check(&self) -> String {
        hex::encode(self.request_hash("patron:key-check:v1", &[]))
    }

    /// Like [`Vault::key_check`], for the current keys from the hub once the store
    /// holds them.
    pub fn chain_key_check(&self) -> Option<String> {
        self.hub_keys().current().map(ChainKeys::check)
    }

    /// [`Vault::chain_key_check`] of every generation held, the current first: a
    /// database written under an older one is at a rotation not yet complete.
    pub fn hub_key_checks(&self) -> Vec<String> {
        self.hub_keys().all().map(ChainKeys::check).collect()
    }

    /// The key the database is encrypted under at rest (SQLCipher), derived from this
    /// store's own keys: whoever has the data directory without the key directory reads
    /// nothing of it.
    pub fn database_key(&self) -> patron_sqlite::connect::DbKey {
        patron_sqlite::connect::DbKey::new(tag32(hmac::sign(
            &self.request,
            b"patron:database-key:v1",
        )))
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
        let raw = Zeroizing::new(self.random::<KEY_LEN>()?);
        let held = self.hub_keys();
        let wrapping = held.current().map_or(&self.master, |c| &c.wrap);
        let wrapped = seal(wrapping, &self.rng, &aad(member, "member-key"), &*raw)?;
        let key = UnboundKey::new(&AES_256_GCM, &*raw).map_err(|_| CryptoError::Open)?;
        Ok((MemberKey(LessSafeKey::new(key)), wrapped))
    }

    /// Unwraps a stored member data key (wrapped under a generation of keys from the
    /// hub this store holds, or under this store's own for a member registered here
    /// before the store enrolled).
    pub fn member_key(&self, member: &[u8; 16], wrapped: &[u8]) -> Result<MemberKey, CryptoError> {
        let raw = self.open_member_key(member, wrapped)?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| CryptoError::Open)?;
        Ok(MemberKey(LessSafeKey::new(key)))
    }

    fn open_member_key(
        &self,
        member: &[u8; 16],
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let ad = aad(member, "member-key");
        let held = self.hub_keys();
        let raw = held
            .all()
            .find_map(|c| open(&c.wrap, &ad, wrapped).ok())
            .map_or_else(|| open(&self.master, &ad, wrapped), Ok)?;
        Ok(Zeroizing::new(raw))
    }

    /// A member data key wrapped under anything but the current keys from the hub
    /// (this store's own, for a member registered here before it enrolled; an older
    /// generation, during a rotation), wrapped again under the current ones; None when
    /// it is under them already or the store holds no keys from the hub. Fails for a key
    /// this store cannot open (another store's member, not translated for it).
    pub fn rewrap_for_chain(
        &self,
        member: &[u8; 16],
        wrapped: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let held = self.hub_keys();
        let Some(c) = held.current() else {
            return Ok(None);
        };
        let ad = aad(member, "member-key");
        if open(&c.wrap, &ad, wrapped).is_ok() {
            return Ok(None);
        }
        let raw = held
            .old
            .iter()
            .find_map(|o| open(&o.wrap, &ad, wrapped).ok())
            .map_or_else(|| open(&self.master, &ad, wrapped), Ok)?;
        let raw = Zeroizing::new(raw);
        Ok(Some(seal(&c.wrap, &self.rng, &ad, &raw)?))
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

    /// Two stores with the chain's keys index a phone alike and read each other's
    /// members; a member one of them wrapped before it enrolled stays readable there.
    #[test]
    fn stores_with_the_chain_keys_share_phone_indexes_and_members() {
        let (d1, v1) = vault();
        let (d2, v2) = vault();
        let early = *b"member-0000000e1";
        let (k_early, w_early) = v1.new_member_key(&early).unwrap_or_else(|e| panic!("{e}"));
        let sealed = v1
            .seal_field(&k_early, &early, "name", "Li")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(v1.phone_index("13800138000"), v2.phone_index("13800138000"));
        let keys = [7u8; CHAIN_KEYS_LEN];
        let mut chained = Vec::new();
        for d in [&d1, &d2] {
            let path = d.path().join("chain.key");
            save_chain_keys(&path, &keys).unwrap_or_else(|e| panic!("{e}"));
            save_chain_keys(&path, &keys).unwrap_or_else(|e| panic!("saving again: {e}"));
            assert!(matches!(
                save_chain_keys(&path, &[8u8; CHAIN_KEYS_LEN]),
                Err(CryptoError::ChainKeysDiffer(_))
            ));
            let v = Vault::open_or_create(&d.path().join("edge.key"))
                .and_then(|v| v.with_chain_keys_from(&path))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(v.has_chain_keys());
            chained.push(v);
        }
        let (c1, c2) = (&chained[0], &chained[1]);
        assert_eq!(c1.phone_index("13800138000"), c2.phone_index("13800138000"));
        assert_eq!(
            c1.phone_indexes("13800138000"),
            vec![c1.phone_index("13800138000"), v1.phone_index("13800138000")]
        );
        let m = *b"member-000000001";
        let (k, wrapped) = c1.new_member_key(&m).unwrap_or_else(|e| panic!("{e}"));
        let name = c1
            .seal_field(&k, &m, "name", "Wang")
            .unwrap_or_else(|e| panic!("{e}"));
        let k2 = c2
            .member_key(&m, &wrapped)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c2.open_field(&k2, &m, "name", &name).ok().as_deref(),
            Some("Wang")
        );
        assert!(
            v2.member_key(&m, &wrapped).is_err(),
            "the store key alone cannot unwrap it"
        );
        let k_early = c1
            .member_key(&early, &w_early)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c1.open_field(&k_early, &early, "name", &sealed)
                .ok()
                .as_deref(),
            Some("Li")
        );
        assert!(c2.member_key(&early, &w_early).is_err());
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
