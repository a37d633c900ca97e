//! What an invalidation names (a resource, a kind of list, a whole route), and the storage keys
//! of the markers that record when each was invalidated.

use super::keys::{Key, digest};
use crate::method::Notification;

/// What an invalidation names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Every entry of the route (purge all).
    Route,
    /// Every entry of the route kept on mcp-edge's own TTL (no server hint): what a write
    /// through the route invalidates (`invalidate_on_write = "unhinted"`).
    Unhinted,
    /// `resources/read` of one URI.
    Resource(String),
    /// The results of `resources/list` and `resources/templates/list`, `tools/list` (and
    /// cached `tools/call`), or `prompts/list`.
    List(ListKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    Resources,
    Tools,
    Prompts,
}

impl Target {
    /// A stable text form, used in marker keys.
    pub fn key_part(&self) -> String {
        match self {
            Target::Route => "route".into(),
            Target::Unhinted => "unhinted".into(),
            Target::Resource(uri) => format!("uri:{uri}"),
            Target::List(ListKind::Resources) => "list:resources".into(),
            Target::List(ListKind::Tools) => "list:tools".into(),
            Target::List(ListKind::Prompts) => "list:prompts".into(),
        }
    }

    /// What a server notification invalidates, if anything.
    pub fn from_notification(method: &str, uri: Option<&str>) -> Option<Target> {
        match Notification::named(method)? {
            Notification::ResourceUpdated => uri.map(|u| Target::Resource(u.to_string())),
            Notification::ResourcesListChanged => Some(Target::List(ListKind::Resources)),
            Notification::ToolsListChanged => Some(Target::List(ListKind::Tools)),
            Notification::PromptsListChanged => Some(Target::List(ListKind::Prompts)),
        }
    }
}

/// The storage key of an invalidation marker for `target` of `route`.
pub fn marker_key(route: &str, target: &Target) -> Key {
    digest(&[b"marker\0", route.as_bytes(), b"\0", target.key_part().as_bytes()])
}

/// The storage key of the markers' watermark: the time of the latest marker ever stored, so a
/// restarted process knows which entries may predate a marker it has not seen.
pub fn markers_watermark_key() -> Key {
    digest(&[b"markers-watermark\0"])
}
