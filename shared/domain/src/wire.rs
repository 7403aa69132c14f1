//! Types that cross the network: the order view in the requirements' shape,
//! the push-stream protocol and problem details. Servers and clients share
//! them so both sides agree by construction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ContactId, CourierId, CustomerId, MerchantId, OrderId, OrderNumber};
use crate::machine::{Command, Event};
use crate::order::{Order, Status};
use crate::quantity::{Quantity, Unit};

/// The version of the REST and push protocol this code speaks. The server
/// sends it on every response in [`API_VERSION_HEADER`]; a client that meets
/// another major version stops and says so instead of guessing.
pub const API_VERSION: u32 = 1;
pub const API_VERSION_HEADER: &str = "xianlu-api-version";

/// A WGS-84 position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

impl LatLng {
    pub fn is_valid(self) -> bool {
        (-90.0..=90.0).contains(&self.lat) && (-180.0..=180.0).contains(&self.lng)
    }
}

/// The courier as the customer sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DriverInfo {
    pub id: CourierId,
    pub name: String,
    pub phone: String,
    pub location: Option<LatLng>,
}

/// A customer's contact person (personal data: shown only to those who need it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContactInfo {
    pub id: ContactId,
    pub name: String,
    pub phone: String,
}

/// A line in the requirements' compact form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Item {
    pub name: String,
    pub quantity: Quantity,
    pub unit: Unit,
}

/// The customer business (business data, not personal data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CustomerSummary {
    pub id: CustomerId,
    pub business_name: String,
    pub address: String,
    pub location: LatLng,
}

/// Who did something. Ids only: names and phones stay in personal-data storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub kind: String,
    pub id: String,
}

/// One committed event as it appears on the push stream and in timelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StreamEvent {
    /// Position in the global stream: gap-free, in commit order.
    pub seq: u64,
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    pub merchant_id: MerchantId,
    pub courier_id: Option<CourierId>,
    /// The order's version after this event.
    pub version: u64,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub event: Event,
}

/// One order as served to every party: the requirements' JSON shape
/// (`orderId`, `status`, `driverInfo`, `eta`, `items`) followed by the full
/// aggregate and its timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// The human order number, e.g. `KL20230601001`.
    pub order_id: OrderNumber,
    pub status: Status,
    pub driver_info: Option<DriverInfo>,
    /// The live estimate of arrival, when one exists (kept apart from the promised window).
    pub eta: Option<DateTime<Utc>>,
    /// The estimate as the customer is shown it: a window, and the stops before theirs.
    #[serde(default)]
    pub eta_window: Option<crate::operations::EtaView>,
    pub items: Vec<Item>,
    pub customer: Option<CustomerSummary>,
    /// The customer's contact person for this order, as far as the viewer may see them.
    pub contact: Option<ContactInfo>,
    /// The whole aggregate: lines with their quantities, totals, payment, exceptions.
    pub order: Order,
    pub timeline: Vec<StreamEvent>,
}

/// A stock row as the API shows it (grams or pieces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StockLevel {
    pub sku: String,
    pub name: String,
    pub dimension: crate::quantity::Dimension,
    pub on_hand_base: i64,
    pub reserved_base: i64,
    /// Millilitres per kilogram (weighed) or per piece (counted), if known.
    #[serde(default)]
    pub volume_ml: Option<i64>,
}

/// A page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub items: Vec<Order>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// The customers of this page's orders, each once (business names and
    /// addresses, never contact people), for boards and search.
    #[serde(default)]
    pub customers: Vec<CustomerSummary>,
}

/// A command sent to an order, with the version the sender saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRequest {
    /// Refuse with 409 unless the order is still at this version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    pub command: Command,
}

/// What a subscription follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Topic {
    Order(OrderId),
    Merchant(MerchantId),
    Courier(CourierId),
}

impl Topic {
    pub fn matches(&self, event: &StreamEvent) -> bool {
        match self {
            Topic::Order(id) => event.order_id == *id,
            Topic::Merchant(id) => event.merchant_id == *id,
            Topic::Courier(id) => event.courier_id == Some(*id),
        }
    }
}

/// Messages a client sends on `/api/v1/stream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum ClientMessage {
    /// Follow these topics. With `after`, first receive every matching event
    /// with a greater sequence (what was missed), then live events.
    Subscribe {
        topics: Vec<Topic>,
        #[serde(default)]
        after: Option<u64>,
    },
    Ping,
}

/// Messages the server sends on `/api/v1/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerMessage {
    /// The subscription is active; `head` is the newest sequence committed.
    Subscribed {
        topics: Vec<Topic>,
        head: u64,
    },
    Event(Box<StreamEvent>),
    /// Everything missed up to `seq` has been sent; live events follow.
    CaughtUp {
        seq: u64,
    },
    /// The client fell too far behind: reload state, then subscribe again
    /// with `after` = `seq`.
    Resync {
        seq: u64,
        reason: String,
    },
    Pong,
    Error {
        code: String,
        message: String,
    },
}

/// An RFC 9457 problem document with a stable `code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the problem type (`urn:xianlu:problem:<code>`).
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `version_conflict`.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The order's current version, on a version conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

/// One road segment of the map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RoadLine {
    /// `motorway`, `trunk`, `primary`, `secondary`, `tertiary`, `unclassified`, `residential`, `living_street`, `service`.
    pub class: String,
    /// Google encoded polyline, precision 5.
    pub polyline: String,
}

/// The road geometry of a box: what every app draws its map from, with no
/// external tile service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RoadTile {
    pub source: String,
    /// The credit to show with the map, when its data requires one.
    pub attribution: Option<String>,
    /// An external tile URL template, when the deployment has one.
    pub tile_url: Option<String>,
    pub zoom: u8,
    pub roads: Vec<RoadLine>,
}
