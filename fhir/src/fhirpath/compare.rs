//! Equality (`=`), equivalence (`~`) and order (`<`…) of items and
//! collections, with the unit conversions quantities compare through.

use std::cmp::Ordering;

use super::FhirPathError;
use super::value::{Item, Temporal, TemporalKind};

/// Item equality (`=`): `None` when unknown (temporals of different
/// precision).
pub(super) fn item_equals(a: &Item, b: &Item) -> Option<bool> {
    if let (Item::Node(x, _), Item::Node(y, _)) = (a, b)
        && (x.is_object() || x.is_array())
    {
        return Some(x == y);
    }
    let (Some(x), Some(y)) = (a.system(), b.system()) else {
        return Some(false);
    };
    Some(match (&x, &y) {
        (Item::Boolean(p), Item::Boolean(q)) => p == q,
        (Item::String(p), Item::String(q)) => p == q,
        (Item::Integer(p), Item::Integer(q)) => p == q,
        (Item::Integer(_) | Item::Decimal(_), Item::Integer(_) | Item::Decimal(_)) => {
            decimal_eq(number(&x)?, number(&y)?)
        }
        (Item::Temporal(p), Item::Temporal(q)) => {
            if (p.kind == TemporalKind::Time) != (q.kind == TemporalKind::Time) {
                return Some(false);
            }
            return p.compare(q).map(|o| o.is_eq());
        }
        (Item::String(s), Item::Temporal(t)) | (Item::Temporal(t), Item::String(s)) => {
            let Some(p) = Temporal::parse(s, t.kind == TemporalKind::Time) else {
                return Some(false);
            };
            if (p.kind == TemporalKind::Time) != (t.kind == TemporalKind::Time) {
                return Some(false);
            }
            return p.compare(t).map(|o| o.is_eq());
        }
        (Item::Quantity(v, u), Item::Quantity(w, z)) => {
            match (canonical(*v, u), canonical(*w, z)) {
                (Some((a, d)), Some((b, e))) if d == e => decimal_eq(a, b),
                _ if unit_key(u) == unit_key(z) => decimal_eq(*v, *w),
                _ => false,
            }
        }
        _ => false,
    })
}

/// Decimals equal to the precision a decimal literal can show (binary
/// floating point makes `1.8 - 1.2` differ from `0.6` in the last bit).
pub(super) fn decimal_eq(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

/// A quantity in its dimension's base unit, for the UCUM units search
/// and the tests meet: mass, length, volume, and time (calendar weeks,
/// days, hours… but not months or years, which have no fixed length).
pub(super) fn canonical(v: f64, unit: &str) -> Option<(f64, &'static str)> {
    let (f, dim) = match unit {
        "kg" => (1e3, "g"),
        "g" => (1.0, "g"),
        "mg" => (1e-3, "g"),
        "ug" => (1e-6, "g"),
        "[lb_av]" => (453.592_37, "g"),
        "km" => (1e3, "m"),
        "m" => (1.0, "m"),
        "cm" => (1e-2, "m"),
        "mm" => (1e-3, "m"),
        "[in_i]" => (0.0254, "m"),
        "L" | "l" => (1.0, "L"),
        "dL" => (0.1, "L"),
        "mL" | "ml" => (1e-3, "L"),
        "wk" | "week" | "weeks" => (604_800.0, "s"),
        "d" | "day" | "days" => (86_400.0, "s"),
        "h" | "hour" | "hours" => (3_600.0, "s"),
        "min" | "minute" | "minutes" => (60.0, "s"),
        "s" | "second" | "seconds" => (1.0, "s"),
        "ms" | "millisecond" | "milliseconds" => (1e-3, "s"),
        _ => return None,
    };
    Some((v * f, dim))
}

/// Calendar words and their UCUM codes compare alike where exact.
pub(super) fn unit_key(u: &str) -> &str {
    match u {
        "year" | "years" => "a",
        "month" | "months" => "mo",
        "week" | "weeks" => "wk",
        "day" | "days" => "d",
        "hour" | "hours" => "h",
        "minute" | "minutes" => "min",
        "second" | "seconds" => "s",
        "millisecond" | "milliseconds" => "ms",
        other => other,
    }
}

pub(super) fn number(i: &Item) -> Option<f64> {
    match i {
        Item::Integer(v) => Some(*v as f64),
        Item::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// Equivalence (`~`) of two items.
pub(super) fn item_equivalent(a: &Item, b: &Item) -> bool {
    if let (Item::Node(x, _), Item::Node(y, _)) = (a, b)
        && (x.is_object() || x.is_array())
    {
        return x == y;
    }
    let (Some(x), Some(y)) = (a.system(), b.system()) else {
        return false;
    };
    match (&x, &y) {
        (Item::String(p), Item::String(q)) => normalize(p) == normalize(q),
        (Item::Integer(_) | Item::Decimal(_), Item::Integer(_) | Item::Decimal(_)) => {
            let (p, q) = (number(&x).unwrap_or(0.0), number(&y).unwrap_or(0.0));
            let digits = decimals(p).min(decimals(q));
            let f = 10f64.powi(digits as i32);
            (p * f).round() == (q * f).round()
        }
        (Item::Temporal(p), Item::Temporal(q)) => p.compare(q) == Some(Ordering::Equal),
        (Item::Quantity(v, u), Item::Quantity(w, z)) => {
            match (canonical(*v, u), canonical(*w, z)) {
                (Some((a, d)), Some((b, e))) if d == e => {
                    let digits = decimals(*v).min(decimals(*w));
                    let f = 10f64.powi(digits as i32);
                    (a * f).round() == (b * f).round()
                }
                _ => item_equals(&x, &y).unwrap_or(false),
            }
        }
        _ => item_equals(&x, &y).unwrap_or(false),
    }
}

pub(super) fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

pub(super) fn decimals(d: f64) -> usize {
    let s = format!("{d}");
    s.split_once('.').map_or(0, |(_, f)| f.len())
}

pub(super) fn collections_equal(a: &[Item], b: &[Item]) -> Option<bool> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    if a.len() != b.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (x, y) in a.iter().zip(b) {
        match item_equals(x, y) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

pub(super) fn collections_equivalent(a: &[Item], b: &[Item]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        if let Some(j) = (0..b.len()).find(|&j| !used[j] && item_equivalent(x, &b[j])) {
            used[j] = true;
            true
        } else {
            false
        }
    })
}

pub(super) fn compare(a: &Item, b: &Item) -> Result<Option<Ordering>, FhirPathError> {
    let (Some(x), Some(y)) = (a.system(), b.system()) else {
        return Err(FhirPathError::execution("only values can be compared"));
    };
    Ok(match (&x, &y) {
        (Item::String(p), Item::String(q)) => Some(p.cmp(q)),
        (Item::Integer(_) | Item::Decimal(_), Item::Integer(_) | Item::Decimal(_)) => number(&x)
            .zip(number(&y))
            .and_then(|(p, q)| p.partial_cmp(&q)),
        (Item::Temporal(p), Item::Temporal(q)) => p.compare(q),
        (Item::String(s), Item::Temporal(t)) => {
            Temporal::parse(s, t.kind == TemporalKind::Time).and_then(|p| p.compare(t))
        }
        (Item::Temporal(t), Item::String(s)) => {
            Temporal::parse(s, t.kind == TemporalKind::Time).and_then(|p| t.compare(&p))
        }
        (Item::Quantity(v, u), Item::Quantity(w, z)) => {
            match (canonical(*v, u), canonical(*w, z)) {
                (Some((a, d)), Some((b, e))) if d == e => a.partial_cmp(&b),
                _ if unit_key(u) == unit_key(z) => v.partial_cmp(w),
                _ => None,
            }
        }
        _ => return Err(FhirPathError::execution("these values cannot be compared")),
    })
}
