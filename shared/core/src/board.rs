//! The merchant's order board as a view-model: every open order of the
//! merchant as a card in the column of its stage, filtered and searched,
//! kept live from the merchant's push stream. Nothing here draws or fetches;
//! the merchant app's session feeds it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use xianlu_domain::operations::Alert;
use xianlu_domain::order::TimeWindow;
use xianlu_domain::wire::{CustomerSummary, StreamEvent};
use xianlu_domain::{CourierId, CustomerId, EventKind, Fen, Order, OrderId, OrderNumber, Status, WarehouseId};

/// The board's columns, in the order of an order's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Column {
    /// Placed and paid (or on credit), waiting for the warehouse.
    Paid,
    /// Being picked, or packed and waiting for a courier.
    Picking,
    OutOfStock,
    Delivering,
    /// An exception or a failed attempt: someone has to decide.
    Exception,
    Signed,
    ReturnsAndClaims,
}

impl Column {
    pub const ALL: [Column; 7] = [
        Column::Paid,
        Column::Picking,
        Column::OutOfStock,
        Column::Delivering,
        Column::Exception,
        Column::Signed,
        Column::ReturnsAndClaims,
    ];

    /// The column of a status; cancelled orders leave the board.
    pub fn of(status: Status) -> Option<Column> {
        Some(match status {
            Status::Created | Status::Paid | Status::AwaitingPick => Column::Paid,
            Status::Picking | Status::Packed => Column::Picking,
            Status::OutOfStock => Column::OutOfStock,
            Status::Delivering => Column::Delivering,
            Status::ExceptionHandling | Status::DeliveryFailed => Column::Exception,
            Status::Signed => Column::Signed,
            Status::Returning | Status::Returned | Status::ClaimOpen | Status::ClaimSettled => Column::ReturnsAndClaims,
            Status::Cancelled => return None,
        })
    }
}

/// One order on the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    pub order_id: OrderId,
    pub number: OrderNumber,
    pub status: Status,
    pub version: u64,
    pub customer_id: CustomerId,
    /// The customer's business name (empty until known).
    pub customer: String,
    pub warehouse_id: WarehouseId,
    pub courier_id: Option<CourierId>,
    pub window: TimeWindow,
    pub charge_fen: Fen,
    pub updated_at: DateTime<Utc>,
    /// Open alerts on the order (counted when the board is shown).
    pub alerts: u32,
}

/// What the board shows (all optional; search matches the order number or
/// the customer's business name — contact people are never searchable).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BoardFilter {
    pub warehouse: Option<WarehouseId>,
    pub courier: Option<CourierId>,
    /// Orders whose promised window overlaps this one.
    pub window: Option<TimeWindow>,
    pub status: Option<Status>,
    pub search: String,
}

impl BoardFilter {
    pub fn matches(&self, card: &Card) -> bool {
        let search = self.search.trim().to_lowercase();
        self.warehouse.is_none_or(|w| w == card.warehouse_id)
            && self.courier.is_none_or(|c| Some(c) == card.courier_id)
            && self.window.is_none_or(|w| w.start < card.window.end && card.window.start < w.end)
            && self.status.is_none_or(|s| s == card.status)
            && (search.is_empty()
                || card.number.to_string().to_lowercase().contains(&search)
                || card.customer.to_lowercase().contains(&search))
    }
}

/// A column as shown: its cards (most recently changed first) and how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnView {
    pub column: Column,
    pub count: usize,
    pub cards: Vec<Card>,
}

/// What an event asks the session to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// An order the board has not seen (to learn its customer and lines).
    Order(OrderId),
}

/// The board. Business names and alert counts are filled in when it is
/// shown, from what the board learnt and the alerts it is shown with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Board {
    cards: BTreeMap<OrderId, Card>,
    customers: HashMap<CustomerId, String>,
}

impl Board {
    pub fn new() -> Board {
        Board::default()
    }

    /// Business names, as a page of orders brings them.
    pub fn learn_customers(&mut self, customers: &[CustomerSummary]) {
        for c in customers {
            self.customers.insert(c.id, c.business_name.clone());
        }
    }

    /// Takes an order as the server has it (an older copy never replaces a newer one).
    pub fn upsert(&mut self, order: &Order) {
        if self.cards.get(&order.id).is_some_and(|c| c.version > order.version) {
            return;
        }
        self.cards.insert(
            order.id,
            Card {
                order_id: order.id,
                number: order.number.clone(),
                status: order.status,
                version: order.version,
                customer_id: order.customer_id,
                customer: String::new(),
                warehouse_id: order.warehouse_id,
                courier_id: order.courier_id,
                window: order.requested_window,
                charge_fen: order.totals.charge_fen,
                updated_at: order.updated_at,
                alerts: 0,
            },
        );
    }

    /// One event from the merchant's stream, applied in place where it can be.
    pub fn apply(&mut self, event: &StreamEvent) -> Need {
        let kind = &event.event.kind;
        let Some(card) = self.cards.get_mut(&event.order_id) else {
            return if kind.is_observation() { Need::Nothing } else { Need::Order(event.order_id) };
        };
        if kind.is_observation() || event.version < card.version {
            return Need::Nothing;
        }
        card.status = event.event.to;
        card.version = event.version;
        card.updated_at = event.at;
        match kind {
            EventKind::CourierAssigned { courier_id, .. }
            | EventKind::Dispatched { courier_id }
            | EventKind::DeliveryResumed { courier_id, .. } => card.courier_id = Some(*courier_id),
            EventKind::RedeliveryScheduled { window } => card.window = *window,
            EventKind::Packed { charge_fen, .. } => card.charge_fen = *charge_fen,
            _ => {}
        }
        Need::Nothing
    }

    /// A card as shown, with its business name and its open alerts among `alerts`.
    fn shown(&self, card: &Card, alerts: &[Alert]) -> Card {
        let mut card = card.clone();
        card.customer = self.customers.get(&card.customer_id).cloned().unwrap_or_default();
        card.alerts = alerts.iter().filter(|a| a.order_id == card.order_id && a.is_open()).count() as u32;
        card
    }

    /// One card as shown.
    pub fn card(&self, id: OrderId, alerts: &[Alert]) -> Option<Card> {
        self.cards.get(&id).map(|c| self.shown(c, alerts))
    }

    pub fn len(&self) -> usize {
        self.cards.len()
    }

    /// Every card as the board holds it (business names and alert counts are
    /// filled in only when shown).
    pub fn cards(&self) -> impl Iterator<Item = &Card> {
        self.cards.values()
    }

    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }

    /// Every column, with the cards the filter lets through; `alerts` are
    /// counted on their orders' cards.
    pub fn columns(&self, filter: &BoardFilter, alerts: &[Alert]) -> Vec<ColumnView> {
        let mut by_column: BTreeMap<Column, Vec<Card>> = Column::ALL.iter().map(|c| (*c, Vec::new())).collect();
        for card in self.cards.values().map(|c| self.shown(c, alerts)).filter(|c| filter.matches(c)) {
            if let Some(column) = Column::of(card.status) {
                by_column.entry(column).or_default().push(card);
            }
        }
        by_column
            .into_iter()
            .map(|(column, mut cards)| {
                cards.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.number.cmp(&a.number)));
                ColumnView { column, count: cards.len(), cards }
            })
            .collect()
    }

    /// The warehouse's pick list: orders started first, then those ready to
    /// pick, each by promised window (soonest first) and number.
    pub fn pick_list(&self, filter: &BoardFilter, alerts: &[Alert]) -> Vec<Card> {
        let mut cards: Vec<Card> = self
            .cards
            .values()
            .filter(|c| matches!(c.status, Status::Paid | Status::AwaitingPick | Status::Picking))
            .map(|c| self.shown(c, alerts))
            .filter(|c| filter.matches(c))
            .collect();
        cards.sort_by(|a, b| {
            (b.status == Status::Picking)
                .cmp(&(a.status == Status::Picking))
                .then(a.window.start.cmp(&b.window.start))
                .then(a.number.cmp(&b.number))
        });
        cards
    }
}
