//! The HL7 FHIRPath test suite for R4 (fixtures/fhirpath, README there)
//! against `vigil_fhir::fhirpath`: states how many tests pass, lists every
//! failure by group, and fails if fewer pass than the floor below (raise
//! it as the evaluator grows; never lower it).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use vigil_fhir::fhirpath::{Expr, FhirPathError, Item};

/// Tests of the suite that must pass.
const PASS_FLOOR: usize = 823;

/// One test of the suite.
#[derive(Debug)]
struct Case {
    group: String,
    name: String,
    input: Option<String>,
    expression: String,
    /// `invalid="…"`: the expression must fail (to parse for `syntax`).
    invalid: Option<String>,
    /// `predicate="true"`: the output is whether the result is non-empty.
    predicate: bool,
    outputs: Vec<(String, String)>,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// Reads the suite's XML: groups, tests, expressions, outputs. The file's
/// structure is regular; anything unexpected fails the test loudly.
fn read_suite(xml: &str) -> Vec<Case> {
    // Drop comments (some tests are commented out).
    let mut text = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        text.push_str(&rest[..i]);
        let end = rest[i..].find("-->").expect("comment closed") + i + 3;
        rest = &rest[end..];
    }
    text.push_str(rest);
    let mut cases = Vec::new();
    let mut group = String::new();
    let mut pos = 0;
    while let Some(i) = text[pos..].find('<') {
        let at = pos + i;
        let tag_end = text[at..].find('>').expect("tag closed") + at;
        let tag = &text[at..=tag_end];
        if tag.starts_with("<group") {
            group = attr(tag, "name").unwrap_or_default();
            pos = tag_end + 1;
        } else if tag.starts_with("<test ") || tag.starts_with("<test>") {
            let close = text[tag_end..].find("</test>").expect("test closed") + tag_end;
            let body = &text[tag_end + 1..close];
            let e_open = body.find("<expression").expect("an expression");
            let e_tag_end = body[e_open..].find('>').expect("expression tag") + e_open;
            let e_tag = &body[e_open..=e_tag_end];
            let e_close = body.find("</expression>").expect("expression closed");
            let mut outputs = Vec::new();
            let mut o = 0;
            while let Some(k) = body[o..].find("<output") {
                let s = o + k;
                let t_end = body[s..].find('>').expect("output tag") + s;
                let o_tag = &body[s..=t_end];
                if o_tag.ends_with("/>") {
                    outputs.push((attr(o_tag, "type").unwrap_or_default(), String::new()));
                    o = t_end + 1;
                    continue;
                }
                let c = body[t_end..].find("</output>").expect("output closed") + t_end;
                outputs.push((
                    attr(o_tag, "type").unwrap_or_default(),
                    unescape(&body[t_end + 1..c]),
                ));
                o = c;
            }
            cases.push(Case {
                group: group.clone(),
                name: attr(tag, "name").unwrap_or_default(),
                input: attr(tag, "inputfile"),
                expression: unescape(&body[e_tag_end + 1..e_close]),
                invalid: attr(e_tag, "invalid"),
                predicate: attr(tag, "predicate").as_deref() == Some("true"),
                outputs,
            });
            pos = close + 7;
        } else {
            pos = tag_end + 1;
        }
    }
    cases
}

/// Whether `got` matches the expected output `(type, text)`.
fn matches_output(got: &Item, ty: &str, want: &str) -> bool {
    let Some(text) = got.render() else {
        return false;
    };
    match ty {
        "decimal" => match (text.parse::<f64>(), want.parse::<f64>()) {
            (Ok(a), Ok(b)) => (a - b).abs() < 1e-9,
            _ => false,
        },
        "date" | "dateTime" | "time" => {
            text == want.trim_start_matches('@').trim_start_matches('T')
        }
        "Quantity" => {
            let norm = |s: &str| s.replace(".0 ", " ");
            norm(&text) == norm(want)
        }
        _ => text == want,
    }
}

/// Runs one case: `Ok(())` when it passes, otherwise why not.
fn run(case: &Case, inputs: &BTreeMap<String, Value>) -> Result<(), String> {
    let input = match &case.input {
        Some(f) => {
            let json = f.replace(".xml", ".json");
            match inputs.get(&json) {
                Some(v) => v.clone(),
                None => return Err(format!("input not available ({f})")),
            }
        }
        None => Value::Null,
    };
    let parsed = Expr::parse(&case.expression);
    if let Some(kind) = &case.invalid {
        return match parsed {
            Err(FhirPathError::Syntax { .. }) => Ok(()),
            Err(_) if kind != "syntax" => Ok(()),
            Err(e) => Err(format!("expected a syntax error, got: {e}")),
            Ok(_) if kind == "syntax" => Err("parsed, expected a syntax error".into()),
            Ok(e) => match e.evaluate(&input) {
                Err(_) => Ok(()),
                Ok(out) => Err(format!(
                    "evaluated to {} items, expected an error",
                    out.len()
                )),
            },
        };
    }
    let expr = parsed.map_err(|e| e.to_string())?;
    let out = expr.evaluate(&input).map_err(|e| e.to_string())?;
    let out: Vec<Item> = if case.predicate {
        vec![Item::Boolean(!out.is_empty())]
    } else {
        out
    };
    let shown: Vec<String> = out
        .iter()
        .map(|i| i.render().unwrap_or_else(|| "<node>".into()))
        .collect();
    if out.len() != case.outputs.len() {
        return Err(format!(
            "got {shown:?}, expected {:?}",
            case.outputs.iter().map(|o| &o.1).collect::<Vec<_>>()
        ));
    }
    for (got, (ty, want)) in out.iter().zip(&case.outputs) {
        if !matches_output(got, ty, want) {
            return Err(format!(
                "got {shown:?}, expected {:?}",
                case.outputs.iter().map(|o| &o.1).collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

#[test]
fn the_hl7_fhirpath_suite_passes_at_least_the_floor() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fhirpath");
    let xml = std::fs::read_to_string(dir.join("tests-fhir-r4.xml")).expect("suite");
    let mut inputs = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("input")).expect("inputs") {
        let p = e.expect("entry").path();
        let v: Value =
            serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("input is JSON");
        inputs.insert(
            p.file_name().expect("name").to_string_lossy().into_owned(),
            v,
        );
    }
    let cases = read_suite(&xml);
    assert!(cases.len() > 900, "the suite has {} tests", cases.len());
    let mut failed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut passed = 0;
    for c in &cases {
        match run(c, &inputs) {
            Ok(()) => passed += 1,
            Err(why) => failed.entry(c.group.as_str()).or_default().push(format!(
                "{}: `{}`: {why}",
                c.name,
                c.expression.trim()
            )),
        }
    }
    eprintln!("FHIRPath suite: {passed} of {} tests pass", cases.len());
    for (group, fails) in &failed {
        eprintln!("  {group}: {} failing", fails.len());
        for f in fails {
            eprintln!("    {f}");
        }
    }
    assert!(
        passed >= PASS_FLOOR,
        "{passed} of {} pass, below the floor of {PASS_FLOOR}",
        cases.len()
    );
}

/// Every expression of the official R4 SearchParameter definitions
/// (fhir/data, README there) parses, and evaluates without an error on
/// the suite's resources of its base types.
#[test]
fn every_official_search_parameter_expression_parses_and_evaluates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defs: Vec<Value> = serde_json::from_slice(
        &std::fs::read(root.join("data/search-parameters-r4.json")).expect("definitions"),
    )
    .expect("JSON");
    assert_eq!(defs.len(), 1375, "the whole official set");
    let mut inputs = Vec::new();
    for e in std::fs::read_dir(root.join("tests/fixtures/fhirpath/input")).expect("inputs") {
        let p = e.expect("entry").path();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("JSON");
        inputs.push(v);
    }
    let (mut parsed, mut evaluated, mut problems) = (0, 0, Vec::new());
    for d in &defs {
        let Some(src) = d.get("expression").and_then(Value::as_str) else {
            continue;
        };
        let code = d.get("code").and_then(Value::as_str).unwrap_or("?");
        match Expr::parse(src) {
            Ok(e) => {
                parsed += 1;
                for input in &inputs {
                    let ty = input
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let applies = d
                        .get("base")
                        .and_then(Value::as_array)
                        .is_some_and(|b| b.iter().any(|t| t == ty || t == "Resource"));
                    if !applies {
                        continue;
                    }
                    match e.evaluate(input) {
                        Ok(_) => evaluated += 1,
                        Err(err) => problems.push(format!("{code} on {ty}: `{src}`: {err}")),
                    }
                }
            }
            Err(err) => problems.push(format!("{code}: `{src}`: {err}")),
        }
    }
    eprintln!("{parsed} expressions parse; {evaluated} evaluations on the suite's resources");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(parsed, 1372, "every definition with an expression");
    assert!(
        evaluated > 100,
        "the check evaluated something ({evaluated})"
    );
}
