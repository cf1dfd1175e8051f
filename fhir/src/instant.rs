//! FHIR `instant`/`dateTime` text to and from microseconds since the Unix
//! epoch, in UTC. Written here because it is small and exact.

/// Formats microseconds since the epoch as a FHIR instant, e.g.
/// `2026-11-26T13:02:02.123456Z`.
pub fn format_instant(us: u64) -> String {
    let secs = us / 1_000_000;
    let frac = us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Microseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// [`now_us`] unsigned, as the jobs record their times.
pub fn now_us_u64() -> u64 {
    u64::try_from(now_us()).unwrap_or(0)
}

/// The interval `[start, end)` in microseconds that a FHIR date, dateTime
/// or instant denotes: `2024` is the whole year, `2024-03-05T10:00Z` one
/// minute, and so on. A time without a zone is taken as UTC. `None` if the
/// text is not a valid FHIR date/time.
pub fn parse_interval(text: &str) -> Option<(i64, i64)> {
    let b = text.as_bytes();
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let year = num(b.get(0..4)?)?;
    if b.len() == 4 {
        return Some((
            days_to_us(days_from_civil(year, 1, 1)),
            days_to_us(days_from_civil(year + 1, 1, 1)),
        ));
    }
    if b.get(4) != Some(&b'-') {
        return None;
    }
    let month = num(b.get(5..7)?)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if b.len() == 7 {
        let (ny, nm) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        return Some((
            days_to_us(days_from_civil(year, month, 1)),
            days_to_us(days_from_civil(ny, nm, 1)),
        ));
    }
    if b.get(7) != Some(&b'-') {
        return None;
    }
    let day = num(b.get(8..10)?)?;
    if !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let day_start = days_to_us(days_from_civil(year, month, day));
    if b.len() == 10 {
        return Some((day_start, day_start + 86_400_000_000));
    }
    if b.get(10) != Some(&b'T') {
        return None;
    }
    let hour = num(b.get(11..13)?)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = num(b.get(14..16)?)?;
    let mut pos = 16;
    let mut second = 0;
    let mut frac_us = 0i64;
    let mut unit = 60_000_000i64; // a minute, unless seconds follow
    if b.get(pos) == Some(&b':') {
        second = num(b.get(pos + 1..pos + 3)?)?;
        pos += 3;
        unit = 1_000_000;
        if b.get(pos) == Some(&b'.') {
            let start = pos + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return None;
            }
            let digits = &text[start..end.min(start + 6)];
            let scale = 10i64.pow(6 - digits.len() as u32);
            frac_us = digits.parse::<i64>().ok()? * scale;
            unit = scale;
            pos = end;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset_us = match b.get(pos) {
        None => 0,
        Some(b'Z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let oh = num(&b[pos + 1..pos + 3])?;
            let om = num(&b[pos + 4..pos + 6])?;
            let o = (oh * 3600 + om * 60) * 1_000_000;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let start =
        day_start + ((hour * 3600 + minute * 60 + second) * 1_000_000) + frac_us - offset_us;
    Some((start, start + unit))
}

fn days_to_us(days: i64) -> i64 {
    days * 86_400_000_000
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_format_and_parse_back() {
        let us = 1_795_699_641_093_881;
        let text = format_instant(us);
        assert_eq!(text, "2026-11-26T13:27:21.093881Z");
        assert_eq!(parse_interval(&text), Some((us as i64, us as i64 + 1)));
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn partial_dates_are_intervals() {
        let (a, b) = parse_interval("2024").expect("year");
        assert_eq!(b - a, 366 * 86_400_000_000);
        let (a, b) = parse_interval("2024-02").expect("month");
        assert_eq!(b - a, 29 * 86_400_000_000);
        let (a, _) = parse_interval("2024-02-29T10:00:00+02:00").expect("zoned");
        let (z, _) = parse_interval("2024-02-29T08:00:00Z").expect("utc");
        assert_eq!(a, z);
        for bad in [
            "24",
            "2024-13",
            "2023-02-29",
            "2024-01-01T25:00",
            "2024-01-01T10:00+0200",
            "x",
        ] {
            assert_eq!(parse_interval(bad), None, "{bad}");
        }
    }
}
