//! `cargo xtask bench`: durable transitions per second through the HTTP API
//! against a raw-database baseline doing the same version-checked update and
//! event insert, and push latency from commit to receipt. Prints a Markdown
//! report for docs/benchmarks.md. Figures, not assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use xianlu_server::db::{Db, DbOptions};
use xianlu_server::on_tx;
use xianlu_tests::{Backend, Client, ServerProcess, Shop, TestDb};

struct Settings {
    seconds: u64,
    orders: usize,
    http_workers: usize,
    push_clients: usize,
    push_rate: u64,
    fanout_clients: usize,
    fanout_rate: u64,
}

impl Settings {
    fn from_args() -> Settings {
        let quick = std::env::args().any(|a| a == "--quick");
        if quick {
            Settings {
                seconds: 3,
                orders: 64,
                http_workers: 16,
                push_clients: 1000,
                push_rate: 500,
                fanout_clients: 200,
                fanout_rate: 50,
            }
        } else {
            Settings {
                seconds: 10,
                orders: 256,
                http_workers: 32,
                push_clients: 10_000,
                push_rate: 2000,
                fanout_clients: 1000,
                fanout_rate: 100,
            }
        }
    }
}

/// Starts a server process on `db` with the given SQLite durability.
async fn server(db: &TestDb, synchronous: &str) -> Result<ServerProcess> {
    ServerProcess::start(
        &xianlu_tests::server_under_test()?,
        &[
            ("XIANLU_DATABASE_URL", db.url.as_str()),
            ("XIANLU_SQLITE_SYNCHRONOUS", synchronous),
            ("XIANLU_MAX_CONNECTIONS", "16"),
            ("XIANLU_STREAM_BUFFER", "1024"),
        ],
    )
    .await
}

/// Opens a shop and places `count` orders (left in CREATED, where courier
/// assignment is a legal self-loop).
async fn orders(url: &str, count: usize) -> Result<(Shop, Vec<String>)> {
    let admin = Client::new(url, "admin:bench");
    let shop = Shop::open(&admin).await?;
    admin
        .put(
            &format!("/api/v1/warehouses/{}/stock/SPINACH", shop.warehouse),
            &json!({"name": "有机菠菜", "dimension": "grams", "onHandBase": 1_000_000_000_i64}),
        )
        .await?;
    let shop = Arc::new(shop);
    let mut ids = Vec::with_capacity(count);
    let mut tasks = Vec::new();
    let per = count.div_ceil(8);
    for chunk in 0..8 {
        let admin = admin.clone();
        let shop = shop.clone();
        let n = per.min(count.saturating_sub(chunk * per));
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(shop.place(&admin, &shop.spinach()).await?);
            }
            anyhow::Ok(out)
        }));
    }
    for task in tasks {
        ids.extend(task.await??);
    }
    let shop = Arc::try_unwrap(shop).map_err(|_| anyhow::anyhow!("shop still shared"))?;
    Ok((shop, ids))
}

struct Throughput {
    count: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Courier assignments from `workers` concurrent HTTP clients: as fast as
/// they can go, or paced to `rate` per second in all.
async fn drive(
    url: &str,
    shop: &Shop,
    ids: &[String],
    workers: usize,
    rate: Option<u64>,
    seconds: u64,
) -> Result<Throughput> {
    let started = Instant::now();
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    // A lean load generator: request bodies are serialised up front.
    let http = xianlu_tests::http_client();
    let couriers = [shop.couriers[0].clone(), shop.couriers[1].clone()];
    for w in 0..workers {
        let http = http.clone();
        let body = |c: &str| json!({"command": {"type": "ASSIGN_COURIER", "courierId": c}}).to_string();
        let requests: Vec<(String, [String; 2])> = ids
            .iter()
            .skip(w)
            .step_by(workers)
            .map(|id| (format!("{url}/api/v1/orders/{id}/commands"), [body(&couriers[0]), body(&couriers[1])]))
            .collect();
        let interval = rate.map(|r| Duration::from_secs_f64(workers as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // Paced workers start spread over one interval, not all at once.
            let mut next =
                tokio::time::Instant::now() + interval.map_or(Duration::ZERO, |i| i * w as u32 / workers as u32);
            tokio::time::sleep_until(next).await;
            let mut i = 0usize;
            while tokio::time::Instant::now() < end {
                let (url, bodies) = &requests[i % requests.len()];
                let sent = Instant::now();
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-xianlu-dev-actor", "staff:bench")
                    .body(bodies[(i / requests.len()) % 2].clone())
                    .send()
                    .await?;
                let status = response.status();
                let _ = response.bytes().await?;
                anyhow::ensure!(status == 200, "status {status}");
                latencies.push(sent.elapsed().as_micros() as u64);
                i += 1;
                if let Some(interval) = interval {
                    next += interval;
                    tokio::time::sleep_until(next).await;
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Throughput {
        count: all.len(),
        per_second: all.len() as f64 / elapsed,
        p50_ms: xianlu_tests::percentile_ms(&all, 0.5),
        p99_ms: xianlu_tests::percentile_ms(&all, 0.99),
    })
}

const RAW_EVENT: &str = r#"{"from":"CREATED","to":"CREATED","kind":{"type":"COURIER_ASSIGNED","courierId":"01900000-0000-7000-8000-000000000001","previous":null}}"#;

/// The same version-checked update and event insert, straight on the
/// database, one transaction per change (SQLite: the one writer connection).
async fn raw_transitions(
    db: &TestDb,
    synchronous: &str,
    ids: &[String],
    workers: usize,
    seconds: u64,
) -> Result<Throughput> {
    let ids: Arc<Vec<uuid::Uuid>> = Arc::new(ids.iter().map(|i| i.parse()).collect::<Result<_, _>>()?);
    let pool =
        Db::connect(&DbOptions { url: db.url.clone(), sqlite_synchronous: synchronous.into(), max_connections: 16 })
            .await?;
    let stop = Arc::new(AtomicBool::new(false));
    // The same WAL housekeeping as the server: passive checkpoints off the commit path.
    let checkpointer = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = pool.checkpoint().await;
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (pool, ids, stop) = (pool.clone(), ids.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let id = ids[i % ids.len()];
                let sent = Instant::now();
                let mut tx = pool.begin().await?;
                on_tx!(&mut tx, c => {
                    let (doc, version): (String, i64) =
                        sqlx::query_as("SELECT doc, version FROM orders WHERE id = $1").bind(id).fetch_one(&mut *c).await?;
                    sqlx::query("UPDATE orders SET version = $3, doc = $4 WHERE id = $1 AND version = $2")
                        .bind(id)
                        .bind(version)
                        .bind(version + 1)
                        .bind(doc)
                        .execute(&mut *c)
                        .await?;
                    let (seq,): (i64,) = sqlx::query_as("UPDATE stream_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
                        .fetch_one(&mut *c)
                        .await?;
                    sqlx::query(
                        "INSERT INTO events (seq, order_id, order_number, merchant_id, courier_id, version, kind, at, \
                         actor_kind, actor_id, request_id, payload) VALUES ($1, $2, 'KL20300601001', $2, NULL, $3, \
                         'COURIER_ASSIGNED', $4, 'staff', 'bench', '-', $5)",
                    )
                    .bind(seq)
                    .bind(id)
                    .bind(version + 1)
                    .bind(chrono::Utc::now())
                    .bind(RAW_EVENT)
                    .execute(&mut *c)
                    .await?;
                });
                tx.commit().await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                i += workers;
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let _ = checkpointer.await;
    pool.close().await;
    Ok(Throughput {
        count: all.len(),
        per_second: all.len() as f64 / elapsed,
        p50_ms: xianlu_tests::percentile_ms(&all, 0.5),
        p99_ms: xianlu_tests::percentile_ms(&all, 0.99),
    })
}

struct Latency {
    committed: u64,
    received: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rss_per_connection: Option<f64>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(url: &str, topic: serde_json::Value) -> Result<Ws> {
    let ws_url = format!("{}/api/v1/stream?actor=customer:bench", url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    ws.send(Message::Text(json!({"type": "SUBSCRIBE", "topics": [topic]}).to_string().into())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("SUBSCRIBED") => return Ok(ws),
            Some(Ok(_)) => {}
            _ => anyhow::bail!("no SUBSCRIBED"),
        }
    }
}

/// Opens `clients` subscriptions (one topic each, from `topic(i)`), then commits
/// courier assignments at `rate` per second and measures commit → receipt.
async fn push_latency(
    server: &ServerProcess,
    shop: &Shop,
    ids: &[String],
    clients: usize,
    topic: impl Fn(usize) -> serde_json::Value,
    rate: u64,
    seconds: u64,
) -> Result<Latency> {
    let rss_before = server.rss_bytes();
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let received = Arc::new(AtomicU64::new(0));
    let mut sockets = Vec::with_capacity(clients);
    let mut pending =
        futures_util::stream::iter((0..clients).map(|i| subscribe(&server.url, topic(i)))).buffer_unordered(128);
    while let Some(ws) = pending.next().await {
        sockets.push(ws?);
    }
    drop(pending);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_bytes();
    let rss_per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / clients as f64),
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for mut ws in sockets {
        let (latencies, received, stop) = (latencies.clone(), received.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let next = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
                let message = match next {
                    Ok(Some(Ok(m))) => m,
                    Ok(_) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => continue,
                };
                if let Message::Text(text) = message {
                    let now = chrono::Utc::now();
                    // Only the commit time is needed: find it without parsing the whole event.
                    let at = text
                        .as_str()
                        .split_once("\"at\":\"")
                        .and_then(|(_, rest)| rest.split_once('"'))
                        .map(|(at, _)| at);
                    if let Some(at) = at.and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok()) {
                        mine.push((now - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0).max(0) as u64);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies.lock().await.extend(mine);
            let _ = ws.close(None).await;
        }));
    }
    // Commit at a steady rate with a few concurrent writers.
    let driven = drive(&server.url, shop, ids, 16, Some(rate), seconds).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let _ = reader.await;
    }
    let mut all = std::mem::take(&mut *latencies.lock().await);
    all.sort_unstable();
    let committed = driven.count as u64;
    Ok(Latency {
        committed,
        received: received.load(Ordering::Relaxed),
        rate: driven.per_second,
        p50_ms: xianlu_tests::percentile_ms(&all, 0.5),
        p99_ms: xianlu_tests::percentile_ms(&all, 0.99),
        max_ms: all.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        rss_per_connection,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::from_args();
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    eprintln!("open-file limit raised to {limit}");
    let mut report = String::new();
    report.push_str(&format!(
        "Machine: {}. Release build; server and load generator share the machine. {} s per phase.\n\n",
        xianlu_tests::machine(),
        settings.seconds
    ));

    report.push_str("### Durable transitions through the HTTP API\n\n");
    report.push_str(&format!(
        "`ASSIGN_COURIER` on {} orders from {} concurrent HTTP clients, as fast as they go, then paced to \
         1 000/s. Every change is atomic and on disk (at the stated durability) when its 200 arrives: load, apply, \
         version-checked update, stream sequence, event, hash-chained audit entry; the server's writer commits the \
         changes waiting at that moment in one transaction (group commit). Raw baseline: the same version-checked \
         update + sequence + event insert straight on the database, one transaction per change, same durability \
         and concurrency.\n\n",
        settings.orders, settings.http_workers
    ));
    report.push_str("| database | API transitions/s | p50 ms | p99 ms | p99 ms at 1 000/s | raw baseline/s | raw p99 ms | API ÷ raw |\n|---|---|---|---|---|---|---|---|\n");
    for (label, backend, synchronous) in [
        ("SQLite, WAL, synchronous=NORMAL", Backend::Sqlite, "NORMAL"),
        ("SQLite, WAL, synchronous=FULL", Backend::Sqlite, "FULL"),
        ("PostgreSQL 15, synchronous_commit=on", Backend::Postgres, "FULL"),
    ] {
        eprintln!("transitions: {label}");
        let db = TestDb::create(backend).await?;
        let process = server(&db, synchronous).await?;
        let (shop, ids) = orders(&process.url, settings.orders).await?;
        let api = drive(&process.url, &shop, &ids, settings.http_workers, None, settings.seconds).await?;
        let paced = drive(&process.url, &shop, &ids, settings.http_workers, Some(1000), settings.seconds).await?;
        process.stop().await;
        let raw = raw_transitions(&db, synchronous, &ids, settings.http_workers, settings.seconds).await?;
        let line = format!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} % |\n",
            api.per_second,
            api.p50_ms,
            api.p99_ms,
            paced.p99_ms,
            raw.per_second,
            raw.p99_ms,
            100.0 * api.per_second / raw.per_second
        );
        eprint!("{line}");
        report.push_str(&line);
    }

    eprintln!("push: {} clients, one order each", settings.push_clients);
    let db = TestDb::create(Backend::Sqlite).await?;
    let process = server(&db, "NORMAL").await?;
    let (shop, ids) = orders(&process.url, settings.push_clients).await?;
    let ids_for_topics = ids.clone();
    let per_order = push_latency(
        &process,
        &shop,
        &ids,
        settings.push_clients,
        |i| json!({"order": ids_for_topics[i]}),
        settings.push_rate,
        settings.seconds,
    )
    .await?;
    let merchant = shop.merchant.clone();
    eprintln!("push: {} subscribers of one merchant", settings.fanout_clients);
    let fanout = push_latency(
        &process,
        &shop,
        &ids[..settings.orders.min(ids.len())],
        settings.fanout_clients,
        |_| json!({"merchant": merchant}),
        settings.fanout_rate,
        settings.seconds,
    )
    .await?;
    process.stop().await;

    report.push_str("\n### Push latency, commit to receipt\n\n");
    report.push_str(
        "Server on SQLite (WAL, NORMAL). Latency is the receipt time minus the event's commit timestamp (taken at \
         the start of its transaction, so it slightly overstates). Memory is the server's resident-set growth \
         after the subscribers connected, divided by their number.\n\n",
    );
    report.push_str("| scenario | events committed | deliveries | commit rate/s | p50 ms | p99 ms | max ms | server memory per connection |\n|---|---|---|---|---|---|---|---|\n");
    let fanout = Latency { rss_per_connection: None, ..fanout };
    for (label, l) in [
        (format!("{} clients, each on its own order", settings.push_clients), &per_order),
        (format!("{} subscribers of one merchant", settings.fanout_clients), &fanout),
    ] {
        let line = format!(
            "| {label} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} |\n",
            l.committed,
            l.received,
            l.rate,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            l.rss_per_connection.map_or("–".into(), |b| format!("{:.1} KiB", b / 1024.0))
        );
        eprint!("{line}");
        report.push_str(&line);
    }
    println!("{report}");
    Ok(())
}
