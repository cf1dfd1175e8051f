//! FHIRPath's values: an item of a collection is a node of the resource
//! (JSON, with the FHIR type its element name says when it says one) or a
//! System value (Boolean, String, Integer, Decimal, Date, DateTime, Time,
//! Quantity). Nodes holding JSON primitives convert to System values when
//! compared or computed with.

use std::cmp::Ordering;

use serde_json::Value;

use crate::instant::{civil_from_days, days_from_civil};

/// One item of a collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// A node of the input: the JSON and, when known, its FHIR type (from
    /// `resourceType`, or a choice element's suffix, such as `Quantity`
    /// for `valueQuantity`).
    Node(&'a Value, Option<&'a str>),
    /// A resource reached through `resolve()`: only its type is known.
    Resolved(String),
    /// System.Boolean.
    Boolean(bool),
    /// System.String.
    String(String),
    /// System.Integer.
    Integer(i64),
    /// System.Decimal.
    Decimal(f64),
    /// System.Date, System.DateTime or System.Time.
    Temporal(Temporal),
    /// System.Quantity: a value and its unit.
    Quantity(f64, String),
}

/// A date, date-time or time with the precision it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporal {
    /// Which of the three.
    pub kind: TemporalKind,
    /// Year, month, day, hour, minute, second, millisecond: as many as
    /// written (a time starts at the hour).
    pub parts: Vec<u32>,
    /// The time zone offset in minutes, when written.
    pub tz_minutes: Option<i32>,
    /// As written (without `@`), for output.
    pub text: String,
}

/// The three temporal types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    /// A date: year, month, day.
    Date,
    /// A date and a time.
    DateTime,
    /// A time of day.
    Time,
}

impl Temporal {
    /// Parses `2014-01-25T14:30:14.559+01:00`, `2014-01`, `T14:30` (the
    /// form after `@`) or, with `json`, the JSON forms (no `T` prefix on a
    /// time, none required after a date-time's date).
    pub fn parse(s: &str, time_only: bool) -> Option<Temporal> {
        let text = s.to_owned();
        let (kind, rest) = if let Some(t) = s.strip_prefix('T') {
            (TemporalKind::Time, t)
        } else if time_only {
            (TemporalKind::Time, s)
        } else if s.contains('T') {
            (TemporalKind::DateTime, s)
        } else {
            (TemporalKind::Date, s)
        };
        let mut parts = Vec::new();
        let mut tz = None;
        let (date, time) = match kind {
            TemporalKind::Time => ("", rest),
            _ => match rest.split_once('T') {
                Some((d, t)) => (d, t),
                None => (rest, ""),
            },
        };
        if kind != TemporalKind::Time {
            let mut it = date.split('-');
            let y = it.next()?;
            if y.len() != 4 {
                return None;
            }
            parts.push(y.parse().ok()?);
            for (p, max) in it.zip([12, 31]) {
                if p.len() != 2 {
                    return None;
                }
                let v: u32 = p.parse().ok()?;
                if v == 0 || v > max {
                    return None;
                }
                parts.push(v);
            }
        }
        if !time.is_empty() {
            let (clock, zone) = if let Some(z) = time.strip_suffix('Z') {
                (z, Some(0))
            } else if let Some(i) = time.rfind(['+', '-']) {
                let (c, z) = time.split_at(i);
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let (h, m) = z[1..].split_once(':')?;
                let two = |s: &str, max: i32| {
                    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| s.parse::<i32>().ok())
                        .flatten()
                        .filter(|v| *v <= max)
                };
                (c, Some(sign * (two(h, 23)? * 60 + two(m, 59)?)))
            } else {
                (time, None)
            };
            tz = zone;
            if !clock.is_empty() {
                let (hms, millis) = match clock.split_once('.') {
                    Some((a, b)) => (a, Some(b)),
                    None => (clock, None),
                };
                for (p, max) in hms.split(':').zip([23, 59, 59]) {
                    if p.len() != 2 {
                        return None;
                    }
                    let v: u32 = p.parse().ok()?;
                    if v > max {
                        return None;
                    }
                    parts.push(v);
                }
                if let Some(ms) = millis {
                    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let padded = format!("{ms:0<3}");
                    parts.push(padded[..3].parse().ok()?);
                }
            }
        }
        if kind == TemporalKind::Time && tz.is_some() {
            return None;
        }
        Some(Temporal {
            kind,
            parts,
            tz_minutes: tz,
            text,
        })
    }

    /// Seconds and milliseconds count as one precision in comparisons.
    fn precision(&self) -> usize {
        let n = self.parts.len();
        let base = if self.kind == TemporalKind::Time {
            3
        } else {
            0
        };
        (base + n).min(6)
    }

    /// The parts shifted to UTC when a zone is known and the time has
    /// minutes (an approximation at day edges is avoided by carrying).
    fn normalized(&self) -> Vec<i64> {
        let mut p: Vec<i64> = self.parts.iter().map(|v| i64::from(*v)).collect();
        if let (Some(tz), TemporalKind::DateTime) = (self.tz_minutes, self.kind)
            && p.len() >= 5
        {
            // Minutes since the epoch of the day, shifted, then carried.
            let total = p[3] * 60 + p[4] - i64::from(tz);
            let day_shift = total.div_euclid(24 * 60);
            let minute_of_day = total.rem_euclid(24 * 60);
            p[3] = minute_of_day / 60;
            p[4] = minute_of_day % 60;
            if day_shift != 0 {
                let days = days_from_civil(p[0], p[1], p[2]) + day_shift;
                let (y, m, d) = civil_from_days(days);
                (p[0], p[1], p[2]) = (y, m, d);
            }
        }
        p
    }

    /// The normalised parts, for a total order in `sort()`: a date-time
    /// and a date compare by their parts (coarser first when equal so far).
    pub fn sort_parts(&self) -> Vec<i64> {
        self.normalized()
    }

    /// Compares two temporals of one kind: `None` when the answer depends
    /// on parts one of them does not have.
    pub fn compare(&self, other: &Temporal) -> Option<Ordering> {
        let same_kind = self.kind == other.kind
            || (self.kind != TemporalKind::Time && other.kind != TemporalKind::Time);
        if !same_kind {
            return None;
        }
        // A zone on one side only leaves the instant unknown.
        let has_time = |t: &Temporal| t.kind == TemporalKind::Time || t.parts.len() > 3;
        if has_time(self)
            && has_time(other)
            && self.kind != TemporalKind::Time
            && self.tz_minutes.is_some() != other.tz_minutes.is_some()
        {
            return None;
        }
        let (mut a, mut b) = (self.normalized(), other.normalized());
        // Seconds and milliseconds are one precision: a missing
        // millisecond is 0.
        let seconds = if self.kind == TemporalKind::Time {
            3
        } else {
            6
        };
        if a.len() >= seconds && b.len() >= seconds {
            a.resize(seconds + 1, 0);
            b.resize(seconds + 1, 0);
        }
        let n = a.len().min(b.len());
        for i in 0..n {
            match a[i].cmp(&b[i]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        if self.precision() == other.precision() {
            Some(Ordering::Equal)
        } else {
            None
        }
    }
}

impl<'a> Item<'a> {
    /// The item as a System value, when it is one or a JSON primitive.
    pub fn system(&self) -> Option<Item<'a>> {
        match self {
            Item::Node(v, ty) => match v {
                Value::Bool(b) => Some(Item::Boolean(*b)),
                Value::String(s) => {
                    let t = ty.unwrap_or("");
                    if matches!(t, "date" | "dateTime" | "instant") {
                        Temporal::parse(s, false).map(Item::Temporal)
                    } else if t == "time" {
                        Temporal::parse(s, true).map(Item::Temporal)
                    } else {
                        Some(Item::String(s.clone()))
                    }
                }
                Value::Number(n) => {
                    if let Some(i) = n.as_i64()
                        && !n.to_string().contains(['.', 'e', 'E'])
                    {
                        Some(Item::Integer(i))
                    } else {
                        n.as_f64().map(Item::Decimal)
                    }
                }
                Value::Object(o) if ty.as_deref() == Some("Quantity") || is_quantity(o) => {
                    let value = o.get("value").and_then(Value::as_f64)?;
                    let unit = o
                        .get("code")
                        .or_else(|| o.get("unit"))
                        .and_then(Value::as_str)
                        .unwrap_or("1");
                    Some(Item::Quantity(value, unit.to_owned()))
                }
                _ => None,
            },
            Item::Resolved(_) => None,
            other => Some(other.clone()),
        }
    }

    /// The JSON node, if this item is one.
    pub fn node(&self) -> Option<&'a Value> {
        match self {
            Item::Node(v, _) => Some(v),
            _ => None,
        }
    }

    /// The item's string, if it is (or holds) one.
    pub fn as_str(&self) -> Option<String> {
        match self.system()? {
            Item::String(s) => Some(s),
            _ => None,
        }
    }

    /// The item as text for output and `toString()`.
    pub fn render(&self) -> Option<String> {
        Some(match self.system()? {
            Item::Boolean(b) => b.to_string(),
            Item::String(s) => s,
            Item::Integer(i) => i.to_string(),
            Item::Decimal(d) => render_decimal(d),
            Item::Temporal(t) => t.text.trim_start_matches('T').to_owned(),
            Item::Quantity(v, u) => {
                if is_calendar_unit(&u) {
                    format!("{} {u}", render_decimal(v))
                } else {
                    format!("{} '{u}'", render_decimal(v))
                }
            }
            Item::Node(..) | Item::Resolved(_) => return None,
        })
    }
}

/// Whether an object looks like a Quantity (a number `value` and a unit
/// or code).
fn is_quantity(o: &serde_json::Map<String, Value>) -> bool {
    o.get("value").is_some_and(Value::is_number)
        && (o.contains_key("unit") || o.contains_key("code"))
        && !o.contains_key("resourceType")
}

/// The calendar duration words FHIRPath writes without quotes.
pub fn is_calendar_unit(u: &str) -> bool {
    matches!(
        u,
        "year"
            | "years"
            | "month"
            | "months"
            | "week"
            | "weeks"
            | "day"
            | "days"
            | "hour"
            | "hours"
            | "minute"
            | "minutes"
            | "second"
            | "seconds"
            | "millisecond"
            | "milliseconds"
    )
}

/// A decimal written without a needless exponent or trailing zeros.
pub fn render_decimal(d: f64) -> String {
    if d.fract() == 0.0 && d.abs() < 1e15 {
        format!("{d:.1}")
    } else {
        let s = format!("{d}");
        s
    }
}
