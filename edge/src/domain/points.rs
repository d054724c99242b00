//! The points ledger as lots: the derivation lives in `patron_domain::points`, shared
//! with the hub (which authorizes redemptions over the same numbers).

pub use patron_domain::points::*;
