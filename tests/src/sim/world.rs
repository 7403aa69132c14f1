//! The simulated world, made from a seed: a city's roads, warehouses with
//! cold rooms, couriers and their vans, restaurants and shops with opening
//! hours and delivery windows, a catalogue of fresh produce, and the day's
//! demand with what goes wrong. The same seed and scale give the same world.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Offset, TimeDelta, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xianlu_domain::quantity::Dimension;
use xianlu_domain::wire::LatLng;
use xianlu_domain::{PaymentTerms, TemperatureClass, Unit};
use xianlu_roads::{RoadNetwork, Router};
use xianlu_server::parties::CustomerKind;

/// How big the world is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Streets in each direction of the generated city (200 m apart).
    pub city_size: u32,
    pub warehouses: usize,
    pub couriers: usize,
    pub customers: usize,
    pub orders: usize,
}

impl Scale {
    /// The size the checks run at: 20 couriers, 300 orders.
    pub const SMALL: Scale = Scale { city_size: 40, warehouses: 2, couriers: 20, customers: 120, orders: 300 };
    /// A whole city's day: 200 couriers, 5 000 orders.
    pub const CITY: Scale = Scale { city_size: 100, warehouses: 4, couriers: 200, customers: 1500, orders: 5000 };
}

/// How often things go wrong (per order unless said otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// An order asks for the scarce product, which runs out during the day.
    pub scarce: f64,
    /// Spread of a weighed line's picked weight around what was ordered (catch weight).
    pub catch_weight: f64,
    /// Picking takes three times as long.
    pub slow_pick: f64,
    /// Per courier and day: an accident or a breakdown stops the van.
    pub vehicle_stop: f64,
    pub absent: f64,
    pub refused: f64,
    /// Some goods arrive damaged: a line partly refused at the door.
    pub damaged: f64,
    /// A complaint after signing.
    pub complaint: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            scarce: 0.04,
            catch_weight: 0.03,
            slow_pick: 0.05,
            vehicle_stop: 0.02,
            absent: 0.02,
            refused: 0.01,
            damaged: 0.02,
            complaint: 0.01,
        }
    }
}

/// A product in the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub sku: &'static str,
    pub name: &'static str,
    pub unit: Unit,
    /// Per piece or box.
    pub nominal_g: Option<i64>,
    pub price_fen: i64,
    pub price_per: Unit,
    pub temperature: TemperatureClass,
    pub shelf_life_days: u32,
    /// How many units a kitchen orders at a time (low, high).
    pub typical: (u32, u32),
}

impl Product {
    pub fn dimension(&self) -> Dimension {
        self.unit.dimension()
    }
}

/// The catalogue: leafy greens, fruit, meat, dairy, frozen goods. The last
/// one is the scarce product.
pub fn catalogue() -> Vec<Product> {
    use TemperatureClass::{Ambient, Chilled, Frozen};
    use Unit::{Box, Jin, Kg, Piece};
    let p = |sku, name, unit, nominal_g, price_fen, price_per, temperature, shelf_life_days, typical| Product {
        sku,
        name,
        unit,
        nominal_g,
        price_fen,
        price_per,
        temperature,
        shelf_life_days,
        typical,
    };
    vec![
        p("SPINACH", "菠菜", Jin, None, 350, Jin, Ambient, 3, (4, 20)),
        p("BOK-CHOY", "上海青", Jin, None, 300, Jin, Ambient, 4, (4, 20)),
        p("LETTUCE", "生菜", Kg, None, 800, Kg, Ambient, 4, (2, 10)),
        p("TOMATO", "西红柿", Kg, None, 600, Kg, Ambient, 7, (3, 15)),
        p("POTATO", "土豆", Kg, None, 250, Kg, Ambient, 30, (5, 25)),
        p("APPLE", "苹果", Kg, None, 900, Kg, Ambient, 20, (2, 10)),
        p("WATERMELON", "西瓜", Piece, Some(5000), 2500, Piece, Ambient, 10, (1, 4)),
        p("PORK-BELLY", "五花肉", Jin, None, 1990, Jin, Chilled, 3, (4, 16)),
        p("CHICKEN-LEG", "鸡腿", Kg, None, 2200, Kg, Chilled, 3, (2, 10)),
        p("MILK-BOX", "鲜牛奶 (12 × 1 L/箱)", Box, Some(12_500), 9600, Box, Chilled, 7, (1, 4)),
        p("TOFU", "豆腐", Piece, Some(500), 350, Piece, Chilled, 3, (4, 20)),
        p("EGG-TRAY", "鸡蛋 (30 枚/盘)", Piece, Some(1800), 2800, Piece, Ambient, 20, (1, 5)),
        p("RIBS-BOX", "冻猪肋排 (5 kg/箱)", Box, Some(5000), 4000, Kg, Frozen, 180, (1, 2)),
        p("SHRIMP-BOX", "冻虾仁 (2 kg/箱)", Box, Some(2000), 12_000, Box, Frozen, 180, (1, 3)),
        p("CORIANDER", "香菜", Jin, None, 1200, Jin, Ambient, 3, (1, 4)),
    ]
}

#[derive(Debug, Clone, PartialEq)]
pub struct Warehouse {
    pub name: String,
    pub address: String,
    pub location: LatLng,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Courier {
    pub name: String,
    pub phone: String,
    pub vehicle: &'static str,
    pub refrigerated: bool,
    pub capacity_kg: u32,
    /// Index into the warehouses: where the shift starts.
    pub home: usize,
    /// Shift, in hours of the business day (merchant's time).
    pub shift: (u32, u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub business_name: String,
    pub kind: CustomerKind,
    pub address: String,
    pub location: LatLng,
    pub prepaid: bool,
    pub contact_name: String,
    pub contact_phone: String,
    /// Opening hour; deliveries are wanted before it.
    pub opens: u32,
}

impl Customer {
    pub fn terms(&self) -> PaymentTerms {
        if self.prepaid { PaymentTerms::Prepaid } else { PaymentTerms::Credit { days: 30 } }
    }
}

/// What happens to an order at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtTheDoor {
    Signed,
    Absent,
    Refused,
    /// One line partly refused as damaged.
    Damaged,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    /// Index into the catalogue.
    pub product: usize,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOrder {
    pub customer: usize,
    pub warehouse: usize,
    pub placed_at: DateTime<Utc>,
    pub window: (DateTime<Utc>, DateTime<Utc>),
    pub lines: Vec<OrderLine>,
    pub door: AtTheDoor,
    pub slow_pick: bool,
    pub complaint: bool,
}

/// The whole world of one simulated day.
pub struct World {
    pub seed: u64,
    pub scale: Scale,
    pub rates: Rates,
    pub date: NaiveDate,
    pub network: RoadNetwork,
    pub router: Router,
    pub catalogue: Vec<Product>,
    pub warehouses: Vec<Warehouse>,
    pub couriers: Vec<Courier>,
    pub customers: Vec<Customer>,
    pub orders: Vec<PlannedOrder>,
    /// Per courier: the minute of their shift a vehicle stops, if it does.
    pub vehicle_stops: Vec<Option<u32>>,
}

/// The merchant's zone, as the server is told it.
pub const TIME_ZONE: &str = "Asia/Shanghai";

/// Beijing time: UTC+8 all year, no daylight saving to model.
fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

/// `t` on the merchant's clock.
pub fn local_time(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.with_timezone(&beijing())
}

/// The instant of `hour`:`minute` on the business day `date`.
pub fn local(date: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    let naive = date.and_hms_opt(hour.min(23), minute.min(59), 0).unwrap_or_default();
    beijing().from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// Orders placed per hour of the day, relative: a morning peak before
/// restaurants open, a smaller one in the afternoon for the evening.
const DEMAND: [(u32, u32); 13] =
    [(5, 6), (6, 10), (7, 12), (8, 10), (9, 7), (10, 4), (11, 2), (12, 2), (13, 3), (14, 5), (15, 4), (16, 2), (17, 1)];

const SURNAMES: [&str; 16] =
    ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭"];
const GIVEN: [&str; 16] =
    ["伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "超", "霞"];
const DISHES: [&str; 12] =
    ["川味", "湘味", "粤式", "东北", "西北", "江南", "京味", "潮汕", "云南", "新疆", "徽州", "客家"];
const PLACES: [&str; 6] = ["小馆", "饭庄", "食府", "面馆", "酒家", "大排档"];
const SHOPS: [&str; 4] = ["便利店", "生鲜超市", "社区菜店", "水果店"];
const STREETS: [&str; 8] = ["建国路", "朝阳北路", "东三环中路", "光华路", "酒仙桥路", "望京街", "工体北路", "团结湖路"];

impl World {
    /// Builds the world of `seed` at `scale`, for the business day `date`.
    pub fn generate(seed: u64, scale: Scale, rates: Rates, date: NaiveDate) -> anyhow::Result<World> {
        let mut rng = StdRng::seed_from_u64(seed);
        let network = xianlu_roads::generate::city(xianlu_roads::generate::CitySpec::new(seed, scale.city_size));
        let router = Router::new(network.clone()).map_err(|e| anyhow::anyhow!("the generated city: {e}"))?;
        let nodes = router.network().nodes.clone();
        anyhow::ensure!(!nodes.is_empty(), "the city has no roads");
        let at = |rng: &mut StdRng| nodes[rng.random_range(0..nodes.len())];
        // Warehouses spread over the city's quarters.
        let (min, max) = bounds(&nodes);
        let warehouses = (0..scale.warehouses.max(1))
            .map(|i| {
                let f = (i as f64 + 0.5) / scale.warehouses.max(1) as f64;
                let wanted =
                    LatLng { lat: min.lat + (max.lat - min.lat) * f, lng: min.lng + (max.lng - min.lng) * (1.0 - f) };
                let location = router.snap(wanted).map_or(wanted, |(n, _)| nodes[n as usize]);
                Warehouse {
                    name: format!("{}号冷链仓", i + 1),
                    address: format!("北京市朝阳区{}{}号", STREETS[i % STREETS.len()], 100 + i),
                    location,
                }
            })
            .collect::<Vec<_>>();
        let name = |rng: &mut StdRng| {
            format!("{}{}", SURNAMES[rng.random_range(0..SURNAMES.len())], GIVEN[rng.random_range(0..GIVEN.len())])
        };
        let couriers = (0..scale.couriers)
            .map(|i| {
                // Early, day and late shifts (the morning peak, then the afternoon's
                // orders), and refrigerated vans on every shift for chilled and frozen goods.
                // Every warehouse has every shift, in refrigerated vans and plain ones.
                let shift = [(5, 14), (5, 14), (8, 17), (12, 21)][i % 4];
                let home = (i / 4) % warehouses.len();
                let refrigerated = (i / (4 * warehouses.len())) % 2 == 0;
                Courier {
                    name: name(&mut rng),
                    phone: format!("139{:08}", 10_000_000 + i),
                    vehicle: if refrigerated { "冷藏厢式货车" } else { "电动三轮车" },
                    refrigerated,
                    capacity_kg: if refrigerated { 800 } else { 300 },
                    home,
                    shift,
                }
            })
            .collect::<Vec<_>>();
        let customers = (0..scale.customers.max(1))
            .map(|i| {
                let kind = if rng.random_bool(0.7) { CustomerKind::Restaurant } else { CustomerKind::Shop };
                let business_name = match kind {
                    CustomerKind::Restaurant => format!(
                        "{}{} ({}店)",
                        DISHES[rng.random_range(0..DISHES.len())],
                        PLACES[rng.random_range(0..PLACES.len())],
                        i + 1
                    ),
                    CustomerKind::Shop => format!("鲜邻{} ({}号)", SHOPS[rng.random_range(0..SHOPS.len())], i + 1),
                };
                Customer {
                    business_name,
                    kind,
                    address: format!("北京市朝阳区{}{}号", STREETS[rng.random_range(0..STREETS.len())], i + 1),
                    location: at(&mut rng),
                    prepaid: rng.random_bool(0.6),
                    contact_name: name(&mut rng),
                    contact_phone: format!("138{:08}", 20_000_000 + i),
                    opens: match kind {
                        CustomerKind::Restaurant => 10 + u32::from(rng.random_bool(0.5)),
                        CustomerKind::Shop => 7,
                    },
                }
            })
            .collect::<Vec<_>>();
        let mut world = World {
            seed,
            scale,
            rates,
            date,
            network,
            router,
            catalogue: catalogue(),
            warehouses,
            couriers,
            customers,
            orders: Vec::new(),
            vehicle_stops: Vec::new(),
        };
        world.plan_day(&mut rng);
        Ok(world)
    }

    /// The next business day of the same city, people and catalogue: its own
    /// orders and vehicle stops, from the seed and the date.
    pub fn next_day(&mut self) {
        self.date = self.date.succ_opt().unwrap_or(self.date);
        let day = u64::try_from(self.date.num_days_from_ce()).unwrap_or(0);
        let mut rng = StdRng::seed_from_u64(self.seed ^ day.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.plan_day(&mut rng);
    }

    /// The day's orders, by the hour's demand, and which vans stop on the road.
    fn plan_day(&mut self, rng: &mut StdRng) {
        let (date, rates, scale) = (self.date, self.rates, self.scale);
        let (catalogue, warehouses, customers) = (&self.catalogue, &self.warehouses, &self.customers);
        let scarce = catalogue.len() - 1;
        let total: u32 = DEMAND.iter().map(|(_, w)| w).sum();
        let mut orders = Vec::with_capacity(scale.orders);
        for _ in 0..scale.orders {
            let mut pick = rng.random_range(0..total);
            let hour = DEMAND
                .iter()
                .find(|(_, w)| {
                    let found = pick < *w;
                    pick = pick.saturating_sub(*w);
                    found
                })
                .map_or(8, |(h, _)| *h);
            let placed_at = local(date, hour, 0) + TimeDelta::seconds(rng.random_range(0..3600));
            let customer = rng.random_range(0..customers.len());
            let nearest = nearest(warehouses, customers[customer].location);
            // Wanted within two hours from an hour after placing it, before opening if that is still ahead.
            let earliest = placed_at + TimeDelta::minutes(60);
            let opens = local(date, customers[customer].opens, 0);
            let start = if opens - TimeDelta::hours(2) > earliest { opens - TimeDelta::hours(2) } else { earliest };
            let start = start.duration_trunc_minutes(15);
            let mut lines = Vec::new();
            if rng.random_bool(rates.scarce) {
                lines.push(OrderLine { product: scarce, quantity: 2 });
            }
            for _ in 0..rng.random_range(1..=4) {
                let product = rng.random_range(0..scarce);
                if lines.iter().any(|l: &OrderLine| l.product == product) {
                    continue;
                }
                let (lo, hi) = catalogue[product].typical;
                lines.push(OrderLine { product, quantity: rng.random_range(lo..=hi) });
            }
            let roll: f64 = rng.random();
            let door = if roll < rates.absent {
                AtTheDoor::Absent
            } else if roll < rates.absent + rates.refused {
                AtTheDoor::Refused
            } else if roll < rates.absent + rates.refused + rates.damaged {
                AtTheDoor::Damaged
            } else {
                AtTheDoor::Signed
            };
            orders.push(PlannedOrder {
                customer,
                warehouse: nearest,
                placed_at,
                window: (start, start + TimeDelta::hours(2)),
                lines,
                door,
                slow_pick: rng.random_bool(rates.slow_pick),
                complaint: rng.random_bool(rates.complaint),
            });
        }
        orders.sort_by_key(|o| o.placed_at);
        self.orders = orders;
        self.vehicle_stops = self
            .couriers
            .iter()
            .map(|c| rng.random_bool(rates.vehicle_stop).then(|| rng.random_range(60..(c.shift.1 - c.shift.0) * 60)))
            .collect();
    }

    /// When the business day starts and ends (the first shift, the last one's end).
    pub fn day(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = self.couriers.iter().map(|c| c.shift.0).min().unwrap_or(5).min(5);
        let end = self.couriers.iter().map(|c| c.shift.1).max().unwrap_or(18).max(18);
        (local(self.date, start, 0), local(self.date, end, 0))
    }

    /// Grams a line of a planned order weighs.
    pub fn grams(&self, line: &OrderLine) -> i64 {
        let product = &self.catalogue[line.product];
        let per = match product.unit {
            Unit::G => 1,
            Unit::Kg => 1000,
            Unit::Jin => 500,
            Unit::Liang => 50,
            Unit::Piece | Unit::Box => product.nominal_g.unwrap_or(1000),
        };
        per * i64::from(line.quantity)
    }
}

trait Trunc {
    fn duration_trunc_minutes(self, minutes: i64) -> Self;
}

impl Trunc for DateTime<Utc> {
    fn duration_trunc_minutes(self, minutes: i64) -> Self {
        let step = minutes * 60;
        let secs = self.timestamp();
        let up = (secs + step - 1).div_euclid(step) * step;
        DateTime::from_timestamp(up, 0).unwrap_or(self)
    }
}

fn bounds(nodes: &[LatLng]) -> (LatLng, LatLng) {
    let mut min = LatLng { lat: f64::MAX, lng: f64::MAX };
    let mut max = LatLng { lat: f64::MIN, lng: f64::MIN };
    for p in nodes {
        min = LatLng { lat: min.lat.min(p.lat), lng: min.lng.min(p.lng) };
        max = LatLng { lat: max.lat.max(p.lat), lng: max.lng.max(p.lng) };
    }
    (min, max)
}

fn nearest(warehouses: &[Warehouse], to: LatLng) -> usize {
    warehouses
        .iter()
        .enumerate()
        .min_by(|a, b| {
            xianlu_roads::distance_m(a.1.location, to).total_cmp(&xianlu_roads::distance_m(b.1.location, to))
        })
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2030, 6, 3).unwrap_or_default()
    }

    #[test]
    fn the_same_seed_makes_the_same_world() {
        let small = Scale { city_size: 12, warehouses: 2, couriers: 5, customers: 20, orders: 60 };
        let a = World::generate(7, small, Rates::default(), date()).map_err(|e| e.to_string());
        let b = World::generate(7, small, Rates::default(), date()).map_err(|e| e.to_string());
        let c = World::generate(8, small, Rates::default(), date()).map_err(|e| e.to_string());
        let (Ok(a), Ok(b), Ok(c)) = (a, b, c) else { panic!("worlds") };
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.customers, b.customers);
        assert_eq!(a.couriers, b.couriers);
        assert_ne!(a.orders, c.orders);
        assert_eq!(a.orders.len(), 60);
        let (open, close) = a.day();
        for order in &a.orders {
            assert!(order.placed_at >= open && order.placed_at < close, "placed within the day");
            assert!(order.window.0 >= order.placed_at + TimeDelta::minutes(60), "time to pick and drive");
            assert!(!order.lines.is_empty());
        }
        // The morning peak: more orders between 06:00 and 09:00 than after 12:00.
        let morning =
            a.orders.iter().filter(|o| o.placed_at < local(date(), 9, 0) && o.placed_at >= local(date(), 6, 0)).count();
        let afternoon = a.orders.iter().filter(|o| o.placed_at >= local(date(), 12, 0)).count();
        assert!(morning > afternoon, "{morning} vs {afternoon}");
    }

    #[test]
    fn the_next_day_keeps_the_city_and_brings_new_orders() {
        let small = Scale { city_size: 12, warehouses: 2, couriers: 5, customers: 20, orders: 60 };
        let Ok(mut world) = World::generate(7, small, Rates::default(), date()) else { panic!("a world") };
        let (first, customers) = (world.orders.clone(), world.customers.clone());
        world.next_day();
        let Some(tomorrow) = date().succ_opt() else { panic!("a date") };
        assert_eq!(world.date, tomorrow);
        assert_eq!(world.customers, customers, "the same customers");
        assert_ne!(world.orders, first, "other orders");
        assert_eq!(world.orders.len(), 60);
        let (open, close) = world.day();
        assert!(open >= local(tomorrow, 0, 0));
        assert!(world.orders.iter().all(|o| o.placed_at >= open && o.placed_at < close), "placed the next day");
    }
}
