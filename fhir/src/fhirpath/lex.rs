//! FHIRPath's tokens: identifiers (plain or backtick-quoted), string,
//! number, date/time and quantity-unit literals, `$` and `%` names,
//! symbols; comments skipped.

use super::FhirPathError;

/// One token and the byte offset it starts at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: Tok,
    pub(crate) at: usize,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or keyword (`and`, `is`, `true`…); `quoted` when
    /// written in backticks (never a keyword then).
    Ident { name: String, quoted: bool },
    /// A string literal, unescaped.
    Str(String),
    /// An integer or decimal literal, as written.
    Num(String),
    /// `@…`: a date, date-time or (`@T…`) time literal, without the `@`.
    Temporal(String),
    /// `$this`, `$index`, `$total`.
    Var(String),
    /// `%name` or `%'name'`: an environment variable.
    Env(String),
    /// A symbol: `.`, `,`, `(`, `)`, `[`, `]`, `{`, `}`, `+`, `-`, `*`,
    /// `/`, `&`, `|`, `=`, `!=`, `~`, `!~`, `<`, `>`, `<=`, `>=`.
    Sym(&'static str),
}

const SYMBOLS: [&str; 22] = [
    "!=", "!~", "<=", ">=", ".", ",", "(", ")", "[", "]", "{", "}", "+", "-", "*", "/", "&", "|",
    "=", "~", "<", ">",
];

/// Splits `src` into tokens.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, FhirPathError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(b.len(), |n| i + n);
            continue;
        }
        if src[i..].starts_with("/*") {
            let end = src[i + 2..]
                .find("*/")
                .ok_or_else(|| FhirPathError::syntax(i, "a comment is not closed"))?;
            i += end + 4;
            continue;
        }
        let at = i;
        let kind = if c == b'\'' {
            let (s, next) = quoted(src, i, b'\'')?;
            i = next;
            Tok::Str(s)
        } else if c == b'`' {
            let (s, next) = quoted(src, i, b'`')?;
            i = next;
            Tok::Ident {
                name: s,
                quoted: true,
            }
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            let s = src[i..j].to_owned();
            i = j;
            Tok::Num(s)
        } else if c == b'@' {
            let mut j = i + 1;
            while j < b.len()
                && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'-' | b':' | b'.' | b'+'))
            {
                // A `+`/`-` is part of the literal only as a time zone
                // (after the time) or a date separator.
                if b[j] == b'+' && !src[i + 1..j].contains('T') {
                    break;
                }
                if b[j] == b'.' && !b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    break;
                }
                j += 1;
            }
            if j == i + 1 {
                return Err(FhirPathError::syntax(i, "'@' without a date or time"));
            }
            let s = src[i + 1..j].to_owned();
            i = j;
            Tok::Temporal(s)
        } else if c == b'$' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let s = src[i + 1..j].to_owned();
            i = j;
            Tok::Var(s)
        } else if c == b'%' {
            if b.get(i + 1) == Some(&b'\'') || b.get(i + 1) == Some(&b'`') {
                let (s, next) = quoted(src, i + 1, b[i + 1])?;
                i = next;
                Tok::Env(s)
            } else {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-')
                {
                    j += 1;
                }
                if j == i + 1 {
                    return Err(FhirPathError::syntax(i, "'%' without a name"));
                }
                let s = src[i + 1..j].to_owned();
                i = j;
                Tok::Env(s)
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let s = src[i..j].to_owned();
            i = j;
            Tok::Ident {
                name: s,
                quoted: false,
            }
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            i += sym.len();
            Tok::Sym(sym)
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(FhirPathError::syntax(i, format!("unexpected '{ch}'")));
        };
        out.push(Token { kind, at });
    }
    Ok(out)
}

/// Reads a literal quoted with `q` starting at `start`; returns it
/// unescaped and the offset after the closing quote.
fn quoted(src: &str, start: usize, q: u8) -> Result<(String, usize), FhirPathError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((k, ch)) = chars.next() {
        match ch {
            c if c as u32 == u32::from(q) => return Ok((out, start + 1 + k + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String =
                            (0..4).filter_map(|_| chars.next().map(|c| c.1)).collect();
                        let cp = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                FhirPathError::syntax(start + k, format!("bad escape \\u{hex}"))
                            })?;
                        out.push(cp);
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
    Err(FhirPathError::syntax(
        start,
        "a quoted literal is not closed",
    ))
}
