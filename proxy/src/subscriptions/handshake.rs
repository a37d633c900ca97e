//! A handshake-era subscription on one replica: the edge's own session (`initialize`, no
//! capability, no credential), its GET stream, and a `resources/subscribe` per URI watched.
//! `list_changed` notifications come on the GET stream unasked when the server declares
//! `listChanged`. Any failure ends the session; the next attempt makes a new one and subscribes
//! everything again.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use mcp_edge_policies::subscriptions::messages::{
    HANDSHAKE_VERSION, initialize_body, initialized_body, subscribe_body,
};
use mcp_edge_policies::subscriptions::{Backoff, Reply, Support, Wanted};
use tokio::sync::{mpsc, watch};

use super::link::Failure;
use super::reader::{self, AnswerHeaders, Control};
use super::{Context, Ended, Event, State, finish, stopped, unsupported_wait};
use crate::store::now_ms;

const INITIALIZE_ID: &str = "mcp-edge-initialize";

/// The edge's session on the replica.
#[derive(Default)]
struct Session {
    id: Option<String>,
    /// The version the server answered `initialize` with.
    protocol: String,
    /// URIs the server accepted subscriptions to.
    subscribed: HashSet<String>,
    /// URIs the server refused (not asked again in this session).
    refused: HashSet<String>,
    /// Requests sent so far (their ids).
    requests: u64,
}

impl Session {
    fn headers(&self) -> AnswerHeaders {
        let mut headers = vec![("MCP-Protocol-Version", self.protocol.clone())];
        if let Some(id) = &self.id {
            headers.push(("Mcp-Session-Id", id.clone()));
        }
        headers
    }

    fn next_id(&mut self) -> String {
        self.requests += 1;
        format!("mcp-edge-{}", self.requests)
    }
}

fn borrowed(headers: &AnswerHeaders) -> Vec<(&str, &str)> {
    headers.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

fn dropped(failure: Failure) -> Ended {
    Ended::Failed(Event::Dropped, failure.to_string())
}

/// Keeps the subscription of `context` up until told to stop.
pub(super) async fn run(context: Context, mut stop: watch::Receiver<bool>) {
    let context = Arc::new(context);
    let mut backoff = Backoff::default();
    let mut established_before = false;
    let mut changes = context.watch.changes(context.era);
    if unsupported_wait(&context, &mut changes, &mut stop).await {
        return;
    }
    loop {
        context.state(State::Connecting);
        let mut session = Session::default();
        let ended = tokio::select! {
            ended = serve(&context, &mut session, &mut changes, &mut backoff, &mut established_before) => {
                Some(match ended {
                    Ok(never) => match never {},
                    Err(ended) => ended,
                })
            }
            _ = stopped(&mut stop) => None,
        };
        if let Some(id) = &session.id {
            context.link.delete(id, &session.protocol).await;
        }
        let Some(ended) = ended else { return };
        if finish(&context, ended, &mut backoff, &mut changes, &mut stop).await {
            return;
        }
    }
}

/// One session, from `initialize` until it fails.
async fn serve(
    context: &Arc<Context>,
    session: &mut Session,
    changes: &mut watch::Receiver<u64>,
    backoff: &mut Backoff,
    established_before: &mut bool,
) -> Result<Infallible, Ended> {
    let link = &context.link;
    let answer = link.call(&initialize_body(INITIALIZE_ID), Some(INITIALIZE_ID), &[]).await.map_err(dropped)?;
    session.id = answer.session;
    let result = match (answer.status, answer.reply) {
        (200, Some(Reply::Result(result))) => result,
        (_, Some(Reply::Error { code, message })) => {
            return Err(Ended::Failed(Event::Refused, format!("initialize: error {code}: {message}")));
        }
        (status, _) => return Err(Ended::Failed(Event::Refused, format!("initialize: HTTP {status}, no result"))),
    };
    session.protocol = result["protocolVersion"]
        .as_str()
        .filter(|v| !v.is_empty() && v.len() < 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or(HANDSHAKE_VERSION)
        .to_string();
    let mut support = Support::of_result(&result);
    if !support.any() {
        return Err(Ended::Unsupported(
            "the server declares neither resources.subscribe nor listChanged".into(),
            Some(support),
        ));
    }
    let headers = session.headers();
    let initialized = link.call(&initialized_body(), None, &borrowed(&headers)).await.map_err(dropped)?;
    if !(200..300).contains(&initialized.status) {
        return Err(Ended::Failed(Event::Refused, format!("notifications/initialized: HTTP {}", initialized.status)));
    }
    let mut stream_headers = borrowed(&headers);
    stream_headers.push(("Accept", "text/event-stream"));
    let opened = link.open("GET", None, &stream_headers).await.map_err(dropped)?;
    match (opened.status, opened.sse) {
        (200, true) => {}
        // No GET stream: the server has nowhere to send notifications to the edge's session.
        (405, _) => return Err(Ended::Unsupported("the server offers no GET stream".into(), None)),
        (404 | 400, _) => return Err(session_lost(session, "GET")),
        (status, _) => return Err(Ended::Failed(Event::Refused, format!("GET stream: HTTP {status}"))),
    }
    let (control, mut controls) = mpsc::channel(8);
    let _reader = reader::spawn(context.clone(), opened.session, 0, None, Some(headers), control);
    let wanted = subscribe_wanted(context, session, &mut support).await?;
    if !support.serves(&wanted) {
        return Err(Ended::Unsupported("the server can tell of nothing that is cached".into(), Some(support)));
    }
    backoff.up(now_ms());
    context.connected(*established_before, &wanted, session.subscribed.len());
    *established_before = true;
    loop {
        tokio::select! {
            heard = controls.recv() => match heard {
                Some(Control::Dropped { reason, .. }) => return Err(Ended::Failed(Event::Dropped, reason)),
                None => return Err(Ended::Failed(Event::Dropped, "the stream's reader ended".into())),
                Some(_) => {}
            },
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(Ended::Failed(Event::Dropped, "the route's watch is gone".into()));
                }
                subscribe_wanted(context, session, &mut support).await?;
                let subscribed = session.subscribed.len();
                context.set_status(|s| s.subscribed = subscribed);
            }
        }
    }
}

/// The session is gone on the server (404, or 400 as server-everything says): a new one is made.
fn session_lost(session: &mut Session, what: &str) -> Ended {
    session.id = None;
    Ended::Failed(Event::SessionLost, format!("{what}: the session is gone"))
}

/// Subscribes to what is watched and not yet subscribed, unsubscribes from what is no longer
/// watched; what is watched now.
async fn subscribe_wanted(context: &Context, session: &mut Session, support: &mut Support) -> Result<Wanted, Ended> {
    let wanted = context.watch.wanted(context.era);
    if !support.subscribe {
        return Ok(wanted);
    }
    let want: HashSet<&str> = wanted.uris.iter().map(String::as_str).collect();
    let gone: Vec<String> = session.subscribed.iter().filter(|uri| !want.contains(uri.as_str())).cloned().collect();
    for uri in gone {
        session.subscribed.remove(&uri);
        ask(context, session, &uri, false).await?;
    }
    session.refused.retain(|uri| want.contains(uri.as_str()));
    for uri in &wanted.uris {
        if session.subscribed.contains(uri) || session.refused.contains(uri) {
            continue;
        }
        match ask(context, session, uri, true).await? {
            Some(Reply::Result(_)) => {
                session.subscribed.insert(uri.clone());
            }
            Some(reply) if reply.is_method_not_found() => {
                // The server declared `subscribe` but does not serve it: lists only.
                support.subscribe = false;
                session.subscribed.clear();
                break;
            }
            _ => {
                context.watch.count(Event::Refused);
                session.refused.insert(uri.clone());
            }
        }
    }
    Ok(wanted)
}

/// Sends `resources/subscribe` (or unsubscribe) for `uri`; its reply.
async fn ask(context: &Context, session: &mut Session, uri: &str, subscribe: bool) -> Result<Option<Reply>, Ended> {
    let id = session.next_id();
    let headers = session.headers();
    let answer = context
        .link
        .call(&subscribe_body(&id, uri, subscribe), Some(&id), &borrowed(&headers))
        .await
        .map_err(dropped)?;
    match answer.status {
        404 | 400 if !matches!(answer.reply, Some(Reply::Error { code: -32601 | -32602, .. })) => {
            Err(session_lost(session, "resources/subscribe"))
        }
        _ => Ok(answer.reply),
    }
}
