//! The hub's member keys, and the translation between stores that keeps them there.
//!
//! Each store indexes phones and wraps its members' data keys under two keys of its
//! own, which the hub derives from a root secret only it holds (`stores.key`) and hands
//! to the store at enrollment. No store can open another store's members or invert
//! another store's phone index. The hub opens what a store pushes (a registration's
//! wrapped data key, and with it the sealed phone), computes the phone's index under
//! the chain's key (`chain.key`, now the hub's alone) to match one phone registered at
//! two stores, and keeps the data key wrapped under the chain's key. When a store
//! receives a member another store registered (a fetch by phone, the stream), the hub
//! re-wraps the data key and indexes the phone under that store's keys, and stops
//! doing so for a revoked store: its keys open no member it did not hold by then.
//!
//! Stores enrolled when every store was handed the chain's keys keep them
//! ([`CHAIN`]): for them the chain's keys are their keys, and the hub translates
//! for them the same way (docs/keys.md, "Migration").
//!
//! Ciphertexts are `nonce ‖ ciphertext ‖ tag` with the member and field as associated
//! data, as the edge writes them (`patron_edge::crypto`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// The root secret the stores' keys are derived from (hub key directory, 0600).
pub const STORES_KEY_FILE: &str = "stores.key";
const MAGIC: &[u8; 8] = b"PATRONR1";
const KEY_LEN: usize = 32;

/// Which keys a store holds: [`CHAIN`] (the chain's, as every store got them before
/// keys were per store), or generation `n >= 1` of keys of its own. A rotation moves a
/// store to the next generation (from [`CHAIN`]: to 1).
pub type Generation = u32;

/// The chain's keys, as a store's generation.
pub const CHAIN: Generation = 0;

/// A member's data key as the hub keeps it: wrapped under the chain's key, with the
/// member's sealed phone (under the data key), from which any store's index follows.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldKey {
    /// The member (UUID).
    pub member: uuid::Uuid,
    /// The data key wrapped under the chain's wrapping key.
    pub wrapped: Vec<u8>,
    /// The phone sealed under the data key, as the registration carries it.
    pub phone: Vec<u8>,
}

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKey")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

/// What the hub learns from a registration or re-key it can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The phone's index under the chain's key (base64).
    pub chain_index: String,
    /// The key to keep.
    pub held: HeldKey,
}

/// Index and wrapping keys: the chain's, or one store's.
struct Pair {
    index: hmac::Key,
    wrap: LessSafeKey,
}

impl Pair {
    fn from_bytes(b: &[u8]) -> Option<Pair> {
        (b.len() == 2 * KEY_LEN).then_some(())?;
        Some(Pair {
            index: hmac::Key::new(hmac::HMAC_SHA256, &b[..KEY_LEN]),
            wrap: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &b[KEY_LEN..]).ok()?),
        })
    }
}

/// The hub's keys: the chain's pair and the root the stores' pairs come from.
pub struct Keyring {
    chain: Pair,
    /// The chain's pair as enrollment hands it to [`CHAIN`] stores (base64).
    chain_handout: Zeroizing<String>,
    root: hmac::Key,
    /// Signs member codes ([`patron_domain::member_code`]); derived from the root, so
    /// it needs no file of its own and every hub process with the root signs alike.
    member_codes: ring::signature::Ed25519KeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(<redacted>)")
    }
}

impl Keyring {
    /// The keyring from the chain's keys (base64, as [`crate::chain_keys::load`] reads
    /// them) and the root secret's 32 bytes.
    pub fn new(chain_keys_b64: &str, root: &[u8]) -> Result<Keyring> {
        let chain = Zeroizing::new(B64.decode(chain_keys_b64).context("chain keys")?);
        let chain = Pair::from_bytes(&chain).context("chain keys: 64 bytes")?;
        if root.len() != KEY_LEN {
            bail!("the stores' root key is {KEY_LEN} bytes");
        }
        let root = hmac::Key::new(hmac::HMAC_SHA256, root);
        let seed =
            Zeroizing::new(hmac::sign(&root, b"member-code-signing\0v1").as_ref()[..32].to_vec());
        let member_codes = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| anyhow::anyhow!("member code key: {e}"))?;
        Ok(Keyring {
            chain,
            chain_handout: Zeroizing::new(chain_keys_b64.to_string()),
            root,
            member_codes,
            rng: SystemRandom::new(),
        })
    }

    /// Loads the chain's keys and the root secret from `dir`, creating the root secret
    /// when `create_root` and it does not exist yet.
    pub fn load(dir: &Path, create_root: bool) -> Result<Keyring> {
        let chain = Zeroizing::new(crate::chain_keys::load(dir)?);
        let root = load_root(dir, create_root)?;
        Keyring::new(&chain, &root[..])
    }

    /// The public key stores check member codes with (base64, 32 bytes).
    pub fn member_code_key(&self) -> String {
        use ring::signature::KeyPair;
        B64.encode(self.member_codes.public_key().as_ref())
    }

    /// A member code for `member` valid until `expires_ms` (unix milliseconds).
    pub fn member_code(&self, member: &uuid::Uuid, expires_ms: u64) -> String {
        patron_domain::member_code::sign(&self.member_codes, member, expires_ms)
    }

    /// The keys of generation `generation` of store `store` (base64 of index key ‖
    /// wrapping key), as the store is handed them.
    pub fn handout(&self, store: &str, generation: Generation) -> String {
        match generation {
            CHAIN => self.chain_handout.to_string(),
            g => B64.encode(&self.store_bytes(store, g)[..]),
        }
    }

    fn store_bytes(&self, store: &str, generation: Generation) -> Zeroizing<[u8; 2 * KEY_LEN]> {
        let derive = |purpose: &str| {
            let mut ctx = hmac::Context::with_key(&self.root);
            ctx.update(purpose.as_bytes());
            ctx.update(&[0]);
            ctx.update(store.as_bytes());
            // The first generation is derived without one (as keys were before rotation).
            if generation > 1 {
                ctx.update(&[0]);
                ctx.update(&generation.to_be_bytes());
            }
            ctx.sign()
        };
        let mut out = Zeroizing::new([0u8; 2 * KEY_LEN]);
        out[..KEY_LEN].copy_from_slice(&derive("patron:store-index:v1").as_ref()[..KEY_LEN]);
        out[KEY_LEN..].copy_from_slice(&derive("patron:store-wrap:v1").as_ref()[..KEY_LEN]);
        out
    }

    fn pair_of(&self, store: &str, generation: Generation) -> Option<Pair> {
        match generation {
            CHAIN => None,
            g => Pair::from_bytes(&self.store_bytes(store, g)[..]),
        }
    }

    /// The phone's index under the chain's key: how the hub matches one phone
    /// registered at two stores, and finds a member a store asks for by phone.
    pub fn chain_index(&self, phone: &str) -> String {
        B64.encode(&hmac::sign(&self.chain.index, phone.as_bytes()).as_ref()[..32])
    }

    /// Opens a registration's or re-key's data key (`wrapped`, by store `store` under
    /// any of its generations up to `upto`, or the chain's) and the phone sealed under
    /// it: the phone's chain index, and the key to keep. `None` when none of those keys
    /// opens it (a member the store registered before it enrolled, under keys of its
    /// own) or no phone is sealed.
    pub fn open(
        &self,
        store: &str,
        upto: Generation,
        member: uuid::Uuid,
        wrapped: &[u8],
        phone_sealed: &[u8],
    ) -> Option<Opened> {
        let ad = aad(member.as_bytes(), "member-key");
        let raw = (1..=upto)
            .rev()
            .filter_map(|g| self.pair_of(store, g))
            .find_map(|p| open(&p.wrap, &ad, wrapped))
            .or_else(|| open(&self.chain.wrap, &ad, wrapped))?;
        let phone = open_with(&raw, &aad(member.as_bytes(), "phone"), phone_sealed)?;
        let phone = Zeroizing::new(String::from_utf8(phone.to_vec()).ok()?);
        let wrapped = seal(&self.chain.wrap, &self.rng, &ad, &raw)?;
        Some(Opened {
            chain_index: self.chain_index(&phone),
            held: HeldKey {
                member,
                wrapped,
                phone: phone_sealed.to_vec(),
            },
        })
    }

    /// A held member key translated for store `store`: the phone's index and the data
    /// key wrapped, under that store's keys of generation `generation`. `None` if the
    /// held key does not open (a corrupted row).
    pub fn deliver(
        &self,
        store: &str,
        generation: Generation,
        held: &HeldKey,
    ) -> Option<patron_sync::pull::MemberKeys> {
        let m = held.member.as_bytes();
        let ad = aad(m, "member-key");
        let raw = open(&self.chain.wrap, &ad, &held.wrapped)?;
        let phone = open_with(&raw, &aad(m, "phone"), &held.phone)?;
        let pair = self.pair_of(store, generation);
        let (index, wrap) = match &pair {
            Some(p) => (&p.index, &p.wrap),
            None => (&self.chain.index, &self.chain.wrap),
        };
        Some(patron_sync::pull::MemberKeys {
            member: held.member.to_string(),
            phone_idx: B64.encode(&hmac::sign(index, &phone).as_ref()[..32]),
            wrapped_key: B64.encode(seal(wrap, &self.rng, &ad, &raw)?),
        })
    }
}

/// Reads the root secret, creating it first if `create` and it does not exist.
fn load_root(dir: &Path, create: bool) -> Result<Zeroizing<Vec<u8>>> {
    let path = dir.join(STORES_KEY_FILE);
    if create && !path.exists() {
        let mut buf = Zeroizing::new(MAGIC.to_vec());
        let mut root = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut root[..])
            .map_err(|_| anyhow::anyhow!("no randomness available"))?;
        buf.extend_from_slice(&root[..]);
        patron_keydir::write_secret(&path, &buf)?;
    }
    let bytes = Zeroizing::new(patron_keydir::read_secret(
        &path,
        "restore it from a backup if it is lost: every store's keys follow from it",
    )?);
    if bytes.len() != MAGIC.len() + KEY_LEN || &bytes[..MAGIC.len()] != MAGIC {
        bail!("{} is not a Patron root key file", path.display());
    }
    Ok(Zeroizing::new(bytes[MAGIC.len()..].to_vec()))
}

fn aad(member: &[u8; 16], field: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + 1 + field.len());
    v.extend_from_slice(member);
    v.push(b'/');
    v.extend_from_slice(field.as_bytes());
    v
}

fn seal(key: &LessSafeKey, rng: &SystemRandom, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).ok()?;
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .ok()?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    Some(out)
}

fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(body.to_vec());
    let n = key
        .open_in_place(nonce, Aad::from(aad), &mut buf[..])
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

/// Opens `sealed` under a raw data key.
fn open_with(raw: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).ok()?);
    open(&key, aad, sealed)
}

/// Test helpers: what a store does with the keys it was handed.
#[cfg(test)]
pub mod store_side {
    use super::*;

    /// Registers `phone` as `member` the way a store holding `keys` (a handout) does:
    /// (phone index, wrapped data key, sealed phone).
    pub fn register(
        keys_b64: &str,
        member: uuid::Uuid,
        phone: &str,
    ) -> ([u8; 32], Vec<u8>, Vec<u8>) {
        let keys = B64.decode(keys_b64).unwrap_or_default();
        let pair = Pair::from_bytes(&keys).unwrap_or_else(|| panic!("a 64-byte handout"));
        let rng = SystemRandom::new();
        let mut raw = [0u8; KEY_LEN];
        rng.fill(&mut raw).unwrap_or_else(|_| panic!("random"));
        let m = member.as_bytes();
        let wrapped = seal(&pair.wrap, &rng, &aad(m, "member-key"), &raw).unwrap_or_default();
        let key =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).unwrap_or_else(|_| panic!("key")));
        let sealed = seal(&key, &rng, &aad(m, "phone"), phone.as_bytes()).unwrap_or_default();
        let mut idx = [0u8; 32];
        idx.copy_from_slice(&hmac::sign(&pair.index, phone.as_bytes()).as_ref()[..32]);
        (idx, wrapped, sealed)
    }

    /// The phone a store holding `keys` reads from a member's wrapped key and sealed
    /// phone, if its keys open them.
    pub fn read_phone(
        keys_b64: &str,
        member: uuid::Uuid,
        wrapped: &[u8],
        sealed: &[u8],
    ) -> Option<String> {
        let keys = B64.decode(keys_b64).ok()?;
        let pair = Pair::from_bytes(&keys)?;
        let m = member.as_bytes();
        let raw = open(&pair.wrap, &aad(m, "member-key"), wrapped)?;
        String::from_utf8(open_with(&raw, &aad(m, "phone"), sealed)?.to_vec()).ok()
    }

    /// The phone's index under a handout's index key (base64).
    pub fn index(keys_b64: &str, phone: &str) -> String {
        let keys = B64.decode(keys_b64).unwrap_or_default();
        let pair = Pair::from_bytes(&keys).unwrap_or_else(|| panic!("a 64-byte handout"));
        B64.encode(&hmac::sign(&pair.index, phone.as_bytes()).as_ref()[..32])
    }
}

#[cfg(test)]
mod tests {
    use super::store_side::*;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn keyring() -> Keyring {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        crate::chain_keys::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        Keyring::load(dir.path(), true).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_store_holds_keys_no_other_store_holds() {
        let k = keyring();
        let (a, b) = (k.handout("S001", 1), k.handout("S002", 1));
        assert_ne!(a, b);
        assert_eq!(a, k.handout("S001", 1), "derived, so stable");
        assert_ne!(a, k.handout("S001", CHAIN));
        assert_ne!(a, k.handout("S001", 2), "each generation its own");
        let m = uuid::Uuid::now_v7();
        let (idx_a, wrapped, sealed) = register(&a, m, "13800000001");
        // S002 can neither open S001's member nor find the phone under S001's index.
        assert_eq!(read_phone(&b, m, &wrapped, &sealed), None);
        assert_ne!(index(&b, "13800000001"), B64.encode(idx_a));
        assert_eq!(
            read_phone(&a, m, &wrapped, &sealed).as_deref(),
            Some("13800000001")
        );
    }

    #[test]
    fn the_hub_indexes_by_the_sealed_phone_and_translates_for_the_receiving_store() {
        let k = keyring();
        let a = k.handout("S001", 1);
        let b = k.handout("S002", 1);
        let m = uuid::Uuid::now_v7();
        let (_, wrapped, sealed) = register(&a, m, "13800000001");
        let opened = k
            .open("S001", 1, m, &wrapped, &sealed)
            .unwrap_or_else(|| panic!("the hub opens S001's registration"));
        assert_eq!(opened.chain_index, k.chain_index("13800000001"));
        // Another store's keys do not open it at the hub either: a store cannot pass
        // off another store's registration as its own.
        assert_eq!(k.open("S002", 1, m, &wrapped, &sealed), None);
        let got = k
            .deliver("S002", 1, &opened.held)
            .unwrap_or_else(|| panic!("delivered"));
        assert_eq!(got.phone_idx, index(&b, "13800000001"));
        let rewrapped = B64.decode(&got.wrapped_key).unwrap_or_default();
        assert_eq!(
            read_phone(&b, m, &rewrapped, &sealed).as_deref(),
            Some("13800000001")
        );
        assert_eq!(
            read_phone(&a, m, &rewrapped, &sealed),
            None,
            "under S002's keys only"
        );
        // A store holding the chain's keys gets them under the chain's.
        let chain = k.handout("S009", CHAIN);
        let got = k
            .deliver("S009", CHAIN, &opened.held)
            .unwrap_or_else(|| panic!("delivered"));
        assert_eq!(got.phone_idx, k.chain_index("13800000001"));
        assert_eq!(index(&chain, "13800000001"), k.chain_index("13800000001"));
    }

    #[test]
    fn a_registration_under_a_store_s_own_keys_is_not_opened() {
        let k = keyring();
        let m = uuid::Uuid::now_v7();
        let own = B64.encode([5u8; 64]);
        let (_, wrapped, sealed) = register(&own, m, "13800000001");
        assert_eq!(k.open("S001", 1, m, &wrapped, &sealed), None);
        // Bound to the member: a wrapped key moved to another member does not open.
        let a = k.handout("S001", 1);
        let (_, wrapped, sealed) = register(&a, m, "13800000001");
        assert_eq!(
            k.open("S001", 1, uuid::Uuid::now_v7(), &wrapped, &sealed),
            None
        );
    }

    #[test]
    fn the_root_is_created_once_kept_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        crate::chain_keys::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Keyring::load(dir.path(), false).is_err(),
            "not created without asking"
        );
        let a = Keyring::load(dir.path(), true).unwrap_or_else(|e| panic!("{e}"));
        let b = Keyring::load(dir.path(), true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.handout("S001", 1), b.handout("S001", 1));
        let path = dir.path().join(STORES_KEY_FILE);
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Keyring::load(dir.path(), true).is_err(),
            "refused when others may read it"
        );
    }
}
