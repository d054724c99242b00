//! Time as the store sees it: instants are unix milliseconds (UTC); days and months
//! are in the store's fixed UTC offset (mainland China has no daylight saving).

use time::{Date, Duration, Month, OffsetDateTime, Time, UtcOffset};

/// Unix time in milliseconds.
pub type Millis = i64;

/// Parses `+08:00` / `-05:30`.
pub fn parse_offset(raw: &str) -> Option<UtcOffset> {
    let (sign, rest) = match raw.as_bytes().first()? {
        b'+' => (1i8, &raw[1..]),
        b'-' => (-1i8, &raw[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

/// The store's calendar: converts instants to local dates and back.
#[derive(Debug, Clone, Copy)]
pub struct StoreCalendar {
    offset: UtcOffset,
}

impl StoreCalendar {
    /// A calendar in `offset`.
    pub fn new(offset: UtcOffset) -> Self {
        Self { offset }
    }

    fn local(&self, at: Millis) -> OffsetDateTime {
        let utc = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        utc.to_offset(self.offset)
    }

    /// The local date of an instant.
    pub fn date(&self, at: Millis) -> Date {
        self.local(at).date()
    }

    /// The last millisecond of local day `d` (23:59:59.999).
    pub fn end_of_day(&self, d: Date) -> Millis {
        let t = Time::from_hms_milli(23, 59, 59, 999).unwrap_or(Time::MIDNIGHT);
        let odt = d.with_time(t).assume_offset(self.offset);
        millis(odt)
    }

    /// The first millisecond of the local day of `at` (00:00:00.000).
    pub fn start_of_day(&self, at: Millis) -> Millis {
        millis(self.date(at).midnight().assume_offset(self.offset))
    }

    /// The same instant `months` calendar months later (or earlier, if negative); a day
    /// that does not exist in the target month becomes that month's last day.
    pub fn add_months(&self, at: Millis, months: i32) -> Millis {
        let local = self.local(at);
        let d = add_months_to_date(local.date(), months);
        millis(d.with_time(local.time()).assume_offset(self.offset))
    }

    /// Renders an instant as RFC 3339 in the store's offset, to the second.
    pub fn rfc3339(&self, at: Millis) -> String {
        let l = self.local(at);
        let off = self.offset;
        let (oh, om, _) = off.as_hms();
        let sign = if off.is_negative() { '-' } else { '+' };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}",
            l.year(),
            u8::from(l.month()),
            l.day(),
            l.hour(),
            l.minute(),
            l.second(),
            sign,
            oh.unsigned_abs(),
            om.unsigned_abs()
        )
    }
}

/// `d` plus `months` calendar months, clamped to the target month's last day.
pub fn add_months_to_date(d: Date, months: i32) -> Date {
    let total = d.year() * 12 + (i32::from(u8::from(d.month())) - 1) + months;
    let year = total.div_euclid(12);
    let month = Month::try_from((total.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
    let last = month.length(year);
    Date::from_calendar_date(year, month, d.day().min(last)).unwrap_or(d)
}

fn millis(odt: OffsetDateTime) -> Millis {
    (odt.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// Milliseconds in `days` days.
pub fn days(days: u32) -> Millis {
    Duration::days(i64::from(days)).whole_milliseconds() as Millis
}

/// Now, in unix milliseconds.
pub fn now_millis() -> Millis {
    millis(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn cn() -> StoreCalendar {
        StoreCalendar::new(parse_offset("+08:00").unwrap_or(UtcOffset::UTC))
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+08:00"), UtcOffset::from_hms(8, 0, 0).ok());
        assert_eq!(parse_offset("-05:30"), UtcOffset::from_hms(-5, -30, 0).ok());
        assert_eq!(parse_offset("08:00"), None);
        assert_eq!(parse_offset("+8"), None);
    }

    #[test]
    fn local_day_boundaries_follow_the_store_offset() {
        // 2026-11-24 17:00 UTC is already 2026-11-25 01:00 in Shanghai.
        let at = millis(datetime!(2026-11-24 17:00 UTC));
        assert_eq!(cn().date(at), date!(2026 - 11 - 25));
        let eod = cn().end_of_day(date!(2027 - 01 - 31));
        assert_eq!(cn().rfc3339(eod), "2027-01-31T23:59:59+08:00");
    }

    #[test]
    fn month_arithmetic_clamps_to_month_end() {
        assert_eq!(
            add_months_to_date(date!(2024 - 02 - 29), 12),
            date!(2025 - 02 - 28)
        );
        assert_eq!(
            add_months_to_date(date!(2026 - 01 - 31), 1),
            date!(2026 - 02 - 28)
        );
        assert_eq!(
            add_months_to_date(date!(2026 - 11 - 25), -12),
            date!(2025 - 11 - 25)
        );
        assert_eq!(
            add_months_to_date(date!(2026 - 12 - 15), 1),
            date!(2027 - 01 - 15)
        );
    }
}
