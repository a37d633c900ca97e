//! What a proxying failure means to the client.

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
        _ if connect_failure && ctx.pinned.is_some() => EdgeError::SessionUpstreamGone,
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

/// Fails the request with `failure`, which `fail_to_proxy` answers.
pub(super) fn fail<T>(ctx: &mut Ctx, failure: EdgeError) -> Result<T> {
    let explain = failure.to_string();
    ctx.failure = Some(failure);
    Error::e_explain(ErrorType::Custom(EDGE_FAILURE), explain)
}
