//! List cursors the upstream handed out (`nextCursor`), so that an error for one of them can
//! be told apart from an error for a made-up one: the specification's caching page has a
//! client discard a list's cached pages when "the server returns an error for a previously
//! valid cursor" (the list changed under it). A made-up cursor's error says nothing of the
//! list and discards nothing: no client can flush others' lists with garbage.

use std::collections::{HashSet, VecDeque};

use super::invalidation::ListKind;
use super::keys::{Key, digest};
use crate::method::Method;

/// Cursors remembered at most; the oldest are forgotten first (their errors then discard
/// nothing: the list's pages live by their TTLs).
pub const MAX_HANDED_CURSORS: usize = 4096;

/// Cursors handed out, by route and list (digests: no cursor text is kept).
#[derive(Debug, Default)]
pub struct HandedCursors {
    known: HashSet<Key>,
    order: VecDeque<Key>,
}

impl HandedCursors {
    /// The upstream handed out `cursor` in an answer to `method` on `route`.
    pub fn handed(&mut self, route: &str, method: Method, cursor: &str) {
        let key = cursor_key(route, method, cursor);
        if !self.known.insert(key) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > MAX_HANDED_CURSORS
            && let Some(oldest) = self.order.pop_front()
        {
            self.known.remove(&oldest);
        }
    }

    /// The upstream refused `cursor` for `method` on `route`: the list whose pages are to be
    /// discarded, if the cursor was one it handed out. Forgotten then: one discard per cursor.
    pub fn refused(&mut self, route: &str, method: Method, cursor: &str) -> Option<ListKind> {
        let kind = list_kind(method)?;
        let key = cursor_key(route, method, cursor);
        if !self.known.remove(&key) {
            return None;
        }
        self.order.retain(|held| *held != key);
        Some(kind)
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// The kind of list a list method reads.
pub fn list_kind(method: Method) -> Option<ListKind> {
    match method {
        Method::ResourcesList | Method::ResourcesTemplatesList => Some(ListKind::Resources),
        Method::ToolsList => Some(ListKind::Tools),
        Method::PromptsList => Some(ListKind::Prompts),
        _ => None,
    }
}

fn cursor_key(route: &str, method: Method, cursor: &str) -> Key {
    digest(&[b"cursor\0", route.as_bytes(), b"\0", method.as_str().as_bytes(), b"\0", cursor.as_bytes()])
}

/// The `nextCursor` of a list result (its JSON text), if it has one.
pub fn next_cursor(result: &str) -> Option<String> {
    if !result.contains("\"nextCursor\"") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(rename = "nextCursor")]
        next_cursor: Option<String>,
    }
    serde_json::from_str::<Page>(result).ok()?.next_cursor.filter(|cursor| !cursor.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_cursor_the_upstream_handed_out_discards_its_list_and_only_once() {
        let mut cursors = HandedCursors::default();
        cursors.handed("r", Method::ToolsList, "p2");
        assert_eq!(cursors.refused("r", Method::ToolsList, "made-up"), None);
        assert_eq!(cursors.refused("r2", Method::ToolsList, "p2"), None, "another route's");
        assert_eq!(cursors.refused("r", Method::PromptsList, "p2"), None, "another list's");
        assert_eq!(cursors.refused("r", Method::ToolsList, "p2"), Some(ListKind::Tools));
        assert_eq!(cursors.refused("r", Method::ToolsList, "p2"), None, "once");
        cursors.handed("r", Method::ResourcesTemplatesList, "t2");
        assert_eq!(cursors.refused("r", Method::ResourcesTemplatesList, "t2"), Some(ListKind::Resources));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_are_forgotten() {
        let mut cursors = HandedCursors::default();
        for n in 0..MAX_HANDED_CURSORS + 10 {
            cursors.handed("r", Method::ResourcesList, &format!("c{n}"));
        }
        assert_eq!(cursors.len(), MAX_HANDED_CURSORS);
        assert_eq!(cursors.refused("r", Method::ResourcesList, "c0"), None);
        assert_eq!(cursors.refused("r", Method::ResourcesList, "c20"), Some(ListKind::Resources));
    }

    #[test]
    fn the_next_cursor_is_read_from_a_page() {
        assert_eq!(next_cursor(r#"{"tools":[],"nextCursor":"p2"}"#).as_deref(), Some("p2"));
        assert_eq!(next_cursor(r#"{"tools":[]}"#), None);
        assert_eq!(next_cursor(r#"{"tools":[],"nextCursor":""}"#), None);
        assert_eq!(next_cursor(r#"{"tools":[],"nextCursor":7}"#), None);
    }
}
