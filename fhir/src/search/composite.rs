//! Composite parameters: components matched together on one element
//! (`Observation?code-value-quantity=http://loinc.org|8480-6$gt100`,
//! `component-code-value-quantity=…`, `context-type-value=…`). The value
//! names one value per component, joined by `$`; each is read and
//! matched as a parameter of the component's kind would be (prefixes,
//! precision, `system|code`), against the composite keys, whose
//! components come from the same element (R4 search.html#composite).
//!
//! The first component of every R4 composite is a token: with its system
//! and code (or its code alone) the lookup is a range scan of those keys
//! only; the rest are checked on each key in the range.

use std::collections::BTreeSet;

use super::keys::{
    COMPONENT_SEPARATOR, STRING_KEY_BYTES_MAX, cut, key, normalise, reference_target,
};
use super::keys::{unsortable, unsortable_f64};
use super::lookup::{all_of, scan};
use super::prefix::{Number, Prefix, date_matches, date_value, number_matches, number_value};
use super::registry::{Kind, SearchParam};
use crate::app::App;
use crate::http::outcome::FhirError;

/// How one component's searched value matches a component of a key.
enum Matcher {
    /// `code`, `system|code`, `|code` (no system), `system|` (any code).
    Token {
        system: Option<String>,
        code: String,
    },
    /// Starts with (normalised).
    Text(String),
    /// A reference's `id\0Type`, or an id of any type (`id\0`).
    Reference {
        exact: bool,
        bytes: Vec<u8>,
    },
    Date(Prefix, (i64, i64)),
    Number(Number),
    Quantity {
        n: Number,
        system: String,
        code: String,
    },
    Uri(String),
}

impl Matcher {
    fn parse(kind: Kind, v: &str) -> Result<Matcher, FhirError> {
        Ok(match kind {
            Kind::Token => match v.split_once('|') {
                Some((s, c)) => Matcher::Token {
                    system: Some(s.to_owned()),
                    code: c.to_owned(),
                },
                None => Matcher::Token {
                    system: None,
                    code: v.to_owned(),
                },
            },
            Kind::String => Matcher::Text(cut(&normalise(v), STRING_KEY_BYTES_MAX).to_owned()),
            Kind::Reference => match reference_target(v) {
                Some((t, id)) => Matcher::Reference {
                    exact: true,
                    bytes: [id.as_bytes(), b"\0", t.as_bytes()].concat(),
                },
                None => Matcher::Reference {
                    exact: false,
                    bytes: [v.as_bytes(), b"\0"].concat(),
                },
            },
            Kind::Date => {
                let (p, s) = date_value(v)?;
                Matcher::Date(p, s)
            }
            Kind::Number => Matcher::Number(number_value(v)?),
            Kind::Quantity => {
                let mut parts = v.splitn(3, '|');
                Matcher::Quantity {
                    n: number_value(parts.next().unwrap_or(""))?,
                    system: parts.next().unwrap_or("").to_owned(),
                    code: parts.next().unwrap_or("").to_owned(),
                }
            }
            Kind::Uri => Matcher::Uri(v.to_owned()),
            Kind::Composite | Kind::Special => {
                return Err(FhirError::invalid("a composite's component is not a value"));
            }
        })
    }

    /// Whether the component `c` (its bytes in a key) matches.
    fn matches(&self, c: &[u8], now: i64) -> bool {
        match self {
            Matcher::Token { system, code } => {
                let mut it = c.splitn(2, |b| *b == 0);
                let (kc, ks) = (it.next().unwrap_or(b""), it.next().unwrap_or(b""));
                (code.is_empty() || kc == code.as_bytes())
                    && system.as_ref().is_none_or(|s| ks == s.as_bytes())
            }
            Matcher::Text(t) => c.starts_with(t.as_bytes()),
            Matcher::Reference { exact: true, bytes } => c == bytes.as_slice(),
            Matcher::Reference {
                exact: false,
                bytes,
            } => c.starts_with(bytes),
            Matcher::Date(p, s) => {
                let t = (
                    unsortable(c).unwrap_or(i64::MIN),
                    c.get(8..).and_then(unsortable).unwrap_or(i64::MAX),
                );
                date_matches(*p, t, *s, now)
            }
            Matcher::Number(n) => unsortable_f64(c).is_some_and(|t| number_matches(*n, t)),
            Matcher::Quantity { n, system, code } => {
                let Some(t) = unsortable_f64(c) else {
                    return false;
                };
                let mut it = c.get(8..).unwrap_or_default().splitn(2, |b| *b == 0);
                let (kc, ks) = (it.next().unwrap_or(b""), it.next().unwrap_or(b""));
                number_matches(*n, t)
                    && (code.is_empty() || kc == code.as_bytes())
                    && (system.is_empty() || ks == system.as_bytes())
            }
            Matcher::Uri(u) => c == u.as_bytes(),
        }
    }
}

/// Splits the next component of kind `kind` off `rest`: (component, what
/// follows its separator). Dates and numbers are read by width, a
/// quantity's value too; text runs to the separator.
fn take(kind: Kind, rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let fixed = match kind {
        Kind::Date => 16,
        Kind::Number | Kind::Quantity => 8,
        _ => 0,
    };
    if rest.len() < fixed {
        return None;
    }
    let end = match kind {
        Kind::Date | Kind::Number => fixed,
        _ => {
            fixed
                + rest[fixed..]
                    .iter()
                    .position(|b| *b == COMPONENT_SEPARATOR)
                    .unwrap_or(rest.len() - fixed)
        }
    };
    let (c, after) = rest.split_at(end);
    match after.split_first() {
        None => Some((c, after)),
        Some((&COMPONENT_SEPARATOR, tail)) => Some((c, tail)),
        Some(_) => None,
    }
}

/// The bounds of keys that start with `p`: `p` up to `p` with its last
/// byte raised by one.
fn starting_with(p: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut hi = p.clone();
    match hi.last_mut() {
        Some(b) if *b < u8::MAX => *b += 1,
        _ => hi.push(u8::MAX),
    }
    (p, hi)
}

/// The ids of `ty` whose composite `p` (keys under `code`) matches
/// `value` (`v1$v2[$v3]`).
pub(super) fn ids(
    app: &App,
    ty: &str,
    p: &SearchParam,
    code: &str,
    value: &str,
) -> Result<BTreeSet<String>, FhirError> {
    let parts: Vec<&str> = value.split('$').collect();
    if parts.len() != p.components.len() {
        return Err(FhirError::invalid(format!(
            "{} takes {} values joined by $, not {value:?}",
            p.code,
            p.components.len()
        )));
    }
    let matchers = parts
        .iter()
        .zip(&p.components)
        .map(|(v, c)| Matcher::parse(c.kind, v))
        .collect::<Result<Vec<_>, _>>()?;
    // A first token with its code narrows the scan to its keys.
    let (lo, hi) = match (p.components.first().map(|c| c.kind), matchers.first()) {
        (Some(Kind::Token), Some(Matcher::Token { system, code: c })) if !c.is_empty() => {
            let mut head = c.as_bytes().to_vec();
            head.push(0);
            if let Some(s) = system {
                head.extend_from_slice(s.as_bytes());
                head.push(COMPONENT_SEPARATOR);
            }
            starting_with(key(b'c', ty, code, &head))
        }
        _ => all_of(b'c', ty, code),
    };
    let skip = key(b'c', ty, code, b"").len();
    let kinds: Vec<Kind> = p.components.iter().map(|c| c.kind).collect();
    let now = crate::instant::now_us();
    scan(app, ty, &lo, &hi, |k| {
        let mut rest = k.get(skip..).unwrap_or_default();
        for (kind, m) in kinds.iter().zip(&matchers) {
            let Some((c, after)) = take(*kind, rest) else {
                return false;
            };
            if !m.matches(c, now) {
                return false;
            }
            rest = after;
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::keys::sortable_f64;

    #[test]
    fn components_are_split_by_width_or_separator() {
        let mut v = b"8480-6\0http://loinc.org".to_vec();
        v.push(COMPONENT_SEPARATOR);
        // A value whose bytes hold the separator: read by width.
        let q = sortable_f64(f64::from_bits(0x0101_0101_0101_0101)).expect("a float");
        v.extend_from_slice(&q);
        v.extend_from_slice(b"mm[Hg]\0http://unitsofmeasure.org");
        let (c1, rest) = take(Kind::Token, &v).expect("a token");
        assert_eq!(c1, b"8480-6\0http://loinc.org");
        let (c2, rest) = take(Kind::Quantity, rest).expect("a quantity");
        assert_eq!(&c2[..8], &q);
        assert!(rest.is_empty());
        assert!(take(Kind::Date, b"short").is_none());
    }

    #[test]
    fn each_component_matches_as_its_kind() {
        let now = 0;
        let t = Matcher::parse(Kind::Token, "http://loinc.org|8480-6").expect("token");
        assert!(t.matches(b"8480-6\0http://loinc.org", now));
        assert!(!t.matches(b"8480-6\0urn:other", now));
        let any = Matcher::parse(Kind::Token, "8480-6").expect("token");
        assert!(any.matches(b"8480-6\0urn:other", now));
        let q = Matcher::parse(Kind::Quantity, "gt100|http://unitsofmeasure.org|mm[Hg]")
            .expect("quantity");
        let mut c = sortable_f64(120.0).expect("float").to_vec();
        c.extend_from_slice(b"mm[Hg]\0http://unitsofmeasure.org");
        assert!(q.matches(&c, now));
        let mut low = sortable_f64(90.0).expect("float").to_vec();
        low.extend_from_slice(b"mm[Hg]\0http://unitsofmeasure.org");
        assert!(!q.matches(&low, now));
        assert!(Matcher::parse(Kind::Quantity, "x|y|z").is_err());
        assert!(Matcher::parse(Kind::Date, "gtnope").is_err());
    }
}
