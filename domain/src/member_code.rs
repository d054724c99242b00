//! Member codes: a short-lived proof that the member is at the counter, which any store
//! checks offline. The hub signs `(member, expiry)` with an Ed25519 key only it holds
//! (derived from its root secret); every store holds the public half. A screenshot stops
//! working when the code expires, and a store takes each code for one operation only
//! (the store records it): a code read over the member's shoulder is worth at most one
//! operation at another store, within its minutes.
//!
//! Text form: `PM1` followed by unpadded base64url of member id (16 bytes) ‖ expiry in
//! unix milliseconds (8 bytes, big-endian: two codes for one member differ unless
//! signed in the same millisecond) ‖ signature (64 bytes): 121 characters a
//! keyboard-wedge scanner types from a QR code.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use uuid::Uuid;

/// The text form's prefix (and version).
pub const PREFIX: &str = "PM1";
/// The longest a code may be valid: one the hub signed for longer is refused.
pub const MAX_VALID_SECS: u64 = 600;
/// How long codes are valid unless asked otherwise.
pub const DEFAULT_VALID_SECS: u64 = 120;
/// The public key's length.
pub const PUBLIC_KEY_LEN: usize = 32;
const DOMAIN: &[u8] = b"patron member code v1\0";
const RAW_LEN: usize = 16 + 8 + 64;

/// Why a code is refused (no code text in it: it is a bearer proof).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Not a member code.
    #[error("this is not a member code")]
    Malformed,
    /// Not signed by the hub's key.
    #[error("this member code was not issued by the chain")]
    Forged,
    /// Past its expiry.
    #[error("this member code has expired; ask the member to show a fresh one")]
    Expired,
    /// Valid for longer than any code the hub issues.
    #[error("this member code is valid for longer than codes are")]
    TooLong,
}

fn message(member: &Uuid, expires_ms: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 24);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(member.as_bytes());
    m.extend_from_slice(&expires_ms.to_be_bytes());
    m
}

/// Signs a code for `member` valid until `expires_ms` (unix milliseconds).
pub fn sign(key: &Ed25519KeyPair, member: &Uuid, expires_ms: u64) -> String {
    let sig = key.sign(&message(member, expires_ms));
    let mut raw = Vec::with_capacity(RAW_LEN);
    raw.extend_from_slice(member.as_bytes());
    raw.extend_from_slice(&expires_ms.to_be_bytes());
    raw.extend_from_slice(sig.as_ref());
    format!("{PREFIX}{}", B64.encode(raw))
}

/// A code checked: whose it is, and the bytes that identify it (to record its use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The member it proves present.
    pub member: Uuid,
    /// Its expiry (unix milliseconds): its record of use may go after it.
    pub expires_ms: u64,
    /// Its signature, which identifies this code.
    pub id: [u8; 64],
}

/// Checks `code` against the hub's public key at `now_ms` (unix milliseconds).
pub fn verify(public_key: &[u8], code: &str, now_ms: i64) -> Result<Checked, CodeError> {
    let body = code
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(CodeError::Malformed)?;
    let raw = B64.decode(body).map_err(|_| CodeError::Malformed)?;
    if raw.len() != RAW_LEN {
        return Err(CodeError::Malformed);
    }
    let member = Uuid::from_slice(&raw[..16]).map_err(|_| CodeError::Malformed)?;
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&raw[16..24]);
    let expires_ms = u64::from_be_bytes(exp);
    let mut id = [0u8; 64];
    id.copy_from_slice(&raw[24..]);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&message(&member, expires_ms), &id)
        .map_err(|_| CodeError::Forged)?;
    let now = u64::try_from(now_ms.max(0)).unwrap_or(0);
    if expires_ms <= now {
        return Err(CodeError::Expired);
    }
    if expires_ms - now > MAX_VALID_SECS * 1000 {
        return Err(CodeError::TooLong);
    }
    Ok(Checked {
        member,
        expires_ms,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    const NOW: i64 = 1_796_000_000_000;

    #[test]
    fn a_code_proves_its_member_until_it_expires_and_only_under_the_hub_s_key() {
        let (hub, other) = (key(1), key(2));
        let public = hub.public_key().as_ref().to_vec();
        let m = Uuid::from_u128(42);
        let code = sign(&hub, &m, 1_796_000_120_000);
        assert_eq!(code.len(), 121);
        let ok = verify(&public, &code, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ok.member, ok.expires_ms), (m, 1_796_000_120_000));
        assert_eq!(
            verify(&public, &format!(" {code}\n"), NOW).map(|c| c.member),
            Ok(m),
            "scanner whitespace"
        );
        assert_eq!(
            verify(&public, &code, 1_796_000_120_000),
            Err(CodeError::Expired)
        );
        let forged = sign(&other, &m, 1_796_000_120_000);
        assert_eq!(verify(&public, &forged, NOW), Err(CodeError::Forged));
        // Another member's code, or another expiry, under the same signature: forged.
        let mut raw = B64.decode(&code[3..]).unwrap_or_default();
        raw[15] ^= 1;
        assert_eq!(
            verify(&public, &format!("PM1{}", B64.encode(&raw)), NOW),
            Err(CodeError::Forged)
        );
        raw[15] ^= 1;
        raw[23] ^= 1;
        assert_eq!(
            verify(&public, &format!("PM1{}", B64.encode(&raw)), NOW),
            Err(CodeError::Forged)
        );
        let long = sign(&hub, &m, 1_796_000_000_000 + MAX_VALID_SECS * 1000 + 1);
        assert_eq!(verify(&public, &long, NOW), Err(CodeError::TooLong));
        for bad in [
            "",
            "PM1",
            "13800000000",
            &code[..60],
            &format!("PM2{}", &code[3..]),
        ] {
            assert_eq!(
                verify(&public, bad, NOW),
                Err(CodeError::Malformed),
                "{bad:?}"
            );
        }
    }
}
