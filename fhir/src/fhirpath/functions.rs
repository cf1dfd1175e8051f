//! The functions: the table of names and arities `check` validates a
//! tree against, and `call`, which runs one on its input collection.

use std::cmp::Ordering;

use serde_json::Value;

use super::FhirPathError;
use super::compare::{canonical, item_equals, number};
use super::ctx::{
    Env, Out, boolean, bools, distinct, is_type, members, per_item, push_node, run, single,
    single_integer, single_string, type_arg, union,
};
use super::limits::REPEAT_ROUNDS_MAX;
use super::parse::{Literal, Node};
use super::value::{Item, Temporal, TemporalKind, is_calendar_unit};
use crate::instant::civil_from_days;

/// Functions known, with how many arguments each takes (min, max).
pub(super) const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("empty", 0, 0),
    ("exists", 0, 1),
    ("all", 1, 1),
    ("allTrue", 0, 0),
    ("anyTrue", 0, 0),
    ("allFalse", 0, 0),
    ("anyFalse", 0, 0),
    ("subsetOf", 1, 1),
    ("supersetOf", 1, 1),
    ("count", 0, 0),
    ("distinct", 0, 0),
    ("isDistinct", 0, 0),
    ("where", 1, 1),
    ("select", 1, 1),
    ("repeat", 1, 1),
    ("ofType", 1, 1),
    ("as", 1, 1),
    ("is", 1, 1),
    ("single", 0, 0),
    ("first", 0, 0),
    ("last", 0, 0),
    ("tail", 0, 0),
    ("skip", 1, 1),
    ("take", 1, 1),
    ("intersect", 1, 1),
    ("exclude", 1, 1),
    ("union", 1, 1),
    ("combine", 1, 1),
    ("iif", 2, 3),
    ("toBoolean", 0, 0),
    ("convertsToBoolean", 0, 0),
    ("toInteger", 0, 0),
    ("convertsToInteger", 0, 0),
    ("toDecimal", 0, 0),
    ("convertsToDecimal", 0, 0),
    ("toString", 0, 0),
    ("convertsToString", 0, 0),
    ("toDate", 0, 0),
    ("convertsToDate", 0, 0),
    ("toDateTime", 0, 0),
    ("convertsToDateTime", 0, 0),
    ("toTime", 0, 0),
    ("convertsToTime", 0, 0),
    ("toQuantity", 0, 1),
    ("convertsToQuantity", 0, 1),
    ("indexOf", 1, 1),
    ("substring", 1, 2),
    ("startsWith", 1, 1),
    ("endsWith", 1, 1),
    ("contains", 1, 1),
    ("upper", 0, 0),
    ("lower", 0, 0),
    ("replace", 2, 2),
    ("matches", 1, 1),
    ("replaceMatches", 2, 2),
    ("length", 0, 0),
    ("toChars", 0, 0),
    ("trim", 0, 0),
    ("split", 1, 1),
    ("join", 0, 1),
    ("abs", 0, 0),
    ("ceiling", 0, 0),
    ("exp", 0, 0),
    ("floor", 0, 0),
    ("ln", 0, 0),
    ("log", 1, 1),
    ("power", 1, 1),
    ("round", 0, 1),
    ("sqrt", 0, 0),
    ("truncate", 0, 0),
    ("children", 0, 0),
    ("descendants", 0, 0),
    ("trace", 1, 2),
    ("now", 0, 0),
    ("today", 0, 0),
    ("timeOfDay", 0, 0),
    ("not", 0, 0),
    ("extension", 1, 1),
    ("resolve", 0, 0),
    ("hasValue", 0, 0),
    ("getValue", 0, 0),
    ("aggregate", 1, 2),
    ("type", 0, 0),
    ("memberOf", 1, 1),
    ("conformsTo", 1, 1),
    ("htmlChecks", 0, 0),
    ("sort", 0, 8),
    ("encode", 1, 1),
    ("decode", 1, 1),
    ("escape", 1, 1),
    ("unescape", 1, 1),
    ("matchesFull", 1, 1),
];

/// Checks a parsed tree: every function is known and has a number of
/// arguments it takes.
pub(crate) fn check(n: &Node) -> Result<(), FhirPathError> {
    match n {
        Node::Call(target, name, args) => {
            let Some((_, min, max)) = FUNCTIONS.iter().find(|f| f.0 == name) else {
                return Err(FhirPathError::Semantic(format!(
                    "unknown function {name}()"
                )));
            };
            if args.len() < *min || args.len() > *max {
                return Err(FhirPathError::Semantic(format!(
                    "{name}() takes {min}..={max} arguments, not {}",
                    args.len()
                )));
            }
            if let Some(t) = target {
                check(t)?;
            }
            args.iter().try_for_each(check)
        }
        Node::Member(t, _) | Node::Negate(t, _) | Node::TypeOp(t, _, _) => check(t),
        Node::Index(a, b) | Node::Binary(_, a, b) => {
            check(a)?;
            check(b)
        }
        Node::Literal(Literal::Temporal(s)) => Temporal::parse(s, false)
            .map(|_| ())
            .ok_or_else(|| FhirPathError::Semantic(format!("@{s} is not a valid date or time"))),
        _ => Ok(()),
    }
}

pub(super) fn string_fn<'a>(
    input: &[Item<'a>],
    f: impl FnOnce(String) -> Result<Vec<Item<'a>>, FhirPathError>,
) -> Out<'a> {
    match single(input)? {
        None => Ok(Vec::new()),
        Some(i) => match i.system() {
            Some(Item::String(s)) => f(s),
            _ => Err(FhirPathError::execution("a string is required")),
        },
    }
}

pub(super) fn math<'a>(input: &[Item<'a>], f: impl FnOnce(&Item<'a>) -> Out<'a>) -> Out<'a> {
    match single(input)?.and_then(|i| i.system()) {
        None => Ok(Vec::new()),
        Some(i @ (Item::Integer(_) | Item::Decimal(_) | Item::Quantity(..))) => f(&i),
        Some(_) => Err(FhirPathError::execution("a number is required")),
    }
}

pub(super) fn decimal_out<'a>(d: f64) -> Vec<Item<'a>> {
    if d.is_finite() {
        vec![Item::Decimal(d)]
    } else {
        Vec::new()
    }
}

pub(super) fn regex(pattern: &str) -> Result<regex::Regex, FhirPathError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| FhirPathError::execution(format!("bad regular expression: {e}")))
}

pub(super) fn call<'a>(
    name: &str,
    input: Vec<Item<'a>>,
    args: &[Node],
    focus: &[Item<'a>],
    env: &Env<'a, '_>,
) -> Out<'a> {
    // Arguments that are not lambdas are evaluated on the enclosing focus.
    let arg = |k: usize| -> Out<'a> {
        match args.get(k) {
            Some(a) => run(a, focus, env),
            None => Ok(Vec::new()),
        }
    };
    Ok(match name {
        "empty" => vec![Item::Boolean(input.is_empty())],
        "exists" => {
            if args.is_empty() {
                vec![Item::Boolean(!input.is_empty())]
            } else {
                let mut any = false;
                per_item(&args[0], &input, env, |_, _, r| {
                    any |= boolean(&r)? == Some(true);
                    Ok(())
                })?;
                vec![Item::Boolean(any)]
            }
        }
        "all" => {
            let mut all = true;
            per_item(&args[0], &input, env, |_, _, r| {
                all &= boolean(&r)? == Some(true);
                Ok(())
            })?;
            vec![Item::Boolean(all)]
        }
        "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
            let mut vals = Vec::new();
            for i in &input {
                match i.system() {
                    Some(Item::Boolean(b)) => vals.push(b),
                    _ => return Err(FhirPathError::execution(format!("{name}() needs Booleans"))),
                }
            }
            vec![Item::Boolean(match name {
                "allTrue" => vals.iter().all(|b| *b),
                "anyTrue" => vals.iter().any(|b| *b),
                "allFalse" => vals.iter().all(|b| !*b),
                _ => vals.iter().any(|b| !*b),
            })]
        }
        "subsetOf" | "supersetOf" => {
            let other = arg(0)?;
            let (small, big) = if name == "subsetOf" {
                (&input, &other)
            } else {
                (&other, &input)
            };
            vec![Item::Boolean(small.iter().all(|x| {
                big.iter().any(|y| item_equals(x, y) == Some(true))
            }))]
        }
        "count" => vec![Item::Integer(input.len() as i64)],
        "distinct" => distinct(input),
        "isDistinct" => {
            let n = input.len();
            vec![Item::Boolean(distinct(input).len() == n)]
        }
        "where" => {
            let mut out = Vec::new();
            per_item(&args[0], &input, env, |_, it, r| {
                if boolean(&r)? == Some(true) {
                    out.push(it.clone());
                }
                Ok(())
            })?;
            out
        }
        "select" => {
            let mut out = Vec::new();
            per_item(&args[0], &input, env, |_, _, r| {
                out.extend(r);
                env.step(out.len())
            })?;
            out
        }
        "repeat" => {
            let mut out: Vec<Item<'a>> = Vec::new();
            let mut frontier = input;
            for _ in 0..REPEAT_ROUNDS_MAX {
                let mut next = Vec::new();
                per_item(&args[0], &frontier, env, |_, _, r| {
                    next.extend(r);
                    Ok(())
                })?;
                let fresh: Vec<Item<'a>> = next
                    .into_iter()
                    .filter(|n| !out.iter().any(|o| same_item(o, n)))
                    .collect();
                let fresh = dedupe(fresh);
                if fresh.is_empty() {
                    return Ok(out);
                }
                out.extend(fresh.iter().cloned());
                env.step(out.len())?;
                frontier = fresh;
            }
            return Err(FhirPathError::execution(format!(
                "repeat() ran more than {REPEAT_ROUNDS_MAX} rounds"
            )));
        }
        "ofType" => {
            let ty = type_arg(args)?;
            input.into_iter().filter(|i| is_type(i, &ty)).collect()
        }
        "as" => {
            let ty = type_arg(args)?;
            match single(&input)? {
                Some(i) if is_type(&i, &ty) => vec![i],
                _ => Vec::new(),
            }
        }
        "is" => {
            let ty = type_arg(args)?;
            match single(&input)? {
                Some(i) => vec![Item::Boolean(is_type(&i, &ty))],
                None => Vec::new(),
            }
        }
        "single" => single(&input)?.into_iter().collect(),
        "first" => input.into_iter().take(1).collect(),
        "last" => input.last().cloned().into_iter().collect(),
        "tail" => input.into_iter().skip(1).collect(),
        "skip" => {
            let n = single_integer(&arg(0)?)?.unwrap_or(0);
            input.into_iter().skip(n.max(0) as usize).collect()
        }
        "take" => {
            let n = single_integer(&arg(0)?)?.unwrap_or(0);
            input.into_iter().take(n.max(0) as usize).collect()
        }
        "intersect" => {
            let other = arg(0)?;
            distinct(
                input
                    .into_iter()
                    .filter(|x| other.iter().any(|y| item_equals(x, y) == Some(true)))
                    .collect(),
            )
        }
        "exclude" => {
            let other = arg(0)?;
            input
                .into_iter()
                .filter(|x| !other.iter().any(|y| item_equals(x, y) == Some(true)))
                .collect()
        }
        "union" => union(input, &arg(0)?),
        "combine" => {
            let mut out = input;
            out.extend(arg(0)?);
            out
        }
        "iif" => {
            if input.len() > 1 {
                return Err(FhirPathError::execution("iif() on more than one item"));
            }
            let this = input.first().cloned();
            let sub_focus: Vec<Item<'a>> = match &this {
                Some(t) => vec![t.clone()],
                None => focus.to_vec(),
            };
            let cond = match &this {
                Some(t) => {
                    let sub = env.with_this(t, 0);
                    boolean(&run(&args[0], &sub_focus, &sub)?)?
                }
                None => boolean(&run(&args[0], focus, env)?)?,
            };
            let pick = if cond == Some(true) {
                args.get(1)
            } else {
                args.get(2)
            };
            if let Some(c) = cond_item_check(&args[0], &sub_focus, this.as_ref(), focus, env)? {
                return Err(FhirPathError::execution(format!(
                    "iif() criterion is not a Boolean: {c}"
                )));
            }
            match pick {
                Some(a) => run(a, &sub_focus, env)?,
                None => Vec::new(),
            }
        }
        "toBoolean" | "convertsToBoolean" => {
            let v = single(&input)?
                .and_then(|i| i.system())
                .and_then(|i| match i {
                    Item::Boolean(b) => Some(b),
                    Item::Integer(1) => Some(true),
                    Item::Integer(0) => Some(false),
                    Item::Decimal(1.0) => Some(true),
                    Item::Decimal(0.0) => Some(false),
                    Item::String(s) => match s.to_lowercase().as_str() {
                        "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
                        "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
                        _ => None,
                    },
                    _ => None,
                });
            converted(name, &input, v.map(Item::Boolean))
        }
        "toInteger" | "convertsToInteger" => {
            let v = single(&input)?
                .and_then(|i| i.system())
                .and_then(|i| match i {
                    Item::Integer(n) => Some(n),
                    Item::Boolean(b) => Some(i64::from(b)),
                    Item::String(s) => {
                        let t = s.strip_prefix('+').unwrap_or(&s);
                        if !t.is_empty()
                            && t.trim_start_matches('-')
                                .bytes()
                                .all(|b| b.is_ascii_digit())
                        {
                            t.parse().ok()
                        } else {
                            None
                        }
                    }
                    _ => None,
                });
            converted(name, &input, v.map(Item::Integer))
        }
        "toDecimal" | "convertsToDecimal" => {
            let v = single(&input)?
                .and_then(|i| i.system())
                .and_then(|i| match i {
                    Item::Integer(n) => Some(n as f64),
                    Item::Decimal(d) => Some(d),
                    Item::Boolean(b) => Some(if b { 1.0 } else { 0.0 }),
                    Item::String(s) => {
                        let ok = !s.is_empty()
                            && s.trim_start_matches(['+', '-'])
                                .bytes()
                                .all(|b| b.is_ascii_digit() || b == b'.');
                        if ok { s.parse().ok() } else { None }
                    }
                    _ => None,
                });
            converted(name, &input, v.map(Item::Decimal))
        }
        "toString" | "convertsToString" => {
            let v = single(&input)?.and_then(|i| i.render());
            converted(name, &input, v.map(Item::String))
        }
        "toDate" | "convertsToDate" | "toDateTime" | "convertsToDateTime" | "toTime"
        | "convertsToTime" => {
            let want = if name.ends_with("DateTime") {
                TemporalKind::DateTime
            } else if name.ends_with("Date") {
                TemporalKind::Date
            } else {
                TemporalKind::Time
            };
            let v = single(&input)?
                .and_then(|i| i.system())
                .and_then(|i| match i {
                    Item::Temporal(t) => to_kind(t, want),
                    Item::String(s) => Temporal::parse(&s, want == TemporalKind::Time)
                        .and_then(|t| to_kind(t, want)),
                    _ => None,
                });
            converted(name, &input, v.map(Item::Temporal))
        }
        "toQuantity" | "convertsToQuantity" => {
            let v = single(&input)?
                .and_then(|i| i.system())
                .and_then(|i| match i {
                    Item::Quantity(v, u) => Some(Item::Quantity(v, u)),
                    Item::Integer(n) => Some(Item::Quantity(n as f64, "1".into())),
                    Item::Decimal(d) => Some(Item::Quantity(d, "1".into())),
                    Item::String(s) => parse_quantity(&s),
                    _ => None,
                });
            converted(name, &input, v)
        }
        "indexOf" => {
            let needle = single_string(&arg(0)?)?;
            string_fn(&input, |s| {
                Ok(needle
                    .map(|n| {
                        let i = s.find(&n).map_or(-1, |b| s[..b].chars().count() as i64);
                        Item::Integer(i)
                    })
                    .into_iter()
                    .collect())
            })?
        }
        "substring" => {
            let start = single_integer(&arg(0)?)?;
            let len = if args.len() > 1 {
                single_integer(&arg(1)?)?
            } else {
                None
            };
            string_fn(&input, |s| {
                let chars: Vec<char> = s.chars().collect();
                Ok(match start {
                    Some(st) if st >= 0 && (st as usize) < chars.len() => {
                        let st = st as usize;
                        let end = match len {
                            Some(l) => st.saturating_add(l.max(0) as usize).min(chars.len()),
                            None => chars.len(),
                        };
                        vec![Item::String(chars[st..end].iter().collect())]
                    }
                    _ => Vec::new(),
                })
            })?
        }
        "startsWith" | "endsWith" | "contains" => {
            let other = single_string(&arg(0)?)?;
            string_fn(&input, |s| {
                Ok(other
                    .map(|o| {
                        Item::Boolean(match name {
                            "startsWith" => s.starts_with(&o),
                            "endsWith" => s.ends_with(&o),
                            _ => s.contains(&o),
                        })
                    })
                    .into_iter()
                    .collect())
            })?
        }
        "upper" => string_fn(&input, |s| Ok(vec![Item::String(s.to_uppercase())]))?,
        "lower" => string_fn(&input, |s| Ok(vec![Item::String(s.to_lowercase())]))?,
        "trim" => string_fn(&input, |s| Ok(vec![Item::String(s.trim().to_owned())]))?,
        "length" => string_fn(&input, |s| {
            Ok(vec![Item::Integer(s.chars().count() as i64)])
        })?,
        "toChars" => string_fn(&input, |s| {
            Ok(s.chars().map(|c| Item::String(c.to_string())).collect())
        })?,
        "replace" => {
            let (p, r) = (single_string(&arg(0)?)?, single_string(&arg(1)?)?);
            string_fn(&input, |s| {
                Ok(match (p, r) {
                    (Some(p), Some(r)) => {
                        let out = if p.is_empty() {
                            let mut o = r.clone();
                            for c in s.chars() {
                                o.push(c);
                                o.push_str(&r);
                            }
                            o
                        } else {
                            s.replace(&p, &r)
                        };
                        vec![Item::String(out)]
                    }
                    _ => Vec::new(),
                })
            })?
        }
        "matchesFull" => {
            let p = single_string(&arg(0)?)?;
            string_fn(&input, |s| {
                Ok(match p {
                    Some(p) => vec![Item::Boolean(regex(&format!("^(?:{p})$"))?.is_match(&s))],
                    None => Vec::new(),
                })
            })?
        }
        "encode" | "decode" | "escape" | "unescape" => {
            let how = single_string(&arg(0)?)?.unwrap_or_default();
            string_fn(&input, |s| {
                Ok(super::text::transform(name, &how, &s)
                    .map(Item::String)
                    .into_iter()
                    .collect())
            })?
        }
        "sort" => sort(input, args, env)?,
        "matches" => {
            let p = single_string(&arg(0)?)?;
            string_fn(&input, |s| {
                Ok(match p {
                    Some(p) => vec![Item::Boolean(regex(&p)?.is_match(&s))],
                    None => Vec::new(),
                })
            })?
        }
        "replaceMatches" => {
            let (p, r) = (single_string(&arg(0)?)?, single_string(&arg(1)?)?);
            string_fn(&input, |s| {
                Ok(match (p, r) {
                    (Some(p), Some(_)) if p.is_empty() => vec![Item::String(s)],
                    (Some(p), Some(r)) => {
                        vec![Item::String(
                            regex(&p)?.replace_all(&s, r.as_str()).into_owned(),
                        )]
                    }
                    _ => Vec::new(),
                })
            })?
        }
        "split" => {
            let sep = single_string(&arg(0)?)?;
            string_fn(&input, |s| {
                Ok(match sep {
                    Some(sep) if !sep.is_empty() => s
                        .split(sep.as_str())
                        .map(|p| Item::String(p.to_owned()))
                        .collect(),
                    _ => vec![Item::String(s)],
                })
            })?
        }
        "join" => {
            let sep = if args.is_empty() {
                Some(String::new())
            } else {
                single_string(&arg(0)?)?
            };
            let parts: Vec<String> = input.iter().filter_map(|i| i.as_str()).collect();
            vec![Item::String(parts.join(sep.as_deref().unwrap_or("")))]
        }
        "abs" => math(&input, |i| {
            Ok(vec![match i {
                Item::Integer(n) => match n.checked_abs() {
                    Some(a) => Item::Integer(a),
                    None => return Ok(Vec::new()),
                },
                Item::Decimal(d) => Item::Decimal(d.abs()),
                Item::Quantity(v, u) => Item::Quantity(v.abs(), u.clone()),
                _ => return Ok(Vec::new()),
            }])
        })?,
        "ceiling" | "floor" | "truncate" => math(&input, |i| {
            let d = number(i).unwrap_or(0.0);
            let r = match name {
                "ceiling" => d.ceil(),
                "floor" => d.floor(),
                _ => d.trunc(),
            };
            Ok(vec![Item::Integer(r as i64)])
        })?,
        "exp" => math(&input, |i| Ok(decimal_out(number(i).unwrap_or(0.0).exp())))?,
        "ln" => math(&input, |i| Ok(decimal_out(number(i).unwrap_or(0.0).ln())))?,
        "sqrt" => math(&input, |i| Ok(decimal_out(number(i).unwrap_or(0.0).sqrt())))?,
        "log" => {
            let base = single(&arg(0)?)?
                .and_then(|i| i.system())
                .and_then(|i| number(&i));
            math(&input, |i| {
                Ok(base
                    .map(|b| decimal_out(number(i).unwrap_or(0.0).log(b)))
                    .unwrap_or_default())
            })?
        }
        "power" => {
            let exp = single(&arg(0)?)?.and_then(|i| i.system());
            math(&input, |i| {
                Ok(match (i, exp) {
                    (Item::Integer(b), Some(Item::Integer(e))) if e >= 0 => u32::try_from(e)
                        .ok()
                        .and_then(|e| b.checked_pow(e))
                        .map(Item::Integer)
                        .into_iter()
                        .collect(),
                    (b, Some(e)) => match (number(b), number(&e)) {
                        (Some(b), Some(e)) => decimal_out(b.powf(e)),
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                })
            })?
        }
        "round" => {
            let digits = if args.is_empty() {
                Some(0)
            } else {
                single_integer(&arg(0)?)?
            };
            math(&input, |i| {
                let f = 10f64.powi(digits.unwrap_or(0).clamp(0, 15) as i32);
                Ok(vec![Item::Decimal(
                    (number(i).unwrap_or(0.0) * f).round() / f,
                )])
            })?
        }
        "children" => children(&input),
        "descendants" => {
            let mut out = Vec::new();
            let mut frontier = children(&input);
            for _ in 0..REPEAT_ROUNDS_MAX {
                if frontier.is_empty() {
                    return Ok(out);
                }
                out.extend(frontier.iter().cloned());
                env.step(out.len())?;
                frontier = children(&frontier);
            }
            return Err(FhirPathError::execution("descendants() nested too deep"));
        }
        "trace" => input,
        "now" | "today" | "timeOfDay" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let (y, m, d) = civil_from_days(now.div_euclid(86_400));
            let secs = now.rem_euclid(86_400);
            let (h, mi, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
            let text = match name {
                "now" => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
                "today" => format!("{y:04}-{m:02}-{d:02}"),
                _ => format!("T{h:02}:{mi:02}:{s:02}"),
            };
            Temporal::parse(&text, false)
                .map(Item::Temporal)
                .into_iter()
                .collect()
        }
        "not" => bools(boolean(&input)?.map(|b| !b)),
        "extension" => {
            let url = single_string(&arg(0)?)?;
            let ext = members(&input, "extension");
            ext.into_iter()
                .filter(|e| {
                    e.node()
                        .and_then(|v| v.get("url"))
                        .and_then(Value::as_str)
                        .is_some_and(|u| Some(u) == url.as_deref())
                })
                .collect()
        }
        "resolve" => input
            .iter()
            .filter_map(|i| {
                let r = match i.node()? {
                    Value::Object(o) => o.get("reference")?.as_str()?,
                    Value::String(s) => s.as_str(),
                    _ => return None,
                };
                reference_type(r).map(Item::Resolved)
            })
            .collect(),
        "hasValue" => vec![Item::Boolean(matches!(
            single(&input)?,
            Some(Item::Node(
                Value::String(_) | Value::Number(_) | Value::Bool(_),
                _
            ))
        ))],
        "getValue" => match single(&input)? {
            Some(i @ Item::Node(Value::String(_) | Value::Number(_) | Value::Bool(_), _)) => {
                i.system().into_iter().collect()
            }
            _ => Vec::new(),
        },
        "aggregate" => {
            let mut total: Vec<Item<'a>> = if args.len() > 1 { arg(1)? } else { Vec::new() };
            for (k, it) in input.iter().enumerate() {
                let sub = Env {
                    resource: env.resource,
                    this: Some(it),
                    index: Some(k as i64),
                    total: Some(&total),
                    steps: env.steps,
                    eval: env.eval,
                };
                let next = run(&args[0], std::slice::from_ref(it), &sub)?;
                total = next;
            }
            total
        }
        "type" | "memberOf" | "conformsTo" | "htmlChecks" => {
            return Err(FhirPathError::execution(format!(
                "{name}() needs a model or terminology this server does not have"
            )));
        }
        other => {
            return Err(FhirPathError::Semantic(format!(
                "unknown function {other}()"
            )));
        }
    })
}

/// An `iif` criterion that is a value but not a Boolean: what it is.
pub(super) fn cond_item_check<'a>(
    crit: &Node,
    sub_focus: &[Item<'a>],
    this: Option<&Item<'a>>,
    focus: &[Item<'a>],
    env: &Env<'a, '_>,
) -> Result<Option<String>, FhirPathError> {
    let r = match this {
        Some(t) => run(crit, sub_focus, &env.with_this(t, 0))?,
        None => run(crit, focus, env)?,
    };
    Ok(match single(&r)?.and_then(|i| i.system()) {
        Some(Item::Boolean(_)) | None => None,
        Some(other) => Some(other.render().unwrap_or_default()),
    })
}

/// `sort(keys…)`: by each key in turn (a key written `-k` sorts
/// descending); with no key, by the items themselves. Keys are mapped to
/// a total order first (the sort must never see an inconsistent
/// comparison); keys of one position must be of one kind, else an error.
pub(super) fn sort<'a>(input: Vec<Item<'a>>, args: &[Node], env: &Env<'a, '_>) -> Out<'a> {
    let positions = args.len().max(1);
    let mut keyed = Vec::with_capacity(input.len());
    for (k, it) in input.into_iter().enumerate() {
        let mut keys = Vec::with_capacity(positions);
        if args.is_empty() {
            keys.push((sort_key(Some(&it))?, false));
        }
        for a in args {
            let (expr, desc) = match a {
                Node::Negate(e, true) => (e.as_ref(), true),
                other => (other, false),
            };
            let sub = env.with_this(&it, k as i64);
            let v = run(expr, std::slice::from_ref(&it), &sub)?;
            keys.push((sort_key(single(&v)?.as_ref())?, desc));
        }
        keyed.push((keys, it));
    }
    for pos in 0..positions {
        let mut kinds = keyed
            .iter()
            .filter_map(|(keys, _)| keys.get(pos).map(|(key, _)| key.kind()))
            .filter(|k| *k != 0);
        if let Some(first) = kinds.next()
            && kinds.any(|k| k != first)
        {
            return Err(FhirPathError::execution(
                "sort() keys of different types cannot be ordered",
            ));
        }
    }
    keyed.sort_by(|(a, _), (b, _)| {
        for ((x, desc), (y, _)) in a.iter().zip(b) {
            let o = x.total_cmp(y);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    Ok(keyed.into_iter().map(|(_, it)| it).collect())
}

/// A sort key with a total order.
#[derive(Debug)]
pub(super) enum SortKey {
    /// No value: first.
    Empty,
    Boolean(bool),
    Number(f64),
    Text(String),
    /// A temporal's parts, normalised (zone applied), coarser first on ties.
    Temporal(Vec<i64>),
    /// A quantity in its dimension's base unit (or its own unit).
    Quantity(String, f64),
}

impl SortKey {
    /// Which kind, for the one-kind check (0: empty).
    fn kind(&self) -> u8 {
        match self {
            SortKey::Empty => 0,
            SortKey::Boolean(_) => 1,
            SortKey::Number(_) => 2,
            SortKey::Text(_) => 3,
            SortKey::Temporal(_) => 4,
            SortKey::Quantity(..) => 5,
        }
    }

    fn total_cmp(&self, other: &SortKey) -> Ordering {
        match (self, other) {
            (SortKey::Boolean(a), SortKey::Boolean(b)) => a.cmp(b),
            (SortKey::Number(a), SortKey::Number(b)) => a.total_cmp(b),
            (SortKey::Text(a), SortKey::Text(b)) => a.cmp(b),
            (SortKey::Temporal(a), SortKey::Temporal(b)) => a.cmp(b),
            (SortKey::Quantity(u, a), SortKey::Quantity(v, b)) => u.cmp(v).then(a.total_cmp(b)),
            _ => self.kind().cmp(&other.kind()),
        }
    }
}

/// The sort key of an item (empty for none).
fn sort_key(item: Option<&Item>) -> Result<SortKey, FhirPathError> {
    let Some(item) = item else {
        return Ok(SortKey::Empty);
    };
    Ok(match item.system() {
        None => {
            return Err(FhirPathError::execution(
                "sort() needs values (strings, numbers, dates, quantities) as keys",
            ));
        }
        Some(Item::Boolean(b)) => SortKey::Boolean(b),
        Some(Item::Integer(i)) => SortKey::Number(i as f64),
        Some(Item::Decimal(d)) => SortKey::Number(d),
        Some(Item::String(s)) => SortKey::Text(s),
        Some(Item::Temporal(t)) => SortKey::Temporal(t.sort_parts()),
        Some(Item::Quantity(v, u)) => match canonical(v, &u) {
            Some((c, dim)) => SortKey::Quantity(dim.to_owned(), c),
            None => SortKey::Quantity(u, v),
        },
        Some(Item::Node(..) | Item::Resolved(_)) => SortKey::Empty,
    })
}

/// Items equal as the same node or the same value (for `repeat`).
pub(super) fn same_item(a: &Item, b: &Item) -> bool {
    match (a, b) {
        (Item::Node(x, _), Item::Node(y, _)) => std::ptr::eq(*x, *y),
        _ => item_equals(a, b) == Some(true),
    }
}

pub(super) fn dedupe<'a>(c: Vec<Item<'a>>) -> Vec<Item<'a>> {
    let mut out: Vec<Item<'a>> = Vec::with_capacity(c.len());
    for i in c {
        if !out.iter().any(|o| same_item(o, &i)) {
            out.push(i);
        }
    }
    out
}

pub(super) fn children<'a>(input: &[Item<'a>]) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for it in input {
        if let Some(Value::Object(o)) = it.node() {
            for v in o.values() {
                push_node(&mut out, v, None);
            }
        }
    }
    out
}

/// The type a reference points to: `Patient/1`, `…/Patient/1/_history/2`.
pub(super) fn reference_type(r: &str) -> Option<String> {
    let path = r.split(['?', '#']).next()?;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segs.len();
    let at = if n >= 4 && segs[n - 2] == "_history" {
        n - 4
    } else {
        n.checked_sub(2)?
    };
    let t = segs.get(at)?;
    t.starts_with(|c: char| c.is_ascii_uppercase())
        .then(|| (*t).to_owned())
}

pub(super) fn to_kind(t: Temporal, want: TemporalKind) -> Option<Temporal> {
    match (t.kind, want) {
        (a, b) if a == b => Some(t),
        (TemporalKind::Date, TemporalKind::DateTime) => Some(Temporal {
            kind: TemporalKind::DateTime,
            ..t
        }),
        (TemporalKind::DateTime, TemporalKind::Date) => {
            let parts: Vec<u32> = t.parts.iter().take(3).copied().collect();
            let text = t.text.split('T').next().unwrap_or("").to_owned();
            Some(Temporal {
                kind: TemporalKind::Date,
                parts,
                tz_minutes: None,
                text,
            })
        }
        _ => None,
    }
}

pub(super) fn parse_quantity<'a>(s: &str) -> Option<Item<'a>> {
    let s = s.trim();
    let (num, unit) = match s.find(' ') {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let v: f64 = num.parse().ok()?;
    let unit = if unit.is_empty() {
        "1".to_owned()
    } else if let Some(u) = unit.strip_prefix('\'').and_then(|u| u.strip_suffix('\'')) {
        u.to_owned()
    } else if is_calendar_unit(unit) {
        unit.to_owned()
    } else {
        return None;
    };
    Some(Item::Quantity(v, unit))
}

/// `toX()` gives the converted value or empty; `convertsToX()` says
/// whether there is one (empty on empty input).
pub(super) fn converted<'a>(name: &str, input: &[Item<'a>], v: Option<Item<'a>>) -> Vec<Item<'a>> {
    if name.starts_with("convertsTo") {
        if input.is_empty() {
            Vec::new()
        } else {
            vec![Item::Boolean(v.is_some())]
        }
    } else {
        v.into_iter().collect()
    }
}
