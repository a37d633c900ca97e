//! Reading one subscription stream (a handshake-era GET stream or a `subscriptions/listen`
//! answer) on a task of its own: notifications are applied as they come; what the worker must
//! act on (an acknowledgment, the end) is sent to it.

use std::sync::Arc;

use mcp_edge_policies::sse::SseParser;
use mcp_edge_policies::subscriptions::messages::answer_body;
use mcp_edge_policies::subscriptions::{Heard, Reply};
use pingora::protocols::http::client::HttpSession;
use tokio::sync::mpsc;

use super::Context;
use super::link::MAX_EVENT;

/// What a stream tells its worker.
#[derive(Debug)]
pub enum Control {
    /// The server acknowledged the listen stream `stream`, with this many URIs.
    Acknowledged { stream: u64, uris: usize },
    /// The server answered the listen request of `stream`: the stream is over.
    Ended { stream: u64, reply: Reply },
    /// Stream `stream` broke or ended without an answer.
    Dropped { stream: u64, reason: String },
}

/// A stream being read; dropping it stops the reading and closes the connection (for a listen
/// stream, that ends the subscription).
pub struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a server's requests on the stream are answered: the headers of the session they
/// belong to (handshake era).
pub type AnswerHeaders = Vec<(&'static str, String)>;

/// Reads `session`'s body as SSE. `listen_id`: the id of the listen request whose answer this
/// is (`None` for a GET stream, whose server requests are answered with `answers`).
pub fn spawn(
    context: Arc<Context>,
    mut session: HttpSession,
    stream: u64,
    listen_id: Option<String>,
    answers: Option<AnswerHeaders>,
    control: mpsc::Sender<Control>,
) -> Reader {
    Reader(tokio::spawn(async move {
        let mut parser = SseParser::new(MAX_EVENT);
        let reason = loop {
            let chunk = match session.read_response_body().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break "the stream ended".to_string(),
                Err(e) => break e.to_string(),
            };
            let mut targets = Vec::new();
            for data in parser.feed(&chunk) {
                match mcp_edge_policies::subscriptions::messages::hear(&data, listen_id.as_deref()) {
                    Heard::Invalidate(target) => targets.push(target),
                    Heard::Acknowledged { uris, .. } => {
                        let _ = control.send(Control::Acknowledged { stream, uris }).await;
                    }
                    Heard::Ended(reply) => {
                        context.invalidate(&targets);
                        let _ = control.send(Control::Ended { stream, reply }).await;
                        return;
                    }
                    Heard::Request { id, method } => {
                        if let Some(headers) = &answers {
                            answer(&context, headers, &answer_body(&id, &method)).await;
                        }
                    }
                    Heard::Nothing => {}
                }
            }
            context.invalidate(&targets);
        };
        let _ = control.send(Control::Dropped { stream, reason }).await;
    }))
}

/// Answers a server's request on its session (best effort: a server that gets no answer to a
/// ping may end the session, which the worker then notices).
async fn answer(context: &Context, headers: &AnswerHeaders, body: &str) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    if let Err(e) = context.link.call(body, None, &headers).await {
        tracing::debug!(upstream = %context.link.url.url, error = %e, "could not answer the server's request");
    }
}
