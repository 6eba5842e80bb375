//! Reading a config: TOML syntax, then the schema, then the rules, reporting every problem
//! it can find in one pass rather than the first.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::error::ConfigError;

/// The problem of a required key that is not there.
const MISSING: &str = "missing: this key is required";

/// How many schema errors one read reports before it stops looking.
const MAX_SCHEMA_ERRORS: usize = 32;

/// Reads `text` as `T`. A TOML syntax error is one error naming its line and column. Past
/// that, each schema error (unknown key, wrong type, bad value) is reported and the key at
/// fault set aside, and the rest is read again, so one read finds them all. Returns what
/// could be read without the keys at fault (`None` when nothing could) and the errors.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<ConfigError>) {
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => return (None, vec![syntax(text, &e)]),
    };
    let mut errors: Vec<ConfigError> = Vec::new();
    loop {
        let value = toml::Value::Table(table.clone());
        let e = match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(config) => return (Some(config), errors),
            Err(e) => e,
        };
        let segments: Vec<String> = e.path().iter().filter_map(map_key).collect();
        let error = schema(&e.path().to_string(), e.inner().message());
        let repeated = errors.iter().any(|seen| seen.key == error.key);
        let top_level_missing = segments.is_empty() && error.problem == MISSING;
        if !repeated {
            errors.push(error);
        }
        if repeated || errors.len() >= MAX_SCHEMA_ERRORS {
            return (None, errors);
        }
        if top_level_missing {
            // A required top-level key (the cluster's name): read on with an empty one, which
            // the rules would refuse anyway (`merge` keeps the one error).
            let key = errors.last().map(|e| e.key.clone()).unwrap_or_default();
            table.insert(key, toml::Value::String(String::new()));
        } else if !set_aside(&mut table, &segments) {
            return (None, errors);
        }
    }
}

/// The key of a path segment into a table; `None` for an array index, so that an error in
/// an entry sets aside the whole list.
fn map_key(segment: &Segment) -> Option<String> {
    match segment {
        Segment::Map { key } => Some(key.clone()),
        Segment::Enum { variant } => Some(variant.clone()),
        Segment::Seq { .. } | Segment::Unknown => None,
    }
}

/// Removes the key at `path` (a chain of table keys, stopping at the first list) so that
/// the next read goes past it. A missing key is reported at its table: that table is set
/// aside then, and at the top level (no path) there is nothing to remove.
fn set_aside(table: &mut toml::Table, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut t = table;
    for key in parents {
        if !matches!(t.get(key), Some(toml::Value::Table(_))) {
            return t.remove(key).is_some();
        }
        match t.get_mut(key) {
            Some(toml::Value::Table(inner)) => t = inner,
            _ => return false,
        }
    }
    t.remove(last).is_some()
}

/// A syntax error with the line and column it starts at.
fn syntax(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().lines().next().unwrap_or_default().to_owned();
    let problem = match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    };
    ConfigError {
        key: "config".into(),
        problem,
    }
}

/// One-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    (line, column)
}

/// A schema error at `path` (`udp.peers[0]`, or `.` for the top level).
fn schema(path: &str, message: &str) -> ConfigError {
    let message = message.lines().next().unwrap_or_default();
    // A missing key is reported at its parent: name the key itself.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let key = match (path, missing) {
        (".", Some(field)) => field.to_owned(),
        (_, Some(field)) => format!("{path}.{field}"),
        (".", None) => "config".to_owned(),
        _ => path.to_owned(),
    };
    let problem = if missing.is_some() {
        MISSING.to_owned()
    } else {
        message.to_owned()
    };
    ConfigError { key, problem }
}

/// `errors` from the rules, leaving out those about a key the schema already reported (it
/// was set aside, so a rule may see it as missing).
pub(super) fn merge(mut schema: Vec<ConfigError>, rules: Vec<ConfigError>) -> Vec<ConfigError> {
    let related = |a: &str, b: &str| {
        a == b
            || [(a, b), (b, a)].iter().any(|(long, short)| {
                long.strip_prefix(short)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            })
    };
    for e in rules {
        if !schema.iter().any(|s| related(&s.key, &e.key)) {
            schema.push(e);
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        let text = "a = 1\nbb = [\n  x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 15), (3, 3));
        assert_eq!(line_column(text, 999), (4, 1));
    }

    #[test]
    fn merge_drops_rule_errors_about_reported_keys() {
        let e = |k: &str| ConfigError {
            key: k.into(),
            problem: String::new(),
        };
        let merged = merge(
            vec![e("udp.peers[0]"), e("udp.bind")],
            vec![
                e("udp.peers"),
                e("udp.bind"),
                e("udp.binder"),
                e("ring.capacity"),
            ],
        );
        let keys: Vec<&str> = merged.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["udp.peers[0]", "udp.bind", "udp.binder", "ring.capacity"]
        );
    }
}
