//! Quantities in canonical UCUM units: a value whose system is UCUM is
//! also indexed as its magnitude in base units, under the parameter's
//! `param:ucum` keys with the unit's dimension as its code, so
//! `value-quantity=5.4|http://unitsofmeasure.org|mg` finds `0.0054 g` and
//! `5400 ug` (R4 search, "quantity": a server SHOULD match on canonical
//! units). Units come from the `ucum-units` crate (the official
//! ucum-essence tables). Arbitrary and logarithmic units (`[IU]`, `[pH]`,
//! `dB`) have no canonical form and match by their code only; the
//! temperatures `Cel` and `[degF]` convert to kelvin with their offset.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value;

use crate::fhirpath::Item;

/// The UCUM code system.
pub const UCUM_SYSTEM: &str = "http://unitsofmeasure.org";

/// Unit codes whose scale one thread remembers.
const CACHE_MAX: usize = 1_024;
/// Longest unit code looked up, in bytes.
const UNIT_BYTES_MAX: usize = 128;
/// Significant digits a canonical magnitude keeps, so that one amount in
/// two units (0.054 g/L, 5.4 mg/dL) gives one key value.
const SIGNIFICANT_DIGITS: i32 = 12;

/// How a unit converts to base units: `base = value × factor + offset`,
/// and the dimension that names the base unit.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scale {
    factor: f64,
    offset: f64,
    /// The dimension's exponents (length, time, mass, angle, temperature,
    /// charge, luminosity), comma-separated: the canonical unit's code.
    pub(super) unit: String,
}

impl Scale {
    /// `value` in base units, to [`SIGNIFICANT_DIGITS`].
    pub(super) fn canonical(&self, value: f64) -> f64 {
        round_significant(value * self.factor + self.offset)
    }

    /// A half-width of precision around a value, in base units.
    pub(super) fn width(&self, half: f64) -> f64 {
        half * self.factor.abs()
    }
}

fn round_significant(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let magnitude = v.abs().log10().floor() as i32;
    let scale = 10f64.powi(SIGNIFICANT_DIGITS - 1 - magnitude);
    let r = (v * scale).round() / scale;
    if r.is_finite() { r } else { v }
}

thread_local! {
    static SCALES: RefCell<HashMap<String, Option<Rc<Scale>>>> = RefCell::new(HashMap::new());
}

/// `(value, code)` of a Quantity element whose system is UCUM (read
/// without copying: most quantities of a record are).
pub(super) fn quantity<'a>(item: &'a Item<'_>) -> Option<(f64, &'a str)> {
    let Item::Node(Value::Object(o), _) = item else {
        return None;
    };
    if o.get("system").and_then(Value::as_str) != Some(UCUM_SYSTEM) {
        return None;
    }
    let code = o.get("code").and_then(Value::as_str)?;
    let value = o.get("value").and_then(Value::as_number)?.as_f64()?;
    Some((value, code))
}

/// The scale of a UCUM unit code, if it has a canonical form.
pub(super) fn scale(code: &str) -> Option<Rc<Scale>> {
    if code.is_empty() || code.len() > UNIT_BYTES_MAX {
        return None;
    }
    SCALES.with(|c| {
        if let Some(s) = c.borrow().get(code) {
            return s.clone();
        }
        let s = analyze(code).map(Rc::new);
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(code.to_owned(), s.clone());
        s
    })
}

fn analyze(code: &str) -> Option<Scale> {
    let a = ucum::analyze(code).ok()?;
    let dims = a.dimension.0;
    let temperature = dims == [0, 0, 0, 0, 1, 0, 0];
    if (a.is_special && !temperature) || !a.factor.is_finite() || a.factor == 0.0 {
        return None;
    }
    Some(Scale {
        factor: a.factor,
        offset: a.offset,
        unit: dims.iter().map(i8::to_string).collect::<Vec<_>>().join(","),
    })
}

/// The parameter whose keys hold `param`'s canonical quantities.
pub(super) fn param(param: &str) -> String {
    format!("{param}:ucum")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(v: f64, unit: &str) -> (f64, String) {
        let s = scale(unit).expect("a canonical unit");
        (s.canonical(v), s.unit.clone())
    }

    #[test]
    fn one_amount_in_different_units_has_one_canonical_value() {
        assert_eq!(base(5.4, "mg/dL"), base(0.054, "g/L"));
        assert_eq!(base(5400.0, "ug"), base(5.4, "mg"));
        assert_eq!(base(1.0, "[lb_av]").0, 453.59237);
        assert_eq!(base(37.0, "Cel"), base(310.15, "K"));
        assert_ne!(base(1.0, "g").1, base(1.0, "m").1, "mass is not length");
        assert_eq!(base(72.0, "{beats}/min"), base(72.0, "/min"));
    }

    #[test]
    fn arbitrary_logarithmic_and_unknown_units_have_none() {
        for u in ["[IU]", "[IU]/L", "[pH]", "dB", "no such unit", ""] {
            assert!(scale(u).is_none(), "{u}");
        }
    }
}
