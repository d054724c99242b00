//! What a lookup may show: the rule that decides between a masked and a full member,
//! the masking itself, and the per-lane lookup budget.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use patron_protocol::pos::{LookupPurpose, Member};

/// How much of a member a lookup shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disclosure {
    /// No birthday; the name shortened to its first character.
    Masked,
    /// The whole profile.
    Full,
}

impl Disclosure {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Disclosure::Masked => "masked",
            Disclosure::Full => "full",
        }
    }
}

/// Who is asking, as far as disclosure is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A POS lane: identifies members at sales.
    Lane,
    /// A cashier: sales, and member service at the desk.
    Cashier,
    /// The store's manager or administrator.
    Admin,
}

/// What `asker` sees for `purpose`. A sale needs no birthday and no full name (the
/// promotions that use the birthday are priced by the edge, not the POS); member
/// service needs the profile it corrects, and only staff give it; administration
/// sees everything it is accountable for.
pub fn disclosure(asker: Asker, purpose: LookupPurpose) -> Disclosure {
    match (asker, purpose) {
        (Asker::Admin, _) | (Asker::Cashier, LookupPurpose::Service) => Disclosure::Full,
        (Asker::Lane, _) | (Asker::Cashier, LookupPurpose::Sale) => Disclosure::Masked,
    }
}

/// The purpose's stored name.
pub fn purpose_str(p: LookupPurpose) -> &'static str {
    match p {
        LookupPurpose::Sale => "sale",
        LookupPurpose::Service => "service",
    }
}

/// `name` shortened to its first character, the rest as one `*` each: `张三丰` → `张**`.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

/// `member` as `d` lets it be shown.
pub fn disclose(mut member: Member, d: Disclosure) -> Member {
    if d == Disclosure::Masked {
        member.name = member.name.as_deref().map(mask_name);
        member.birthday = None;
    }
    member
}

/// Lookups each lane may make: a bucket of `per_minute` that refills continuously.
/// In memory: a restart refills every bucket, which gives a lane no more than one
/// extra minute's worth.
#[derive(Debug)]
pub struct LookupBudget {
    per_minute: u32,
    buckets: std::sync::Mutex<HashMap<i64, (f64, Instant)>>,
}

impl LookupBudget {
    /// `per_minute` lookups a lane (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Default::default(),
        }
    }

    /// Takes one lookup from `lane`'s bucket at `now`; when it is empty, how long until
    /// it holds one again.
    pub fn take(&self, lane: i64, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let per_sec = cap / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets.entry(lane).or_insert((cap, now));
        let refilled =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(cap);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_staff_at_the_desk_and_administrators_see_the_whole_profile() {
        use Asker::*;
        use LookupPurpose::*;
        assert_eq!(disclosure(Lane, Sale), Disclosure::Masked);
        assert_eq!(disclosure(Lane, Service), Disclosure::Masked);
        assert_eq!(disclosure(Cashier, Sale), Disclosure::Masked);
        assert_eq!(disclosure(Cashier, Service), Disclosure::Full);
        assert_eq!(disclosure(Admin, Sale), Disclosure::Full);
    }

    #[test]
    fn names_keep_their_first_character_only() {
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name("Li"), "L*");
        assert_eq!(mask_name("王"), "王");
        assert_eq!(mask_name(""), "");
    }

    #[test]
    fn a_lane_s_budget_empties_refills_and_is_its_own() {
        let b = LookupBudget::new(60);
        let t0 = Instant::now();
        for i in 0..60 {
            assert!(b.take(1, t0).is_ok(), "lookup {i} of the first minute");
        }
        let wait = b.take(1, t0).err();
        assert!(
            matches!(wait, Some(w) if w > Duration::from_millis(900) && w <= Duration::from_secs(1)),
            "{wait:?}"
        );
        assert!(b.take(2, t0).is_ok(), "another lane has its own budget");
        // One a second comes back, and no more than the bucket holds.
        assert!(b.take(1, t0 + Duration::from_millis(1_100)).is_ok());
        assert!(b.take(1, t0 + Duration::from_millis(1_100)).is_err());
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..60 {
            assert!(b.take(1, later).is_ok());
        }
        assert!(
            b.take(1, later).is_err(),
            "an hour's rest fills one minute's bucket"
        );
        assert!(LookupBudget::new(0).take(1, t0).is_ok(), "0: unlimited");
    }
}
