//! The demo upstream's HTTP responses: JSON, SSE streams, errors, session headers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use mcp_edge_policies::jsonrpc;
use tokio::sync::mpsc;

use super::*;

pub(super) fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `name: value` lines, names in lower case, in arrival order.
pub(super) fn describe_headers(req: &Request<Incoming>) -> String {
    req.headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

/// A CORS preflight's answer, naming (in `x-demo-seen-headers`) the headers it arrived with.
pub(super) fn preflight(req: &Request<Incoming>) -> Response<DemoBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let seen: Vec<&str> = req.headers().keys().map(|name| name.as_str()).collect();
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", http::HeaderValue::from_static("*"));
    headers.insert("access-control-allow-methods", http::HeaderValue::from_static("GET, POST, DELETE"));
    if let Ok(seen) = http::HeaderValue::from_str(&seen.join(",")) {
        headers.insert("x-demo-seen-headers", seen);
    }
    response
}

pub(super) fn full(bytes: impl Into<Bytes>) -> DemoBody {
    Box::pin(Full::new(bytes.into()))
}

pub(super) fn with_session(mut response: Response<DemoBody>, session: Option<&str>) -> Response<DemoBody> {
    if let Some(value) = session.and_then(|s| s.parse().ok()) {
        response.headers_mut().insert("mcp-session-id", value);
    }
    response
}

pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<DemoBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
}

pub(super) fn empty(status: StatusCode, session: Option<&str>) -> Response<DemoBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    with_session(response, session)
}

pub(super) fn json_response(status: StatusCode, text: String, session: Option<&str>) -> Response<DemoBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    with_session(response, session)
}

pub(super) fn json_error(
    status: StatusCode,
    id: Option<&str>,
    code: i64,
    message: &str,
    session: Option<&str>,
) -> Response<DemoBody> {
    json_response(status, jsonrpc::error_body(id, code, message), session)
}

pub(super) fn sse_headers(body: DemoBody, session: Option<&str>) -> Response<DemoBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert("content-type", "text/event-stream".parse().unwrap());
    headers.insert("cache-control", "no-cache, no-transform".parse().unwrap());
    headers.insert("x-accel-buffering", "no".parse().unwrap());
    with_session(response, session)
}

/// A streaming body fed through a channel; it ends when the sender is dropped.
pub(super) struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

pub(super) fn channel_body() -> (mpsc::Sender<Bytes>, DemoBody) {
    let (sender, receiver) = mpsc::channel(8);
    (sender, Box::pin(ChannelBody(receiver)))
}
