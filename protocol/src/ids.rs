//! Identifiers. Member and transaction ids are UUIDv7: unique without coordination
//! (stores mint them offline) and time-ordered, so they append to B-trees instead of
//! landing on random pages (see `shared/PERFORMANCE-NOTES.md`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh time-ordered (v7) id.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            /// The 16 raw bytes, as stored in SQLite.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Rebuilds an id from 16 raw bytes.
            pub fn from_bytes(b: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(b))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A member, minted where the member registered. The phone is never the identity.
    MemberId
);
uuid_id!(
    /// A committed sale, refund or redemption.
    TransactionId
);

/// Where a fact was created: a store (or the hub) in one incarnation of its database.
///
/// The incarnation changes whenever a database is restored from backup or cloned, so
/// a restored store never reuses a `(origin, seq)` pair it had already handed out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The store id (`S001`) or `hub`.
    pub node: String,
    /// Random id of this database's incarnation.
    pub incarnation: Uuid,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.incarnation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_ids_sort_by_creation() {
        let a = MemberId::new_v7();
        let b = MemberId::new_v7();
        assert!(a < b);
        assert_eq!(MemberId::from_bytes(*a.as_bytes()), a);
        assert_eq!(a.to_string().parse::<MemberId>().ok(), Some(a));
    }
}
