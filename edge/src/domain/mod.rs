//! Domain rules: pure functions and newtypes, no HTTP and no SQL.
//!
//! - [`validate`]: parsing of outside input (phones, names, dates, ids) into checked values.
//! - [`clock`]: store-local days, month arithmetic, RFC 3339 rendering.
//! - [`anomaly`]: a lane far above its usual day, or looking members up without selling.
//! - [`limits`]: what one sale and one lane in a day may earn, redeem, refund and give.
//! - [`points`]: the points ledger as lots with FIFO consumption and expiry.
//! - [`tiers`]: tier from qualifying spend in a rolling window.
//! - [`pricing`]: basket lines, their validation and subtotal, redemption steps.
//! - [`profile`]: a member row's personal columns from its profile CRDT.
//! - [`privacy`]: what a lookup may show, and masking.
//! - [`promo`]: promotion rule sets and the pure pricing engine.
//! - [`refund`]: proportional reversal of a receipt's money and points.

pub mod anomaly;
pub mod catalogue;
pub mod clock;
pub mod limits;
pub mod points;
pub mod pricing;
pub mod privacy;
pub mod profile;
pub mod promo;
pub mod refund;
pub mod tender;
pub mod tiers;
pub mod validate;
