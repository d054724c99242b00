//! Budgets per caller: a token bucket for each key (a lane, a store) that holds up to
//! `capacity` and refills continuously. In memory, in this process: a restart refills
//! every bucket, which gives a caller at most one extra bucketful.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// A token bucket per key.
#[derive(Debug)]
pub struct Buckets<K> {
    capacity: f64,
    per_ms: f64,
    /// (tokens left, when last counted in ms; never goes back).
    buckets: Mutex<HashMap<K, (f64, i64)>>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    /// Buckets of `capacity` that refill completely in `refill` (a capacity of 0: no
    /// limit).
    pub fn new(capacity: u32, refill: Duration) -> Self {
        let ms = refill.as_millis().max(1) as f64;
        Self {
            capacity: f64::from(capacity),
            per_ms: f64::from(capacity) / ms,
            buckets: Mutex::default(),
        }
    }

    /// `per_minute` a minute, a minute's worth at once.
    pub fn per_minute(per_minute: u32) -> Self {
        Self::new(per_minute, Duration::from_secs(60))
    }

    fn unlimited(&self) -> bool {
        self.capacity == 0.0
    }

    /// The bucket of `key` refilled to `now_ms` (a clock that went back refills nothing).
    fn refill<'a>(
        &self,
        b: &'a mut HashMap<K, (f64, i64)>,
        key: &K,
        now_ms: i64,
    ) -> &'a mut (f64, i64) {
        let e = b.entry(key.clone()).or_insert((self.capacity, now_ms));
        let elapsed = now_ms.saturating_sub(e.1).max(0) as f64;
        e.0 = (e.0 + elapsed * self.per_ms).min(self.capacity);
        e.1 = e.1.max(now_ms);
        e
    }

    /// Takes one from `key`'s bucket at `now_ms`; when it is empty, how long until it
    /// holds one again.
    pub fn take(&self, key: &K, now_ms: i64) -> Result<(), Duration> {
        if self.unlimited() {
            return Ok(());
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let e = self.refill(&mut b, key, now_ms);
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_millis(
                ((1.0 - e.0) / self.per_ms).ceil() as u64
            ))
        }
    }

    /// Whole tokens left in `key`'s bucket at `now_ms` (`u32::MAX` without a limit).
    pub fn left(&self, key: &K, now_ms: i64) -> u32 {
        if self.unlimited() {
            return u32::MAX;
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b, key, now_ms).0.max(0.0) as u32
    }

    /// Takes up to `n` from `key`'s bucket (what it holds, if less).
    pub fn charge(&self, key: &K, n: u32, now_ms: i64) {
        if self.unlimited() {
            return;
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let e = self.refill(&mut b, key, now_ms);
        e.0 = (e.0 - f64::from(n)).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_is_its_callers_own() {
        let b = Buckets::per_minute(3);
        for _ in 0..3 {
            assert_eq!(b.take(&"S001", 0), Ok(()));
        }
        assert_eq!(
            b.take(&"S001", 0),
            Err(Duration::from_secs(20)),
            "one in 20 s"
        );
        assert_eq!(
            b.take(&"S002", 0),
            Ok(()),
            "another caller's bucket is full"
        );
        assert_eq!(b.take(&"S001", 19_999), Err(Duration::from_millis(1)));
        assert_eq!(b.take(&"S001", 20_000), Ok(()));
        assert_eq!(
            b.left(&"S001", 3_600_000),
            3,
            "an hour's rest fills one bucket only"
        );
        b.charge(&"S001", 5, 3_600_000);
        assert_eq!(b.left(&"S001", 3_600_000), 0);
        assert!(
            b.take(&"S001", 1_000).is_err(),
            "a clock gone back refills nothing"
        );
        let none = Buckets::per_minute(0);
        assert_eq!(none.take(&1, 0), Ok(()));
        assert_eq!(none.left(&1, 0), u32::MAX);
    }

    #[test]
    fn a_short_refill_allows_bursts_up_to_the_capacity() {
        let b = Buckets::new(10, Duration::from_secs(1));
        for _ in 0..10 {
            assert_eq!(b.take(&(), 0), Ok(()));
        }
        assert_eq!(b.take(&(), 0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&(), 100), Ok(()));
    }
}
