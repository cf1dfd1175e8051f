//! Arithmetic: numbers, strings, quantities, and dates and times moved
//! by calendar durations.

use super::FhirPathError;
use super::compare::{number, unit_key};
use super::ctx::{Out, single};
use super::value::{Item, Temporal, TemporalKind};
use crate::instant::{civil_from_days, days_from_civil, days_in_month};

pub(super) fn arithmetic<'a>(op: &str, l: &[Item<'a>], r: &[Item<'a>]) -> Out<'a> {
    let (Some(x), Some(y)) = (single(l)?, single(r)?) else {
        return Ok(Vec::new());
    };
    let (Some(x), Some(y)) = (x.system(), y.system()) else {
        return Err(FhirPathError::execution(format!("'{op}' needs values")));
    };
    Ok(match (&x, &y) {
        (Item::String(p), Item::String(q)) if op == "+" => vec![Item::String(format!("{p}{q}"))],
        (Item::Integer(p), Item::Integer(q)) => match op {
            "+" => p.checked_add(*q).map(Item::Integer).into_iter().collect(),
            "-" => p.checked_sub(*q).map(Item::Integer).into_iter().collect(),
            "*" => p.checked_mul(*q).map(Item::Integer).into_iter().collect(),
            "/" => {
                if *q == 0 {
                    Vec::new()
                } else {
                    vec![Item::Decimal(*p as f64 / *q as f64)]
                }
            }
            "div" => p.checked_div(*q).map(Item::Integer).into_iter().collect(),
            _ => p.checked_rem(*q).map(Item::Integer).into_iter().collect(),
        },
        (Item::Integer(_) | Item::Decimal(_), Item::Integer(_) | Item::Decimal(_)) => {
            let (p, q) = (number(&x).unwrap_or(0.0), number(&y).unwrap_or(0.0));
            match op {
                "+" => vec![Item::Decimal(p + q)],
                "-" => vec![Item::Decimal(p - q)],
                "*" => vec![Item::Decimal(p * q)],
                _ if q == 0.0 => Vec::new(),
                "/" => vec![Item::Decimal(p / q)],
                "div" => vec![Item::Integer((p / q).trunc() as i64)],
                _ => vec![Item::Decimal(p % q)],
            }
        }
        (Item::Quantity(v, u), Item::Quantity(w, z)) if matches!(op, "+" | "-") => {
            if unit_key(u) != unit_key(z) {
                return Err(FhirPathError::execution(format!(
                    "cannot add '{u}' and '{z}'"
                )));
            }
            vec![Item::Quantity(
                if op == "+" { v + w } else { v - w },
                u.clone(),
            )]
        }
        (Item::Quantity(v, u), Item::Integer(_) | Item::Decimal(_)) if matches!(op, "*" | "/") => {
            let n = number(&y).unwrap_or(0.0);
            if op == "/" && n == 0.0 {
                Vec::new()
            } else {
                vec![Item::Quantity(
                    if op == "*" { v * n } else { v / n },
                    u.clone(),
                )]
            }
        }
        (Item::Temporal(t), Item::Quantity(v, u)) if matches!(op, "+" | "-") => {
            let sign = if op == "+" { 1.0 } else { -1.0 };
            shift(t, sign * v, u)?
                .map(Item::Temporal)
                .into_iter()
                .collect()
        }
        _ => {
            return Err(FhirPathError::execution(format!(
                "'{op}' cannot combine these values"
            )));
        }
    })
}

/// A date or time moved by a calendar duration (whole units only).
pub(super) fn shift(
    t: &Temporal,
    amount: f64,
    unit: &str,
) -> Result<Option<Temporal>, FhirPathError> {
    if matches!(unit, "a" | "mo") {
        return Err(FhirPathError::execution(format!(
            "'{unit}' has no fixed length: add calendar years or months instead"
        )));
    }
    // Beyond this no date in years 1..=9999 is reached in any unit: refuse
    // rather than compute with numbers that could overflow.
    const SHIFT_MAX: f64 = 1e15;
    if !amount.is_finite() || amount.abs() > SHIFT_MAX {
        return Err(FhirPathError::execution(format!(
            "{amount} {unit} is out of range for a date or time"
        )));
    }
    let n = amount.trunc() as i64;
    let mut p: Vec<i64> = t.parts.iter().map(|v| i64::from(*v)).collect();
    let idx = match (t.kind, unit_key(unit)) {
        (TemporalKind::Time, "h") => 0,
        (TemporalKind::Time, "min") => 1,
        (TemporalKind::Time, "s") => 2,
        (TemporalKind::Time, "ms") => 3,
        (TemporalKind::DateTime, "ms") => 6,
        (_, "a") => 0,
        (_, "mo") => 1,
        (_, "wk") | (_, "d") => 2,
        (TemporalKind::DateTime, "h") => 3,
        (TemporalKind::DateTime, "min") => 4,
        (TemporalKind::DateTime, "s") => 5,
        _ => {
            return Err(FhirPathError::execution(format!(
                "cannot add '{unit}' to a date or time"
            )));
        }
    };
    let n = if unit_key(unit) == "wk" { n * 7 } else { n };
    if idx >= p.len() {
        // Coarser than the unit: adds nothing the value can show, except
        // whole years in months etc. (kept simple: unchanged).
        return Ok(Some(t.clone()));
    }
    p[idx] += n;
    // Normalise month overflow, then days through the civil calendar.
    if p.len() >= 2 && t.kind != TemporalKind::Time {
        let m0 = p[1] - 1;
        p[0] += m0.div_euclid(12);
        p[1] = m0.rem_euclid(12) + 1;
    }
    if p.len() >= 3 && t.kind != TemporalKind::Time {
        let max = days_in_month(p[0], p[1]);
        if idx < 2 && p[2] > max {
            p[2] = max;
        }
        if idx >= 2 {
            // Carry time into days, then days through the calendar.
            if p.len() >= 7 {
                p[5] += p[6].div_euclid(1000);
                p[6] = p[6].rem_euclid(1000);
            }
            if p.len() >= 6 {
                p[4] += p[5].div_euclid(60);
                p[5] = p[5].rem_euclid(60);
            }
            if p.len() >= 5 {
                p[3] += p[4].div_euclid(60);
                p[4] = p[4].rem_euclid(60);
            }
            if p.len() >= 4 {
                p[2] += p[3].div_euclid(24);
                p[3] = p[3].rem_euclid(24);
            }
            // Days through the civil calendar, in one step.
            let days = days_from_civil(p[0], p[1], 1) + (p[2] - 1);
            (p[0], p[1], p[2]) = civil_from_days(days);
        }
    }
    if t.kind != TemporalKind::Time && !(1..=9999).contains(&p[0]) {
        return Err(FhirPathError::execution(format!(
            "adding {amount} {unit} leaves the years 1 to 9999"
        )));
    }
    let parts: Vec<u32> = p
        .iter()
        .map(|v| (*v).clamp(0, u32::MAX as i64) as u32)
        .collect();
    let text = render_temporal(t.kind, &parts, t.tz_minutes, &t.text);
    Ok(Temporal::parse(&text, t.kind == TemporalKind::Time))
}

pub(super) fn render_temporal(
    kind: TemporalKind,
    p: &[u32],
    tz: Option<i32>,
    original: &str,
) -> String {
    let mut s = String::new();
    let (date, time) = if kind == TemporalKind::Time {
        (&p[..0], p)
    } else {
        (&p[..p.len().min(3)], &p[p.len().min(3)..])
    };
    for (i, v) in date.iter().enumerate() {
        if i == 0 {
            s.push_str(&format!("{v:04}"));
        } else {
            s.push_str(&format!("-{v:02}"));
        }
    }
    if kind != TemporalKind::Date {
        s.push('T');
        for (i, v) in time.iter().enumerate() {
            match i {
                0 => s.push_str(&format!("{v:02}")),
                3 => s.push_str(&format!(".{v:03}")),
                _ => s.push_str(&format!(":{v:02}")),
            }
        }
        match tz {
            Some(0) if original.ends_with('Z') => s.push('Z'),
            Some(m) => s.push_str(&format!(
                "{}{:02}:{:02}",
                if m < 0 { '-' } else { '+' },
                m.abs() / 60,
                m.abs() % 60
            )),
            None => {}
        }
    }
    s
}
