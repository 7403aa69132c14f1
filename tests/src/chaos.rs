//! A TCP proxy that makes the network as bad as a courier's: it cuts
//! connections at random, delays data, and lets requests through but drops
//! the responses (the request was applied; the client never hears so). It
//! can also go dark (refuse everything) and follow a server that restarted
//! on another port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How bad the network is.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Per connection: cut it after a random 0..`cut_within` of its life
    /// (long-lived connections such as WebSockets).
    pub cut: f64,
    pub cut_within: Duration,
    /// Per request (each chunk the client sends): cut the connection before
    /// it reaches the server.
    pub cut_request: f64,
    /// Per request: forward it, then cut the connection instead of passing
    /// on the response.
    pub drop_response: f64,
    /// Delay each chunk by up to this much.
    pub max_delay: Duration,
}

impl Faults {
    pub const NONE: Faults = Faults {
        cut: 0.0,
        cut_within: Duration::ZERO,
        cut_request: 0.0,
        drop_response: 0.0,
        max_delay: Duration::ZERO,
    };
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct Counts {
    pub connections: AtomicU64,
    pub cuts: AtomicU64,
    pub dropped_responses: AtomicU64,
    pub refused: AtomicU64,
}

pub struct ChaosProxy {
    pub addr: SocketAddr,
    pub url: String,
    upstream: Arc<Mutex<SocketAddr>>,
    faults: Arc<Mutex<Faults>>,
    dark: tokio::sync::watch::Sender<bool>,
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    /// A proxy in front of `upstream` (an `http://host:port` URL or address).
    pub async fn start(upstream: &str, faults: Faults) -> anyhow::Result<ChaosProxy> {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").trim_end_matches('/').parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Mutex::new(upstream));
        let faults = Arc::new(Mutex::new(faults));
        let (dark, _) = tokio::sync::watch::channel(false);
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn({
            let (upstream, faults, dark, counts) = (upstream.clone(), faults.clone(), dark.subscribe(), counts.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    counts.connections.fetch_add(1, Ordering::Relaxed);
                    if *dark.borrow() {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                        continue;
                    }
                    let target = *upstream.lock().unwrap_or_else(|e| e.into_inner());
                    let faults = *faults.lock().unwrap_or_else(|e| e.into_inner());
                    tokio::spawn(pipe(client, target, faults, counts.clone(), dark.clone()));
                }
            }
        });
        Ok(ChaosProxy { addr, url: format!("http://{addr}"), upstream, faults, dark, counts, task })
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Follows a server that came back on another address.
    pub fn set_upstream(&self, upstream: &str) {
        if let Ok(addr) = upstream.trim_start_matches("http://").trim_end_matches('/').parse() {
            *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        }
    }

    /// Refuses every connection (and cuts the open ones) while dark: from
    /// this call on, no byte crosses the proxy.
    pub fn set_dark(&self, dark: bool) {
        self.dark.send_replace(dark);
    }

    pub fn cuts(&self) -> u64 {
        self.counts.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    client: TcpStream,
    target: SocketAddr,
    faults: Faults,
    counts: Arc<Counts>,
    mut dark: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    let cut_after = {
        let mut rng = rand::rng();
        (rng.random::<f64>() < faults.cut)
            .then(|| faults.cut_within.mul_f64(rng.random::<f64>()).max(Duration::from_micros(200)))
    };
    let drop_response = AtomicBool::new(false);
    let dark_now = dark.clone();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let max_delay = faults.max_delay;
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (cut, drop) = {
                let mut rng = rand::rng();
                (rng.random::<f64>() < faults.cut_request, rng.random::<f64>() < faults.drop_response)
            };
            if cut {
                counts.cuts.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Read after the network went dark: it never arrives.
            if *dark_now.borrow() {
                return;
            }
            if drop {
                drop_response.store(true, Ordering::SeqCst);
            }
            delay(max_delay).await;
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if *dark_now.borrow() {
                return;
            }
            if drop_response.load(Ordering::SeqCst) {
                // The server did the work; the client hears nothing.
                counts.dropped_responses.fetch_add(1, Ordering::Relaxed);
                return;
            }
            delay(max_delay).await;
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let watch_dark = async {
        let _ = dark.wait_for(|d| *d).await;
    };
    let cut = async {
        match cut_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                counts.cuts.fetch_add(1, Ordering::Relaxed);
            }
            None => std::future::pending().await,
        }
    };
    // Whichever ends first ends the connection: both halves are dropped.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut => {}
        _ = watch_dark => {}
    }
}

async fn delay(max: Duration) {
    if !max.is_zero() {
        let wait = max.mul_f64(rand::rng().random::<f64>());
        tokio::time::sleep(wait).await;
    }
}
