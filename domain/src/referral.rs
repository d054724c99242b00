//! Referral codes, unique across the chain, and how the hub settles a referral.
//!
//! A code is the registering store's id, a dash and six characters drawn at random
//! from an alphabet without look-alikes (`S001-7KQ3MX`). Store ids are unique across
//! the chain ignoring case (the hub refuses a store id that differs from another only
//! in case), and each store checks its own codes, so no two members get one code.
//! Codes written before codes named their store are six characters alone; they were
//! unique per store only, and the hub resolves such a code to the member whose
//! registration it received first (docs/referrals.md).
//!
//! A store credits a referrer it holds itself, counted as a chain-wide claim
//! (`crate::claims::ClaimKey::referral`). A friend whose referrer the store does not
//! hold gets a `referral_due` fact instead, and the hub settles it ([`settle`]) once
//! it knows the code's member: the same claim key, so a referral is credited once
//! whichever store saw it first.

/// Characters of the random part: no 0/O, 1/I/L, because people read codes aloud.
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// Random characters in a code.
pub const RANDOM_LEN: usize = 6;

/// Most points one due may credit (the hub's default limit for one fact; a rule set
/// may offer more, which the hub then quarantines).
pub const MAX_POINTS: i64 = 100_000;

/// Longest store id a code carries (as store ids are).
const MAX_STORE_LEN: usize = 16;

/// A new code for a member registered at store `store`, from six random bytes.
pub fn new_code(store: &str, random: [u8; RANDOM_LEN]) -> String {
    let tail: String = random
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{}-{tail}", store.to_ascii_uppercase())
}

/// A code as a person typed it, trimmed and upper-cased, or why it is not one: a
/// store id (1–16 of `A-Z 0-9 - _`), a dash and six characters of [`ALPHABET`]; or six
/// characters alone (codes written before codes named their store).
pub fn parse_code(raw: &str) -> Result<String, &'static str> {
    let up = raw.trim().to_ascii_uppercase();
    let random_ok = |s: &str| s.len() == RANDOM_LEN && s.bytes().all(|b| ALPHABET.contains(&b));
    let ok = match up.rsplit_once('-') {
        None => random_ok(&up),
        Some((store, tail)) => {
            !store.is_empty()
                && store.len() <= MAX_STORE_LEN
                && store
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && random_ok(tail)
        }
    };
    if ok {
        Ok(up)
    } else {
        Err("a referral code is a store id, a dash and 6 characters (or 6 characters)")
    }
}

/// What the hub does with a referral due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Credit the referrer these points, and count the claim.
    Credit(i64),
    /// No member has the code yet (their registration may still be on its way): the
    /// due waits for it.
    Pending,
    /// The friend is the referrer (the same person, or the same phone: the hub merges
    /// the members of one phone): nothing, ever.
    SelfReferral,
    /// The friend did not register with this code (a store naming another referrer,
    /// or a member who registered with none): nothing.
    NotReferred,
    /// The referrer was credited for this friend and event already (by a store that
    /// holds them, or an earlier due): nothing.
    AlreadyCredited,
    /// The due gives no points (the rule set gives none for the event): nothing.
    Nothing,
}

impl Settlement {
    /// The name the hub records the outcome under.
    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::Credit(_) => "credited",
            Settlement::Pending => "pending",
            Settlement::SelfReferral => "self_referral",
            Settlement::NotReferred => "not_referred",
            Settlement::AlreadyCredited => "already_credited",
            Settlement::Nothing => "nothing",
        }
    }
}

/// Settles a due of `points` from friend `friend` (the person's first id, after
/// merges) for a code whose member is `referrer` (likewise; `None`: nobody has the
/// code yet), when the friend registered with that code (`referred`) and `taken`
/// claims of this referral are counted or held for the referrer already.
pub fn settle(
    points: i64,
    friend: &str,
    referrer: Option<&str>,
    referred: bool,
    taken: i64,
) -> Settlement {
    let Some(referrer) = referrer else {
        return Settlement::Pending;
    };
    if referrer == friend {
        Settlement::SelfReferral
    } else if !referred {
        Settlement::NotReferred
    } else if taken >= 1 {
        Settlement::AlreadyCredited
    } else if points <= 0 {
        Settlement::Nothing
    } else {
        Settlement::Credit(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_codes_name_their_store_and_parse_back() {
        let code = new_code("s001", [0, 1, 30, 31, 62, 255]);
        assert_eq!(code, "S001-23Z229");
        assert_eq!(parse_code(&format!("  {} ", code.to_lowercase())), Ok(code));
        // A store id with a dash of its own still parses: the random part is last.
        let code = new_code("north-7", [5; 6]);
        assert_eq!(parse_code(&code), Ok("NORTH-7-777777".into()));
    }

    #[test]
    fn legacy_codes_parse_and_malformed_ones_are_refused() {
        assert_eq!(parse_code("abc234"), Ok("ABC234".into()));
        for bad in [
            "",
            "ABC23",
            "ABC2345",
            "ABC23O",
            "-ABC234",
            "S001-ABC23",
            "S001-ABC23I",
            "S0.1-ABC234",
            "ABCDEFGHIJKLMNOPQ-ABC234",
        ] {
            assert!(parse_code(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_due_is_credited_once_never_to_the_friend_and_waits_for_an_unknown_code() {
        assert_eq!(
            settle(100, "f", Some("r"), true, 0),
            Settlement::Credit(100)
        );
        assert_eq!(
            settle(100, "f", Some("r"), true, 1),
            Settlement::AlreadyCredited
        );
        assert_eq!(
            settle(100, "f", Some("f"), true, 0),
            Settlement::SelfReferral
        );
        assert_eq!(
            settle(100, "f", Some("r"), false, 0),
            Settlement::NotReferred
        );
        assert_eq!(settle(100, "f", None, true, 0), Settlement::Pending);
        assert_eq!(settle(0, "f", Some("r"), true, 0), Settlement::Nothing);
    }
}
