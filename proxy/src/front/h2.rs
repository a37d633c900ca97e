//! The HTTP/2 front: Pingora's HTTP/2 server accepts the connection's streams (handshake,
//! flow control, limits, graceful shutdown) and hands each to this front as a session, which
//! reads the request, has the intake decide what becomes of it, and answers it (a hit, an
//! error) or has Pingora's proxy service forward it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::answer::Outcome;
use crate::error::EdgeError;
use crate::intake::{self, BodyPlan, Hit, Intake, Request, Understood, Verdict, handover};
use crate::known_headers::KnownHeaders;
use crate::prefetch::Replay;
use crate::request_id::RequestId;
use crate::runtime::{Live, Runtime};
use crate::served::{Asked, Served};
use crate::service::McpProxy;

pub(super) struct H2Front {
    pub(super) proxy: Arc<HttpProxy<McpProxy>>,
    pub(super) live: Live,
    pub(super) intake: Arc<Intake>,
}

#[async_trait]
impl HttpServerApp for H2Front {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let understood = {
            let started = Instant::now();
            let _active = crate::metrics::ActiveRequest::start();
            if let Err(e) = join_cookie_crumbs(&mut session) {
                tracing::debug!(error = %e, "could not join cookie crumbs");
                return None;
            }
            self.take(&mut session, started).await?
        };
        // Pingora's service forwards it (HTTP/2 streams are not reused: nothing to return).
        handover::forward_with(understood, self.proxy.process_new_http(session, shutdown)).await;
        None
    }
}

impl H2Front {
    /// Reads the request through the intake and answers it here, unless it is to be forwarded:
    /// then what the intake understood of it.
    async fn take(&self, session: &mut ServerSession, started: Instant) -> Option<Box<Understood>> {
        let snapshot = self.live.load_full();
        let head = session.req_header();
        let path = head.uri.path().to_string();
        let route = snapshot.route_for(&path);
        let identity = route.map_or("", |index| snapshot.routes[index].config.policy.identity_header.as_str());
        let http_method = head.method.as_str().to_string();
        let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let sent_id = head.headers.get(crate::request_id::HEADER).map(|v| v.as_bytes());
        let request_id = RequestId::of(sent_id);
        if session.req_header().headers.len() > super::head::MAX_HEADER_FIELDS {
            // The same limit as over HTTP/1.1 (Pingora's HTTP/2 server takes more).
            let refused = EdgeError::HeadTooLarge(super::head::TOO_MANY_FIELDS);
            return refuse(session, refused, route_name(&snapshot, route), request_id).await;
        }
        if matches!(http_method.as_str(), "GET" | "HEAD")
            && let Some(document) = crate::auth::metadata_document(&snapshot, &path)
        {
            let body = if http_method == "HEAD" { Bytes::new() } else { Bytes::from(document) };
            let headers =
                crate::auth::DOCUMENT_HEADERS.into_iter().chain([(crate::request_id::HEADER, request_id.as_str())]);
            if let Err(e) = crate::respond::write_whole(session, 200, body.clone(), headers).await {
                tracing::debug!(error = %e, "could not send a published document");
            }
            let asked = Asked {
                route: "-",
                http_method: &http_method,
                path: &path,
                client,
                session: None,
                request_id,
                trace: None,
                prefetch: None,
            };
            crate::auth::published(asked, body.len()).record();
            return None;
        }
        // An HTTP/2 request declares no length when it need not: its stream says whether a body follows.
        let bodiless = session.is_body_empty();
        let (admitted, body) = {
            let head = session.req_header();
            let known = KnownHeaders::from_map(&head.headers, identity);
            let request = request_of(head, &path, &known, client, (request_id, bodiless));
            let admitted = match intake::admit_head(&snapshot, route, &request).await {
                Ok(admitted) => admitted,
                Err(refused) => return refuse(session, refused, route_name(&snapshot, route), request_id).await,
            };
            let body_length = match admitted.body {
                BodyPlan::Read(length) => Some(length),
                _ => None,
            };
            // HTTP/2 can send no interim head (Pingora's server, on the `h2` crate, drops it): a
            // client waiting for `100 Continue` sends its body after its own timeout. Its
            // expectation is met all the same, and not forwarded.
            let expectation_met = known.expects_continue && admitted.body != BodyPlan::None;
            (admitted, (body_length, expectation_met))
        };
        let (body, expectation_met) = body;
        let body = match body {
            Some(length) => match read_body(session, length).await {
                Ok(body) => body,
                Err(e) => {
                    tracing::debug!(error = %e, "could not read an HTTP/2 request body");
                    return None;
                }
            },
            None => Bytes::new(),
        };
        let verdict = {
            let head = session.req_header();
            let known = KnownHeaders::from_map(&head.headers, identity);
            let request = request_of(head, &path, &known, client, (request_id, bodiless));
            self.intake.understand(admitted, &request, &body).await
        };
        let mut understood = match verdict {
            Verdict::Forward(understood) => understood,
            Verdict::Refuse(refused) => {
                return refuse(session, refused, route_name(&snapshot, route), request_id).await;
            }
            Verdict::Hit(hit) => match self.answer_hit(session, hit, &body, started).await {
                Ok(None) => return None,
                Ok(Some(unreadable)) => match self.intake.forward_instead(unreadable, &http_method, client) {
                    Ok(understood) => understood,
                    Err(refused) => {
                        return refuse(session, refused, route_name(&snapshot, route), request_id).await;
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "could not write a cached answer");
                    return None;
                }
            },
        };
        understood.body_invited = expectation_met;
        Some(understood)
    }

    /// Writes a hit's answer (`Ok(None)`), and tells of it; a hit whose entry cannot be read is
    /// given back, to be forwarded instead.
    async fn answer_hit(
        &self,
        session: &mut ServerSession,
        hit: Hit,
        body: &[u8],
        started: Instant,
    ) -> pingora::Result<Option<Hit>> {
        let session_id = session.req_header().headers.get(&crate::known_headers::MCP_SESSION_ID);
        let session_id = session_id.and_then(|v| v.to_str().ok()).map(str::to_string);
        let Some(answer) = hit.render(session_id.as_deref()) else { return Ok(Some(hit)) };
        let bytes_out = answer.body.len();
        crate::respond::write_whole(session, 200, answer.body.to_bytes(), answer.headers()).await?;
        hit.record(started, session.req_header().uri.path(), body.len(), bytes_out);
        self.intake.after_hit(&hit, || Some(Replay::from_request(session.req_header())), body);
        Ok(None)
    }
}

/// Refuses a request with its JSON-RPC error (`route`: the name of its route, if it has one;
/// `request_id`: its `X-Request-ID`).
async fn refuse(
    session: &mut ServerSession,
    refused: EdgeError,
    route: Option<&str>,
    request_id: RequestId,
) -> Option<Box<Understood>> {
    let status = refused.status();
    let body = Bytes::from(refused.body(None));
    let bytes_out = body.len();
    let headers = [("x-cache", Outcome::Bypass.as_str()), (crate::request_id::HEADER, request_id.as_str())];
    let headers = headers.into_iter().chain(refused.extra_headers());
    if let Err(e) = crate::respond::write_whole(session, status, body, headers).await {
        tracing::debug!(error = %e, "could not send the error response");
    }
    let head = session.req_header();
    let mut traceparents = head.headers.get_all("traceparent").iter();
    let sent_once = traceparents.next().filter(|_| traceparents.next().is_none());
    let trace = crate::spans::Trace::begin(sent_once.map(|v| v.as_bytes()));
    let asked = Asked {
        route: route.unwrap_or("-"),
        http_method: head.method.as_str(),
        path: head.uri.path(),
        client: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        session: head.headers.get(&crate::known_headers::MCP_SESSION_ID).and_then(|v| v.to_str().ok()),
        request_id,
        trace: trace.as_deref(),
        prefetch: None,
    };
    Served::refused(asked, &refused, bytes_out).record();
    None
}

/// The name of the route at `index` in the configuration it was found in.
fn route_name(snapshot: &Runtime, index: Option<usize>) -> Option<&str> {
    index.map(|index| snapshot.routes[index].config.name.as_str())
}

/// The intake's view of an HTTP/2 request.
fn request_of<'a>(
    head: &'a pingora::http::RequestHeader,
    path: &'a str,
    known: &'a KnownHeaders<'a>,
    client: Option<std::net::IpAddr>,
    (request_id, bodiless): (RequestId, bool),
) -> Request<'a> {
    Request {
        method: head.method.as_str(),
        version: head.version,
        path,
        authority: head.uri.authority().map(|a| a.as_str()),
        known,
        client,
        internal: false,
        request_id,
        bodiless,
    }
}

/// Reads a small body whole, into Pingora's retry buffer too, from which Pingora forwards it.
async fn read_body(session: &mut ServerSession, length: u64) -> pingora::Result<Bytes> {
    session.enable_retry_buffering();
    let mut body = BytesMut::with_capacity(length as usize);
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// HTTP/2 may send `cookie` as one field per crumb (RFC 9113 §8.2.3): they are one header.
/// Joined with "; " before anything reads it (a route whose identity header is `cookie` must
/// not see it as sent twice) and before it is forwarded over HTTP/1.1, which wants one line.
fn join_cookie_crumbs(session: &mut ServerSession) -> pingora::Result<()> {
    let head = session.req_header();
    if head.headers.get_all(http::header::COOKIE).iter().nth(1).is_none() {
        return Ok(());
    }
    // Empty crumbs are no cookie: left out, so that crumbs that are all empty are no credential.
    let crumbs: Vec<&[u8]> = head
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|crumb| !crumb.is_empty())
        .collect();
    if crumbs.is_empty() {
        session.req_header_mut().remove_header(&http::header::COOKIE);
        return Ok(());
    }
    let joined = crumbs.join(&b"; "[..]);
    session.req_header_mut().insert_header(http::header::COOKIE, joined)
}
