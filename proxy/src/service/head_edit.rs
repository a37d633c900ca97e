//! Editing Pingora's request and response heads through the `http` crate's header map.
//!
//! Pingora's heads keep a second map beside the `http` one: each name's case as received.
//! Every insert through Pingora's API parses the name again and updates both maps, and a
//! response head made to the size of the upstream's grows both. On a forwarded `tools/call`
//! that was about 1 000 instructions per header, a sixth of what mcp-edge adds to Pingora's
//! own forwarding (see `benches/HISTORY.md`). Field names are case-insensitive (RFC 9110 §5.1),
//! so the heads mcp-edge edits on every request give up that map once and are edited with
//! names parsed at compile time: the upstream and the client see the names in lower case,
//! with a few standard ones titled by Pingora (`Host`, `Content-Type`). Nothing else changes: the
//! request target's bytes and the response's reason phrase are kept as they were.

use http::{HeaderMap, StatusCode, request, response};
use pingora::Result;
use pingora::http::{RequestHeader, ResponseHeader};

/// Gives `request` the target `new_uri` if there is one, runs `edit` on its headers, and puts
/// it back without the case map.
pub(super) fn edit_request<T>(
    request: &mut RequestHeader,
    new_uri: Option<http::Uri>,
    edit: impl FnOnce(&mut HeaderMap) -> T,
) -> Result<T> {
    // A target the URI does not reproduce byte for byte (absolute-form, not UTF-8) is kept
    // aside and set again: the parts keep only the URI.
    let uri_target = || request.uri.path_and_query().map(|pq| pq.as_str().as_bytes());
    let kept_target = match new_uri {
        None if uri_target() != Some(request.raw_path()) => Some(request.raw_path().to_vec()),
        _ => None,
    };
    let send_end_stream = request.send_end_stream();
    let mut parts = request::Parts::from(std::mem::replace(request, empty_request()));
    if let Some(uri) = new_uri {
        parts.uri = uri;
    }
    let edited = edit(&mut parts.headers);
    *request = RequestHeader::from(parts);
    if let Some(target) = kept_target {
        request.set_raw_path(&target)?;
    }
    if let Some(send_end_stream) = send_end_stream {
        request.set_send_end_stream(send_end_stream);
    }
    Ok(edited)
}

/// Runs `edit` on `response`'s status and headers, then puts it back without the case map.
pub(super) fn edit_response<T>(
    response: &mut ResponseHeader,
    edit: impl FnOnce(StatusCode, &mut HeaderMap) -> T,
) -> Result<T> {
    let status = response.status;
    let own_reason =
        response.get_reason_phrase().filter(|reason| Some(*reason) != status.canonical_reason()).map(str::to_owned);
    let mut parts = response::Parts::from(std::mem::replace(response, empty_response()));
    let edited = edit(status, &mut parts.headers);
    *response = ResponseHeader::from(parts);
    if let Some(reason) = own_reason {
        response.set_reason_phrase(Some(&reason))?;
    }
    Ok(edited)
}

/// A `204` has no body, whatever an upstream says: its `Content-Length` (which RFC 9110 §8.6
/// forbids there) or `Transfer-Encoding` would have a client wait for a body that never comes.
pub(super) fn drop_framing_of_204(status: StatusCode, headers: &mut HeaderMap) {
    if status == StatusCode::NO_CONTENT {
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
    }
}

/// Heads that stand in while the real one is edited: made without parsing or allocating.
fn empty_request() -> RequestHeader {
    RequestHeader::from(http::Request::new(()).into_parts().0)
}

fn empty_response() -> ResponseHeader {
    ResponseHeader::from(http::Response::new(()).into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_of_request(request: &RequestHeader) -> String {
        let mut wire = Vec::new();
        request.header_to_h1_wire(&mut wire);
        String::from_utf8(wire).unwrap()
    }

    #[test]
    fn a_request_keeps_every_header_in_order_with_the_edit() {
        let mut request = RequestHeader::build("POST", b"/mcp?x=1", None).unwrap();
        request.append_header("Host", "client.example").unwrap();
        request.append_header("Mcp-Method", "tools/call").unwrap();
        request.append_header("Accept", "a").unwrap();
        request.append_header("Accept", "b").unwrap();
        edit_request(&mut request, None, |headers| {
            headers.insert(http::header::HOST, http::HeaderValue::from_static("upstream:9000"));
            headers.insert("x-forwarded-proto", http::HeaderValue::from_static("http"));
        })
        .unwrap();
        assert!(!request.has_case());
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.raw_path(), b"/mcp?x=1");
        assert_eq!(
            wire_of_request(&request),
            "Host: upstream:9000\r\nmcp-method: tools/call\r\naccept: a\r\naccept: b\r\nx-forwarded-proto: http\r\n"
        );
    }

    #[test]
    fn a_request_target_the_uri_does_not_reproduce_is_kept_unless_the_edit_sets_one() {
        let absolute = b"http://client.example/mcp?x=1";
        let mut request = RequestHeader::build("POST", absolute, None).unwrap();
        edit_request(&mut request, None, |_| ()).unwrap();
        assert_eq!(request.raw_path(), absolute);

        let mut request = RequestHeader::build("POST", b"/caf\xe9", None).unwrap();
        edit_request(&mut request, None, |_| ()).unwrap();
        assert_eq!(request.raw_path(), b"/caf\xe9");
        assert!(!request.raw_path_is_utf8());

        let mut request = RequestHeader::build("POST", absolute, None).unwrap();
        edit_request(&mut request, Some("/upstream/mcp".parse().unwrap()), |_| ()).unwrap();
        assert_eq!(request.raw_path(), b"/upstream/mcp");
    }

    #[test]
    fn a_response_keeps_its_status_its_own_reason_and_its_headers() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        response.append_header("Content-Type", "application/json").unwrap();
        response.set_reason_phrase(Some("Fine")).unwrap();
        edit_response(&mut response, |status, headers| {
            assert_eq!(status, 200);
            headers.insert("x-cache", http::HeaderValue::from_static("MISS"));
        })
        .unwrap();
        assert!(!response.has_case());
        assert_eq!(response.status, 200);
        assert_eq!(response.get_reason_phrase(), Some("Fine"));
        assert_eq!(response.headers["content-type"], "application/json");
        assert_eq!(response.headers["x-cache"], "MISS");

        let mut response = ResponseHeader::build(503, None).unwrap();
        edit_response(&mut response, |_, _| ()).unwrap();
        assert_eq!(response.get_reason_phrase(), Some("Service Unavailable"));
    }

    #[test]
    fn a_204_loses_any_body_framing_and_other_statuses_keep_theirs() {
        let framed = || {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("153"));
            headers
        };
        let mut headers = framed();
        drop_framing_of_204(StatusCode::NO_CONTENT, &mut headers);
        assert!(headers.is_empty());
        let mut headers = framed();
        drop_framing_of_204(StatusCode::OK, &mut headers);
        assert_eq!(headers[http::header::CONTENT_LENGTH], "153");
    }
}
