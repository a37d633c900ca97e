//! Session affinity without shared state: the session id a client sees names the upstream
//! that minted it, `<upstream id>.<upstream session id>`, so any mcp-edge node (and any
//! restart of one) can route the session's later requests back to that upstream.

/// The session id handed to the client for session `session` minted by upstream `upstream_id`.
pub fn encode(upstream_id: &str, session: &str) -> String {
    format!("{upstream_id}.{session}")
}

/// The id of one discovered replica (an address a name resolved to) of the upstream whose id
/// is `upstream_id`: 8 hex digits like an upstream's, the same on every node, different for
/// every address.
pub fn replica_id(upstream_id: &str, address: &str) -> String {
    crate::upstream::upstream_id(&format!("{upstream_id}@{address}"))
}

/// Splits a client-presented session id into (upstream id, upstream session id).
/// `None` when it was not minted by mcp-edge (the client gets 404 and re-initializes).
pub fn decode(edge_session: &str) -> Option<(&str, &str)> {
    let (id, session) = edge_session.split_once('.')?;
    let id_ok = id.len() == 8 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let session_ok = !session.is_empty() && session.bytes().all(|b| (0x21..=0x7e).contains(&b));
    (id_ok && session_ok).then_some((id, session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::upstream_id;

    #[test]
    fn round_trips() {
        let id = upstream_id("http://127.0.0.1:3001/mcp");
        let edge = encode(&id, "9b729788-35ac-4864-a2e3-9d8f0fdefc34");
        assert_eq!(decode(&edge), Some((id.as_str(), "9b729788-35ac-4864-a2e3-9d8f0fdefc34")));
        // Upstream session ids may contain dots themselves.
        assert_eq!(decode("0123abcd.a.b.c"), Some(("0123abcd", "a.b.c")));
    }

    #[test]
    fn discovered_replicas_get_ids_of_their_own_in_the_same_form() {
        let id = upstream_id("http://mcp.svc:8080/mcp");
        let (a, b) = (replica_id(&id, "10.0.0.5:8080"), replica_id(&id, "10.0.0.6:8080"));
        assert_ne!(a, b);
        assert_eq!(a, replica_id(&id, "10.0.0.5:8080"), "the same on every node");
        assert_eq!(decode(&encode(&a, "s")), Some((a.as_str(), "s")));
    }

    #[test]
    fn rejects_foreign_ids() {
        for bad in
            ["", "abc", "9b729788-35ac-4864", "0123abcd.", "0123ABCD.s", "0123abcx.s", "0123abc.s", "0123abcd.s p"]
        {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
