//! The push client: follows topics on `/api/v1/stream` and survives any drop.
//!
//! On every (re)connect it subscribes with `after` = the last sequence it
//! has stored, so the server replays what was missed; events at or below
//! that sequence are dropped, so **the app receives each event once, in
//! sequence order**, however often the connection breaks. The cursor is
//! stored (SQLite natively) as each event is handed over, so a restarted app
//! resumes where it stopped. Reconnects wait with backoff and jitter; a
//! silent connection is detected with pings. `RESYNC` (this client fell
//! behind) is answered by resuming from the stored cursor and telling the
//! app, which may reload its views.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use xianlu_domain::wire::{ClientMessage, ServerMessage, StreamEvent, Topic};

use crate::api::ApiClient;
use crate::error::{CoreError, CoreResult};
use crate::retry::Backoff;
use crate::store::Store;

/// What the app receives.
#[derive(Debug, Clone, PartialEq)]
pub enum PushEvent {
    /// A committed change, once, in order.
    Event(Box<StreamEvent>),
    /// Everything missed while away has been delivered; live from here.
    CaughtUp { seq: u64 },
    /// The server dropped this client for falling behind; it resumed from
    /// its cursor without losing anything, but views may be worth reloading.
    Resynced { seq: u64 },
}

/// The connection as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting {
        attempt: u32,
    },
    /// Subscribed and caught up.
    Live,
    /// Disconnected; the next attempt comes after a wait.
    Offline {
        attempt: u32,
        reason: String,
    },
    /// Will not reconnect by itself: log in again, or update the app.
    Stopped {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct PushSettings {
    pub backoff: Backoff,
    /// A ping is sent after this much silence; twice this without any
    /// message and the connection counts as dead.
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            backoff: Backoff::default(),
            heartbeat: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// A running push client. Dropping it does not stop it; call [`PushClient::stop`].
#[derive(Clone)]
pub struct PushClient {
    state: watch::Receiver<ConnectionState>,
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for PushClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushClient").field("state", &*self.state.borrow()).finish()
    }
}

/// The store key of the cursor of a set of topics.
fn cursor_key(topics: &[Topic]) -> String {
    let mut names: Vec<String> = topics.iter().map(|t| serde_json::to_string(t).unwrap_or_default()).collect();
    names.sort();
    format!("push.cursor:{}", names.join(","))
}

impl PushClient {
    /// Starts following `topics`. Events arrive on the returned receiver.
    pub fn start(
        api: ApiClient,
        store: Arc<dyn Store>,
        topics: Vec<Topic>,
        settings: PushSettings,
    ) -> (PushClient, mpsc::UnboundedReceiver<PushEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ConnectionState::Connecting { attempt: 0 });
        let stopped = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            api,
            store,
            key: cursor_key(&topics),
            topics,
            settings,
            events,
            state: state_tx,
            stopped: stopped.clone(),
        };
        crate::rt::spawn(worker.run());
        (PushClient { state, stopped }, rx)
    }

    /// As [`PushClient::start`], from the events after `seq` (0: everything
    /// the caller may see) if the store has no cursor for these topics yet.
    pub fn start_after(
        api: ApiClient,
        store: Arc<dyn Store>,
        topics: Vec<Topic>,
        seq: u64,
        settings: PushSettings,
    ) -> CoreResult<(PushClient, mpsc::UnboundedReceiver<PushEvent>)> {
        let key = cursor_key(&topics);
        if store.meta(&key)?.is_none() {
            store.set_meta(&key, &seq.to_string())?;
        }
        Ok(Self::start(api, store, topics, settings))
    }

    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Stops reconnecting; the current connection closes at its next message or ping.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

struct Worker {
    api: ApiClient,
    store: Arc<dyn Store>,
    topics: Vec<Topic>,
    key: String,
    settings: PushSettings,
    events: mpsc::UnboundedSender<PushEvent>,
    state: watch::Sender<ConnectionState>,
    stopped: Arc<AtomicBool>,
}

/// Why a connection ended.
enum End {
    /// Reconnect after a wait.
    Dropped(String),
    /// Reconnect at once (RESYNC).
    Resync,
    /// Do not reconnect.
    Fatal(String),
}

impl Worker {
    async fn run(self) {
        let mut attempt: u32 = 0;
        let mut cursor: Option<u64> = self.store.meta(&self.key).ok().flatten().and_then(|v| v.parse().ok());
        loop {
            if self.stopped.load(Ordering::SeqCst) || self.events.is_closed() {
                let _ = self.state.send(ConnectionState::Stopped { reason: "stopped".into() });
                return;
            }
            let _ = self.state.send(ConnectionState::Connecting { attempt });
            let mut subscribed = false;
            let end = self.connection(&mut cursor, &mut subscribed).await;
            if subscribed {
                attempt = 0;
            }
            match end {
                End::Resync => continue,
                End::Fatal(reason) => {
                    let _ = self.state.send(ConnectionState::Stopped { reason });
                    return;
                }
                End::Dropped(reason) => {
                    attempt = attempt.saturating_add(1);
                    let _ = self.state.send(ConnectionState::Offline { attempt, reason });
                    crate::rt::sleep(self.settings.backoff.delay(attempt)).await;
                }
            }
        }
    }

    async fn connection(&self, cursor: &mut Option<u64>, subscribed: &mut bool) -> End {
        let url = match self.api.stream_url() {
            Ok(url) => url,
            Err(error) => return End::Fatal(error.to_string()),
        };
        let opened = tokio::select! {
            opened = open(&url) => opened,
            _ = crate::rt::sleep(self.settings.connect_timeout) => Err(CoreError::Network("connect timed out".into())),
        };
        let (mut sink, mut source) = match opened {
            Ok(pair) => pair,
            Err(CoreError::Unauthenticated(reason)) => {
                // The access token expired: refresh it, then try again.
                return match self.api.refresh_session().await {
                    Ok(()) => End::Dropped(reason),
                    Err(error @ CoreError::Unauthenticated(_)) => End::Fatal(error.to_string()),
                    Err(error) => End::Dropped(error.to_string()),
                };
            }
            Err(error @ CoreError::Incompatible { .. }) => return End::Fatal(error.to_string()),
            Err(error) => return End::Dropped(error.to_string()),
        };
        let subscribe = ClientMessage::Subscribe { topics: self.topics.clone(), after: *cursor };
        if let Err(error) = sink.send(serde_json::to_string(&subscribe).unwrap_or_default()).await {
            return End::Dropped(error.to_string());
        }
        let mut pinged = false;
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                let _ = sink.close().await;
                return End::Fatal("stopped".into());
            }
            let next = tokio::select! {
                next = source.next() => next,
                _ = crate::rt::sleep(self.settings.heartbeat) => {
                    if pinged {
                        return End::Dropped("the connection went silent".into());
                    }
                    pinged = true;
                    let ping = serde_json::to_string(&ClientMessage::Ping).unwrap_or_default();
                    if let Err(error) = sink.send(ping).await {
                        return End::Dropped(error.to_string());
                    }
                    continue;
                }
            };
            pinged = false;
            let text = match next {
                Some(Ok(text)) => text,
                Some(Err(error)) => return End::Dropped(error.to_string()),
                None => return End::Dropped("the server closed the connection".into()),
            };
            let message: ServerMessage = match serde_json::from_str(&text) {
                Ok(message) => message,
                Err(error) => {
                    // Not something this version understands: never guess.
                    return End::Fatal(
                        CoreError::Protocol(format!("push message this app cannot read ({error}); update the app"))
                            .to_string(),
                    );
                }
            };
            match message {
                ServerMessage::Subscribed { head, .. } => {
                    *subscribed = true;
                    if cursor.is_none() {
                        // First run: live from now on, with nothing to catch up on.
                        self.advance(cursor, head);
                        let _ = self.state.send(ConnectionState::Live);
                    }
                }
                ServerMessage::Event(event) => {
                    if cursor.is_some_and(|c| event.seq <= c) {
                        continue; // already delivered
                    }
                    let seq = event.seq;
                    if self.events.send(PushEvent::Event(event)).is_err() {
                        return End::Fatal("nobody listens".into());
                    }
                    self.advance(cursor, seq);
                }
                ServerMessage::CaughtUp { seq } => {
                    self.advance(cursor, seq);
                    let _ = self.events.send(PushEvent::CaughtUp { seq });
                    let _ = self.state.send(ConnectionState::Live);
                }
                ServerMessage::Resync { seq, .. } => {
                    let _ = self.events.send(PushEvent::Resynced { seq });
                    return End::Resync;
                }
                ServerMessage::Pong => {}
                ServerMessage::Error { code, message } => {
                    return match code.as_str() {
                        "forbidden" | "not_found" | "invalid_message" => End::Fatal(format!("{code}: {message}")),
                        _ => End::Dropped(format!("{code}: {message}")),
                    };
                }
            }
        }
    }

    fn advance(&self, cursor: &mut Option<u64>, seq: u64) {
        if cursor.is_none_or(|c| seq > c) {
            *cursor = Some(seq);
            if let Err(error) = self.store.set_meta(&self.key, &seq.to_string()) {
                tracing::error!(%error, "push: cannot store the cursor");
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
type TextSink = Pin<Box<dyn Sink<String, Error = CoreError> + Send>>;
#[cfg(not(target_arch = "wasm32"))]
type TextStream = Pin<Box<dyn Stream<Item = CoreResult<String>> + Send>>;
#[cfg(target_arch = "wasm32")]
type TextSink = Pin<Box<dyn Sink<String, Error = CoreError>>>;
#[cfg(target_arch = "wasm32")]
type TextStream = Pin<Box<dyn Stream<Item = CoreResult<String>>>>;

#[cfg(feature = "native")]
async fn open(url: &str) -> CoreResult<(TextSink, TextStream)> {
    use tokio_tungstenite::tungstenite::{self, Message};
    use xianlu_domain::wire::{API_VERSION, API_VERSION_HEADER};

    let (socket, response) = match tokio_tungstenite::connect_async(url).await {
        Ok(pair) => pair,
        Err(tungstenite::Error::Http(response)) if response.status() == 401 => {
            return Err(CoreError::Unauthenticated("the stream refused the access token".into()));
        }
        Err(error) => return Err(CoreError::Network(error.to_string())),
    };
    if let Some(version) = response.headers().get(API_VERSION_HEADER) {
        let version = version.to_str().ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        if version != API_VERSION {
            return Err(CoreError::Incompatible { server: version, ours: API_VERSION });
        }
    }
    let (sink, stream) = socket.split();
    let sink = sink
        .sink_map_err(|e| CoreError::Network(e.to_string()))
        .with(|text: String| futures_util::future::ready(Ok::<_, CoreError>(Message::text(text))));
    let stream = stream.filter_map(|message| {
        futures_util::future::ready(match message {
            Ok(Message::Text(text)) => Some(Ok(text.as_str().to_owned())),
            Ok(Message::Close(_)) => Some(Err(CoreError::Network("closed by the server".into()))),
            Ok(_) => None,
            Err(error) => Some(Err(CoreError::Network(error.to_string()))),
        })
    });
    Ok((Box::pin(sink), Box::pin(stream)))
}

#[cfg(target_arch = "wasm32")]
async fn open(url: &str) -> CoreResult<(TextSink, TextStream)> {
    use gloo_net::websocket::Message;
    use gloo_net::websocket::futures::WebSocket;

    let socket = WebSocket::open(url).map_err(|e| CoreError::Network(e.to_string()))?;
    let (sink, stream) = socket.split();
    let sink = sink
        .sink_map_err(|e| CoreError::Network(e.to_string()))
        .with(|text: String| futures_util::future::ready(Ok::<_, CoreError>(Message::Text(text))));
    let stream = stream.filter_map(|message| {
        futures_util::future::ready(match message {
            Ok(Message::Text(text)) => Some(Ok(text)),
            Ok(Message::Bytes(_)) => None,
            Err(error) => Some(Err(CoreError::Network(error.to_string()))),
        })
    });
    Ok((Box::pin(sink), Box::pin(stream)))
}

#[cfg(all(not(feature = "native"), not(target_arch = "wasm32")))]
async fn open(_url: &str) -> CoreResult<(TextSink, TextStream)> {
    Err(CoreError::Refused("the push client needs the `native` feature on this platform".into()))
}
