//! The push stream at `/api/v1/stream` (WebSocket, JSON text frames).
//!
//! Protocol: the client sends `SUBSCRIBE {topics, after?}`. The server answers
//! `SUBSCRIBED {head}`; with `after` it then sends every matching event with
//! `after < seq <= head` from the events table, then `CAUGHT_UP`, then live
//! events — each exactly once, in sequence order. A subscriber that cannot
//! keep up is sent `RESYNC {seq}` and unsubscribed; it reloads and subscribes
//! again with `after = seq`. Nobody else waits for it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use xianlu_domain::wire::{ClientMessage, ServerMessage, StreamEvent, Topic};

use crate::AppState;
use crate::feed::Subscription;
use crate::policy::{self, Scope};

const MAX_TOPICS: usize = 1000;
const REPLAY_PAGE: i64 = 500;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Browsers cannot set headers on a WebSocket: the access token may come here.
    token: Option<String>,
    /// The development actor, on a server started for tests.
    actor: Option<String>,
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let authenticated = match &query.token {
        Some(token) if token.starts_with(crate::identity::TRACKING_PREFIX) => {
            state.identity.verify_tracking(token).await
        }
        Some(token) => state.identity.verify(token).await.map(|p| (p.actor(), p.scope())),
        None => crate::api::authenticate(&state, &headers, query.actor.as_deref()).await,
    };
    let scope = match authenticated {
        Ok((_, scope)) => scope,
        Err(error) => return error.into_response(),
    };
    ws.read_buffer_size(4 * 1024).write_buffer_size(0).max_message_size(64 * 1024).on_upgrade(
        move |socket| async move {
            state.metrics.stream_connections.inc();
            let internal = policy::sees_internal(&scope);
            Connection { state: state.clone(), scope, internal, subscription: None, last_sent: 0 }.run(socket).await;
            state.metrics.stream_connections.dec();
        },
    )
}

struct Connection {
    state: Arc<AppState>,
    /// What this caller may follow.
    scope: Scope,
    /// Whether the merchant's internal events (alerts) are for this caller.
    internal: bool,
    subscription: Option<Subscription>,
    /// The newest sequence this client has been sent.
    last_sent: u64,
}

fn text(message: &ServerMessage) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(message).unwrap_or_default()))
}

impl Connection {
    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut source) = socket.split();
        loop {
            let next_event = async {
                match self.subscription.as_mut() {
                    Some(sub) => sub.rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                incoming = source.next() => {
                    let Some(Ok(message)) = incoming else { break };
                    let reply = match message {
                        Message::Text(t) => self.handle(t.as_str(), &mut sink).await,
                        Message::Binary(_) => Some(error("binary_not_supported", "send JSON text frames")),
                        Message::Close(_) => break,
                        _ => None,
                    };
                    if let Some(reply) = reply
                        && sink.send(text(&reply)).await.is_err()
                    {
                        break;
                    }
                }
                event = next_event => {
                    let overflowed = self.subscription.as_ref().is_some_and(|s| s.inbox.overflowed());
                    match event {
                        Some(published) if !overflowed => {
                            if published.event.seq <= self.last_sent {
                                continue;
                            }
                            self.last_sent = published.event.seq;
                            if published.event.event.kind.is_internal() && !self.internal {
                                continue;
                            }
                            if sink.send(Message::Text(published.frame.clone())).await.is_err() {
                                break;
                            }
                        }
                        _ => {
                            self.subscription = None;
                            let resync = ServerMessage::Resync {
                                seq: self.last_sent,
                                reason: "the client fell too far behind; reload and subscribe again with after = seq".into(),
                            };
                            if sink.send(text(&resync)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        raw: &str,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    ) -> Option<ServerMessage> {
        let message: ClientMessage = match serde_json::from_str(raw) {
            Ok(m) => m,
            Err(e) => return Some(error("invalid_message", &e.to_string())),
        };
        match message {
            ClientMessage::Ping => Some(ServerMessage::Pong),
            ClientMessage::Subscribe { topics, after } => {
                if topics.is_empty() || topics.len() > MAX_TOPICS {
                    return Some(error("invalid_topics", "subscribe to 1–1000 topics"));
                }
                if let Err(refused) = self.check_topics(&topics).await {
                    return Some(refused);
                }
                // Replace any earlier subscription; register before reading history
                // so nothing committed in between is missed.
                self.subscription = None;
                let sub = self.state.hub.subscribe(topics.clone(), self.state.config.stream_buffer);
                let head = sub.head;
                self.subscription = Some(sub);
                if sink.send(text(&ServerMessage::Subscribed { topics: topics.clone(), head })).await.is_err() {
                    return None;
                }
                match after {
                    None => {
                        self.last_sent = head;
                        None
                    }
                    Some(after) if after > head => {
                        self.last_sent = head;
                        Some(ServerMessage::Resync {
                            seq: head,
                            reason: format!("sequence {after} is ahead of the stream head {head}"),
                        })
                    }
                    Some(after) => match self.replay(&topics, after, head, sink).await {
                        Ok(()) => {
                            self.last_sent = head;
                            Some(ServerMessage::CaughtUp { seq: head })
                        }
                        Err(e) => {
                            tracing::warn!(error = format!("{e:#}"), "stream replay failed");
                            self.subscription = None;
                            Some(error("replay_failed", "could not read the missed events; subscribe again"))
                        }
                    },
                }
            }
        }
    }

    /// Every topic must be within the caller's reach; a foreign one reads as unknown.
    async fn check_topics(&self, topics: &[Topic]) -> Result<(), ServerMessage> {
        if self.scope == Scope::Everything {
            return Ok(());
        }
        let unknown = || error("unknown_topic", "no such order, merchant or courier");
        for topic in topics {
            let allowed = match topic {
                Topic::Order(id) => self.state.service.view_for(&self.scope, *id).await.is_ok(),
                Topic::Courier(id) => {
                    let merchant = self.state.service.courier_merchant(*id).await.ok().flatten();
                    policy::may_follow(&self.scope, topic, merchant) && merchant.is_some()
                }
                Topic::Merchant(_) => policy::may_follow(&self.scope, topic, None),
            };
            if !allowed {
                return Err(unknown());
            }
        }
        Ok(())
    }

    async fn replay(
        &mut self,
        topics: &[Topic],
        after: u64,
        head: u64,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    ) -> anyhow::Result<()> {
        let mut orders = Vec::new();
        let mut merchants = Vec::new();
        let mut couriers = Vec::new();
        for topic in topics {
            match topic {
                Topic::Order(id) => orders.push(id.uuid()),
                Topic::Merchant(id) => merchants.push(id.uuid()),
                Topic::Courier(id) => couriers.push(id.uuid()),
            }
        }
        let mut cursor = after;
        while cursor < head {
            let page: Vec<StreamEvent> = self
                .state
                .service
                .events_between(&orders, &merchants, &couriers, cursor, head, REPLAY_PAGE)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(last) = page.last().map(|e| e.seq) else { break };
            for event in page {
                if event.event.kind.is_internal() && !self.internal {
                    continue;
                }
                tokio::time::timeout(Duration::from_secs(30), sink.send(text(&ServerMessage::Event(Box::new(event)))))
                    .await??;
            }
            cursor = last;
        }
        Ok(())
    }
}

fn error(code: &str, message: &str) -> ServerMessage {
    ServerMessage::Error { code: code.to_owned(), message: message.to_owned() }
}
