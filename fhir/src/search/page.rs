//! Keyset paging: a `_page` token names a position in a search's sort
//! order (the sort values, type and id of a match), and a page starts
//! after it (`next`) or ends before it (`previous`). Writes between two
//! requests therefore neither repeat nor skip an unchanged match, which
//! offsets would.
//!
//! Token: `n~<values>~<type>~<id>` (or `p~…`), the values `.`-separated,
//! each lowercase hex or `-` for none.

use std::fmt::Write as _;

use super::sort::{Hit, SortKey, order};
use crate::http::outcome::FhirError;

/// Longest `_page` token read (sort values are short keys).
pub const TOKEN_BYTES_MAX: usize = 4_096;

/// The token of the page that starts after `h` (`dir` `n`) or ends
/// before it (`p`).
pub(super) fn token(dir: char, h: &Hit) -> String {
    let mut values = String::new();
    for (i, k) in h.keys.iter().enumerate() {
        if i > 0 {
            values.push('.');
        }
        match k {
            None => values.push('-'),
            Some(bytes) if bytes.is_empty() => values.push('_'),
            Some(bytes) => {
                for b in bytes {
                    let _ = write!(values, "{b:02x}");
                }
            }
        }
    }
    format!("{dir}~{values}~{}~{}", h.ty, h.id)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads a token of a search sorted by `sort`: its direction and the
/// position it names.
fn parse_token(tok: &str, sort: &[SortKey]) -> Result<(char, Hit), FhirError> {
    let bad = || FhirError::invalid(format!("_page={tok:?} is not a page of this search"));
    if tok.len() > TOKEN_BYTES_MAX {
        return Err(bad());
    }
    let mut parts = tok.splitn(4, '~');
    let dir = match parts.next() {
        Some("n") => 'n',
        Some("p") => 'p',
        _ => return Err(bad()),
    };
    let values = parts.next().ok_or_else(bad)?;
    let ty = parts.next().ok_or_else(bad)?;
    let id = parts.next().ok_or_else(bad)?;
    let keys: Vec<Option<Vec<u8>>> = match values {
        "" => Vec::new(),
        v => v
            .split('.')
            .map(|k| match k {
                "-" => Some(None),
                "_" => Some(Some(Vec::new())),
                hex => unhex(hex).map(Some),
            })
            .collect::<Option<_>>()
            .ok_or_else(bad)?,
    };
    if keys.len() != sort.len() {
        return Err(bad());
    }
    let hit = Hit {
        ty: ty.to_owned(),
        id: id.to_owned(),
        keys,
    };
    Ok((dir, hit))
}

/// The `start..end` of `hits` (sorted by `sort`) that the page `page`
/// of `count` matches holds; the first page without a token.
pub(super) fn bounds(
    hits: &[Hit],
    sort: &[SortKey],
    page: Option<&str>,
    count: usize,
) -> Result<(usize, usize), FhirError> {
    let total = hits.len();
    let Some(tok) = page else {
        return Ok((0, count.min(total)));
    };
    let (dir, probe) = parse_token(tok, sort)?;
    let at = hits.partition_point(|h| order(sort, h, &probe).is_le());
    Ok(match dir {
        'n' => (at, at.saturating_add(count).min(total)),
        // `at` counts hits <= the token's hit; the page ends before it.
        _ => {
            let end = at.saturating_sub(1);
            (end.saturating_sub(count), end)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::registry::registry;
    use crate::search::sort::parse_sort;

    #[test]
    fn tokens_name_a_position_that_survives_a_round_trip() {
        let sort = parse_sort(
            registry().of("Patient"),
            &Default::default(),
            "Patient",
            "-birthdate,family",
        )
        .expect("sortable");
        let hits: Vec<Hit> = (0..5u8)
            .map(|i| Hit {
                ty: "Patient".into(),
                id: format!("p{i}"),
                keys: vec![Some(vec![9 - i]), (i % 2 == 0).then(Vec::new)],
            })
            .collect();
        let tok = token('n', &hits[1]);
        assert_eq!(bounds(&hits, &sort, Some(&tok), 2).expect("a page"), (2, 4));
        let tok = token('p', &hits[3]);
        assert_eq!(bounds(&hits, &sort, Some(&tok), 2).expect("a page"), (1, 3));
        assert_eq!(bounds(&hits, &sort, None, 10).expect("a page"), (0, 5));
    }

    #[test]
    fn tokens_of_another_search_are_refused() {
        let sort = parse_sort(
            registry().of("Patient"),
            &Default::default(),
            "Patient",
            "birthdate",
        )
        .expect("sortable");
        for bad in [
            "",
            "x~~Patient~1",
            "n~zz~Patient~1",
            "n~~Patient~1",
            "n~0a.0b~P~1",
            "n~0a",
        ] {
            assert!(bounds(&[], &sort, Some(bad), 1).is_err(), "{bad}");
        }
    }
}
