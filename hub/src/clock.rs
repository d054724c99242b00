//! The hub's clock: unix milliseconds, settable in tests.

use std::sync::Arc;

/// A clock every component shares (unix ms).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The current time in unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
