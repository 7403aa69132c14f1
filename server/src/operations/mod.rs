//! Courier operations on top of stored positions: geofence arrivals, the
//! carrying courier's position for an order's subscribers, live ETA
//! windows, the "arriving soon" notice, and (in `rules`) alerts.
//!
//! Everything this module tells anyone becomes an *observation* event in the
//! events table (status and version unchanged), so it reaches every replica's
//! subscribers and caches like any other event. What it keeps in memory — the
//! latest position per courier, fence states, push throttles — is a
//! per-process cache: losing it costs at most one dwell period or one push.
//! Where several processes could write the same thing (a visit, an ETA, an
//! alert) the database decides who does: a unique key or a compare-and-set.

pub mod configure;
pub mod dispatch;
pub mod eta;
pub mod http;
pub mod notify;
pub mod rules;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use uuid::Uuid;
use xianlu_domain::evidence::PositionFix;
use xianlu_domain::operations::{CourierLocation, Notice, OperationsSettings, QuietHours};
use xianlu_domain::wire::{LatLng, StreamEvent};
use xianlu_domain::{CourierId, CustomerId, EventKind, MerchantId, Order, OrderId, Status, WarehouseId};
use xianlu_maps::MapProvider;
use xianlu_roads::fence::{FenceSettings, Geofences, Shape, Transition};

use crate::clock::Clock;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::service::OrderService;
use crate::{on_db, on_db_write};
use eta::{Leg, SpeedModel};
use notify::NotificationChannel;

/// How long a merchant's settings, fences and speed model are reused before
/// being read again (changes made through this process apply at once).
const REFRESH: Duration = Duration::from_secs(60);
/// A departure older than this says nothing about the next arrival.
const MAX_LEG: chrono::TimeDelta = chrono::TimeDelta::hours(3);
/// Events after which a merchant with automatic planning re-plans (as they
/// appear in an event's JSON, so the feed can pick them out unread).
pub const REPLAN_TRIGGERS: [&str; 4] = ["\"PAID\"", "\"CANCELLED\"", "\"EXCEPTION_REPORTED\"", "\"STOCK_RESOLVED\""];

/// Legs between stops remembered at most (then forgotten all at once).
const MAX_CACHED_LEGS: usize = 200_000;
/// Fallback driving speed where no road network is loaded (m/s, ~30 km/h).
pub(crate) const STRAIGHT_LINE_MPS: f64 = 8.3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceKey {
    Warehouse(WarehouseId),
    Customer(CustomerId),
}

struct MerchantFences {
    fences: Geofences<FenceKey, CourierId>,
    built: Instant,
}

#[derive(Clone)]
struct MerchantContext {
    settings: OperationsSettings,
    tz: chrono_tz::Tz,
    loaded: Instant,
}

#[derive(Default, Clone, Copy)]
struct CourierState {
    /// The fix time of the last position pushed to order subscribers.
    pushed_at: Option<DateTime<Utc>>,
    /// Where and when the courier last left a fence (the start of a leg).
    departure: Option<(DateTime<Utc>, LatLng)>,
}

/// The carrying courier's stop for one order.
struct Stop {
    order: Order,
    at: LatLng,
    /// Collecting the order from a stopped van, not delivering it.
    collect: bool,
}

pub struct Operations {
    service: OrderService,
    db: Db,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// Where travel times come from (none: straight lines at city speed).
    provider: Option<Arc<dyn MapProvider>>,
    contexts: Mutex<HashMap<MerchantId, MerchantContext>>,
    fences: Mutex<HashMap<MerchantId, MerchantFences>>,
    models: Mutex<HashMap<MerchantId, (Arc<SpeedModel>, Instant)>>,
    latest: RwLock<HashMap<CourierId, CourierLocation>>,
    couriers: Mutex<HashMap<CourierId, CourierState>>,
    /// Free-flow seconds between two customers' doors.
    legs: Mutex<HashMap<(CustomerId, CustomerId), f64>>,
    /// Merchants with a re-plan waiting for its debounce.
    replans: Mutex<std::collections::HashSet<MerchantId>>,
    /// This process, for planning leases.
    instance: String,
    channels: Vec<Box<dyn NotificationChannel>>,
}

/// An order as stored.
fn decode(doc: &str) -> ApiResult<Order> {
    serde_json::from_str(doc).map_err(|e| ApiError::Internal(e.into()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Operations {
    pub fn new(service: OrderService, metrics: Metrics, provider: Option<Arc<dyn MapProvider>>) -> Arc<Operations> {
        let channels: Vec<Box<dyn NotificationChannel>> =
            vec![Box::new(notify::StreamChannel { service: service.clone() })];
        Arc::new(Operations {
            db: service.db.clone(),
            clock: service.clock.clone(),
            service,
            metrics,
            provider,
            contexts: Mutex::default(),
            fences: Mutex::default(),
            models: Mutex::default(),
            latest: RwLock::default(),
            couriers: Mutex::default(),
            legs: Mutex::default(),
            replans: Mutex::default(),
            instance: Uuid::now_v7().to_string(),
            channels,
        })
    }

    // ----- settings -----

    async fn context(&self, merchant: MerchantId) -> ApiResult<MerchantContext> {
        if let Some(c) = lock(&self.contexts).get(&merchant)
            && c.loaded.elapsed() < REFRESH
        {
            return Ok(c.clone());
        }
        let row: Option<(String, Option<String>)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT m.time_zone, o.settings FROM merchants m LEFT JOIN merchant_operations o \
                 ON o.merchant_id = m.id WHERE m.id = $1",
            )
            .bind(merchant.uuid())
            .fetch_optional(pool)
            .await?
        });
        let (tz, settings) = row.ok_or_else(|| ApiError::NotFound("no such merchant".into()))?;
        let settings = match settings {
            Some(json) => serde_json::from_str(&json).map_err(|e| ApiError::Internal(e.into()))?,
            None => OperationsSettings::default(),
        };
        let tz =
            tz.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("merchant {merchant} has a bad time zone")))?;
        let context = MerchantContext { settings, tz, loaded: Instant::now() };
        lock(&self.contexts).insert(merchant, context.clone());
        Ok(context)
    }

    pub async fn settings(&self, merchant: MerchantId) -> ApiResult<OperationsSettings> {
        Ok(self.context(merchant).await?.settings)
    }

    /// Forgets what this process holds for the merchant (after a change of
    /// settings, fences or customers); fence states carry over.
    pub fn invalidate(&self, merchant: MerchantId) {
        lock(&self.contexts).remove(&merchant);
        if let Some(f) = lock(&self.fences).get_mut(&merchant) {
            f.built = Instant::now() - REFRESH - Duration::from_secs(1);
        }
    }

    // ----- fences -----

    async fn build_fences(&self, merchant: MerchantId) -> ApiResult<Geofences<FenceKey, CourierId>> {
        let settings = self.context(merchant).await?.settings;
        let warehouses: Vec<(Uuid, f64, f64, Option<String>)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, lat, lng, fence FROM warehouses WHERE merchant_id = $1")
                .bind(merchant.uuid())
                .fetch_all(pool)
                .await?
        });
        let customers: Vec<(Uuid, f64, f64)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, lat, lng FROM customers WHERE merchant_id = $1")
                .bind(merchant.uuid())
                .fetch_all(pool)
                .await?
        });
        let mut fences = Geofences::new(FenceSettings::default());
        for (id, lat, lng, polygon) in warehouses {
            let polygon: Option<Vec<LatLng>> = polygon.and_then(|p| serde_json::from_str(&p).ok());
            let shape = match polygon {
                Some(ring) => Shape::Polygon(ring),
                None => Shape::Circle { center: LatLng { lat, lng }, radius_m: f64::from(settings.warehouse_fence_m) },
            };
            if let Err(error) = fences.add(FenceKey::Warehouse(WarehouseId(id)), shape) {
                tracing::warn!(warehouse = %id, %error, "a warehouse fence was not usable");
            }
        }
        for (id, lat, lng) in customers {
            let shape = Shape::Circle { center: LatLng { lat, lng }, radius_m: f64::from(settings.customer_fence_m) };
            if let Err(error) = fences.add(FenceKey::Customer(CustomerId(id)), shape) {
                tracing::warn!(customer = %id, %error, "a customer fence was not usable");
            }
        }
        Ok(fences)
    }

    /// Feeds fixes to the merchant's fences; returns what they crossed.
    async fn cross_fences(
        &self,
        merchant: MerchantId,
        courier: CourierId,
        fixes: &[PositionFix],
    ) -> ApiResult<Vec<(FenceKey, Transition, DateTime<Utc>, LatLng, Option<i64>)>> {
        let stale = lock(&self.fences).get(&merchant).is_none_or(|f| f.built.elapsed() > REFRESH);
        if stale {
            let fresh = self.build_fences(merchant).await?;
            let mut all = lock(&self.fences);
            let fences = match all.remove(&merchant) {
                Some(old) => old.fences.carry_states_to(fresh),
                None => fresh,
            };
            all.insert(merchant, MerchantFences { fences, built: Instant::now() });
        }
        let mut crossed = Vec::new();
        let mut all = lock(&self.fences);
        let Some(entry) = all.get_mut(&merchant) else { return Ok(crossed) };
        for fix in fixes {
            let position = LatLng { lat: fix.lat, lng: fix.lng };
            for event in entry.fences.observe(&courier, fix.at.timestamp(), position, f64::from(fix.accuracy_m)) {
                let at = DateTime::from_timestamp(event.at, 0).unwrap_or(fix.at);
                crossed.push((event.fence, event.transition, at, position, event.dwell_s));
            }
        }
        Ok(crossed)
    }

    // ----- positions -----

    /// The latest trusted position of each of the couriers asked about.
    pub fn latest(&self, couriers: &[CourierId]) -> Vec<CourierLocation> {
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        couriers.iter().filter_map(|c| latest.get(c).copied()).collect()
    }

    fn remember(&self, location: CourierLocation) {
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        match latest.get(&location.courier_id) {
            Some(known) if known.at >= location.at => {}
            _ => {
                latest.insert(location.courier_id, location);
            }
        }
    }

    /// Runs after a batch of a courier's fixes is stored: `fixes` are the new,
    /// trusted ones in time order.
    pub async fn on_positions(&self, merchant: MerchantId, courier: CourierId, fixes: &[PositionFix]) -> ApiResult<()> {
        let Some(last) = fixes.last() else { return Ok(()) };
        self.remember(CourierLocation {
            courier_id: courier,
            at: last.at,
            position: LatLng { lat: last.lat, lng: last.lng },
            accuracy_m: last.accuracy_m,
            speed_mps: last.speed_mps,
            heading_deg: last.heading_deg,
        });
        let crossed = self.cross_fences(merchant, courier, fixes).await?;
        let settings = self.context(merchant).await?.settings;
        let interval = chrono::TimeDelta::seconds(i64::from(settings.position_push_seconds));
        let push_due =
            lock(&self.couriers).get(&courier).and_then(|s| s.pushed_at).is_none_or(|t| last.at - t >= interval);
        if crossed.is_empty() && !push_due {
            return Ok(());
        }
        let orders = self.orders_in_hand(courier).await?;
        for (fence, transition, at, position, dwell_s) in crossed {
            self.metrics
                .fence_transitions
                .with_label_values(&[
                    if matches!(fence, FenceKey::Warehouse(_)) { "warehouse" } else { "customer" },
                    if transition == Transition::Arrived { "arrived" } else { "left" },
                ])
                .inc();
            self.on_fence(merchant, courier, &orders, fence, transition, at, position, dwell_s).await?;
        }
        if push_due {
            lock(&self.couriers).entry(courier).or_default().pushed_at = Some(last.at);
            let kind = EventKind::CourierPosition {
                courier_id: courier,
                position: LatLng { lat: last.lat, lng: last.lng },
                fix_at: last.at,
                speed_mps: last.speed_mps,
                heading_deg: last.heading_deg,
            };
            for order in orders.iter().filter(|o| o.status == Status::Delivering) {
                self.service.record_observation(order.id, kind.clone(), last.at).await?;
            }
            self.collect_at_stopped_vans(courier, &orders, fixes, settings.customer_fence_m).await?;
            self.refresh_etas(merchant, courier).await?;
        }
        Ok(())
    }

    /// A courier sent to a stopped van has collected its goods once a fix
    /// within the customer fence's radius of the van is seen.
    async fn collect_at_stopped_vans(
        &self,
        courier: CourierId,
        orders: &[Order],
        fixes: &[PositionFix],
        radius_m: u32,
    ) -> ApiResult<()> {
        let Some(route) = self.route(courier).await? else { return Ok(()) };
        let radius = f64::from(radius_m);
        for stop in route.stops.iter().filter(|s| s.kind == xianlu_domain::operations::PlannedKind::Pickup) {
            let Some(order) = orders.iter().find(|o| o.id == stop.order_id && o.status == Status::Delivering) else {
                continue;
            };
            let reached = fixes.iter().find(|f| {
                f64::from(f.accuracy_m) <= radius
                    && xianlu_roads::distance_m(LatLng { lat: f.lat, lng: f.lng }, stop.location) <= radius
            });
            if let Some(fix) = reached
                && self.first_visit(order, "GOODS_COLLECTED", courier, fix.at).await?
            {
                let kind = EventKind::GoodsCollected { courier_id: courier };
                self.service.record_observation(order.id, kind, fix.at).await?;
            }
        }
        Ok(())
    }

    /// Orders assigned to the courier and not yet delivered.
    async fn orders_in_hand(&self, courier: CourierId) -> ApiResult<Vec<Order>> {
        let rows: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT doc FROM orders WHERE courier_id = $1 AND status IN ('AWAITING_PICK', 'PICKING', 'PACKED', 'DELIVERING')",
            )
            .bind(courier.uuid())
            .fetch_all(pool)
            .await?
        });
        rows.iter().map(|(doc,)| decode(doc)).collect()
    }

    /// Records a visit once per order, kind and delivery attempt; `true` if this call did.
    async fn first_visit(&self, order: &Order, kind: &str, courier: CourierId, at: DateTime<Utc>) -> ApiResult<bool> {
        let inserted = on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO stop_visits (order_id, kind, attempt, courier_id, merchant_id, at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(order.id.uuid())
            .bind(kind)
            .bind(i32::from(order.failed_attempts))
            .bind(courier.uuid())
            .bind(order.merchant_id.uuid())
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    #[allow(clippy::too_many_arguments)]
    async fn on_fence(
        &self,
        merchant: MerchantId,
        courier: CourierId,
        orders: &[Order],
        fence: FenceKey,
        transition: Transition,
        at: DateTime<Utc>,
        position: LatLng,
        dwell_s: Option<i64>,
    ) -> ApiResult<()> {
        match (fence, transition) {
            (FenceKey::Warehouse(w), Transition::Arrived) => {
                for order in orders.iter().filter(|o| o.warehouse_id == w) {
                    if self.first_visit(order, "ARRIVED_AT_WAREHOUSE", courier, at).await? {
                        let kind = EventKind::ArrivedAtWarehouse { courier_id: courier, warehouse_id: w };
                        self.service.record_observation(order.id, kind, at).await?;
                    }
                }
            }
            (FenceKey::Warehouse(w), Transition::Left) => {
                lock(&self.couriers).entry(courier).or_default().departure = Some((at, position));
                for order in orders.iter().filter(|o| o.warehouse_id == w && o.status == Status::Delivering) {
                    if self.first_visit(order, "LEFT_WAREHOUSE", courier, at).await? {
                        let kind = EventKind::LeftWarehouse { courier_id: courier, warehouse_id: w };
                        self.service.record_observation(order.id, kind, at).await?;
                    }
                }
            }
            (FenceKey::Customer(c), Transition::Arrived) => {
                let mut learned = false;
                for order in orders.iter().filter(|o| o.customer_id == c && o.status == Status::Delivering) {
                    if self.first_visit(order, "ARRIVED_AT_CUSTOMER", courier, at).await? {
                        self.service
                            .record_observation(order.id, EventKind::ArrivedAtCustomer { courier_id: courier }, at)
                            .await?;
                        self.arrived(order.id, at).await?;
                        if !learned {
                            self.learn_leg(merchant, courier, c, at).await?;
                            learned = true;
                        }
                    }
                }
            }
            (FenceKey::Customer(c), Transition::Left) => {
                lock(&self.couriers).entry(courier).or_default().departure = Some((at, position));
                // Signed orders are no longer in hand: close every open visit at this customer.
                on_db_write!(&self.db, pool => {
                    sqlx::query(
                        "UPDATE stop_visits SET left_at = $1, dwell_s = $2 WHERE courier_id = $3 AND kind = 'ARRIVED_AT_CUSTOMER' \
                         AND left_at IS NULL AND order_id IN (SELECT id FROM orders WHERE customer_id = $4)",
                    )
                    .bind(at)
                    .bind(dwell_s.unwrap_or(0))
                    .bind(courier.uuid())
                    .bind(c.uuid())
                    .execute(pool)
                    .await?;
                });
            }
        }
        Ok(())
    }

    /// A completed leg, for the speed model: from the last departure to this arrival.
    async fn learn_leg(
        &self,
        merchant: MerchantId,
        courier: CourierId,
        customer: CustomerId,
        arrived: DateTime<Utc>,
    ) -> ApiResult<()> {
        let Some(provider) = &self.provider else { return Ok(()) };
        let departure = lock(&self.couriers).get(&courier).and_then(|s| s.departure);
        let Some((left, from)) = departure else { return Ok(()) };
        if arrived <= left || arrived - left > MAX_LEG {
            return Ok(());
        }
        let Some(to) = self.customer_location(customer).await? else { return Ok(()) };
        let route = match provider.route(from, to).await {
            Ok(route) => route,
            Err(error) => {
                tracing::debug!(%error, "no route for a completed leg; not learned from");
                return Ok(());
            }
        };
        if route.seconds < 60.0 {
            return Ok(());
        }
        let tz = self.context(merchant).await?.tz;
        let hour = left.with_timezone(&tz).hour() as i32;
        let actual = (arrived - left).num_milliseconds() as f64 / 1000.0;
        on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO travel_observations (merchant_id, hour, zone, free_flow_s, actual_s, observed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(merchant.uuid())
            .bind(hour)
            .bind(eta::zone_of(to))
            .bind(route.seconds)
            .bind(actual)
            .bind(arrived)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn customer_location(&self, customer: CustomerId) -> ApiResult<Option<LatLng>> {
        let row: Option<(f64, f64)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT lat, lng FROM customers WHERE id = $1").bind(customer.uuid()).fetch_optional(pool).await?
        });
        Ok(row.map(|(lat, lng)| LatLng { lat, lng }))
    }

    /// Keeps the arrival next to the estimates, once: the ETA error metric.
    async fn arrived(&self, order: OrderId, at: DateTime<Utc>) -> ApiResult<()> {
        let first: Option<(DateTime<Utc>,)> = on_db_write!(&self.db, pool => {
            sqlx::query_as(
                "UPDATE order_etas SET actual_at = $1 WHERE order_id = $2 AND actual_at IS NULL RETURNING first_eta",
            )
            .bind(at)
            .bind(order.uuid())
            .fetch_optional(pool)
            .await?
        });
        if let Some((first,)) = first {
            self.metrics.eta_error.observe((at - first).num_seconds().unsigned_abs() as f64);
        }
        Ok(())
    }

    // ----- ETA -----

    pub(super) async fn model(&self, merchant: MerchantId) -> ApiResult<Arc<SpeedModel>> {
        if let Some((model, at)) = lock(&self.models).get(&merchant)
            && at.elapsed() < REFRESH
        {
            return Ok(model.clone());
        }
        let since = self.clock.now() - chrono::TimeDelta::days(60);
        let rows: Vec<(i32, String, f64, f64)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT hour, zone, free_flow_s, actual_s FROM travel_observations WHERE merchant_id = $1 \
                 AND observed_at >= $2 ORDER BY observed_at DESC LIMIT 100000",
            )
            .bind(merchant.uuid())
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        let observations: Vec<eta::Observation> = rows
            .into_iter()
            .map(|(hour, zone, free_flow_s, actual_s)| eta::Observation {
                hour: u8::try_from(hour).unwrap_or(0),
                zone,
                free_flow_s,
                actual_s,
            })
            .collect();
        let model = Arc::new(SpeedModel::learn(&observations));
        lock(&self.models).insert(merchant, (model.clone(), Instant::now()));
        Ok(model)
    }

    /// The courier's stops in the order they were assigned (the route until
    /// the planner sequences it), skipping those already reached.
    async fn stops(&self, courier: CourierId) -> ApiResult<Vec<Stop>> {
        let orders: Vec<Order> =
            self.orders_in_hand(courier).await?.into_iter().filter(|o| o.status == Status::Delivering).collect();
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = orders.iter().map(|o| o.id.uuid()).collect();
        let assigned: HashMap<Uuid, i64> = self
            .db
            .fetch_in::<(Uuid, i64)>(
                "SELECT order_id, MAX(seq) FROM events WHERE order_id IN ({ids}) AND kind IN \
                 ('COURIER_ASSIGNED', 'DISPATCHED', 'DELIVERY_RESUMED') GROUP BY order_id",
                &ids,
            )
            .await?
            .into_iter()
            .collect();
        let visits: Vec<(Uuid, String, i32)> = self
            .db
            .fetch_in(
                "SELECT order_id, kind, attempt FROM stop_visits WHERE kind IN ('ARRIVED_AT_CUSTOMER', 'GOODS_COLLECTED') \
                 AND order_id IN ({ids})",
                &ids,
            )
            .await?;
        let visited = |order: &Order, kind: &str| {
            visits.iter().any(|(id, k, attempt)| {
                *id == order.id.uuid() && k == kind && *attempt == i32::from(order.failed_attempts)
            })
        };
        // The planned route's order where there is one, then the order of assignment.
        let route = self.route(courier).await?.map(|r| r.stops).unwrap_or_default();
        let place = |order: &Order, kind: xianlu_domain::operations::PlannedKind| {
            route.iter().position(|s| s.order_id == order.id && s.kind == kind).unwrap_or(usize::MAX)
        };
        let mut stops = Vec::new();
        for order in orders {
            if visited(&order, "ARRIVED_AT_CUSTOMER") {
                continue;
            }
            let key = |kind| (place(&order, kind), assigned.get(&order.id.uuid()).copied().unwrap_or(i64::MAX));
            // Goods still in a stopped van: the way there, and the transfer, come first.
            let pickup = route
                .iter()
                .find(|s| s.order_id == order.id && s.kind == xianlu_domain::operations::PlannedKind::Pickup);
            if let Some(pickup) = pickup
                && !visited(&order, "GOODS_COLLECTED")
            {
                stops.push((
                    key(xianlu_domain::operations::PlannedKind::Pickup),
                    Stop { order: order.clone(), at: pickup.location, collect: true },
                ));
            }
            if let Some(at) = self.customer_location(order.customer_id).await? {
                let key = key(xianlu_domain::operations::PlannedKind::Delivery);
                stops.push((key, Stop { order, at, collect: false }));
            }
        }
        stops.sort_by_key(|(key, stop)| (*key, stop.collect, stop.order.id.uuid()));
        Ok(stops.into_iter().map(|(_, stop)| stop).collect())
    }

    /// Recomputes the courier's ETAs from their latest position; pushes those
    /// that moved by more than the merchant's threshold, and the arriving-soon
    /// notice when one comes close.
    pub async fn refresh_etas(&self, merchant: MerchantId, courier: CourierId) -> ApiResult<()> {
        let Some(here) = self.latest(&[courier]).first().copied() else { return Ok(()) };
        let stops = self.stops(courier).await?;
        if stops.is_empty() {
            return Ok(());
        }
        let context = self.context(merchant).await?;
        let settings = context.settings;
        let model = self.model(merchant).await?;
        let now = self.clock.now();
        let hour = now.with_timezone(&context.tz).hour() as u8;
        let mut points = vec![here.position];
        points.extend(stops.iter().map(|s| s.at));
        // Only the first leg moves with the courier; legs between stops are
        // routed once and remembered.
        let mut free_flow = Vec::with_capacity(stops.len());
        for (i, pair) in points.windows(2).enumerate() {
            // Legs between customers are remembered (a collection site is somewhere new).
            let key = (i > 0 && !stops[i - 1].collect && !stops[i].collect)
                .then(|| (stops[i - 1].order.customer_id, stops[i].order.customer_id));
            if let Some(seconds) = key.and_then(|k| lock(&self.legs).get(&k).copied()) {
                free_flow.push(seconds);
                continue;
            }
            let straight = xianlu_roads::distance_m(pair[0], pair[1]) / STRAIGHT_LINE_MPS;
            let seconds = match &self.provider {
                Some(provider) => provider.route(pair[0], pair[1]).await.map_or(straight, |r| r.seconds),
                None => straight,
            };
            if let Some(key) = key {
                let mut legs = lock(&self.legs);
                if legs.len() > MAX_CACHED_LEGS {
                    legs.clear();
                }
                legs.insert(key, seconds);
            }
            free_flow.push(seconds);
        }
        let legs: Vec<Leg> = free_flow
            .iter()
            .zip(&stops)
            .map(|(seconds, stop)| {
                let factor = model.factor(hour, &eta::zone_of(stop.at));
                Leg { seconds: seconds * factor.median, low: factor.low, high: factor.high }
            })
            .collect();
        let services: Vec<f64> = stops
            .iter()
            .map(|s| if s.collect { dispatch::TRANSFER_SECONDS } else { f64::from(settings.service_seconds) })
            .collect();
        let estimates = eta::estimates(now, &legs, &services);
        let threshold = chrono::TimeDelta::seconds(i64::from(settings.eta_push_threshold_seconds));
        for (stop, estimate) in stops.iter().zip(estimates).filter(|(s, _)| !s.collect) {
            self.publish_eta(&context, courier, &stop.order, estimate, threshold, now).await?;
        }
        Ok(())
    }

    async fn publish_eta(
        &self,
        context: &MerchantContext,
        courier: CourierId,
        order: &Order,
        estimate: eta::Estimate,
        threshold: chrono::TimeDelta,
        now: DateTime<Utc>,
    ) -> ApiResult<()> {
        type Row = (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>);
        let current: Option<Row> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT eta, window_start, window_end, computed_at, notified_at FROM order_etas WHERE order_id = $1",
            )
            .bind(order.id.uuid())
            .fetch_optional(pool)
            .await?
        });
        let stops_before = i32::from(estimate.stops_before);
        let published = match current {
            None => {
                let inserted = on_db_write!(&self.db, pool => {
                    sqlx::query(
                        "INSERT INTO order_etas (order_id, merchant_id, courier_id, eta, window_start, window_end, stops_before, \
                         computed_at, first_eta, first_window_start, first_window_end) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $4, $5, $6) ON CONFLICT DO NOTHING",
                    )
                    .bind(order.id.uuid())
                    .bind(order.merchant_id.uuid())
                    .bind(courier.uuid())
                    .bind(estimate.eta)
                    .bind(estimate.window.start)
                    .bind(estimate.window.end)
                    .bind(stops_before)
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
                inserted == 1
            }
            Some((eta, start, end, computed_at, _)) => {
                let moved = (estimate.eta - eta).abs() > threshold
                    || (estimate.window.start, estimate.window.end) != (start, end)
                        && (estimate.eta - eta).abs() > threshold / 2;
                // Compare-and-set on the estimate read: one process publishes a change.
                moved
                    && on_db_write!(&self.db, pool => {
                        sqlx::query(
                            "UPDATE order_etas SET courier_id = $1, eta = $2, window_start = $3, window_end = $4, stops_before = $5, \
                             computed_at = $6 WHERE order_id = $7 AND computed_at = $8",
                        )
                        .bind(courier.uuid())
                        .bind(estimate.eta)
                        .bind(estimate.window.start)
                        .bind(estimate.window.end)
                        .bind(stops_before)
                        .bind(now)
                        .bind(order.id.uuid())
                        .bind(computed_at)
                        .execute(pool)
                        .await?
                        .rows_affected()
                    }) == 1
            }
        };
        if published {
            let kind = EventKind::EtaUpdated {
                courier_id: courier,
                eta: estimate.eta,
                window: estimate.window,
                stops_before: estimate.stops_before,
            };
            self.service.record_observation(order.id, kind, now).await?;
        }
        self.maybe_notify(context, order, estimate.eta, current.and_then(|c| c.4), now).await
    }

    /// One "arriving in about N minutes" per order, unless the ETA first
    /// moves back out by the re-arm margin; never in the customer's quiet hours.
    async fn maybe_notify(
        &self,
        context: &MerchantContext,
        order: &Order,
        eta: DateTime<Utc>,
        notified_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> ApiResult<()> {
        let settings = context.settings;
        let soon = chrono::TimeDelta::minutes(i64::from(settings.arriving_soon_minutes));
        let rearm = soon + chrono::TimeDelta::minutes(i64::from(settings.arriving_soon_rearm_minutes));
        let remaining = eta - now;
        if notified_at.is_some() {
            if remaining > rearm {
                on_db_write!(&self.db, pool => {
                    sqlx::query("UPDATE order_etas SET notified_at = NULL WHERE order_id = $1")
                        .bind(order.id.uuid())
                        .execute(pool)
                        .await?;
                });
            }
            return Ok(());
        }
        if remaining > soon {
            return Ok(());
        }
        let quiet: Option<(Option<String>,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT quiet_hours FROM customers WHERE id = $1")
                .bind(order.customer_id.uuid())
                .fetch_optional(pool)
                .await?
        });
        let quiet: Option<QuietHours> = quiet.and_then(|(q,)| q).and_then(|q| serde_json::from_str(&q).ok());
        // Claimed before sending, so two processes never both send.
        let claimed = on_db_write!(&self.db, pool => {
            sqlx::query("UPDATE order_etas SET notified_at = $1 WHERE order_id = $2 AND notified_at IS NULL")
                .bind(now)
                .bind(order.id.uuid())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if claimed != 1 {
            return Ok(());
        }
        if quiet.is_some_and(|q| q.contains(now.with_timezone(&context.tz).time())) {
            for channel in &self.channels {
                self.metrics.notices.with_label_values(&[channel.name(), "quiet_hours"]).inc();
            }
            return Ok(());
        }
        let minutes = u16::try_from(((remaining.num_seconds().max(0) + 59) / 60).max(1)).unwrap_or(u16::MAX);
        let notice = Notice {
            order_id: order.id,
            order_number: order.number.clone(),
            customer_id: order.customer_id,
            minutes,
            eta,
        };
        for channel in &self.channels {
            let outcome = match channel.deliver(&notice).await {
                Ok(()) => "sent",
                Err(error) => {
                    tracing::warn!(channel = channel.name(), order = %order.id, error = %error, "a notice was not delivered");
                    "failed"
                }
            };
            self.metrics.notices.with_label_values(&[channel.name(), outcome]).inc();
        }
        Ok(())
    }

    // ----- the feed -----

    /// Every committed event with a courier passes here (on every process):
    /// positions other processes pushed update the latest known, and a change
    /// of the courier's sequence re-estimates their stops.
    pub async fn on_event(&self, event: &StreamEvent) -> ApiResult<()> {
        let Some(courier) = event.courier_id else { return Ok(()) };
        match &event.event.kind {
            EventKind::CourierPosition { position, fix_at, speed_mps, heading_deg, .. } => {
                self.remember(CourierLocation {
                    courier_id: courier,
                    at: *fix_at,
                    position: *position,
                    accuracy_m: 0.0,
                    speed_mps: *speed_mps,
                    heading_deg: *heading_deg,
                });
            }
            EventKind::Signed { .. } => {
                self.arrived(event.order_id, event.at).await?;
                self.refresh_etas(event.merchant_id, courier).await?;
            }
            // Customer service hears of an exception at once, not at the next sweep.
            EventKind::ExceptionReported { .. } => {
                let order = &self.service.view(event.order_id).await?.order;
                if order.status == Status::ExceptionHandling {
                    let reason = rules::exception_reason(order);
                    self.raise(order, xianlu_domain::operations::AlertRule::ExceptionOpen, reason, event.at).await?;
                }
                self.refresh_etas(event.merchant_id, courier).await?;
            }
            EventKind::Dispatched { .. }
            | EventKind::DeliveryResumed { .. }
            | EventKind::DeliveryAttemptFailed { .. }
            | EventKind::ReturnStarted { .. }
            | EventKind::Cancelled { .. } => self.refresh_etas(event.merchant_id, courier).await?,
            _ => {}
        }
        Ok(())
    }

    /// Follows the feed until the process stops.
    pub async fn follow(self: Arc<Self>, mut events: tokio::sync::mpsc::Receiver<StreamEvent>) {
        while let Some(event) = events.recv().await {
            if let Err(error) = self.on_event(&event).await {
                tracing::warn!(error = %error, seq = event.seq, "courier operations could not follow an event");
            }
            let triggers = matches!(
                event.event.kind,
                EventKind::Paid { .. }
                    // A credit order is ready once its stock is checked, with no payment to wait for.
                    | EventKind::StockChecked { .. }
                    | EventKind::Cancelled { .. }
                    | EventKind::ExceptionReported { .. }
                    | EventKind::StockResolved
            );
            if triggers {
                self.clone().replan_soon(event.merchant_id).await;
            }
        }
    }

    /// Schedules one re-plan of the merchant after its debounce, if it plans
    /// by itself; changes meanwhile join the same re-plan. Of several
    /// processes, the one holding the merchant's lease plans; the others
    /// wait for it, and plan only if no plan began after what they were
    /// asked to plan for.
    pub(crate) async fn replan_soon(self: Arc<Self>, merchant: MerchantId) {
        let settings = match self.context(merchant).await {
            Ok(c) if c.settings.auto_plan => c.settings,
            _ => return,
        };
        if !lock(&self.replans).insert(merchant) {
            return; // one is already waiting
        }
        let asked = self.clock.now();
        tokio::spawn(async move {
            let debounce = Duration::from_secs(u64::from(settings.plan_debounce_seconds).max(1));
            tokio::time::sleep(debounce).await;
            lock(&self.replans).remove(&merchant);
            let give_up = Instant::now() + Duration::from_secs(60);
            while Instant::now() < give_up {
                match self.planned_since(merchant, asked).await {
                    Ok(false) => {}
                    Ok(true) => return, // another process planned with this change in view
                    Err(error) => {
                        tracing::warn!(merchant = %merchant, %error, "could not read the latest plan");
                        return;
                    }
                }
                match self.take_lease(merchant, settings.plan_seconds).await {
                    Ok(true) => {
                        match self.plan(merchant, f64::from(settings.plan_seconds), false).await {
                            Ok(plan) => {
                                self.metrics.plans.with_label_values(&["automatic"]).inc();
                                tracing::info!(
                                    merchant = %merchant,
                                    routes = plan.routes.len(),
                                    unassigned = plan.unassigned.len(),
                                    seconds = plan.seconds,
                                    "re-planned"
                                )
                            }
                            Err(error) => tracing::warn!(merchant = %merchant, %error, "automatic re-plan failed"),
                        }
                        if let Err(error) = self.release_lease(merchant).await {
                            tracing::warn!(merchant = %merchant, %error, "could not release the planning lease");
                        }
                        return;
                    }
                    // Another process is planning: see what it did, then try again.
                    Ok(false) => tokio::time::sleep(debounce).await,
                    Err(error) => {
                        tracing::warn!(merchant = %merchant, %error, "could not take the planning lease");
                        return;
                    }
                }
            }
            tracing::warn!(merchant = %merchant, "gave up waiting for the planning lease");
        });
    }

    /// Whether a plan of the merchant began at or after `at` (business time).
    async fn planned_since(&self, merchant: MerchantId, at: DateTime<Utc>) -> ApiResult<bool> {
        let row: Option<(Uuid,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id FROM plans WHERE merchant_id = $1 AND planned_at >= $2 LIMIT 1")
                .bind(merchant.uuid())
                .bind(at)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some())
    }

    async fn release_lease(&self, merchant: MerchantId) -> ApiResult<()> {
        on_db_write!(&self.db, pool => {
            sqlx::query("DELETE FROM planning_leases WHERE merchant_id = $1 AND holder = $2")
                .bind(merchant.uuid())
                .bind(&self.instance)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Takes the merchant's planning lease for a little longer than a plan
    /// takes; `false` if another process holds it. Leases use wall-clock time.
    async fn take_lease(&self, merchant: MerchantId, seconds: u32) -> ApiResult<bool> {
        let now = crate::clock::wall_now();
        let until = now + chrono::TimeDelta::seconds(i64::from(seconds) * 3 + 5);
        let taken = on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO planning_leases (merchant_id, holder, until) VALUES ($1, $2, $3) \
                 ON CONFLICT (merchant_id) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE planning_leases.until < $4",
            )
            .bind(merchant.uuid())
            .bind(&self.instance)
            .bind(until)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(taken == 1)
    }
}
