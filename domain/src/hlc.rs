//! The stamp of a profile change: a hybrid-logical-clock reading and the node that
//! wrote it. The clock itself lives in `patron_sync::hlc`; the stamp is here because
//! member facts carry it.

use serde::{Deserialize, Serialize};

/// A stamp: compare by (wall, counter, node) — total and the same on every replica.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch (the largest seen).
    pub wall: u64,
    /// Events within the same `wall`.
    pub counter: u32,
    /// The writing node, to break ties deterministically.
    pub node: String,
}
