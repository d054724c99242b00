//! Parsing of outside input into checked values. Every rule here is a documented
//! input contract of the POS API; a failure is an `invalid_request` with this message.

use time::Date;
use time::macros::format_description;

/// Most lines one basket may carry.
pub const MAX_LINES: usize = 200;
/// Largest quantity on one line.
pub const MAX_QTY: i64 = 100_000;
/// Largest unit price: ¥10,000,000.00.
pub const MAX_UNIT_PRICE: i64 = 1_000_000_000;
/// Largest basket subtotal: ¥100,000,000.00. Beyond it a basket is a typo, not a sale.
/// Rule sets hold no larger amount (one figure for both).
pub const MAX_SUBTOTAL: i64 = patron_domain::rules::MAX_MONEY;
/// Most points one request may move.
pub const MAX_POINTS: i64 = 1_000_000_000;

/// A mainland mobile number, 11 digits starting with 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    /// Accepts `13800138000`, `+86 138-0013-8000`, `86 13800138000`.
    pub fn parse(raw: &str) -> Result<Phone, String> {
        let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let digits = digits
            .strip_prefix("+86")
            .or_else(|| digits.strip_prefix("0086"))
            .or_else(|| {
                if digits.len() == 13 {
                    digits.strip_prefix("86")
                } else {
                    None
                }
            })
            .unwrap_or(&digits);
        let b = digits.as_bytes();
        if b.len() == 11
            && b.iter().all(u8::is_ascii_digit)
            && b[0] == b'1'
            && (b'3'..=b'9').contains(&b[1])
        {
            Ok(Phone(digits.to_string()))
        } else {
            Err("phone must be an 11-digit mainland mobile number, e.g. 13800138000".into())
        }
    }

    /// The normalized digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `138****8000`.
    pub fn masked(&self) -> String {
        format!("{}****{}", &self.0[..3], &self.0[7..])
    }
}

/// Masks a stored normalized phone; anything unexpected is fully hidden.
pub fn mask_phone(normalized: &str) -> String {
    match Phone::parse(normalized) {
        Ok(p) => p.masked(),
        Err(_) => "***********".into(),
    }
}

/// A person's name: 1–40 characters of letters (any script), combining marks, spaces
/// and `· . ' -`. Markup and statement punctuation (`< > ; ( ) = "`) are refused
/// because no name needs them and every downstream screen is safer without them.
pub fn name(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let n = trimmed.chars().count();
    let ok_char =
        |c: char| c.is_alphabetic() || is_mark(c) || matches!(c, ' ' | '·' | '.' | '\'' | '-');
    if n == 0 || n > 40 || !trimmed.chars().all(ok_char) {
        return Err("name must be 1-40 letters, spaces or · . ' -".into());
    }
    Ok(trimmed.to_string())
}

fn is_mark(c: char) -> bool {
    // Combining diacritical marks used by names in Latin and other scripts.
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// A birthday `YYYY-MM-DD`, between 1900-01-01 and `today`.
pub fn birthday(raw: &str, today: Date) -> Result<Date, String> {
    let fmt = format_description!("[year]-[month]-[day]");
    let d = Date::parse(raw, fmt).map_err(|_| "birthday must be a date YYYY-MM-DD".to_string())?;
    if d.year() < 1900 || d > today {
        return Err("birthday must be between 1900-01-01 and today".into());
    }
    Ok(d)
}

/// Renders a date as `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn token_like(raw: &str, max: usize, extra: &[char]) -> bool {
    !raw.is_empty()
        && raw.len() <= max
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// A store id: 1–16 of `A-Z a-z 0-9 - _`.
pub fn is_store_id(raw: &str) -> bool {
    token_like(raw, 16, &['-', '_'])
}

/// A POS receipt id: 1–64 of `A-Z a-z 0-9 - _ . / :`.
pub fn receipt_id(raw: &str) -> Result<String, String> {
    if token_like(raw, 64, &['-', '_', '.', '/', ':']) {
        Ok(raw.to_string())
    } else {
        Err("receipt_id must be 1-64 characters of A-Z, a-z, 0-9, - _ . / :".into())
    }
}

/// An `Idempotency-Key`: 1–128 visible ASCII characters.
pub fn idempotency_key(raw: &str) -> Result<String, String> {
    if !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(raw.to_string())
    } else {
        Err("Idempotency-Key must be 1-128 visible ASCII characters".into())
    }
}

/// A channel such as `store:S001:staff`: 1–64 of `A-Z a-z 0-9 : - _ .`.
pub fn channel(raw: &str) -> Result<String, String> {
    if token_like(raw, 64, &[':', '-', '_', '.']) {
        Ok(raw.to_string())
    } else {
        Err("channel must be 1-64 characters of A-Z, a-z, 0-9, : - _ .".into())
    }
}

/// A policy version such as `2026-01`: 1–32 of `A-Z a-z 0-9 - _ .`.
pub fn policy_version(raw: &str) -> Result<String, String> {
    if token_like(raw, 32, &['-', '_', '.']) {
        Ok(raw.to_string())
    } else {
        Err("consents.policy_version must be 1-32 characters of A-Z, a-z, 0-9, - _ .".into())
    }
}

/// A referral code, as `patron_domain::referral::parse_code` reads one
/// (case-insensitive).
pub fn referral_code(raw: &str) -> Result<String, String> {
    patron_domain::referral::parse_code(raw).map_err(|e| format!("referrer_code: {e}"))
}

/// Codes people read aloud (coupons, referrals) avoid look-alikes (0/O, 1/I/L).
pub const REFERRAL_ALPHABET: &[u8] = patron_domain::referral::ALPHABET;

/// A preference tag: 1–32 of `a-z 0-9 - _ :` (lower-cased).
pub fn tag(raw: &str) -> Result<String, String> {
    let t = raw.trim().to_ascii_lowercase();
    if token_like(&t, 32, &['-', '_', ':']) {
        Ok(t)
    } else {
        Err(format!(
            "tag {raw:?} must be 1-32 characters of a-z, 0-9, - _ :"
        ))
    }
}

/// Most preference tags one member may hold.
pub const MAX_TAGS: usize = 32;

/// A SKU or category: 1–64 printable characters without control codes.
pub fn sku(raw: &str, what: &str) -> Result<String, String> {
    if !raw.is_empty() && raw.chars().count() <= 64 && !raw.chars().any(char::is_control) {
        Ok(raw.to_string())
    } else {
        Err(format!("{what} must be 1-64 printable characters"))
    }
}

/// A free-text reason (redemptions): 1–128 printable characters.
pub fn reason(raw: &str) -> Result<String, String> {
    if !raw.trim().is_empty() && raw.chars().count() <= 128 && !raw.chars().any(char::is_control) {
        Ok(raw.to_string())
    } else {
        Err("reason must be 1-128 printable characters".into())
    }
}

/// A points amount moved by one request: 1..=MAX_POINTS.
pub fn points_amount(n: i64, what: &str) -> Result<i64, String> {
    if (1..=MAX_POINTS).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{what} must be between 1 and {MAX_POINTS}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn phones_are_normalized() {
        for raw in [
            "13800138000",
            "+86 138-0013-8000",
            "+8613800138000",
            "86 13800138000",
            "0086-138 0013 8000",
        ] {
            assert_eq!(
                Phone::parse(raw)
                    .map(|p| p.as_str().to_string())
                    .ok()
                    .as_deref(),
                Some("13800138000"),
                "{raw}"
            );
        }
        for raw in [
            "",
            "1380013800",
            "138001380001",
            "23800138000",
            "12800138000",
            "1380013800x",
            "+1 13800138000",
        ] {
            assert!(Phone::parse(raw).is_err(), "{raw}");
        }
        assert_eq!(
            Phone::parse("13800138000")
                .map(|p| p.masked())
                .ok()
                .as_deref(),
            Some("138****8000")
        );
    }

    #[test]
    fn names_allow_real_names_and_refuse_markup() {
        for ok in [
            "张三",
            "阿依古丽·买买提",
            "O'Brien",
            "José Núñez",
            "Anne-Marie",
        ] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "   ",
            "<script>alert(1)</script>",
            "x'); DROP TABLE members;--",
            "a=b",
            &"长".repeat(41),
            "tab\there",
        ] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn birthdays_are_dates_in_range() {
        let today = date!(2026 - 11 - 25);
        assert_eq!(
            birthday("1990-05-01", today).ok(),
            Some(date!(1990 - 05 - 01))
        );
        assert!(birthday("1990-02-30", today).is_err());
        assert!(birthday("2027-01-01", today).is_err());
        assert!(birthday("1899-12-31", today).is_err());
        assert!(birthday("01/05/1990", today).is_err());
    }

    #[test]
    fn ids_and_codes() {
        assert!(receipt_id("R-20261124-0001").is_ok());
        assert!(receipt_id("R 1").is_err());
        assert!(receipt_id(&"R".repeat(65)).is_err());
        assert_eq!(referral_code("ab23cd").ok().as_deref(), Some("AB23CD"));
        assert!(referral_code("AB12CD").is_err(), "1 is not in the alphabet");
        assert!(idempotency_key("k\n").is_err());
        assert_eq!(tag("Skincare").ok().as_deref(), Some("skincare"));
        assert!(points_amount(0, "points").is_err());
        assert!(points_amount(-5, "points").is_err());
    }
}
