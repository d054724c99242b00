//! Member fetches: a store asks the hub for a member it does not hold, by the phone's
//! chain-wide blind index. What follows once it holds them comes by the stream
//! ([`crate::stream`]).

use serde::{Deserialize, Serialize};

use crate::session::Fact;

/// A store asks the hub for a member it does not hold, by the phone's chain-wide blind
/// index (base64), in pages after hub position `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFetch {
    /// The phone's blind index under the chain's key (base64).
    pub phone_idx: String,
    /// Continue after this position (0: from the start).
    #[serde(default)]
    pub after: u64,
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
}
