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

/// Why a request found no upstream to try: none healthy, or every one tried failed (`last`:
/// how the last attempt failed; a timeout makes it a 504, as nginx answers).
pub(super) fn no_upstream_left(route: String, last: Option<ErrorType>) -> EdgeError {
    match last {
        Some(last) => EdgeError::EveryUpstreamFailed {
            route,
            timed_out: matches!(last, ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout),
            last: last.as_str().to_string(),
        },
        None => EdgeError::NoHealthyUpstream { route },
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
        tracing::warn!(route = %route.config.name, upstream = %upstream.label, error = %e, "upstream connect failed; ejecting it for a while");
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
        e.set_retry(true);
    } else {
        e.retry.decide_reuse(client_reused);
    }
    e
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
    fn every_replica_failing_is_a_504_when_the_last_attempt_timed_out() {
        let left = |last| no_upstream_left("r".into(), last).status();
        assert_eq!(left(None), 503);
        assert_eq!(left(Some(ErrorType::ReadTimedout)), 504);
        assert_eq!(left(Some(ErrorType::ConnectTimedout)), 504);
        assert_eq!(left(Some(ErrorType::ConnectRefused)), 502);
        let message = no_upstream_left("docs".into(), Some(ErrorType::ReadTimedout)).to_string();
        assert_eq!(message, "route docs: every upstream failed (last error: ReadTimedout)");
    }
}
