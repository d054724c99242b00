//! Manual points adjustments at the front desk: the reason codes, and the two-person
//! rule — an adjustment larger than the store's threshold waits until a manager other
//! than the person who asked for it approves it (maker-checker). Until staff accounts
//! exist (the cashier UI), a person is a lane token: the checker must be an `admin`
//! lane other than the maker's.

/// Why points are adjusted.
pub const REASONS: &[&str] = &[
    "goodwill",
    "correction",
    "complaint",
    "missing_purchase",
    "migration",
    "other",
];

/// Most points one adjustment moves, either way (the hub's limit for one fact).
pub const MAX_POINTS: i64 = 100_000;

/// The reason of the hub's own adjustment that settles a coupon used more than once
/// (`crate::claims::coupon_reuses`): written by the hub only, never asked for at a desk
/// (it is not one of [`REASONS`]).
pub const COUPON_REUSED: &str = "coupon_reused";

/// Who made a hub-written adjustment (`made_by`).
pub const MADE_BY_HUB: &str = "hub";

/// Longest reference (a ticket or receipt number) an adjustment carries.
pub const MAX_REFERENCE: usize = 64;

/// What a request asks for, or why it is refused: a non-zero number of points within
/// [`MAX_POINTS`], a reason of [`REASONS`], and a reference of at most
/// [`MAX_REFERENCE`] characters of `A-Z a-z 0-9 - _ . / #` (no free text: a note is
/// where personal data would creep in).
pub fn check(points: i64, reason: &str, reference: Option<&str>) -> Result<(), String> {
    // Not `abs()`: it overflows on i64::MIN, which a request can carry.
    if points == 0 || !(-MAX_POINTS..=MAX_POINTS).contains(&points) {
        return Err(format!("points must be non-zero and within ±{MAX_POINTS}"));
    }
    if !REASONS.contains(&reason) {
        return Err(format!("reason must be one of {}", REASONS.join(", ")));
    }
    if let Some(r) = reference
        && (r.is_empty()
            || r.len() > MAX_REFERENCE
            || !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./#".contains(&b)))
    {
        return Err(format!(
            "reference must be 1-{MAX_REFERENCE} characters of A-Z, a-z, 0-9, - _ . / #"
        ));
    }
    Ok(())
}

/// Whether an adjustment of `points` waits for a second person: when it would take
/// the points its maker moved without approval today (`unapproved_today`, either way)
/// past `approve_above`. Counted per maker and day, so splitting one adjustment into
/// small ones needs the approval all the same.
pub fn needs_approval(points: i64, approve_above: i64, unapproved_today: i64) -> bool {
    unapproved_today
        .unsigned_abs()
        .saturating_add(points.unsigned_abs())
        > approve_above.max(0).unsigned_abs()
}

/// Whether `checker` may approve or reject what `maker` asked for: a manager, and not
/// the same person.
pub fn may_decide(maker: i64, checker: i64, checker_is_manager: bool) -> Result<(), &'static str> {
    if !checker_is_manager {
        Err("only a manager approves or rejects an adjustment")
    } else if maker == checker {
        Err("the person who asked for an adjustment may not decide it")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_field_by_field() {
        assert!(check(100, "goodwill", None).is_ok());
        assert!(check(-100, "correction", Some("TICKET-42/7")).is_ok());
        assert!(check(MAX_POINTS, "other", None).is_ok());
        assert!(check(-MAX_POINTS, "other", None).is_ok());
        assert!(check(i64::MIN, "other", None).is_err(), "no overflow");
        assert!(check(i64::MAX, "other", None).is_err());
        for (points, reason, reference) in [
            (0, "goodwill", None),
            (MAX_POINTS + 1, "goodwill", None),
            (-MAX_POINTS - 1, "goodwill", None),
            (10, "because", None),
            (10, "goodwill", Some("")),
            (10, "goodwill", Some("张三 called")),
        ] {
            assert!(
                check(points, reason, reference).is_err(),
                "{points} {reason} {reference:?}"
            );
        }
        let long = "x".repeat(MAX_REFERENCE + 1);
        assert!(check(10, "goodwill", Some(&long)).is_err());
    }

    #[test]
    fn only_adjustments_above_the_threshold_wait_and_only_another_manager_decides() {
        assert!(!needs_approval(500, 500, 0));
        assert!(!needs_approval(-500, 500, 0));
        assert!(needs_approval(501, 500, 0));
        assert!(needs_approval(-501, 500, 0));
        // Split into small ones, the day's total decides.
        assert!(!needs_approval(100, 500, 400));
        assert!(needs_approval(101, 500, 400));
        assert!(
            needs_approval(-101, 500, 400),
            "taking counts as giving does"
        );
        assert!(
            needs_approval(1, 0, 0),
            "a threshold of 0: every adjustment waits"
        );
        assert!(may_decide(1, 2, true).is_ok());
        assert!(may_decide(1, 1, true).is_err(), "not the maker");
        assert!(may_decide(1, 2, false).is_err(), "not a cashier");
    }
}
