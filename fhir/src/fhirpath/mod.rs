//! FHIRPath (N1, 2.0.0, with the FHIR R4 additions search needs), over
//! resources as JSON: the language every official SearchParameter's
//! `expression` is written in.
//!
//! ```
//! use vigil_fhir::fhirpath::Expr;
//! let patient = serde_json::json!({"resourceType": "Patient", "name": [{"given": ["Ada"]}]});
//! let e = Expr::parse("Patient.name.given.first()").expect("parses");
//! let out = e.evaluate(&patient).expect("evaluates");
//! assert_eq!(out[0].as_str().as_deref(), Some("Ada"));
//! ```
//!
//! Written here rather than taken from a crate: the maintained Rust
//! implementations build a parser generator (lalrpop, peg) or an async
//! engine of tens of thousands of lines, on two cores a large share of the
//! build; what search needs is paths, `|`, `where`, `exists`, `ofType`/`as`,
//! `resolve() is`, `extension(url)` and the operators, which this module
//! has, bounded (expression size, nesting, collection sizes) and fuzzed.
//! Without the R4 type model, a node's FHIR type is known from
//! `resourceType` and from choice elements' names (`valueQuantity`);
//! strings are compared with dates by parsing them. The HL7 FHIRPath R4
//! suite runs in `fhir/tests/fhirpath_suite.rs`, which states how many of
//! its tests pass and lists every failure by group.
//!
//! - `lex` — tokens; `parse` — the grammar into [`Node`]s;
//! - `value` — items: nodes of the resource, System values, temporals;
//! - `text` — the string encodings (base64, hex, HTML, JSON);
//! - `ctx` — the environment and navigation; `eval` — paths, operators,
//!   variables; `compare` — equality, equivalence
//!   and order; `math` — arithmetic and date shifts; `functions` — the
//!   function table and each function.

mod compare;
mod ctx;
mod eval;
mod functions;
mod lex;
mod math;
mod parse;
mod text;
mod value;

pub use parse::{Literal, Node, TypeName};
pub use value::{Item, Temporal, TemporalKind};

use serde_json::Value;

/// Bounds on what one expression may cost.
pub mod limits {
    /// Longest expression accepted, in bytes.
    pub const EXPRESSION_BYTES_MAX: usize = 8 * 1024;
    /// Deepest nesting of the parsed expression.
    pub const DEPTH_MAX: usize = 128;
    /// Most items any intermediate collection may hold.
    pub const ITEMS_MAX: usize = 100_000;
    /// Most steps of one evaluation (node visits and items produced).
    pub const STEPS_MAX: u64 = 50_000_000;
    /// Most rounds of `repeat()` and `descendants()`.
    pub const REPEAT_ROUNDS_MAX: usize = 1_000;
}

/// Why an expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirPathError {
    /// The text is not FHIRPath.
    #[error("FHIRPath syntax error at byte {at}: {message}")]
    Syntax {
        /// Byte offset in the expression.
        at: usize,
        /// What is wrong.
        message: String,
    },
    /// The expression is FHIRPath but asks for something that cannot be
    /// done (an unknown function, a wrong number of arguments).
    #[error("FHIRPath: {0}")]
    Semantic(String),
    /// Evaluation failed on this input (more than one item where one is
    /// required, operands of incompatible types, a limit reached).
    #[error("FHIRPath evaluation: {0}")]
    Execution(String),
}

impl FhirPathError {
    pub(crate) fn execution(message: impl Into<String>) -> Self {
        FhirPathError::Execution(message.into())
    }

    pub(crate) fn syntax(at: usize, message: impl Into<String>) -> Self {
        FhirPathError::Syntax {
            at,
            message: message.into(),
        }
    }
}

/// Base64 (standard alphabet, padding optional) of UTF-8 text, decoded;
/// `None` when it is not.
pub(crate) fn decode_base64(s: &str) -> Option<String> {
    text::transform("decode", "base64", s.trim())
}

/// A parsed FHIRPath expression, ready to evaluate on any resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    root: Node,
}

impl Expr {
    /// Parses `src`; refuses text longer than
    /// [`limits::EXPRESSION_BYTES_MAX`] or nested deeper than
    /// [`limits::DEPTH_MAX`], and names unknown functions.
    pub fn parse(src: &str) -> Result<Expr, FhirPathError> {
        if src.len() > limits::EXPRESSION_BYTES_MAX {
            return Err(FhirPathError::syntax(
                0,
                format!(
                    "the expression is {} bytes, more than {}",
                    src.len(),
                    limits::EXPRESSION_BYTES_MAX
                ),
            ));
        }
        let tokens = lex::lex(src)?;
        let root = parse::parse(&tokens, src.len())?;
        functions::check(&root)?;
        Ok(Expr { root })
    }

    /// An expression from a tree taken from parsed expressions (a part of
    /// one, or parts joined): it is bounded and checked as they were.
    pub(crate) fn from_node(root: Node) -> Expr {
        Expr { root }
    }

    /// The parsed tree.
    pub fn node(&self) -> &Node {
        &self.root
    }

    /// Evaluates on `resource` (which is `%resource`, `%context` and the
    /// initial `$this`).
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Result<Vec<Item<'a>>, FhirPathError> {
        eval::evaluate(&self.root, resource)
    }

    /// Evaluates on `focus` (the input and `$this`), an item taken from
    /// `resource` (which is `%resource`).
    pub fn evaluate_on<'a>(
        &self,
        resource: &'a Value,
        focus: &Item<'a>,
    ) -> Result<Vec<Item<'a>>, FhirPathError> {
        eval::evaluate_on(&self.root, resource, focus)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strings(expr: &str, v: &Value) -> Vec<String> {
        Expr::parse(expr)
            .expect("parses")
            .evaluate(v)
            .expect("evaluates")
            .iter()
            .filter_map(Item::render)
            .collect()
    }

    #[test]
    fn search_expressions_read_choices_references_and_extensions() {
        let obs = json!({
            "resourceType": "Observation",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}, {"reference": "Organization/o1"}],
            "valueQuantity": {"value": 72.5, "unit": "kg", "code": "kg"},
            "extension": [{"url": "http://x/e", "valueString": "hit"}, {"url": "http://x/f", "valueString": "miss"}]
        });
        assert_eq!(
            strings("(Observation.value as Quantity).value", &obs),
            ["72.5"]
        );
        assert_eq!(
            strings("Observation.value.ofType(Quantity).unit", &obs),
            ["kg"]
        );
        assert!(strings("Observation.value.ofType(string)", &obs).is_empty());
        assert_eq!(
            strings(
                "Observation.performer.where(resolve() is Practitioner).reference",
                &obs
            ),
            ["Practitioner/d1"]
        );
        assert_eq!(
            strings("Observation.extension('http://x/e').value", &obs),
            ["hit"]
        );
        assert_eq!(
            strings("Observation.subject | Condition.subject", &obs).len(),
            0,
            "nodes render to nothing"
        );
        let out = Expr::parse("Observation.subject | Condition.subject")
            .expect("parses")
            .evaluate(&obs)
            .expect("evaluates");
        assert_eq!(
            out.len(),
            1,
            "a union over bases takes the one that applies"
        );
    }

    #[test]
    fn oversized_or_overnested_expressions_are_refused_with_a_syntax_error() {
        let long = "a".repeat(limits::EXPRESSION_BYTES_MAX + 1);
        assert!(matches!(
            Expr::parse(&long),
            Err(FhirPathError::Syntax { .. })
        ));
        let parens = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(matches!(
            Expr::parse(&parens),
            Err(FhirPathError::Syntax { .. })
        ));
        let minus = format!("{}1", "-".repeat(500));
        assert!(matches!(
            Expr::parse(&minus),
            Err(FhirPathError::Syntax { .. })
        ));
        let chain = vec!["a"; 1000].join(".");
        assert!(matches!(
            Expr::parse(&chain),
            Err(FhirPathError::Syntax { .. })
        ));
        let union = vec!["1"; 1000].join(" | ");
        assert!(matches!(
            Expr::parse(&union),
            Err(FhirPathError::Syntax { .. })
        ));
        // Nesting within the bound parses.
        let ok = format!("{}1{}", "(".repeat(50), ")".repeat(50));
        assert_eq!(strings(&ok, &json!({})), ["1"]);
    }

    #[test]
    fn unknown_functions_and_wrong_arities_are_semantic_errors() {
        assert!(matches!(
            Expr::parse("name.frobnicate()"),
            Err(FhirPathError::Semantic(_))
        ));
        assert!(matches!(
            Expr::parse("name.where()"),
            Err(FhirPathError::Semantic(_))
        ));
        assert!(matches!(
            Expr::parse("name.where(a, b)"),
            Err(FhirPathError::Semantic(_))
        ));
    }

    #[test]
    fn more_than_one_item_where_one_is_required_is_an_execution_error() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B"}]});
        let e = Expr::parse("Patient.name.family < 'C'").expect("parses");
        assert!(matches!(e.evaluate(&p), Err(FhirPathError::Execution(_))));
    }

    /// Found by the fuzzer: a time zone of 520020951 hours overflowed; a
    /// shift by 1e18 days would have looped for ages.
    #[test]
    fn out_of_range_zones_and_shifts_are_refused_not_overflowed() {
        assert!(matches!(
            Expr::parse("@2014-01-25T14:30:14.5+520020951:0 + 1 month"),
            Err(FhirPathError::Semantic(_))
        ));
        for e in [
            "@2014-01-25 + 1000000000000000000 days",
            "@2014-01-25 + 9000 years",
        ] {
            let parsed = Expr::parse(e).expect("parses");
            assert!(
                matches!(
                    parsed.evaluate(&json!({})),
                    Err(FhirPathError::Execution(_))
                ),
                "{e}"
            );
        }
        // Checked against Python: date(2014, 1, 25) + timedelta(400000).
        assert_eq!(
            strings("@2014-01-25 + 400000 days", &json!({})),
            ["3109-03-26"]
        );
        assert_eq!(strings("@2014-01-31 + 1 month", &json!({})), ["2014-02-28"]);
        assert_eq!(
            strings("@2014-12-31T23:59:59.999 + 1 millisecond", &json!({})),
            ["2015-01-01T00:00:00.000"]
        );
    }

    /// Found by the fuzzer: sorting keys of mixed types made the sort's
    /// comparison inconsistent, which the standard sort refuses by
    /// panicking. Mixed kinds are an error now; one kind sorts.
    #[test]
    fn sort_orders_one_kind_of_key_and_refuses_mixed_ones() {
        let mixed = Expr::parse("(1 | 'a' | 2 | 'b' | @2014).sort()").expect("parses");
        assert!(matches!(
            mixed.evaluate(&json!({})),
            Err(FhirPathError::Execution(_))
        ));
        assert_eq!(
            strings("(3 | 1.5 | 2).sort()", &json!({})),
            ["1.5", "2", "3"]
        );
        assert_eq!(
            strings("(@2014-02 | @2014 | @2013-12-31).sort()", &json!({})),
            ["2013-12-31", "2014", "2014-02"]
        );
        assert_eq!(
            strings("('b' | 'a' | 'c').sort(-$this)", &json!({})),
            ["c", "b", "a"]
        );
    }

    /// A collection that doubles each step is stopped at
    /// [`limits::ITEMS_MAX`], not left to fill memory; `-i64::MIN` and
    /// `abs` of it are empty, not an overflow.
    #[test]
    fn growing_collections_and_integer_edges_are_bounded() {
        let ones: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
        let doubling = format!(
            "({}).aggregate($total.combine($total), 1)",
            ones.join(" | ")
        );
        let e = Expr::parse(&doubling).expect("parses");
        assert!(matches!(
            e.evaluate(&json!({})),
            Err(FhirPathError::Execution(_))
        ));
        assert!(strings("(-9223372036854775807 - 1).abs()", &json!({})).is_empty());
        assert!(strings("-(-9223372036854775807 - 1)", &json!({})).is_empty());
    }

    #[test]
    fn repeat_stops_at_a_fixed_point_and_cannot_run_away() {
        let q = json!({"resourceType": "Questionnaire", "item": [
            {"linkId": "1", "item": [{"linkId": "1.1", "item": [{"linkId": "1.1.1"}]}]},
            {"linkId": "2"}
        ]});
        let mut ids = strings("Questionnaire.repeat(item).linkId", &q);
        ids.sort();
        assert_eq!(ids, ["1", "1.1", "1.1.1", "2"]);
        // Each round yields a new value: bounded by the rounds limit.
        let e = Expr::parse("0.repeat($this + 1)").expect("parses");
        assert!(matches!(
            e.evaluate(&json!({})),
            Err(FhirPathError::Execution(_))
        ));
    }
}
