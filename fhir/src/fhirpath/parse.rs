//! FHIRPath's grammar (FHIRPath 2.0, N1), parsed by precedence climbing
//! into [`Node`]s. Precedence, tightest first: `.` and `[]`; unary `+ -`;
//! `* / div mod`; `+ - &`; `is as`; `|`; `< > <= >=`; `= ~ != !~`;
//! `in contains`; `and`; `xor or`; `implies`.

use super::FhirPathError;
use super::lex::{Tok, Token};
use super::limits::DEPTH_MAX;

/// A literal of the grammar.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `true` / `false`.
    Boolean(bool),
    /// `'text'`.
    String(String),
    /// `12`.
    Integer(i64),
    /// `1.5`, kept as written.
    Decimal(String),
    /// `@2014-01-25…` or `@T12:00…`, without the `@`.
    Temporal(String),
    /// `4 'mg'` or `3 days`: the number as written and the unit.
    Quantity(String, String),
}

/// A type named in `is`, `as` or `ofType`: an optional namespace
/// (`System`, `FHIR`) and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeName {
    /// `System`, `FHIR`, or `None` when unqualified.
    pub namespace: Option<String>,
    /// The type's name.
    pub name: String,
}

/// A node of a parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A literal.
    Literal(Literal),
    /// `{}`: the empty collection.
    Empty,
    /// An identifier at the start of a path (a member of `$this`, or the
    /// context's type name).
    Ident(String),
    /// `target.name`.
    Member(Box<Node>, String),
    /// `name(args)` applied to `target` (or to `$this` when `None`).
    Call(Option<Box<Node>>, String, Vec<Node>),
    /// `target[index]`.
    Index(Box<Node>, Box<Node>),
    /// Unary `-` or `+`.
    Negate(Box<Node>, bool),
    /// A binary operator.
    Binary(&'static str, Box<Node>, Box<Node>),
    /// `x is T` (`true`) or `x as T` (`false`).
    TypeOp(Box<Node>, bool, TypeName),
    /// `$this`, `$index`, `$total`.
    Var(String),
    /// `%name`.
    Env(String),
}

/// Parses a whole expression.
pub(crate) fn parse(tokens: &[Token], src_len: usize) -> Result<Node, FhirPathError> {
    let mut p = Parser {
        t: tokens,
        i: 0,
        src_len,
    };
    let n = p.expr(0, 0)?;
    if let Some(t) = p.peek() {
        return Err(FhirPathError::syntax(
            t.at,
            format!("unexpected {}", describe(&t.kind)),
        ));
    }
    // Chains (`a.b.c…`, `x | y | z…`) nest the tree without nesting the
    // parser: bound the tree's depth too, as evaluation recurses on it.
    let d = tree_depth(&n);
    if d > DEPTH_MAX {
        return Err(FhirPathError::syntax(
            0,
            format!("the expression nests {d} deep, more than {DEPTH_MAX}"),
        ));
    }
    Ok(n)
}

/// The depth of a tree, walked without recursion.
fn tree_depth(root: &Node) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((n, d)) = stack.pop() {
        deepest = deepest.max(d);
        match n {
            Node::Member(t, _) | Node::Negate(t, _) | Node::TypeOp(t, _, _) => {
                stack.push((t, d + 1));
            }
            Node::Index(a, b) | Node::Binary(_, a, b) => {
                stack.push((a, d + 1));
                stack.push((b, d + 1));
            }
            Node::Call(t, _, args) => {
                if let Some(t) = t {
                    stack.push((t, d + 1));
                }
                stack.extend(args.iter().map(|a| (a, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

struct Parser<'a> {
    t: &'a [Token],
    i: usize,
    src_len: usize,
}

/// Binary operators by level, loosest first (levels 0..).
const LEVELS: [&[&str]; 10] = [
    &["implies"],
    &["or", "xor"],
    &["and"],
    &["in", "contains"],
    &["=", "~", "!=", "!~"],
    &["<", ">", "<=", ">="],
    &["|"],
    &["is", "as"],
    &["+", "-", "&"],
    &["*", "/", "div", "mod"],
];

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident { name, .. } => format!("'{name}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Temporal(s) => format!("@{s}"),
        Tok::Var(v) => format!("${v}"),
        Tok::Env(e) => format!("%{e}"),
        Tok::Sym(s) => format!("'{s}'"),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.t.get(self.i)
    }

    fn at(&self) -> usize {
        self.peek().map_or(self.src_len, |t| t.at)
    }

    /// The binary operator at the cursor, if any, as a static name.
    fn operator(&self) -> Option<&'static str> {
        match &self.peek()?.kind {
            Tok::Sym(s) => LEVELS
                .iter()
                .flat_map(|l| l.iter())
                .find(|o| *o == s)
                .copied(),
            Tok::Ident {
                name,
                quoted: false,
            } => LEVELS
                .iter()
                .flat_map(|l| l.iter())
                .find(|o| **o == name.as_str())
                .copied(),
            _ => None,
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Token { kind: Tok::Sym(x), .. }) if *x == s) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), FhirPathError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            let found = self
                .peek()
                .map_or("the end".to_owned(), |t| describe(&t.kind));
            Err(FhirPathError::syntax(
                self.at(),
                format!("expected '{s}', found {found}"),
            ))
        }
    }

    fn expr(&mut self, level: usize, depth: usize) -> Result<Node, FhirPathError> {
        if depth > DEPTH_MAX {
            return Err(FhirPathError::syntax(
                self.at(),
                format!("nested deeper than {DEPTH_MAX}"),
            ));
        }
        if level == LEVELS.len() {
            return self.unary(depth);
        }
        let mut left = self.expr(level + 1, depth)?;
        while let Some(op) = self.operator().filter(|o| LEVELS[level].contains(o)) {
            self.i += 1;
            if op == "is" || op == "as" {
                let ty = self.type_name()?;
                left = Node::TypeOp(Box::new(left), op == "is", ty);
                continue;
            }
            let right = self.expr(level + 1, depth)?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn type_name(&mut self) -> Result<TypeName, FhirPathError> {
        let first = self.ident()?;
        if self.eat_sym(".") {
            let name = self.ident()?;
            Ok(TypeName {
                namespace: Some(first),
                name,
            })
        } else {
            Ok(TypeName {
                namespace: None,
                name: first,
            })
        }
    }

    fn ident(&mut self) -> Result<String, FhirPathError> {
        match self.peek() {
            Some(Token {
                kind: Tok::Ident { name, .. },
                ..
            }) => {
                let n = name.clone();
                self.i += 1;
                Ok(n)
            }
            other => Err(FhirPathError::syntax(
                self.at(),
                format!(
                    "expected a name, found {}",
                    other.map_or("the end".to_owned(), |t| describe(&t.kind))
                ),
            )),
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        if depth > DEPTH_MAX {
            return Err(FhirPathError::syntax(
                self.at(),
                format!("nested deeper than {DEPTH_MAX}"),
            ));
        }
        if self.eat_sym("-") {
            let n = self.unary(depth + 1)?;
            return Ok(Node::Negate(Box::new(n), true));
        }
        if self.eat_sym("+") {
            let n = self.unary(depth + 1)?;
            return Ok(Node::Negate(Box::new(n), false));
        }
        let mut n = self.term(depth)?;
        loop {
            if self.eat_sym(".") {
                let name = self.ident()?;
                if self.eat_sym("(") {
                    let args = self.args(depth)?;
                    n = Node::Call(Some(Box::new(n)), name, args);
                } else {
                    n = Node::Member(Box::new(n), name);
                }
            } else if self.eat_sym("[") {
                let idx = self.expr(0, depth + 1)?;
                self.expect_sym("]")?;
                n = Node::Index(Box::new(n), Box::new(idx));
            } else {
                return Ok(n);
            }
        }
    }

    fn args(&mut self, depth: usize) -> Result<Vec<Node>, FhirPathError> {
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr(0, depth + 1)?);
            if self.eat_sym(")") {
                return Ok(args);
            }
            self.expect_sym(",")?;
        }
    }

    fn term(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        let Some(t) = self.peek().cloned() else {
            return Err(FhirPathError::syntax(
                self.src_len,
                "the expression ends too soon",
            ));
        };
        self.i += 1;
        Ok(match t.kind {
            Tok::Str(s) => Node::Literal(Literal::String(s)),
            Tok::Temporal(s) => Node::Literal(Literal::Temporal(s)),
            Tok::Var(v) => match v.as_str() {
                "this" | "index" | "total" => Node::Var(v),
                _ => {
                    return Err(FhirPathError::syntax(
                        t.at,
                        format!("unknown variable ${v}"),
                    ));
                }
            },
            Tok::Env(e) => Node::Env(e),
            Tok::Num(n) => {
                // A quantity: a number and a unit (quoted, or a calendar word).
                if let Some(unit) = self.unit() {
                    Node::Literal(Literal::Quantity(n, unit))
                } else if n.contains('.') {
                    Node::Literal(Literal::Decimal(n))
                } else {
                    match n.parse::<i64>() {
                        Ok(i) => Node::Literal(Literal::Integer(i)),
                        Err(_) => Node::Literal(Literal::Decimal(n)),
                    }
                }
            }
            Tok::Sym("(") => {
                let n = self.expr(0, depth + 1)?;
                self.expect_sym(")")?;
                n
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Node::Empty
            }
            Tok::Ident { name, quoted } => {
                if !quoted && (name == "true" || name == "false") {
                    Node::Literal(Literal::Boolean(name == "true"))
                } else if self.eat_sym("(") {
                    let args = self.args(depth)?;
                    Node::Call(None, name, args)
                } else {
                    Node::Ident(name)
                }
            }
            other => {
                return Err(FhirPathError::syntax(
                    t.at,
                    format!("unexpected {}", describe(&other)),
                ));
            }
        })
    }

    /// A quantity's unit after a number, if one follows.
    fn unit(&mut self) -> Option<String> {
        const CALENDAR: [&str; 16] = [
            "year",
            "years",
            "month",
            "months",
            "week",
            "weeks",
            "day",
            "days",
            "hour",
            "hours",
            "minute",
            "minutes",
            "second",
            "seconds",
            "millisecond",
            "milliseconds",
        ];
        match &self.peek()?.kind {
            Tok::Str(u) => {
                let u = u.clone();
                self.i += 1;
                Some(u)
            }
            Tok::Ident {
                name,
                quoted: false,
            } if CALENDAR.contains(&name.as_str()) => {
                let u = name.clone();
                self.i += 1;
                Some(u)
            }
            _ => None,
        }
    }
}
