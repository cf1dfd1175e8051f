//! Comparison prefixes (`eq ne gt lt ge le sa eb ap`) and how a date
//! or a number matches a searched value with one: dates as intervals of
//! their precision, numbers within the precision they are written with
//! (R4 search.html, "prefixes"). Shared by plain and composite criteria.

use crate::http::outcome::FhirError;
use crate::instant::parse_interval;

/// A comparison prefix of a date, number or quantity value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prefix {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Sa,
    Eb,
    Ap,
}

pub(super) fn split_prefix(v: &str) -> (Prefix, &str) {
    let (p, rest) = v.split_at_checked(2).unwrap_or(("", v));
    match p {
        "eq" => (Prefix::Eq, rest),
        "ne" => (Prefix::Ne, rest),
        "gt" => (Prefix::Gt, rest),
        "ge" => (Prefix::Ge, rest),
        "lt" => (Prefix::Lt, rest),
        "le" => (Prefix::Le, rest),
        "sa" => (Prefix::Sa, rest),
        "eb" => (Prefix::Eb, rest),
        "ap" => (Prefix::Ap, rest),
        _ => (Prefix::Eq, v),
    }
}

/// Whether the target interval `t` matches the search interval `s` (R4
/// semantics for date ranges). `ap` allows 10% of the distance from `now`
/// (R4's suggestion), at least the search value's own range.
pub(super) fn date_matches(prefix: Prefix, t: (i64, i64), s: (i64, i64), now: i64) -> bool {
    match prefix {
        Prefix::Eq => t.0 >= s.0 && t.1 <= s.1,
        Prefix::Ne => !(t.0 >= s.0 && t.1 <= s.1),
        Prefix::Gt => t.1 > s.1,
        Prefix::Ge => t.1 > s.0,
        Prefix::Lt => t.0 < s.0,
        Prefix::Le => t.0 < s.1,
        Prefix::Sa => t.0 >= s.1,
        Prefix::Eb => t.1 <= s.0,
        Prefix::Ap => {
            let mid = s.0 / 2 + s.1 / 2;
            let tol = (now.saturating_sub(mid).unsigned_abs() / 10).min(i64::MAX as u64) as i64;
            t.0 < s.1.saturating_add(tol) && t.1 > s.0.saturating_sub(tol)
        }
    }
}

pub(super) fn date_value(v: &str) -> Result<(Prefix, (i64, i64)), FhirError> {
    let (prefix, text) = split_prefix(v);
    let interval = parse_interval(text)
        .ok_or_else(|| FhirError::invalid(format!("{text:?} is not a FHIR date")))?;
    Ok((prefix, interval))
}

/// A number as searched: its value and half the unit of its last digit
/// (`100` is `[99.5, 100.5)`, `1.50` is `[1.495, 1.505)`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Number {
    prefix: Prefix,
    value: f64,
    half: f64,
}

impl Number {
    /// The same search in other units: its value and its precision's
    /// half-width converted.
    pub(super) fn converted(self, value: impl Fn(f64) -> f64, half: impl Fn(f64) -> f64) -> Number {
        Number {
            prefix: self.prefix,
            value: value(self.value),
            half: half(self.half),
        }
    }
}

pub(super) fn number_value(v: &str) -> Result<Number, FhirError> {
    let (prefix, text) = split_prefix(v);
    let bad = || FhirError::invalid(format!("{text:?} is not a number"));
    let value: f64 = text.parse().map_err(|_| bad())?;
    if !value.is_finite() || text.starts_with(['+', '.']) || text.contains(['i', 'n', 'I', 'N']) {
        return Err(bad());
    }
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| bad())?),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    let half = 0.5 * 10f64.powi(exp - decimals);
    Ok(Number {
        prefix,
        value,
        half,
    })
}

/// Whether a target number matches (R4: the search value's precision
/// makes `eq` a range; the other prefixes compare with the value).
pub(super) fn number_matches(n: Number, t: f64) -> bool {
    let lo = n.value - n.half;
    let hi = n.value + n.half;
    match n.prefix {
        Prefix::Eq => t >= lo && t < hi,
        Prefix::Ne => !(t >= lo && t < hi),
        Prefix::Gt | Prefix::Sa => t > n.value,
        Prefix::Ge => t >= lo,
        Prefix::Lt | Prefix::Eb => t < n.value,
        Prefix::Le => t < hi,
        // 10% of the value, with room for the rounding of binary floats.
        Prefix::Ap => (t - n.value).abs() <= (n.value.abs() * 0.1).max(n.half) * (1.0 + 1e-9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> (i64, i64) {
        parse_interval(s).expect("a date")
    }

    #[test]
    fn date_prefixes_follow_r4_range_semantics() {
        let now = d("2026-01-01").0;
        let m = |p, t, s| date_matches(p, t, s, now);
        let day = d("2024-03-05");
        let hour = d("2024-03-05T10:00:00Z");
        assert!(m(Prefix::Eq, hour, day));
        assert!(!m(Prefix::Eq, day, hour));
        assert!(m(Prefix::Gt, d("2024-03-06"), day));
        assert!(m(Prefix::Lt, d("2024-03-04"), day));
        assert!(m(Prefix::Ge, day, day) && m(Prefix::Le, day, day));
        assert!(!m(Prefix::Ne, hour, day));
        // Starts after the search range ends; ends before it starts.
        assert!(m(Prefix::Sa, d("2024-03-06"), day) && !m(Prefix::Sa, hour, day));
        assert!(m(Prefix::Eb, d("2024-03-04"), day) && !m(Prefix::Eb, hour, day));
        // Approximately: within 10% of the distance to now (about 65 days).
        assert!(m(Prefix::Ap, d("2024-04-20"), day));
        assert!(!m(Prefix::Ap, d("2024-09-01"), day));
        assert_eq!(split_prefix("sa2024"), (Prefix::Sa, "2024"));
        assert_eq!(split_prefix("2024"), (Prefix::Eq, "2024"));
    }

    #[test]
    fn numbers_match_within_the_precision_they_are_written_with() {
        let n = |s: &str| number_value(s).expect("a number");
        assert!(number_matches(n("100"), 99.5) && number_matches(n("100"), 100.4));
        assert!(!number_matches(n("100"), 100.5) && !number_matches(n("100.0"), 100.2));
        assert!(number_matches(n("1e2"), 140.0) && !number_matches(n("1e2"), 160.0));
        assert!(number_matches(n("gt100"), 100.1) && !number_matches(n("gt100"), 100.0));
        assert!(number_matches(n("le100"), 100.4) && !number_matches(n("lt100"), 100.0));
        assert!(number_matches(n("ap100"), 109.0) && !number_matches(n("ap100"), 111.0));
        assert!(number_matches(n("ne100"), 101.0) && !number_matches(n("ne100"), 100.0));
        for bad in ["", "abc", "1e", "NaN", "inf", "1.2.3", "+1", "eq"] {
            assert!(number_value(bad).is_err(), "{bad}");
        }
    }
}
