#![no_main]
//! Mirrored stateless-era headers against any body: decoding and checking never panic, and a
//! request whose headers pass names in `Mcp-Method` the method its body has.
use libfuzzer_sys::fuzz_target;
use mcp_edge_policies::headers::{Mirrored, check_mirrored, decode_header_value};
use mcp_edge_policies::jsonrpc::{Kind, parse};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == 0xFF);
    let (Some(method), Some(name), Some(version), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
    let (method, name, version) = (text(method), text(name), text(version));
    if let Some(name) = &name {
        let _ = decode_header_value(name);
    }
    let Ok(message) = parse(body) else { return };
    let mirrored = Mirrored { protocol_version: version.as_deref(), method: method.as_deref(), name: name.as_deref() };
    if check_mirrored(mirrored, &message).is_ok() && message.kind == Kind::Request {
        assert_eq!(method.as_deref(), message.method.as_deref());
    }
});
