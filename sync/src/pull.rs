//! Member fetches: a store asks the hub for a member it does not hold, by phone. What
//! follows once it holds them comes by the stream ([`crate::stream`]).
//!
//! A store indexes phones and wraps members' data keys under keys of its own, which
//! the hub derives and no other store holds (docs/keys.md). So a store sends the phone
//! itself (over the pinned TLS channel: the hub computes the chain-wide index and keeps
//! neither), and the hub answers with [`MemberKeys`]: each member's data key re-wrapped,
//! and the phone's index computed, under the asking store's keys.

use serde::{Deserialize, Serialize};

use crate::session::Fact;

/// A store asks the hub for a member it does not hold, in pages after hub position
/// `after`: by the phone (stores holding keys of their own), or by the phone's index
/// under the chain's key (stores enrolled when every store held that key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFetch {
    /// The phone's blind index under the keys the store holds (base64). A hub that
    /// gets the phone as well ignores it.
    pub phone_idx: String,
    /// The normalized phone number. The hub indexes it and forgets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Continue after this position (0: from the start).
    #[serde(default)]
    pub after: u64,
}

// The phone stays out of Debug output, and so out of any log that formats a fetch.
impl std::fmt::Debug for MemberFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberFetch")
            .field("phone", &self.phone.as_ref().map(|_| "<redacted>"))
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

/// A member's keys for the store that receives their facts: the phone's blind index
/// and the member's data key wrapped, both under that store's keys (base64).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberKeys {
    /// The member (UUID).
    pub member: String,
    /// The phone's index under the receiving store's index key.
    pub phone_idx: String,
    /// The member's data key wrapped under the receiving store's wrapping key.
    pub wrapped_key: String,
}

impl std::fmt::Debug for MemberKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberKeys")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

/// Every fact of the members registered under a phone, from every origin, in the order
/// the hub received them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedMember {
    /// The facts (none: no member has that phone, or none after `after`).
    pub facts: Vec<Fact>,
    /// The hub position of the last fact sent (`after` if none): ask after it next time
    /// for what came since.
    pub upto: u64,
    /// Whether more facts follow after `upto`.
    pub more: bool,
    /// The keys of the members whose registration or re-key the page carries, under
    /// the asking store's keys (absent from hubs that hand every store the chain's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<MemberKeys>,
}
