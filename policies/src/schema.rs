//! The set of keys mcp-edge understands, used to report every unknown key with its line
//! (serde alone would stop at the first one).

use toml::de::{DeTable, DeValue};

use crate::problem::{Problem, SourceMap};

/// What may stand under a key.
pub enum Schema {
    /// A scalar or an array of scalars.
    Leaf,
    /// A table with these keys.
    Table(&'static [(&'static str, Schema)]),
    /// An array of tables (`[[route]]`), each with these keys.
    TableArray(&'static [(&'static str, Schema)]),
}

const TLS: &[(&str, Schema)] = &[("listen", Schema::Leaf), ("cert", Schema::Leaf), ("key", Schema::Leaf)];
const SERVER: &[(&str, Schema)] = &[
    ("listen", Schema::Leaf),
    ("threads", Schema::Leaf),
    ("max_body", Schema::Leaf),
    ("allowed_origins", Schema::Leaf),
    ("allowed_hosts", Schema::Leaf),
    ("header_timeout", Schema::Leaf),
    ("max_streams_per_client", Schema::Leaf),
    ("tls", Schema::Table(TLS)),
];
const ADMIN: &[(&str, Schema)] = &[("listen", Schema::Leaf), ("token_file", Schema::Leaf)];
const CACHE: &[(&str, Schema)] = &[
    ("memory", Schema::Leaf),
    ("disk_path", Schema::Leaf),
    ("disk_size", Schema::Leaf),
    ("max_entry_size", Schema::Leaf),
];
const COMPRESSION: &[(&str, Schema)] = &[("gzip", Schema::Leaf), ("min_size", Schema::Leaf), ("sse", Schema::Leaf)];
const POLICY: &[(&str, Schema)] = &[
    ("resource_ttl", Schema::Leaf),
    ("list_ttl", Schema::Leaf),
    ("tool_ttl", Schema::Leaf),
    ("max_ttl", Schema::Leaf),
    ("honor_server_hints", Schema::Leaf),
    ("shared", Schema::Leaf),
    ("identity_header", Schema::Leaf),
    ("cache_tools", Schema::Leaf),
    ("readonly_tools", Schema::Leaf),
    ("stale_if_error", Schema::Leaf),
];
const PREFETCH: &[(&str, Schema)] =
    &[("enabled", Schema::Leaf), ("min_confidence", Schema::Leaf), ("max_inflight", Schema::Leaf)];
const HEALTH: &[(&str, Schema)] = &[("interval", Schema::Leaf), ("timeout", Schema::Leaf)];
const LIMITS: &[(&str, Schema)] = &[("max_concurrent", Schema::Leaf), ("rate_per_client", Schema::Leaf)];
const ROUTE: &[(&str, Schema)] = &[
    ("name", Schema::Leaf),
    ("path", Schema::Leaf),
    ("upstreams", Schema::Leaf),
    ("balance", Schema::Leaf),
    ("connect_timeout", Schema::Leaf),
    ("read_timeout", Schema::Leaf),
    ("ca_file", Schema::Leaf),
    ("policy", Schema::Table(POLICY)),
    ("prefetch", Schema::Table(PREFETCH)),
    ("health", Schema::Table(HEALTH)),
    ("limits", Schema::Table(LIMITS)),
];
/// The whole configuration file.
pub const ROOT: &[(&str, Schema)] = &[
    ("server", Schema::Table(SERVER)),
    ("admin", Schema::Table(ADMIN)),
    ("cache", Schema::Table(CACHE)),
    ("compression", Schema::Table(COMPRESSION)),
    ("route", Schema::TableArray(ROUTE)),
];

/// Reports every key of `table` (recursively) that `schema` does not know.
pub fn unknown_keys(
    table: &DeTable<'_>,
    schema: &[(&str, Schema)],
    section: &str,
    map: &SourceMap,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in table {
        let name: &str = key.get_ref();
        let Some((_, child)) = schema.iter().find(|(known, _)| *known == name) else {
            let place = if section.is_empty() { "at the top level".to_string() } else { format!("in [{section}]") };
            let known: Vec<&str> = schema.iter().map(|(k, _)| *k).collect();
            problems.push(
                map.problem(key.span(), format!("unknown key {name:?} {place} (known keys: {})", known.join(", "))),
            );
            continue;
        };
        let path = if section.is_empty() { name.to_string() } else { format!("{section}.{name}") };
        match (child, value.get_ref()) {
            (Schema::Table(keys), DeValue::Table(inner)) => unknown_keys(inner, keys, &path, map, problems),
            (Schema::TableArray(keys), DeValue::Array(items)) => {
                for item in items.iter() {
                    if let DeValue::Table(inner) = item.get_ref() {
                        unknown_keys(inner, keys, &path, map, problems);
                    }
                }
            }
            // Type mismatches are reported by the typed pass, with a better message.
            _ => {}
        }
    }
}
