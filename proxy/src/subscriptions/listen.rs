//! A stateless-era subscription on one replica: `server/discover` says what the server can tell
//! of, then a `subscriptions/listen` POST whose SSE answer stays open. Its URIs are fixed for
//! the stream's life, so when more are watched a new stream with the whole set is opened (at
//! most one a second) and the old one is closed once the new one is acknowledged: two streams
//! at most, and no moment when a watched URI is not listened to.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use mcp_edge_policies::subscriptions::messages::{STATELESS_VERSION, discover_body, listen_body};
use mcp_edge_policies::subscriptions::{Backoff, Lists, Reply, Support, Wanted, switch_wait_ms};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::link::{Failure, Opened};
use super::reader::{self, Control, Reader};
use super::{Context, Ended, Event, State, finish, stopped, unsupported_wait};
use crate::store::now_ms;

const DISCOVER_ID: &str = "mcp-edge-discover";
/// How long a new stream may take to be acknowledged.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// One listen stream.
struct Stream {
    id: u64,
    /// The watched set's growth count it was opened with.
    grown: u64,
    /// When it was opened (ms since the epoch).
    opened_at_ms: u64,
    wanted: Wanted,
    _reader: Reader,
}

fn dropped(failure: Failure) -> Ended {
    Ended::Failed(Event::Dropped, failure.to_string())
}

fn headers(method: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("MCP-Protocol-Version", STATELESS_VERSION),
        ("Mcp-Method", method),
        ("Accept", "application/json, text/event-stream"),
    ]
}

/// Keeps the subscription of `context` up until told to stop.
pub(super) async fn run(context: Context, mut stop: watch::Receiver<bool>) {
    let context = Arc::new(context);
    let mut backoff = Backoff::default();
    let mut established_before = false;
    let mut changes = context.watch.changes(context.era);
    let mut streams_opened = 0;
    if unsupported_wait(&context, &mut changes, &mut stop).await {
        return;
    }
    loop {
        context.state(State::Connecting);
        let ended = tokio::select! {
            ended = serve(&context, &mut changes, &mut backoff, &mut established_before, &mut streams_opened) => {
                match ended {
                    Ok(never) => match never {},
                    Err(ended) => ended,
                }
            }
            _ = stopped(&mut stop) => return,
        };
        if finish(&context, ended, &mut backoff, &mut changes, &mut stop).await {
            return;
        }
    }
}

/// What the server supports, from `server/discover`. A server that does not answer it (it
/// must, but) is asked for everything: the acknowledgment says what it honours.
async fn discover(context: &Context) -> Result<Support, Ended> {
    let everything = Support { subscribe: true, lists: Lists { resources: true, tools: true, prompts: true } };
    let body = discover_body(DISCOVER_ID);
    let answer = context.link.call(&body, Some(DISCOVER_ID), &headers("server/discover")).await.map_err(dropped)?;
    match (answer.status, answer.reply) {
        (200, Some(Reply::Result(result))) => Ok(Support::of_result(&result)),
        (_, Some(reply)) if reply.is_method_not_found() => Ok(everything),
        (404, None) => Ok(everything),
        (_, Some(Reply::Error { code, message })) => {
            Err(Ended::Failed(Event::Refused, format!("server/discover: error {code}: {message}")))
        }
        (status, _) => Err(Ended::Failed(Event::Refused, format!("server/discover: HTTP {status}, no result"))),
    }
}

/// Listen streams, from `server/discover` until one fails.
async fn serve(
    context: &Arc<Context>,
    changes: &mut watch::Receiver<u64>,
    backoff: &mut Backoff,
    established_before: &mut bool,
    streams_opened: &mut u64,
) -> Result<Infallible, Ended> {
    let support = discover(context).await?;
    if !support.any() {
        let reason = "the server declares neither resources.subscribe nor listChanged";
        return Err(Ended::Unsupported(reason.into(), Some(support)));
    }
    let (control, mut controls) = mpsc::channel(8);
    let mut current: Option<Stream> = None;
    let mut pending = Some(open(context, &support, streams_opened, &control).await?);
    let mut ack_by = Instant::now() + ACK_WAIT;
    let mut switch_at: Option<Instant> = None;
    loop {
        tokio::select! {
            heard = controls.recv() => {
                let Some(heard) = heard else {
                    return Err(Ended::Failed(Event::Dropped, "the streams' readers are gone".into()));
                };
                match heard {
                    Control::Acknowledged { stream, uris } if pending.as_ref().is_some_and(|p| p.id == stream) => {
                        let stream = pending.take().expect("pending");
                        if current.is_none() {
                            backoff.up(now_ms());
                            context.connected(*established_before, &stream.wanted, uris);
                            *established_before = true;
                        } else {
                            context.watch.count(Event::Switched);
                            context.set_status(|s| s.subscribed = uris);
                        }
                        // The old stream (if any) is dropped: its connection closes.
                        current = Some(stream);
                        // URIs added while the new stream was being opened need another one.
                        if context.watch.grown(context.era) > current.as_ref().map_or(0, |c| c.grown) {
                            let wait = switch_wait_ms(now_ms(), current.as_ref().map_or(0, |c| c.opened_at_ms));
                            switch_at = Some(Instant::now() + Duration::from_millis(wait));
                        }
                    }
                    Control::Ended { stream, reply } if is_one_of(stream, &current, &pending) => {
                        return Err(ended_by(reply));
                    }
                    Control::Dropped { stream, reason } if is_one_of(stream, &current, &pending) => {
                        return Err(Ended::Failed(Event::Dropped, reason));
                    }
                    _ => {}
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(Ended::Failed(Event::Dropped, "the route's watch is gone".into()));
                }
                let newest = current.as_ref().map_or(0, |c| c.opened_at_ms);
                let grown = context.watch.grown(context.era);
                let behind = current.as_ref().is_some_and(|c| c.grown < grown);
                if behind && pending.is_none() && switch_at.is_none() {
                    switch_at = Some(Instant::now() + Duration::from_millis(switch_wait_ms(now_ms(), newest)));
                }
            }
            _ = sleep_until(switch_at) => {
                switch_at = None;
                let grown = context.watch.grown(context.era);
                if pending.is_none() && current.as_ref().is_some_and(|c| c.grown < grown) {
                    pending = Some(open(context, &support, streams_opened, &control).await?);
                    ack_by = Instant::now() + ACK_WAIT;
                }
            }
            _ = tokio::time::sleep_until(ack_by), if pending.is_some() => {
                return Err(Ended::Failed(Event::Refused, "subscriptions/listen: no acknowledgment within 10 s".into()));
            }
        }
    }
}

fn is_one_of(stream: u64, current: &Option<Stream>, pending: &Option<Stream>) -> bool {
    current.as_ref().is_some_and(|c| c.id == stream) || pending.as_ref().is_some_and(|p| p.id == stream)
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The server answered the listen request: the stream is over.
fn ended_by(reply: Reply) -> Ended {
    match reply {
        reply if reply.is_method_not_found() => {
            Ended::Unsupported("the server does not serve subscriptions/listen".into(), None)
        }
        Reply::Result(_) => Ended::Failed(Event::Dropped, "the server ended the subscription".into()),
        Reply::Error { code, message } => {
            Ended::Failed(Event::Refused, format!("subscriptions/listen: error {code}: {message}"))
        }
    }
}

/// Opens a listen stream for everything watched now that the server supports.
async fn open(
    context: &Arc<Context>,
    support: &Support,
    streams_opened: &mut u64,
    control: &mpsc::Sender<Control>,
) -> Result<Stream, Ended> {
    let wanted = context.watch.wanted(context.era);
    *streams_opened += 1;
    let (number, id) = (*streams_opened, format!("mcp-edge-listen-{streams_opened}"));
    let Some(body) = listen_body(&id, &wanted, support) else {
        return Err(Ended::Unsupported("the server can tell of nothing that is cached".into(), Some(*support)));
    };
    let Opened { session, status, sse } =
        context.link.open("POST", Some(&body), &headers("subscriptions/listen")).await.map_err(dropped)?;
    if status != 200 || !sse {
        return Err(refused(session, status, &id).await);
    }
    let reader = reader::spawn(context.clone(), session, number, Some(id), None, control.clone());
    Ok(Stream { id: number, grown: wanted.grown, opened_at_ms: now_ms(), wanted, _reader: reader })
}

/// Why a listen request was not answered with a stream: a server that does not know the
/// method (404, 405, or JSON-RPC "method not found") does not support it.
async fn refused(mut session: pingora::protocols::http::client::HttpSession, status: u16, id: &str) -> Ended {
    let reply = tokio::time::timeout(Duration::from_secs(2), async {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_response_body().await {
            body.extend_from_slice(&chunk);
            if body.len() > 64 * 1024 {
                break;
            }
        }
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|m| mcp_edge_policies::subscriptions::messages::reply_to(&m, id))
    })
    .await
    .ok()
    .flatten();
    match (status, reply) {
        (404 | 405, _) => Ended::Unsupported(format!("subscriptions/listen: HTTP {status}"), None),
        (_, Some(reply)) if reply.is_method_not_found() => {
            Ended::Unsupported("the server does not serve subscriptions/listen".into(), None)
        }
        (_, Some(Reply::Error { code, message })) => {
            Ended::Failed(Event::Refused, format!("subscriptions/listen: HTTP {status}, error {code}: {message}"))
        }
        _ => Ended::Failed(Event::Refused, format!("subscriptions/listen: HTTP {status}")),
    }
}
