//! The points ledger as lots: the derivation lives in `patron_protocol::points`, shared
//! with the hub (which authorizes redemptions over the same numbers).

pub use patron_protocol::points::*;
