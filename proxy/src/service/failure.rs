//! What a proxying failure means to the client.

use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::ctx::Ctx;
use crate::error::EdgeError;

/// The Pingora error type of a failure mcp-edge decided itself (the [`EdgeError`] waits in
/// the context for `fail_to_proxy`: Pingora's phases return only Pingora's error type).
const EDGE_FAILURE: &str = "mcp-edge failure";

/// What a proxying failure Pingora reports means to the client; `None`: the client is gone,
/// nothing to answer.
pub(super) fn classify_failure(e: &Error, ctx: &Ctx, route: &str) -> Option<EdgeError> {
    use ErrorType::*;
    let connect_failure = matches!(
        e.etype(),
        ConnectTimedout
            | ConnectRefused
            | ConnectNoRoute
            | ConnectError
            | TLSHandshakeFailure
            | TLSHandshakeTimedout
            | InvalidCert
            | HandshakeError
    );
    let route = route.to_string();
    if e.esource() == &ErrorSource::Downstream {
        // The client's doing (it left, or sent bytes past its request while the answer was
        // pending): never reported as an upstream failure, which would tell it to start over.
        return match e.etype() {
            WriteError | ReadError | ConnectionClosed => None,
            ConnectError => Some(EdgeError::bad_request(
                "data arrived after the request, before its answer (HTTP pipelining is not supported here)",
            )),
            other => Some(EdgeError::bad_request(other.as_str())),
        };
    }
    Some(match e.etype() {
        _ if connect_failure && ctx.pinned().is_some() => EdgeError::SessionUpstreamGone,
        // The context may name the upstream (Pingora adds the peer): not for the client's eyes.
        HTTPStatus(code) => EdgeError::UpstreamStatus { route, status: *code },
        ConnectTimedout => EdgeError::ConnectTimedOut { route },
        ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => EdgeError::UpstreamTimedOut { route },
        _ if connect_failure => EdgeError::CannotConnect { route, cause: e.etype().as_str().to_string() },
        _ if e.esource() == &ErrorSource::Upstream => {
            EdgeError::UpstreamFailed { route, cause: e.etype().as_str().to_string() }
        }
        _ => EdgeError::Internal,
    })
}

/// Why a request found no upstream left to try (`last`: how the last attempt failed, if one
/// was made): none was healthy to begin with (`none_healthy`: then `503`, whatever trying them
/// came to), or every one tried failed (a timeout makes it a 504, as nginx answers).
pub(super) fn no_upstream_left(route: String, last: Option<ErrorType>, none_healthy: bool) -> EdgeError {
    match last {
        _ if none_healthy => EdgeError::NoHealthyUpstream { route, last: last.map(|l| l.as_str().to_string()) },
        Some(last) => EdgeError::EveryUpstreamFailed {
            route,
            timed_out: matches!(last, ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout),
            last: last.as_str().to_string(),
        },
        None => EdgeError::NoHealthyUpstream { route, last: None },
    }
}

/// Fails the request with `failure`, which `fail_to_proxy` answers.
pub(super) fn fail<T>(ctx: &mut Ctx, failure: EdgeError) -> Result<T> {
    let explain = failure.to_string();
    ctx.failure = Some(failure);
    Error::e_explain(ErrorType::Custom(EDGE_FAILURE), explain)
}

/// A connection to the upstream failed: the replica is ejected for a while, and the request
/// may go to another (the upstream never saw it), unless its session lives on this one.
pub(super) fn connect_failed(ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
    ctx.attempts.last_failure = Some(e.etype().clone());
    if let (Some(route), Some(upstream)) = (ctx.route(), ctx.current_upstream()) {
        // Said once, when it is ejected: a replica already out (ejected, or failing its
        // health check) is still tried when none is healthy, and fails again, unsaid.
        if route.pool.is_ready(upstream) {
            let error = short(&e);
            tracing::warn!(route = %route.config.name, upstream = %upstream.label, %error, "cannot connect to the upstream; ejecting it for a while");
        }
        route.pool.eject(upstream);
    }
    if ctx.pinned().is_none() {
        e.set_retry(true);
    }
    e
}

/// Proxying to `peer` failed: whether the request may be sent again (to another replica).
pub(super) fn proxy_failed(
    peer: &HttpPeer,
    session: &Session,
    e: Box<Error>,
    ctx: &mut Ctx,
    client_reused: bool,
) -> Box<Error> {
    let mut e = e.more_context(format!("Peer: {peer}"));
    let resendable = ctx.safe_to_resend(&session.req_header().method) && !session.as_ref().retry_buffer_truncated();
    if !resendable {
        e.set_retry(false);
    } else if e.esource() == &ErrorSource::Upstream && session.response_written().is_none() {
        // A read that changes nothing, whose upstream failed before answering (it died,
        // reset the connection, answered garbage): another replica may answer it.
        ctx.attempts.last_failure = Some(e.etype().clone());
        if let (Some(route), Some(upstream)) = (ctx.route(), ctx.current_upstream()) {
            let error = short(&e);
            tracing::warn!(route = %route.config.name, upstream = %upstream.label, %error, "upstream failed before answering; trying another replica");
        }
        e.set_retry(true);
    } else {
        e.retry.decide_reuse(client_reused);
    }
    e
}

/// What the access log says went wrong with a request answered `status` (0: nothing sent):
/// what the client was told of a failure, or Pingora's error in short. A client closing its
/// connection once answered (leaving a stream, as every SDK client does when it is done) is no
/// error.
pub(super) fn logged_error(error: Option<&Error>, ctx: &Ctx, status: u16) -> Option<String> {
    let e = error?;
    if let Some(told) = &ctx.failure_told {
        return Some(told.clone());
    }
    let client_left = e.esource() == &ErrorSource::Downstream
        && matches!(e.etype(), ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError);
    match (client_left, status) {
        (true, 0) => Some("the client went away before its answer".to_string()),
        (true, _) => None,
        (false, _) => Some(short(e)),
    }
}

/// A Pingora error in one line: its type, what it was doing, and the root cause (its own
/// `Display` repeats the nested contexts, with their blank fields).
pub fn short(e: &Error) -> String {
    // The innermost Pingora error, and what caused it outside Pingora (an OS error, a TLS
    // alert), if anything.
    let mut innermost = e;
    let mut root = None;
    while let Some(cause) = innermost.cause.as_deref() {
        // Pingora nests its errors boxed or not.
        let inner = cause.downcast_ref::<Error>().or_else(|| cause.downcast_ref::<Box<Error>>().map(|boxed| &**boxed));
        match inner {
            Some(inner) => innermost = inner,
            None => {
                root = Some(cause.to_string());
                break;
            }
        }
    }
    let detail = root.or_else(|| innermost.context.as_ref().map(|c| c.as_str().to_string()));
    match detail.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        Some(detail) => format!("{}: {detail}", e.etype().as_str()),
        None => e.etype().as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    #[test]
    fn upstream_timeouts_are_504s_and_other_failures_502s() {
        let ctx = Ctx::new();
        let status = |etype, source| classify_failure(&failure(etype, source), &ctx, "r").map(|e| e.status());
        assert_eq!(status(ErrorType::ReadTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ErrorType::ConnectTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ErrorType::ConnectRefused, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::InvalidHTTPHeader, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::HTTPStatus(503), ErrorSource::Upstream), Some(503));
        // The client left: nothing to answer.
        assert_eq!(status(ErrorType::ReadError, ErrorSource::Downstream), None);
    }

    #[test]
    fn errors_are_logged_in_one_short_line() {
        let os = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let inner = Error::because(ErrorType::ConnectRefused, "Fail to connect to 127.0.0.1:1", os);
        let outer = Error::because(ErrorType::ConnectRefused, "Fail to connect to addr: 127.0.0.1:1", inner);
        assert_eq!(short(&outer), "ConnectRefused: connection refused");
        let explained = Error::explain(ErrorType::ReadTimedout, "no answer in time");
        assert_eq!(short(&explained), "ReadTimedout: no answer in time");
        assert_eq!(short(&Error::new(ErrorType::ConnectionClosed)), "ConnectionClosed");
    }

    #[test]
    fn a_client_leaving_once_answered_is_no_error() {
        let ctx = Ctx::new();
        let left = failure(ErrorType::ConnectionClosed, ErrorSource::Downstream);
        assert_eq!(logged_error(Some(&left), &ctx, 200), None, "a stream the client closed");
        assert_eq!(logged_error(Some(&left), &ctx, 0).as_deref(), Some("the client went away before its answer"));
        let upstream = failure(ErrorType::ConnectionClosed, ErrorSource::Upstream);
        assert_eq!(logged_error(Some(&upstream), &ctx, 200).as_deref(), Some("ConnectionClosed"));
        assert_eq!(logged_error(None, &ctx, 200), None);
    }

    #[test]
    fn every_replica_failing_is_a_504_when_the_last_attempt_timed_out() {
        let left = |last| no_upstream_left("r".into(), last, false).status();
        assert_eq!(left(None), 503);
        assert_eq!(left(Some(ErrorType::ReadTimedout)), 504);
        assert_eq!(left(Some(ErrorType::ConnectTimedout)), 504);
        assert_eq!(left(Some(ErrorType::ConnectRefused)), 502);
        let message = no_upstream_left("docs".into(), Some(ErrorType::ReadTimedout), false).to_string();
        assert_eq!(message, "route docs: every upstream failed (last error: ReadTimedout)");
        // None healthy to begin with: 503 (tried all the same), naming the last failure.
        let none_healthy = no_upstream_left("docs".into(), Some(ErrorType::ConnectRefused), true);
        assert_eq!(none_healthy.status(), 503);
        assert_eq!(
            none_healthy.to_string(),
            "route docs: no healthy upstream is available (last error: ConnectRefused)"
        );
    }
}
