//! Unknown keys, found from the one configuration model: the keys serde ignored while reading
//! the file into it (`serde_ignored`), each reported at its place in the file. A new key is
//! added to the model alone.

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::problem::{Problem, SourceMap};

/// One step of the path to an ignored key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Deserializes `source` into `T`, reporting every key the model does not know into
/// `problems`, with its line (serde stops at the first type error: keys after it are not
/// seen, and that error is reported instead).
pub fn read_reporting_unknown<'de, T: Deserialize<'de>>(
    source: &'de str,
    document: &DeTable<'_>,
    map: &SourceMap,
    problems: &mut Vec<Problem>,
) -> Result<T, toml::de::Error> {
    let deserializer = toml::de::Deserializer::parse(source)?;
    let mut ignored = Vec::new();
    let read = serde_ignored::deserialize(deserializer, |path| ignored.push(steps(&path)));
    // In the file's order (serde reports them in its own).
    let mut found: Vec<_> = ignored.iter().map(|path| (key_span(document, path), path)).collect();
    found.sort_by_key(|(span, _)| span.as_ref().map_or(usize::MAX, |span| span.start));
    problems.extend(found.into_iter().map(|(span, path)| unknown_key(path, span, map)));
    read
}

/// The steps from the root to `path` (`Some` and newtype wrappers are no steps in the file).
fn steps(path: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path;
    let (parent, step) = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, index } => (parent, Some(Step::Index(*index))),
        // toml's `Spanned` wraps a value in a map of its own: no step in the file.
        Path::Map { parent, key } if key.starts_with("$__serde_spanned_private") => (parent, None),
        Path::Map { parent, key } => (parent, Some(Step::Key(key.clone()))),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => (parent, None),
    };
    let mut steps = steps(parent);
    steps.extend(step);
    steps
}

/// The problem of the unknown key at `path`: its name, its section, and its place if found.
fn unknown_key(path: &[Step], span: Option<std::ops::Range<usize>>, map: &SourceMap) -> Problem {
    let name = match path.last() {
        Some(Step::Key(name)) => name.as_str(),
        _ => "?",
    };
    let section: Vec<&str> = path[..path.len().saturating_sub(1)]
        .iter()
        .filter_map(|step| match step {
            Step::Key(key) => Some(key.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    let place = if section.is_empty() { "at the top level".to_string() } else { format!("in [{}]", section.join(".")) };
    let message = format!("unknown key {name:?} {place}");
    match span {
        Some(span) => map.problem(span, message),
        None => crate::problem::unplaced(message),
    }
}

/// Where the last key of `path` is written.
fn key_span(document: &DeTable<'_>, path: &[Step]) -> Option<std::ops::Range<usize>> {
    let (last, parents) = path.split_last()?;
    let mut table = document;
    let mut value: Option<&DeValue<'_>> = None;
    for step in parents {
        value = match (step, value) {
            (Step::Key(key), None) => Some(table.get(key.as_str())?.get_ref()),
            (Step::Key(key), Some(DeValue::Table(inner))) => Some(inner.get(key.as_str())?.get_ref()),
            (Step::Index(index), Some(DeValue::Array(items))) => Some(items.get(*index)?.get_ref()),
            _ => return None,
        };
        if let Some(DeValue::Table(inner)) = value {
            table = inner;
            value = None;
        }
    }
    let Step::Key(name) = last else { return None };
    table.get_key_value(name.as_str()).map(|(key, _)| key.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Model {
        a: Option<u32>,
        section: Inner,
        list: Vec<toml::Spanned<Inner>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        b: Option<u32>,
    }

    fn unknown(source: &str) -> Vec<String> {
        let document = DeTable::parse(source).unwrap();
        let mut problems = Vec::new();
        let _: Model =
            read_reporting_unknown(source, document.get_ref(), &SourceMap::new(source), &mut problems).unwrap();
        problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn every_unknown_key_is_reported_at_its_place() {
        let source = "a = 1\nz = 2\n[section]\nb = 1\nc = 3\n[[list]]\nb = 1\n[[list]]\nd = 4\n";
        assert_eq!(
            unknown(source),
            [
                "line 2, column 1: unknown key \"z\" at the top level",
                "line 5, column 1: unknown key \"c\" in [section]",
                "line 9, column 1: unknown key \"d\" in [list]",
            ]
        );
        assert!(unknown("a = 1\n[section]\nb = 2\n").is_empty());
    }

    #[test]
    fn keys_under_unknown_tables_are_one_problem() {
        let problems = unknown("[nope]\nx = 1\ny = 2\n");
        assert_eq!(problems, ["line 1, column 2: unknown key \"nope\" at the top level"]);
    }
}
