//! The README's configuration table and the shipped sample configurations, held to the model:
//! they name exactly the model's keys, and every default they state is the model's.
//!
//! A stated default is checked by what it does, not by its text: a minimal configuration with
//! the key written at that value must read exactly as one without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use super::Config;
use super::raw::RawConfig;

const MINIMAL: &str = "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:3001/mcp\"]\n";

/// Keys a sample configuration writes without claiming a default: the route's own.
const ROUTE_IDENTITY: [&str; 3] = ["route.name", "route.path", "route.upstreams"];

/// The repository's root (`policies/` is one of its crates).
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("policies/ is in the repository")
}

fn repository_file(path: &str) -> (PathBuf, String) {
    let path = repository().join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

/// The shipped sample configurations (`conf/*.toml`, the package's), and the keys each
/// writes at a value that is not the default on purpose.
fn sample_configs() -> Vec<(PathBuf, String, &'static [&'static str])> {
    let conf = repository().join("conf");
    let mut samples: Vec<_> = std::fs::read_dir(&conf)
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| (path.clone(), std::fs::read_to_string(&path).unwrap(), &[] as &[&str]))
        .collect();
    assert!(!samples.is_empty(), "no conf/*.toml");
    // The package keeps its cache on disk, in the service's CacheDirectory.
    let (path, text) = repository_file("packaging/mcp-edge.toml");
    samples.push((path, text, &["cache.disk_path"]));
    samples
}

// ---- The README's table ----

/// One key of the README's configuration table and its stated default: the TOML value when
/// the table gives one (`` `"4MiB"` ``), `None` when it says something else ("none", "required").
#[derive(Debug)]
struct Documented {
    key: String,
    default: Option<String>,
}

/// The rows of the table headed `| key | default | meaning |`. A row may document sibling
/// keys at once: `` `a.b.c` / `d` `` with defaults `` `1` / `2` ``, or one default for each.
fn readme_table(readme: &str) -> Vec<Documented> {
    let mut lines = readme.lines().skip_while(|line| !line.starts_with("| key | default |"));
    assert!(lines.next().is_some(), "README.md has no `| key | default | meaning |` table");
    lines
        .take_while(|line| line.starts_with('|'))
        .filter(|line| !line.starts_with("|---"))
        .flat_map(|row| {
            let cells = cells(row);
            assert!(cells.len() >= 3, "README row without key, default and meaning: {row}");
            documented(&cells[0], &cells[1]).unwrap_or_else(|e| panic!("README row {row}: {e}"))
        })
        .collect()
}

/// A table row's cells (`\|` is a `|` inside a cell).
fn cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => cells.last_mut().unwrap().push(chars.next().unwrap()),
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.pop_if(|last| last.trim().is_empty());
    cells.iter().map(|cell| cell.trim().to_string()).collect()
}

fn documented(keys: &str, defaults: &str) -> Result<Vec<Documented>, String> {
    let written: Vec<&str> =
        keys.split(" / ").map(|key| in_backticks(key).ok_or("a key not in backticks")).collect::<Result<_, _>>()?;
    let (first, siblings) = written.split_first().ok_or("no key")?;
    let section = first.rsplit_once('.').map_or("", |(section, _)| section);
    let keys: Vec<String> =
        std::iter::once(first.to_string()).chain(siblings.iter().map(|key| format!("{section}.{key}"))).collect();
    let mut defaults: Vec<&str> = defaults.split(" / ").collect();
    if let [one] = defaults[..] {
        defaults = vec![one.strip_suffix(" each").unwrap_or(one); keys.len()];
    }
    if defaults.len() != keys.len() {
        return Err(format!("{} keys but {} defaults", keys.len(), defaults.len()));
    }
    Ok(keys
        .into_iter()
        .zip(defaults)
        .map(|(key, default)| Documented { key, default: in_backticks(default).map(str::to_string) })
        .collect())
}

/// `text` without its enclosing backticks, if it is one code span.
fn in_backticks(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

// ---- The model's keys ----

/// Every key of the model, as dotted paths of its leaves (`server.listen`, `route.policy.max_ttl`).
fn model_keys() -> BTreeSet<String> {
    let mut paths = Vec::new();
    if let Err(e) = RawConfig::deserialize(key_walk::KeyWalker { path: String::new(), found: &mut paths }) {
        panic!("the key walk could not read the model: {e}");
    }
    let tables: BTreeSet<String> =
        paths.iter().filter_map(|path| path.rsplit_once('.')).map(|(table, _)| table.to_string()).collect();
    paths.into_iter().filter(|path| !tables.contains(path)).collect()
}

/// Walks a serde model with placeholder values, noting the path of every struct field: the
/// key names come from the model's own derived `Deserialize`, so none is written twice.
mod key_walk {
    use serde::de::value::{BorrowedStrDeserializer, Error};
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    pub(super) struct KeyWalker<'a> {
        pub(super) path: String,
        pub(super) found: &'a mut Vec<String>,
    }

    impl<'de> Deserializer<'de> for KeyWalker<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(de::Error::custom(format!("{}: a type the key walk does not know", self.path)))
        }
        fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_bool(false)
        }
        fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_i64(0)
        }
        fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_u64(0)
        }
        fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_f64(0.0)
        }
        fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_str("")
        }
        fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_str("")
        }
        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_some(self)
        }
        /// One element: its keys are the sequence's (`[[route]]`).
        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_seq(OneElement(Some(self)))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_map(Fields { walker: self, fields, current: "" })
        }

        serde::forward_to_deserialize_any! {
            i8 i16 i32 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit unit_struct newtype_struct
            tuple tuple_struct map enum identifier ignored_any
        }
    }

    struct OneElement<'a>(Option<KeyWalker<'a>>);

    impl<'de> SeqAccess<'de> for OneElement<'_> {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
            self.0.take().map(|walker| seed.deserialize(walker)).transpose()
        }
    }

    struct Fields<'a> {
        walker: KeyWalker<'a>,
        fields: &'static [&'static str],
        current: &'static str,
    }

    impl<'de> MapAccess<'de> for Fields<'_> {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
            let Some((field, rest)) = self.fields.split_first() else { return Ok(None) };
            (self.current, self.fields) = (field, rest);
            seed.deserialize(BorrowedStrDeserializer::new(field)).map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let walker = &mut self.walker;
            // toml's `Spanned` is a struct of its own around a value: no key in the file.
            let path = if self.current.starts_with("$__serde_spanned_private") {
                walker.path.clone()
            } else if walker.path.is_empty() {
                self.current.to_string()
            } else {
                format!("{}.{}", walker.path, self.current)
            };
            if path != walker.path {
                walker.found.push(path.clone());
            }
            seed.deserialize(KeyWalker { path, found: &mut *walker.found })
        }
    }
}

// ---- Stating a default changes nothing ----

/// The least configuration `key` can be written in: one route, and the keys its section
/// requires (a shared tier needs its server; TLS its certificate and key).
fn least_config_for(key: &str) -> Table {
    let required = [
        ("cache.shared.", "[cache.shared]\nurl = \"redis://127.0.0.1:6379\"\n"),
        ("server.tls.", "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"),
    ];
    let section = required.iter().find(|(prefix, _)| key.starts_with(prefix)).map_or("", |(_, keys)| keys);
    // Tables of the route whose presence turns a feature on, with the keys they require.
    let route_tables = [
        ("route.discovery.", ""),
        (
            "route.auth.",
            "issuer = \"https://idp.example\"\naudience = \"https://mcp.example/mcp\"\njwks_file = \"jwks.json\"\n",
        ),
    ];
    let route_table = route_tables
        .iter()
        .find(|(prefix, _)| key.starts_with(*prefix))
        .map_or(String::new(), |(prefix, keys)| format!("[{}]\n{keys}", prefix.trim_end_matches('.')));
    format!("{section}{MINIMAL}{route_table}").parse().unwrap()
}

/// `document` with `key` (a dotted path; `route.…` is in its last route) set to `value`.
fn with_key(mut document: Table, key: &str, value: Value) -> Table {
    let (sections, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut table = &mut document;
    for section in sections.split('.').filter(|s| !s.is_empty()) {
        let entry = table.entry(section).or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(inner) => inner,
            Value::Array(items) => items.last_mut().and_then(Value::as_table_mut).expect("an array of tables"),
            _ => panic!("{key}: {section} is not a table"),
        };
    }
    table.insert(name.to_string(), value);
    document
}

/// `Err` saying how writing `key = value` differs from leaving the key out.
fn is_default(key: &str, value: Value) -> Result<(), String> {
    let least = least_config_for(key);
    let unwritten = Config::from_toml(&least.to_string()).expect("the least configuration is valid");
    match Config::from_toml(&with_key(least, key, value.clone()).to_string()) {
        Ok(config) if config == unwritten => Ok(()),
        Ok(_) => Err(format!("{key} = {value} is not the model's default")),
        Err(problems) => Err(format!("{key} = {value} is refused: {problems:?}")),
    }
}

/// Every key a TOML table writes, with its value (arrays of tables by their elements).
fn written_keys(table: &Table, section: &str, into: &mut Vec<(String, Value)>) {
    for (name, value) in table {
        let key = if section.is_empty() { name.clone() } else { format!("{section}.{name}") };
        match value {
            Value::Table(inner) => written_keys(inner, &key, into),
            Value::Array(items) if items.iter().all(Value::is_table) && !items.is_empty() => {
                items.iter().filter_map(Value::as_table).for_each(|inner| written_keys(inner, &key, into))
            }
            value => into.push((key, value.clone())),
        }
    }
}

/// A sample with its commented-out examples written (`# key = …` and `# [section]` lines).
fn uncommented(sample: &str) -> String {
    let example = |text: &str| {
        let name_end = text.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(text.len());
        text.starts_with('[') || (name_end > 0 && text[name_end..].trim_start().starts_with('='))
    };
    let lines = sample.lines().filter_map(|line| match line.trim_start().strip_prefix('#') {
        Some(comment) => example(comment.trim_start()).then(|| comment.trim_start()),
        None => Some(line),
    });
    lines.collect::<Vec<_>>().join("\n")
}

// ---- The tests ----

#[test]
fn the_readme_table_lists_every_key_of_the_model_and_no_other() {
    let (_, readme) = repository_file("README.md");
    let listed: BTreeSet<String> = readme_table(&readme).into_iter().map(|row| row.key).collect();
    let model = model_keys();
    assert!(model.len() > 50, "the key walk found too few keys: {model:?}");
    let unknown: Vec<_> = listed.difference(&model).collect();
    let missing: Vec<_> = model.difference(&listed).collect();
    assert!(unknown.is_empty() && missing.is_empty(), "README lists unknown keys {unknown:?}, misses {missing:?}");
}

#[test]
fn the_readme_tables_defaults_are_the_models() {
    let (_, readme) = repository_file("README.md");
    let stated: Vec<Documented> = readme_table(&readme).into_iter().filter(|row| row.default.is_some()).collect();
    assert!(stated.len() > 40, "too few defaults read from the README: {stated:?}");
    for Documented { key, default } in stated {
        let default = default.unwrap();
        let value: Value =
            default.parse().unwrap_or_else(|e| panic!("README: {key}'s default {default} is not TOML: {e}"));
        is_default(&key, value).unwrap_or_else(|e| panic!("README: {e}"));
    }
}

#[test]
fn the_sample_configs_name_every_key_and_show_the_defaults() {
    let model = model_keys();
    for (path, text, not_defaults) in sample_configs() {
        let file = path.display();
        Config::from_toml(&text).unwrap_or_else(|problems| panic!("{file}: {problems:?}"));
        let mut written = Vec::new();
        written_keys(&text.parse().unwrap(), "", &mut written);
        for (key, value) in written {
            if !ROUTE_IDENTITY.contains(&key.as_str()) && !not_defaults.contains(&key.as_str()) {
                is_default(&key, value)
                    .unwrap_or_else(|e| panic!("{file}: {e} (the header says the values shown are the defaults)"));
            }
        }
        let with_examples: Table =
            uncommented(&text).parse().unwrap_or_else(|e| panic!("{file} with its examples uncommented: {e}"));
        let mut named = Vec::new();
        written_keys(&with_examples, "", &mut named);
        let named: BTreeSet<String> = named.into_iter().map(|(key, _)| key).collect();
        let unknown: Vec<_> = named.difference(&model).collect();
        let missing: Vec<_> = model.difference(&named).collect();
        assert!(unknown.is_empty() && missing.is_empty(), "{file} names unknown keys {unknown:?}, misses {missing:?}");
    }
}

#[test]
fn a_wrong_default_is_caught() {
    assert_eq!(is_default("server.threads", Value::Integer(2)), Ok(()));
    assert!(is_default("server.threads", Value::Integer(3)).unwrap_err().contains("not the model's default"));
    assert!(is_default("route.policy.max_ttl", Value::String("23h".into())).is_err());
    assert!(is_default("route.health.interval", Value::String("5s".into())).is_ok(), "in the route");
    let rows = readme_table("| key | default | meaning |\n|---|---|---|\n| `a.b` / `c` | `1` / none | x \\| y |\n");
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].key.as_str(), rows[1].default.as_deref()), ("a.c", None));
    assert_eq!(rows[0].default.as_deref(), Some("1"));
}
