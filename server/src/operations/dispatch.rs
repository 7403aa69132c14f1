//! Dispatch: the merchant's open orders and couriers become a planning
//! problem for `xianlu-planner`, **the one place orders are assigned and
//! sequenced**; its plan is applied as `ASSIGN_COURIER` commands through the
//! order writer and kept as each courier's route, which the ETAs follow.
//!
//! What this first planner does, and does not yet:
//! - Orders on a courier's van (`DELIVERING`) stay with that courier, from
//!   their latest position; chilled goods keep counting from dispatch.
//! - Orders not yet on the road (awaiting picking, picking, packed) go to
//!   couriers with nothing aboard, starting from the warehouse nearest them
//!   and taking that warehouse's orders (one trip; no reloading yet).
//! - Chilled and frozen orders need a refrigerated van and arrive within the
//!   merchant's cold-exposure limit.
//! - Vans hold so many kilograms and so many litres (a SKU's volume per
//!   kilogram or piece, where the stock knows it).
//! - Only couriers on duty are given work, within their shift's end.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xianlu_domain::operations::{CourierRoute, PlannedKind, PlannedStop};
use xianlu_domain::wire::LatLng;
use xianlu_domain::{
    Command, CourierId, MerchantId, Order, OrderId, OrderNumber, Status, TemperatureClass, WarehouseId,
};
use xianlu_planner::{Job, Matrix, Plan, Problem, Settings, Task, Vehicle};

use super::{Operations, STRAIGHT_LINE_MPS};
use crate::error::{ApiError, ApiResult};
use crate::on_db;
use crate::service::RequestCtx;

const REFRIGERATED: &str = "refrigerated";
/// Moving goods from a stopped van into another.
pub(super) const TRANSFER_SECONDS: f64 = 600.0;

/// Goods in a van that stopped: an accident or a breakdown holds the order.
fn stranded(order: &Order) -> bool {
    order.status == Status::ExceptionHandling && order.exception.as_ref().is_some_and(|e| e.kind.is_vehicle_level())
}
/// How far ahead a plan looks.
const HORIZON: TimeDelta = TimeDelta::hours(14);

/// An order the plan could not take, and why (a stable code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnplannedOrder {
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    /// `time_window`, `capacity`, `skill` (no refrigerated van), `cold_exposure`,
    /// `pinned_elsewhere`, `no_courier` or `no_feasible_route`.
    pub reason: String,
}

/// What a plan did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub plan_id: Uuid,
    pub planned_at: DateTime<Utc>,
    pub routes: Vec<CourierRoute>,
    pub unassigned: Vec<UnplannedOrder>,
    /// Orders given to another courier than before.
    pub reassigned: u32,
    pub seconds: f64,
}

struct CourierRow {
    id: CourierId,
    refrigerated: bool,
    capacity_kg: i64,
    capacity_l: i64,
    shift_ends_at: Option<DateTime<Utc>>,
}

/// Where each planner location is, and what it stands for.
struct Places {
    points: Vec<LatLng>,
    index: HashMap<(i64, i64), usize>,
}

impl Places {
    fn at(&mut self, p: LatLng) -> usize {
        // Positions within about a centimetre are one place.
        let key = ((p.lat * 1e7).round() as i64, (p.lng * 1e7).round() as i64);
        *self.index.entry(key).or_insert_with(|| {
            self.points.push(p);
            self.points.len() - 1
        })
    }
}

impl Operations {
    /// Plans the merchant's open orders onto its couriers within `seconds`
    /// and applies the plan.
    ///
    /// Unless `fresh`, each courier keeps the orders they already have, in
    /// their current order, and new orders are fitted in: a re-plan changes
    /// what must change. A fresh plan may move every order not yet on the road.
    pub async fn plan(&self, merchant: MerchantId, seconds: f64, fresh: bool) -> ApiResult<PlanSummary> {
        let started = std::time::Instant::now();
        let context = self.context(merchant).await?;
        let now = self.clock.now();
        let warehouses: Vec<(Uuid, f64, f64)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, lat, lng FROM warehouses WHERE merchant_id = $1 ORDER BY id")
                .bind(merchant.uuid())
                .fetch_all(pool)
                .await?
        });
        // Couriers on duty; those with goods aboard finish them even past their shift.
        type Row = (Uuid, bool, i64, i64, Option<DateTime<Utc>>);
        let couriers: Vec<Row> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, refrigerated, capacity_kg, capacity_l, shift_ends_at FROM couriers c WHERE merchant_id = $1 \
                 AND (on_duty OR EXISTS (SELECT 1 FROM orders o WHERE o.courier_id = c.id AND o.status = 'DELIVERING')) \
                 ORDER BY id",
            )
            .bind(merchant.uuid())
            .fetch_all(pool)
            .await?
        });
        let couriers: Vec<CourierRow> = couriers
            .into_iter()
            .map(|(id, refrigerated, capacity_kg, capacity_l, shift_ends_at)| CourierRow {
                id: CourierId(id),
                refrigerated,
                capacity_kg,
                capacity_l,
                shift_ends_at,
            })
            .collect();
        let docs: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT doc FROM orders WHERE merchant_id = $1 AND status IN ('AWAITING_PICK', 'PICKING', 'PACKED', 'DELIVERING', \
                 'EXCEPTION_HANDLING') \
                 ORDER BY created_at, id",
            )
            .bind(merchant.uuid())
            .fetch_all(pool)
            .await?
        });
        let orders: Vec<Order> = docs
            .into_iter()
            .map(|(doc,)| super::decode(&doc))
            .collect::<ApiResult<Vec<_>>>()?
            .into_iter()
            // Of orders held by an exception, only goods stranded in a stopped van are the planner's;
            // the rest wait for people to resolve them.
            .filter(|o| o.status != Status::ExceptionHandling || stranded(o))
            .collect();
        // Vans that stopped (an accident, a breakdown) carry nothing more.
        let stopped: std::collections::HashSet<CourierId> =
            orders.iter().filter(|o| stranded(o)).filter_map(|o| o.courier_id).collect();
        let dispatched = self.dispatch_times(&orders).await?;
        let pins: HashMap<Uuid, Uuid> = on_db!(&self.db, pool => {
            sqlx::query_as::<_, (Uuid, Uuid)>(
                "SELECT p.order_id, p.courier_id FROM order_pins p JOIN orders o ON o.id = p.order_id WHERE o.merchant_id = $1",
            )
            .bind(merchant.uuid())
            .fetch_all(pool)
            .await?
        })
        .into_iter()
        .collect();
        let locked = self.locked_routes(merchant).await?;

        let mut places = Places { points: Vec::new(), index: HashMap::new() };
        let warehouse_at: HashMap<WarehouseId, usize> = warehouses
            .iter()
            .map(|(id, lat, lng)| (WarehouseId(*id), places.at(LatLng { lat: *lat, lng: *lng })))
            .collect();
        let seconds_from = |t: DateTime<Utc>| (t - now).num_milliseconds() as f64 / 1000.0;
        let horizon = HORIZON.num_seconds() as f64;
        let cold_limit = f64::from(context.settings.cold_exposure_minutes) * 60.0;

        let mut vehicles = Vec::with_capacity(couriers.len());
        for courier in couriers.iter().filter(|c| !stopped.contains(&c.id)) {
            let aboard: Vec<&Order> =
                orders.iter().filter(|o| o.status == Status::Delivering && o.courier_id == Some(courier.id)).collect();
            let here = self.latest(&[courier.id]).first().map(|l| l.position);
            let mut skills = Vec::new();
            if courier.refrigerated {
                skills.push(REFRIGERATED.to_owned());
            }
            // Open routes: the last stop may start by the horizon and then take its
            // service time. A shift's end bounds new trips (the last delivery done by
            // then); goods aboard are delivered regardless.
            let open_end = horizon + f64::from(context.settings.service_seconds);
            let shift_end = match courier.shift_ends_at {
                Some(end) if aboard.is_empty() => seconds_from(end).min(open_end),
                _ => open_end,
            };
            if shift_end <= 0.0 {
                continue;
            }
            let start = if aboard.is_empty() {
                // Loads at the warehouse nearest to where they are.
                let nearest = warehouses
                    .iter()
                    .min_by(|a, b| {
                        let d = |w: &(Uuid, f64, f64)| {
                            here.map_or(0.0, |p| xianlu_roads::distance_m(p, LatLng { lat: w.1, lng: w.2 }))
                        };
                        d(a).total_cmp(&d(b))
                    })
                    .map(|w| WarehouseId(w.0));
                let Some(warehouse) = nearest else { continue };
                skills.push(format!("warehouse:{warehouse}"));
                warehouse_at[&warehouse]
            } else {
                let fallback = aboard.first().and_then(|o| warehouse_at.get(&o.warehouse_id)).copied().unwrap_or(0);
                here.map_or(fallback, |p| places.at(p))
            };
            vehicles.push(Vehicle {
                id: courier.id.to_string(),
                start,
                end: None,
                shift: (0.0, shift_end),
                // Grams and millilitres.
                capacity: vec![courier.capacity_kg.saturating_mul(1000), courier.capacity_l.saturating_mul(1000)],
                skills,
                committed: Vec::new(),
                planned: Vec::new(),
            });
        }

        // The room each SKU takes, by warehouse.
        let volumes: HashMap<(WarehouseId, String), i64> = on_db!(&self.db, pool => {
            sqlx::query_as::<_, (Uuid, String, i64)>(
                "SELECT s.warehouse_id, s.sku, s.volume_ml FROM stock s JOIN warehouses w ON w.id = s.warehouse_id \
                 WHERE w.merchant_id = $1 AND s.volume_ml IS NOT NULL",
            )
            .bind(merchant.uuid())
            .fetch_all(pool)
            .await?
        })
        .into_iter()
        .map(|(w, sku, ml)| ((WarehouseId(w), sku), ml))
        .collect();
        let mut jobs = Vec::with_capacity(orders.len());
        let mut customers: HashMap<Uuid, Option<LatLng>> = HashMap::new();
        for order in &orders {
            let location = match customers.get(&order.customer_id.uuid()) {
                Some(l) => *l,
                None => {
                    let l = self.customer_location(order.customer_id).await?;
                    customers.insert(order.customer_id.uuid(), l);
                    l
                }
            };
            let Some(location) = location else { continue };
            let aboard = order.status == Status::Delivering;
            // Goods in a stopped van: picked up where it stands, then delivered.
            let rescue = stranded(order);
            let cold = order.temperature() != TemperatureClass::Ambient;
            let mut skills = Vec::new();
            if cold {
                skills.push(REFRIGERATED.to_owned());
            }
            if !aboard && !rescue {
                skills.push(format!("warehouse:{}", order.warehouse_id));
            }
            let (begin, end) =
                (seconds_from(order.requested_window.start).max(0.0), seconds_from(order.requested_window.end));
            // Another day's order waits for that day's plan (unless it is already on a van).
            if begin > horizon && !aboard && !rescue {
                continue;
            }
            let end = end.min(horizon);
            // A window already missed is still delivered, as soon as possible;
            // so are goods already aboard for a window past the horizon.
            let mut window = if end > 0.0 && begin < end { (begin, end) } else { (0.0, horizon) };
            let mut max_exposure = None;
            if cold {
                match (aboard || rescue, dispatched.get(&order.id)) {
                    // Out of the cold room since dispatch: what is left is a deadline.
                    (true, Some(left)) => window.1 = window.1.min(seconds_from(*left) + cold_limit).max(window.0),
                    (true, None) => {}
                    (false, _) => max_exposure = Some(cold_limit),
                }
            }
            let task = if rescue {
                let site = order.courier_id.and_then(|c| self.latest(&[c]).first().map(|l| l.position));
                let site =
                    site.map_or_else(|| warehouse_at.get(&order.warehouse_id).copied().unwrap_or(0), |p| places.at(p));
                Task::PickupDelivery { pickup: site, delivery: places.at(location) }
            } else {
                Task::Delivery { location: places.at(location) }
            };
            jobs.push(Job {
                id: order.id.to_string(),
                task,
                demand: vec![
                    order.shipping_weight_g(),
                    order.shipping_volume_ml(|sku| volumes.get(&(order.warehouse_id, sku.to_owned())).copied()),
                ],
                windows: vec![window],
                service: f64::from(context.settings.service_seconds),
                pickup_service: if rescue { TRANSFER_SECONDS } else { 0.0 },
                skills,
                max_exposure,
                // Goods aboard stay with their van; otherwise merchant staff may have pinned it.
                pinned_to: if aboard {
                    order.courier_id.map(|c| c.to_string())
                } else {
                    pins.get(&order.id.uuid()).map(|c| c.to_string())
                },
            });
        }

        tracing::debug!(
            jobs = ?jobs.iter().map(|j| (&j.id, &j.skills)).collect::<Vec<_>>(),
            vehicles = ?vehicles.iter().map(|v| (&v.id, &v.skills)).collect::<Vec<_>>(),
            "planning"
        );
        let planned: std::collections::HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
        for vehicle in &mut vehicles {
            let Ok(courier) = vehicle.id.parse::<Uuid>().map(CourierId) else { continue };
            if !locked.contains(&courier.uuid()) {
                continue;
            }
            // A locked route: exactly its current stops, in order, and nothing new.
            let route = self.route(courier).await?;
            vehicle.committed = route
                .map(|r| {
                    r.stops
                        .iter()
                        .filter(|s| pins.get(&s.order_id.uuid()).is_none_or(|p| *p == courier.uuid()))
                        .map(|s| s.order_id.to_string())
                        .filter(|id| planned.contains(id.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            // Its stops need it and it needs nothing else: a skill of its own in
            // place of the warehouse's (locked stops are placed unchecked, so
            // they must also pass the checker this way).
            let own = format!("locked:{courier}");
            vehicle.skills.retain(|s| !s.starts_with("warehouse:"));
            vehicle.skills.push(own.clone());
            for job in jobs.iter_mut().filter(|j| vehicle.committed.contains(&j.id)) {
                job.skills.retain(|s| !s.starts_with("warehouse:"));
                job.skills.push(own.clone());
            }
        }
        if !fresh {
            for vehicle in vehicles.iter_mut().filter(|v| v.committed.is_empty()) {
                let Ok(courier) = vehicle.id.parse::<Uuid>().map(CourierId) else { continue };
                if locked.contains(&courier.uuid()) {
                    continue;
                }
                let order_in_route = self.route_order(courier).await?;
                let mut kept: Vec<&Order> = orders
                    .iter()
                    .filter(|o| o.courier_id == Some(courier) && planned.contains(o.id.to_string().as_str()))
                    // A pin to someone else moves it.
                    .filter(|o| pins.get(&o.id.uuid()).is_none_or(|p| *p == courier.uuid()))
                    .collect();
                kept.sort_by_key(|o| (order_in_route.get(&o.id).copied().unwrap_or(usize::MAX), o.created_at));
                vehicle.planned = kept.iter().map(|o| o.id.to_string()).collect();
            }
        }
        let mut matrix = self.planning_matrix(&places.points).await;
        // Road times as this merchant's couriers drive them now: the learned
        // factor of the hour, by the zone driven into.
        let model = self.model(merchant).await?;
        let hour = now.with_timezone(&context.tz).hour() as u8;
        let factors: Vec<f64> =
            places.points.iter().map(|p| model.factor(hour, &super::eta::zone_of(*p)).median).collect();
        let n = matrix.size;
        // (The objective is driving time: its metres follow.)
        for (i, (seconds, metres)) in matrix.seconds.iter_mut().zip(matrix.metres.iter_mut()).enumerate() {
            *seconds *= factors[i % n];
            *metres *= factors[i % n];
        }
        let problem = Problem { matrix, vehicles, jobs };
        let budget = (seconds - started.elapsed().as_secs_f64()).max(0.2);
        let plan = tokio::task::spawn_blocking(move || {
            xianlu_planner::solve(&problem, &Settings { seconds: budget, ..Settings::default() }).map(|p| (p, problem))
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
        let (plan, problem) = plan;
        let violations = xianlu_planner::check(&problem, &plan);
        if !violations.is_empty() && !fresh {
            // What couriers hold no longer fits together (a delay, a changed window): plan afresh.
            tracing::warn!(merchant = %merchant, first = %violations[0], "kept assignments no longer fit; planning afresh");
            return Box::pin(self.plan(merchant, seconds, true)).await;
        }
        if !violations.is_empty() {
            // Never send a courier somewhere impossible: keep the current assignments.
            tracing::error!(merchant = %merchant, first = %violations[0], count = violations.len(), "the planner returned an infeasible plan; not applied");
            return Err(ApiError::Internal(anyhow::anyhow!(
                "the plan broke {} rules; nothing was changed",
                violations.len()
            )));
        }
        let starts: HashMap<String, usize> = problem.vehicles.iter().map(|v| (v.id.clone(), v.start)).collect();
        self.apply(merchant, now, &orders, (&places.points, &starts), plan, started).await
    }

    /// When each order on the road (or stranded) left the warehouse: its first dispatch.
    async fn dispatch_times(&self, orders: &[Order]) -> ApiResult<HashMap<OrderId, DateTime<Utc>>> {
        let ids: Vec<Uuid> =
            orders.iter().filter(|o| o.status == Status::Delivering || stranded(o)).map(|o| o.id.uuid()).collect();
        let rows: Vec<(Uuid, DateTime<Utc>)> = self
            .db
            .fetch_in("SELECT order_id, MIN(at) FROM events WHERE kind = 'DISPATCHED' AND order_id IN ({ids}) GROUP BY order_id", &ids)
            .await?;
        Ok(rows.into_iter().map(|(id, at)| (OrderId(id), at)).collect())
    }

    /// Driving seconds between every pair of places (the map provider's, or
    /// straight lines at city speed where it has none or fails).
    async fn planning_matrix(&self, points: &[LatLng]) -> Matrix {
        let n = points.len();
        let straight = |a: LatLng, b: LatLng| xianlu_roads::distance_m(a, b) / STRAIGHT_LINE_MPS;
        let provided = match &self.provider {
            Some(provider) => provider.matrix(points, points).await.ok(),
            None => None,
        };
        let mut seconds = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                seconds[i * n + j] = provided
                    .as_ref()
                    .and_then(|m| m.get(i).and_then(|r| r.get(j)).copied().flatten())
                    .unwrap_or_else(|| straight(points[i], points[j]));
            }
        }
        // The objective is driving time: metres stand in as seconds × city speed.
        Matrix { size: n, metres: seconds.iter().map(|s| s * STRAIGHT_LINE_MPS).collect(), seconds }
    }

    async fn apply(
        &self,
        merchant: MerchantId,
        now: DateTime<Utc>,
        orders: &[Order],
        (points, starts): (&[LatLng], &HashMap<String, usize>),
        plan: Plan,
        started: std::time::Instant,
    ) -> ApiResult<PlanSummary> {
        let plan_id = Uuid::now_v7();
        let by_id: HashMap<String, &Order> = orders.iter().map(|o| (o.id.to_string(), o)).collect();
        let at = |s: f64| now + TimeDelta::milliseconds((s * 1000.0).round() as i64);
        let ctx = RequestCtx::system(format!("plan-{plan_id}"));
        let mut reassigned = 0;
        let mut routes = Vec::new();
        for route in &plan.routes {
            let Ok(courier) = route.vehicle.parse::<Uuid>().map(CourierId) else { continue };
            let mut stops = Vec::with_capacity(route.stops.len());
            for stop in &route.stops {
                let Some(order) = by_id.get(&stop.job) else { continue };
                let pickup = stop.kind == xianlu_planner::StopKind::Pickup;
                // Stranded goods change vans by resuming the delivery with the rescuer.
                let change = if order.status == Status::ExceptionHandling {
                    (!pickup).then_some(Command::ResumeDelivery { courier_id: Some(courier) })
                } else if order.courier_id != Some(courier) && order.status != Status::Delivering {
                    Some(Command::AssignCourier { courier_id: courier })
                } else {
                    None
                };
                if let Some(command) = change {
                    match self.service.execute(&ctx, order.id, Some(order.version), &command).await {
                        Ok(_) => {
                            reassigned += u32::from(order.courier_id.is_some_and(|c| c != courier));
                            // The courier the goods left learns it on their own stream.
                            if let (Command::ResumeDelivery { .. }, Some(from)) = (&command, order.courier_id)
                                && from != courier
                            {
                                let kind = xianlu_domain::EventKind::HandedOver { from, to: courier };
                                self.service.record_observation_for(order.id, kind, now, Some(from)).await?;
                            }
                        }
                        // It changed while we planned (picked up, cancelled): the next plan sees it.
                        Err(ApiError::VersionConflict { .. } | ApiError::Rejected(_) | ApiError::Conflict { .. }) => {
                            continue;
                        }
                        Err(other) => return Err(other),
                    }
                }
                stops.push(PlannedStop {
                    kind: if pickup { PlannedKind::Pickup } else { PlannedKind::Delivery },
                    order_id: order.id,
                    order_number: order.number.clone(),
                    location: points[stop.location],
                    planned_arrival: at(stop.arrival),
                    planned_departure: at(stop.departure),
                });
            }
            let start = starts.get(&route.vehicle).and_then(|i| points.get(*i)).copied();
            let start = start.unwrap_or_else(|| stops.first().map_or(LatLng { lat: 0.0, lng: 0.0 }, |s| s.location));
            routes.push(CourierRoute { courier_id: courier, plan_id, planned_at: now, start, stops });
        }
        let unassigned: Vec<UnplannedOrder> = plan
            .unassigned
            .iter()
            .filter_map(|u| {
                by_id.get(&u.job).map(|o| UnplannedOrder {
                    order_id: o.id,
                    order_number: o.number.clone(),
                    reason: u.reason.clone(),
                })
            })
            .collect();
        let summary = PlanSummary {
            plan_id,
            planned_at: now,
            routes,
            unassigned,
            reassigned,
            seconds: started.elapsed().as_secs_f64(),
        };
        let before = self.places_on_routes(merchant).await?;
        self.store(merchant, &summary).await?;
        // Each order whose place changed tells its courier (and its followers) where it now is.
        for route in &summary.routes {
            let deliveries = route.stops.iter().filter(|s| s.kind == PlannedKind::Delivery).count();
            let count = u16::try_from(deliveries).unwrap_or(u16::MAX);
            for (place, stop) in route.stops.iter().filter(|s| s.kind == PlannedKind::Delivery).enumerate() {
                let place = u16::try_from(place + 1).unwrap_or(u16::MAX);
                if before.get(&stop.order_id) == Some(&(route.courier_id, place)) {
                    continue;
                }
                let kind = xianlu_domain::EventKind::RouteSequenced {
                    courier_id: route.courier_id,
                    plan_id,
                    stop: place,
                    stops: count,
                    planned_arrival: stop.planned_arrival,
                };
                self.service.record_observation(stop.order_id, kind, now).await?;
            }
        }
        // Estimates follow the new order of stops.
        for route in &summary.routes {
            if let Err(error) = self.refresh_etas(merchant, route.courier_id).await {
                tracing::warn!(courier = %route.courier_id, %error, "estimates not refreshed after a plan");
            }
        }
        Ok(summary)
    }

    /// Each order's courier and 1-based place among the deliveries of the routes now stored.
    async fn places_on_routes(&self, merchant: MerchantId) -> ApiResult<HashMap<OrderId, (CourierId, u16)>> {
        let rows: Vec<(Uuid, String)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT courier_id, stops FROM courier_routes WHERE merchant_id = $1")
                .bind(merchant.uuid())
                .fetch_all(pool)
                .await?
        });
        let mut places = HashMap::new();
        for (courier, stops) in rows {
            let stops: Vec<PlannedStop> = serde_json::from_str(&stops).map_err(|e| ApiError::Internal(e.into()))?;
            for (place, stop) in stops.iter().filter(|s| s.kind == PlannedKind::Delivery).enumerate() {
                places.insert(stop.order_id, (CourierId(courier), u16::try_from(place + 1).unwrap_or(u16::MAX)));
            }
        }
        Ok(places)
    }

    async fn store(&self, merchant: MerchantId, summary: &PlanSummary) -> ApiResult<()> {
        let mut tx = self.db.begin().await?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query("DELETE FROM courier_routes WHERE merchant_id = $1").bind(merchant.uuid()).execute(&mut *c).await?;
        });
        for route in summary.routes.iter().filter(|r| !r.stops.is_empty()) {
            let stops = serde_json::to_string(&route.stops).map_err(|e| ApiError::Internal(e.into()))?;
            crate::on_tx!(&mut tx, c => {
                sqlx::query(
                    "INSERT INTO courier_routes (courier_id, merchant_id, plan_id, stops, planned_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(route.courier_id.uuid())
                .bind(merchant.uuid())
                .bind(summary.plan_id)
                .bind(stops)
                .bind(summary.planned_at)
                .execute(&mut *c)
                .await?;
            });
        }
        let stored = serde_json::to_string(summary).map_err(|e| ApiError::Internal(e.into()))?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query("INSERT INTO plans (id, merchant_id, planned_at, summary) VALUES ($1, $2, $3, $4)")
                .bind(summary.plan_id)
                .bind(merchant.uuid())
                .bind(summary.planned_at)
                .bind(stored)
                .execute(&mut *c)
                .await?;
        });
        tx.commit().await?;
        Ok(())
    }

    /// A plan asked for by the merchant's staff: `seconds` 0.5–60 (default 5).
    pub async fn requested_plan(
        &self,
        ctx: &RequestCtx,
        merchant: MerchantId,
        seconds: Option<f64>,
        fresh: bool,
    ) -> ApiResult<PlanSummary> {
        crate::policy::check_merchant_action(&ctx.scope, merchant, crate::policy::Action::Assign)?;
        let seconds = seconds.unwrap_or(5.0);
        if !(0.5..=60.0).contains(&seconds) {
            return Err(ApiError::unprocessable("invalid_body", "seconds: between 0.5 and 60"));
        }
        let plan = self.plan(merchant, seconds, fresh).await?;
        self.metrics.plans.with_label_values(&["requested"]).inc();
        Ok(plan)
    }

    /// A courier's planned route, for the courier and their merchant's office.
    pub async fn route_for(&self, scope: &crate::policy::Scope, courier: CourierId) -> ApiResult<CourierRoute> {
        let merchant = self
            .service
            .courier_merchant(courier)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
        crate::policy::check_courier_positions(scope, merchant, courier)?;
        self.route(courier).await?.ok_or_else(|| ApiError::NotFound("no planned route".into()))
    }

    /// A courier's planned route, if the latest plan gave them one.
    /// The merchant's couriers whose routes are locked as they are.
    pub(super) async fn locked_routes(&self, merchant: MerchantId) -> ApiResult<std::collections::HashSet<Uuid>> {
        let rows: Vec<(Uuid,)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT l.courier_id FROM route_locks l JOIN couriers c ON c.id = l.courier_id WHERE c.merchant_id = $1",
            )
            .bind(merchant.uuid())
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    pub async fn route(&self, courier: CourierId) -> ApiResult<Option<CourierRoute>> {
        let row: Option<(Uuid, String, DateTime<Utc>)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT plan_id, stops, planned_at FROM courier_routes WHERE courier_id = $1")
                .bind(courier.uuid())
                .fetch_optional(pool)
                .await?
        });
        let Some((plan_id, stops, planned_at)) = row else { return Ok(None) };
        let stops: Vec<PlannedStop> = serde_json::from_str(&stops).map_err(|e| ApiError::Internal(e.into()))?;
        let start = self
            .latest(&[courier])
            .first()
            .map_or_else(|| stops.first().map_or(LatLng { lat: 0.0, lng: 0.0 }, |s| s.location), |l| l.position);
        Ok(Some(CourierRoute { courier_id: courier, plan_id, planned_at, start, stops }))
    }

    /// The order of a courier's stops in their planned route.
    pub(super) async fn route_order(&self, courier: CourierId) -> ApiResult<HashMap<OrderId, usize>> {
        Ok(self
            .route(courier)
            .await?
            .map(|r| r.stops.iter().enumerate().map(|(i, s)| (s.order_id, i)).collect())
            .unwrap_or_default())
    }
}
