//! Protocol eras and the stateless era's mirrored request headers (`Mcp-Method`, `Mcp-Name`).

use crate::method::Method;
use base64::Engine;

use crate::jsonrpc::{Kind, Message};

/// The first protocol revision without sessions, whose requests mirror body fields in headers.
pub const STATELESS_ERA: &str = "2026-07-28";

/// Whether an `MCP-Protocol-Version` value belongs to the stateless era. Versions are dates
/// (`YYYY-MM-DD`), so they order as strings; anything else is not judged here.
pub fn is_stateless_era(version: &str) -> bool {
    looks_like_version(version) && version >= STATELESS_ERA
}

fn looks_like_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// A value as a header carries it: as is when it is visible ASCII without edge spaces, else in
/// the `=?base64?…?=` sentinel form ([`decode_header_value`] reads both).
pub fn encode_header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.starts_with("=?base64?");
    match plain {
        true => value.to_string(),
        false => format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(value)),
    }
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel form.
pub fn decode_header_value(value: &str) -> Result<String, String> {
    match value.strip_prefix("=?base64?").and_then(|rest| rest.strip_suffix("?=")) {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| format!("{value:?} is not valid base64"))?;
            String::from_utf8(bytes).map_err(|_| format!("{value:?} does not decode to UTF-8"))
        }
        None => Ok(value.to_string()),
    }
}

/// The mirrored headers of one request, as received (`None` when absent).
#[derive(Debug, Default, Clone, Copy)]
pub struct Mirrored<'a> {
    pub protocol_version: Option<&'a str>,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Checks the stateless era's header/body agreement for one request. Returns the reason for
/// a `-32020 HeaderMismatch` answer. Notifications, responses and batches are not checked
/// (the spec defines no header requirements for them).
pub fn check_mirrored(headers: Mirrored<'_>, message: &Message) -> Result<(), String> {
    if message.kind != Kind::Request {
        return Ok(());
    }
    let header_version = headers.protocol_version.unwrap_or_default();
    let method = message.method.as_deref().unwrap_or_default();
    let named = Method::named(method).and_then(Method::named_param);
    // A mirrored member the body writes twice, differently, matches no header: the upstream's
    // parser picks one of them, and a check against the other would be a bypass.
    let mirrored = |&member: &&str| member == crate::jsonrpc::META_PROTOCOL_VERSION || Some(member) == named;
    if let Some(member) = message.params.ambiguous.iter().copied().find(mirrored) {
        return Err(format!("Header mismatch: the body gives '{member}' more than once, with different values"));
    }
    match message.params.protocol_version.as_deref() {
        Some(body_version) if body_version != header_version => {
            return Err(format!(
                "Header mismatch: MCP-Protocol-Version header value '{header_version}' does not match body value '{body_version}'"
            ));
        }
        _ => {}
    }
    match headers.method {
        None => return Err("Header mismatch: required header Mcp-Method is missing".into()),
        Some(value) if value != method => {
            return Err(format!(
                "Header mismatch: Mcp-Method header value '{value}' does not match body value '{method}'"
            ));
        }
        Some(_) => {}
    }
    let Some(field) = named else {
        return Ok(());
    };
    let body_value = if field == "uri" { &message.params.uri } else { &message.params.name };
    let Some(body_value) = body_value else {
        // The body lacks the field: the upstream answers with its own invalid-params error.
        return Ok(());
    };
    let Some(raw) = headers.name else {
        return Err("Header mismatch: required header Mcp-Name is missing".into());
    };
    let decoded = decode_header_value(raw).map_err(|e| format!("Header mismatch: Mcp-Name {e}"))?;
    if &decoded != body_value {
        return Err(format!(
            "Header mismatch: Mcp-Name header value '{decoded}' does not match body value '{body_value}'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::parse;

    fn read(uri: &str) -> Message {
        parse(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":{uri:?},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#).as_bytes()).unwrap()
    }

    fn headers<'a>(method: Option<&'a str>, name: Option<&'a str>) -> Mirrored<'a> {
        Mirrored { protocol_version: Some("2026-07-28"), method, name }
    }

    #[test]
    fn a_mirrored_member_written_twice_differently_matches_no_header() {
        let version = Some("2026-07-28");
        let headers = |name| Mirrored { protocol_version: version, method: Some("resources/read"), name };
        let body = |params: &str| {
            parse(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{params}}}"#).as_bytes())
                .unwrap()
        };
        let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
        let twice = body(&format!(r#"{{"uri":"a://1","uri":"a://2",{meta}}}"#));
        for name in ["a://1", "a://2"] {
            let refused = check_mirrored(headers(Some(name)), &twice).unwrap_err();
            assert!(refused.contains("more than once"), "{refused}");
        }
        let escaped = body(&format!(r#"{{"\u0075ri":"a://2",{meta}}}"#));
        assert!(check_mirrored(headers(Some("a://1")), &escaped).is_err(), "an escaped key is the same key");
        let alike = body(&format!(r#"{{"uri":"a://1","uri":"a://1",{meta}}}"#));
        assert_eq!(check_mirrored(headers(Some("a://1")), &alike), Ok(()));
        let cursor = body(&format!(r#"{{"uri":"a://1","cursor":"x","cursor":"y",{meta}}}"#));
        assert_eq!(check_mirrored(headers(Some("a://1")), &cursor), Ok(()), "a cursor is not mirrored");
        let versions = body(
            r#"{"uri":"a://1","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/protocolVersion":"2099-01-01"}}"#,
        );
        assert!(check_mirrored(headers(Some("a://1")), &versions).is_err());
        // A member that is not mirrored, ambiguous too, hides no mirrored one.
        let with_cursor = body(
            r#"{"uri":"a://1","cursor":"x","cursor":"y","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/protocolVersion":"2099-01-01"}}"#,
        );
        assert!(check_mirrored(headers(Some("a://1")), &with_cursor).is_err());
        let call = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"uri":1,"uri":2,"name":"a","name":"b","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        let call_headers = Mirrored { protocol_version: version, method: Some("tools/call"), name: Some("a") };
        assert!(check_mirrored(call_headers, &call).is_err(), "an ambiguous uri does not hide the name");
    }

    #[test]
    fn eras() {
        assert!(is_stateless_era("2026-07-28"));
        assert!(is_stateless_era("2027-01-01"));
        assert!(!is_stateless_era("2025-11-25"));
        assert!(!is_stateless_era("2025-03-26"));
        assert!(!is_stateless_era("latest"));
        assert!(!is_stateless_era("2026-7-28"));
    }

    #[test]
    fn matching_headers_pass() {
        assert_eq!(check_mirrored(headers(Some("resources/read"), Some("docs://a")), &read("docs://a")), Ok(()));
    }

    #[test]
    fn mismatches_and_missing_headers_fail() {
        let m = read("docs://a");
        assert!(
            check_mirrored(headers(Some("resources/read"), Some("docs://b")), &m)
                .unwrap_err()
                .contains("Mcp-Name header value 'docs://b'")
        );
        assert!(check_mirrored(headers(Some("tools/call"), Some("docs://a")), &m).unwrap_err().contains("Mcp-Method"));
        assert!(check_mirrored(headers(None, Some("docs://a")), &m).unwrap_err().contains("Mcp-Method is missing"));
        assert!(check_mirrored(headers(Some("resources/read"), None), &m).unwrap_err().contains("Mcp-Name is missing"));
        let wrong_version =
            Mirrored { protocol_version: Some("2027-01-01"), ..headers(Some("resources/read"), Some("docs://a")) };
        assert!(check_mirrored(wrong_version, &m).unwrap_err().contains("MCP-Protocol-Version"));
    }

    #[test]
    fn values_encode_to_what_decodes_back() {
        for value in ["docs://a/b", "docs://caf\u{e9}", " edge ", "=?base64?x?=", "tab\there"] {
            let encoded = encode_header_value(value);
            assert!(encoded.bytes().all(|b| (b' '..=b'~').contains(&b)), "{encoded}");
            assert_eq!(decode_header_value(&encoded).unwrap(), value);
        }
        assert_eq!(encode_header_value("docs://a/b"), "docs://a/b");
    }

    #[test]
    fn base64_sentinel_values_are_decoded() {
        let m = read("file:///Hello, 世界");
        let encoded = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode("file:///Hello, 世界"));
        assert_eq!(check_mirrored(headers(Some("resources/read"), Some(&encoded)), &m), Ok(()));
        assert!(check_mirrored(headers(Some("resources/read"), Some("=?base64?!!!?=")), &m).is_err());
        assert_eq!(decode_header_value("plain"), Ok("plain".into()));
    }

    #[test]
    fn notifications_and_unnamed_methods_need_no_name() {
        let n = parse(br#"{"jsonrpc":"2.0","method":"notifications/cancelled"}"#).unwrap();
        assert_eq!(check_mirrored(Mirrored::default(), &n), Ok(()));
        let list = parse(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).unwrap();
        assert_eq!(check_mirrored(headers(Some("tools/list"), None), &list), Ok(()));
    }
}
