//! A member row's personal columns as derived from its profile CRDT
//! (`patron_sync::Profile`, built from the member's registration and update facts).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use patron_domain::Detail;
use patron_sync::profile::{self, Profile, ProfileOp};

/// What the row shows of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// Encrypted name.
    pub name_enc: Option<Vec<u8>>,
    /// Encrypted birthday.
    pub birthday_enc: Option<Vec<u8>>,
    /// Marketing consent.
    pub marketing: bool,
    /// Preference tags.
    pub tags: Vec<String>,
    /// The latest stamp's wall time of any field (ms; 0 if none).
    pub last_wall: i64,
}

/// The profile changes of a member fact with `detail`, written at `at` by store `node`.
pub fn fact_ops(detail: &Detail, at: i64, node: &str) -> Vec<ProfileOp> {
    profile::ops_of(detail, &profile::stamp_of(detail, at, node))
}

/// A field's value as the fact carried it (base64 ciphertext, or `true`/`false`).
pub fn value<'p>(p: &'p Profile, field: &str) -> Option<&'p [u8]> {
    p.fields.get(field).and_then(|w| w.value.as_deref())
}

/// A personal field's ciphertext.
pub fn ciphertext(p: &Profile, field: &str) -> Option<Vec<u8>> {
    value(p, field).and_then(|v| B64.decode(v).ok())
}

/// The row's view of `p`.
pub fn derive(p: &Profile) -> Derived {
    Derived {
        name_enc: ciphertext(p, "name"),
        birthday_enc: ciphertext(p, "birthday"),
        marketing: value(p, "marketing") == Some(b"true".as_slice()),
        tags: p.tags.tags(),
        last_wall: p
            .fields
            .values()
            .map(|w| i64::try_from(w.stamp.wall).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(0),
    }
}
