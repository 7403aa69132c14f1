//! Who may do what to which object: one table of role × action, and the
//! object rules that tie a role to its merchant, warehouse, courier or
//! customer. Every transport asks here; nothing else decides.
//!
//! An object outside the caller's reach is reported as not found (404), for
//! reads and actions alike, so a refusal never confirms that it exists; an
//! action the role may never take on an object it can see is forbidden (403).

use xianlu_domain::wire::Topic;
use xianlu_domain::{Command, CourierId, CustomerId, MerchantId, Order, OrderDraft, OrderId, Status, WarehouseId};

use crate::error::ApiError;
use crate::identity::Role;

/// What a caller may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Administrators, the server itself, and development actors on a server
    /// started for tests.
    Everything,
    User(Links),
}

/// A user's role and the objects it is tied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub role: Role,
    pub merchant: Option<MerchantId>,
    pub warehouse: Option<WarehouseId>,
    /// The courier records a courier drives as (one per merchant served).
    pub couriers: Vec<CourierId>,
    pub customer: Option<CustomerId>,
    /// The one order a tracking link shows.
    pub order: Option<OrderId>,
}

impl Links {
    /// Whether the order's courier is this user.
    pub fn drives(&self, courier: Option<CourierId>) -> bool {
        courier.is_some_and(|c| self.couriers.contains(&c))
    }
}

/// Everything a role can be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadOrder,
    CreateOrder,
    /// Payment by an administrator (bank transfer, cash).
    MarkPaid,
    ResolveShortage,
    AnswerSubstitution,
    Pick,
    Assign,
    Dispatch,
    ReportOnTheRoad,
    Sign,
    ResolveException,
    SettleClaim,
    Cancel,
    ManageWarehousesAndCouriers,
    ManageCustomers,
    ReadStock,
    CountStock,
    /// Upload a signature, photo or delivery-note image for an order.
    AttachEvidence,
    /// Send one's own position fixes.
    ReportPosition,
    /// Read a courier's positions.
    TrackCouriers,
    /// See and acknowledge alerts, read ETA accuracy.
    HandleAlerts,
    /// Fences, thresholds and quiet hours of courier operations.
    ConfigureOperations,
    /// Make a tracking link to an order.
    ShareOrder,
    /// Raise an after-sales matter on a signed order.
    RaiseAfterSales,
}

use Action::*;

/// The policy table: which role may take which action (on objects within its reach).
#[rustfmt::skip]
pub const TABLE: &[(Role, &[Action])] = &[
    (Role::Admin, &[
        ReadOrder, CreateOrder, MarkPaid, ResolveShortage, AnswerSubstitution, Pick, Assign, Dispatch, ReportOnTheRoad,
        Sign, ResolveException, SettleClaim, Cancel, ManageWarehousesAndCouriers, ManageCustomers, ReadStock, CountStock,
        AttachEvidence, ReportPosition, TrackCouriers, HandleAlerts, ConfigureOperations, ShareOrder, RaiseAfterSales,
    ]),
    (Role::MerchantOwner, &[
        ReadOrder, CreateOrder, MarkPaid, ResolveShortage, AnswerSubstitution, Pick, Assign, Dispatch, ResolveException,
        SettleClaim, Cancel, ManageWarehousesAndCouriers, ManageCustomers, ReadStock, CountStock, AttachEvidence,
        TrackCouriers, HandleAlerts, ConfigureOperations, ShareOrder, RaiseAfterSales,
    ]),
    (Role::MerchantStaff, &[
        ReadOrder, CreateOrder, MarkPaid, ResolveShortage, AnswerSubstitution, Pick, Assign, Dispatch, ResolveException,
        Cancel, ManageCustomers, ReadStock, CountStock, AttachEvidence, TrackCouriers, HandleAlerts, ShareOrder,
        RaiseAfterSales,
    ]),
    // The seed's example: a clerk sees picking-stage orders of their warehouse and changes only picking.
    (Role::WarehouseClerk, &[ReadOrder, Pick, ReadStock, CountStock]),
    (Role::Courier, &[ReadOrder, Dispatch, ReportOnTheRoad, Sign, AttachEvidence, ReportPosition, ShareOrder]),
    (Role::Customer, &[
        ReadOrder, CreateOrder, AnswerSubstitution, Sign, Cancel, AttachEvidence, ShareOrder, RaiseAfterSales,
    ]),
    // A tracking link reads its one order; at the door, its holder signs for it
    // (the signature is evidence of that order).
    (Role::Visitor, &[ReadOrder, Sign, AttachEvidence]),
    // Customer service reads its merchant's orders and changes only exception and claim state.
    (Role::CustomerService, &[
        ReadOrder, ResolveException, SettleClaim, AttachEvidence, TrackCouriers, HandleAlerts, ShareOrder, RaiseAfterSales,
    ]),
];

pub fn role_may(role: Role, action: Action) -> bool {
    TABLE.iter().any(|(r, actions)| *r == role && actions.contains(&action))
}

/// The action a command is.
pub fn action_of(command: &Command) -> Action {
    match command {
        Command::MarkPaid { .. } => MarkPaid,
        Command::CheckStock { .. } | Command::ProposeSubstitution { .. } | Command::ShortShip { .. } => ResolveShortage,
        Command::ExpireSubstitution { .. } => ResolveShortage,
        Command::AnswerSubstitution { .. } => AnswerSubstitution,
        Command::StartPicking | Command::RecordPick { .. } | Command::Pack => Pick,
        Command::AssignCourier { .. } => Assign,
        Command::Dispatch => Dispatch,
        Command::ReportException { .. } | Command::RecordFailedAttempt { .. } => ReportOnTheRoad,
        Command::Sign { .. } | Command::DropOffUnattended { .. } => Sign,
        Command::ResumeDelivery { .. }
        | Command::ScheduleRedelivery { .. }
        | Command::StartReturn { .. }
        | Command::ConfirmReturned
        | Command::OpenClaim { .. } => ResolveException,
        Command::SettleClaim { .. } => SettleClaim,
        Command::Cancel { .. } => Cancel,
    }
}

/// Statuses a warehouse clerk works on.
const PICKING_STAGE: [Status; 3] = [Status::AwaitingPick, Status::Picking, Status::Packed];

fn not_found() -> ApiError {
    ApiError::NotFound("no such order".into())
}

fn forbidden(action: Action) -> ApiError {
    ApiError::Forbidden(format!("your role may not {action:?} here"))
}

/// Whether the caller can see this order at all.
pub fn may_see(scope: &Scope, order: &Order) -> bool {
    let Scope::User(links) = scope else { return true };
    match links.role {
        Role::Admin => true,
        Role::MerchantOwner | Role::MerchantStaff | Role::CustomerService => links.merchant == Some(order.merchant_id),
        Role::WarehouseClerk => {
            links.merchant == Some(order.merchant_id)
                && links.warehouse == Some(order.warehouse_id)
                && PICKING_STAGE.contains(&order.status)
        }
        Role::Courier => links.drives(order.courier_id),
        Role::Customer => links.customer == Some(order.customer_id),
        Role::Visitor => links.order == Some(order.id),
    }
}

/// 404 unless the caller can see the order.
pub fn check_read(scope: &Scope, order: &Order) -> Result<(), ApiError> {
    if may_see(scope, order) { Ok(()) } else { Err(not_found()) }
}

/// 404 for an order out of reach, 403 for a command the role may not give.
pub fn check_command(scope: &Scope, order: &Order, command: &Command) -> Result<(), ApiError> {
    check_read(scope, order)?;
    let Scope::User(links) = scope else { return Ok(()) };
    let action = action_of(command);
    if !role_may(links.role, action) {
        return Err(forbidden(action));
    }
    // A courier works only with their own name on the order.
    if links.role == Role::Courier
        && let Command::ResumeDelivery { courier_id: Some(other) } = command
        && !links.couriers.contains(other)
    {
        return Err(forbidden(action));
    }
    Ok(())
}

/// 404 unless the caller can see the order; 403 unless their role may take this action on it.
pub fn check_order_action(scope: &Scope, order: &Order, action: Action) -> Result<(), ApiError> {
    check_read(scope, order)?;
    match scope {
        Scope::User(links) if !role_may(links.role, action) => Err(forbidden(action)),
        _ => Ok(()),
    }
}

/// Only a courier themself (or an admin) sends their positions.
pub fn check_own_courier(scope: &Scope, merchant: MerchantId, courier: CourierId) -> Result<(), ApiError> {
    let Scope::User(links) = scope else { return Ok(()) };
    match links.role {
        Role::Admin => Ok(()),
        Role::Courier if links.couriers.contains(&courier) => Ok(()),
        _ if links.merchant == Some(merchant) => Err(forbidden(ReportPosition)),
        _ => Err(ApiError::NotFound("no such courier".into())),
    }
}

/// A courier reads their own trail; the merchant's office reads its couriers'.
/// Whether the caller is the courier themselves.
pub fn is_courier_self(scope: &Scope, courier: CourierId) -> bool {
    matches!(scope, Scope::User(links) if links.role == Role::Courier && links.couriers.contains(&courier))
}

/// Evidence a caller may upload to an order: a tracking link's holder
/// signs at the door and uploads nothing else.
pub fn check_evidence_kind(
    scope: &Scope,
    order: &Order,
    kind: xianlu_domain::evidence::EvidenceKind,
) -> Result<(), ApiError> {
    if let Scope::User(links) = scope
        && links.role == Role::Visitor
        && (kind != xianlu_domain::evidence::EvidenceKind::Signature || order.status != Status::Delivering)
    {
        return Err(ApiError::Forbidden("a tracking link may only sign for the order at the door".into()));
    }
    Ok(())
}

pub fn check_courier_positions(scope: &Scope, merchant: MerchantId, courier: CourierId) -> Result<(), ApiError> {
    let Scope::User(links) = scope else { return Ok(()) };
    if links.role == Role::Courier && links.couriers.contains(&courier) {
        return Ok(());
    }
    if links.role != Role::Admin && links.merchant != Some(merchant) {
        return Err(ApiError::NotFound("no such courier".into()));
    }
    if !role_may(links.role, TrackCouriers) {
        return Err(forbidden(TrackCouriers));
    }
    Ok(())
}

pub fn check_create(scope: &Scope, draft: &OrderDraft) -> Result<(), ApiError> {
    let Scope::User(links) = scope else { return Ok(()) };
    // Reach first: a refusal must not tell whether a foreign merchant exists.
    let within = match links.role {
        Role::Admin => true,
        Role::Customer => links.customer == Some(draft.customer_id),
        Role::Courier => false,
        _ => links.merchant == Some(draft.merchant_id),
    };
    if !within {
        return Err(ApiError::NotFound("no such merchant or customer".into()));
    }
    if !role_may(links.role, CreateOrder) {
        return Err(forbidden(CreateOrder));
    }
    Ok(())
}

/// Narrows a list to what the caller may see: the fixed filters a role gets.
pub struct ListScope {
    pub merchant: Option<MerchantId>,
    /// Any of these couriers (empty: no courier condition).
    pub couriers: Vec<CourierId>,
    pub customer: Option<CustomerId>,
}

pub fn list_scope(scope: &Scope) -> Result<Option<ListScope>, ApiError> {
    let Scope::User(links) = scope else { return Ok(None) };
    Ok(match links.role {
        Role::Admin => None,
        Role::MerchantOwner | Role::MerchantStaff | Role::CustomerService | Role::WarehouseClerk => Some(ListScope {
            merchant: Some(links.merchant.ok_or_else(not_found)?),
            couriers: Vec::new(),
            customer: None,
        }),
        // A tracking link shows its one order, not a list.
        Role::Visitor => return Err(not_found()),
        Role::Courier => {
            if links.couriers.is_empty() {
                return Err(not_found());
            }
            Some(ListScope { merchant: None, couriers: links.couriers.clone(), customer: None })
        }
        Role::Customer => Some(ListScope {
            merchant: None,
            couriers: Vec::new(),
            customer: Some(links.customer.ok_or_else(not_found)?),
        }),
    })
}

/// For warehouses, couriers, customers and stock of one merchant.
pub fn check_merchant_action(scope: &Scope, merchant: MerchantId, action: Action) -> Result<(), ApiError> {
    let Scope::User(links) = scope else { return Ok(()) };
    if links.role != Role::Admin && links.merchant != Some(merchant) {
        return Err(ApiError::NotFound("no such merchant".into()));
    }
    if !role_may(links.role, action) {
        return Err(forbidden(action));
    }
    Ok(())
}

/// Stock of one warehouse: its merchant's office roles, or its own clerk.
pub fn check_stock(
    scope: &Scope,
    merchant: MerchantId,
    warehouse: WarehouseId,
    action: Action,
) -> Result<(), ApiError> {
    let Scope::User(links) = scope else { return Ok(()) };
    if links.role == Role::WarehouseClerk && links.warehouse != Some(warehouse) {
        return Err(ApiError::NotFound("no such warehouse".into()));
    }
    check_merchant_action(scope, merchant, action)
}

/// Only administrators (or the server itself).
pub fn check_admin(scope: &Scope) -> Result<(), ApiError> {
    match scope {
        Scope::Everything => Ok(()),
        Scope::User(links) if links.role == Role::Admin => Ok(()),
        Scope::User(_) => Err(ApiError::Forbidden("only an admin may do this".into())),
    }
}

/// Whether the caller sees the merchant's internal events (alerts).
pub fn sees_internal(scope: &Scope) -> bool {
    let Scope::User(links) = scope else { return true };
    role_may(links.role, HandleAlerts)
}

/// Whether a push subscription to `topic` is within reach. Order topics are
/// checked against the order itself by the caller.
pub fn may_follow(scope: &Scope, topic: &Topic, courier_merchant: Option<MerchantId>) -> bool {
    let Scope::User(links) = scope else { return true };
    let office = matches!(links.role, Role::MerchantOwner | Role::MerchantStaff | Role::CustomerService);
    match topic {
        Topic::Order(_) => true,
        Topic::Merchant(m) => links.role == Role::Admin || (office && links.merchant == Some(*m)),
        Topic::Courier(c) => {
            links.role == Role::Admin
                || (links.role == Role::Courier && links.couriers.contains(c))
                || (office && courier_merchant.is_some() && links.merchant == courier_merchant)
        }
    }
}

/// A customer's personal data (export) or its erasure: administrators, the
/// merchant's owner (and staff, for export), or the customer themself.
pub fn check_customer_data(
    scope: &Scope,
    merchant: MerchantId,
    customer: CustomerId,
    erase: bool,
) -> Result<(), ApiError> {
    let Scope::User(links) = scope else { return Ok(()) };
    let reach = match links.role {
        Role::Admin => true,
        Role::Customer => links.customer == Some(customer),
        Role::MerchantOwner | Role::MerchantStaff | Role::CustomerService | Role::WarehouseClerk => {
            links.merchant == Some(merchant)
        }
        Role::Courier | Role::Visitor => false,
    };
    if !reach {
        return Err(ApiError::NotFound("no such customer".into()));
    }
    let allowed = match links.role {
        Role::Admin | Role::Customer | Role::MerchantOwner => true,
        Role::MerchantStaff => !erase,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden("your role may not handle this customer's personal data".into()))
    }
}

/// How much of a phone number a viewer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disclose {
    Full,
    Masked,
    Nothing,
}

/// What a viewer sees of the courier's and the contact's phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneDisclosure {
    pub courier: Disclose,
    pub contact: Disclose,
}

impl PhoneDisclosure {
    pub const FULL: PhoneDisclosure = PhoneDisclosure { courier: Disclose::Full, contact: Disclose::Full };
}

/// The merchant's office sees both phones; a customer sees the courier's
/// masked and its own contact's; a courier sees the contact's full phone
/// only while delivering that order; a clerk sees neither in full.
pub fn phones_for(scope: &Scope, order: &Order) -> PhoneDisclosure {
    let Scope::User(links) = scope else { return PhoneDisclosure::FULL };
    match links.role {
        Role::Admin | Role::MerchantOwner | Role::MerchantStaff | Role::CustomerService => PhoneDisclosure::FULL,
        Role::Customer => PhoneDisclosure { courier: Disclose::Masked, contact: Disclose::Full },
        Role::Courier => {
            let delivering =
                matches!(order.status, Status::Delivering | Status::DeliveryFailed) && links.drives(order.courier_id);
            PhoneDisclosure {
                courier: Disclose::Full,
                contact: if delivering { Disclose::Full } else { Disclose::Masked },
            }
        }
        Role::WarehouseClerk => PhoneDisclosure { courier: Disclose::Masked, contact: Disclose::Nothing },
        Role::Visitor => PhoneDisclosure { courier: Disclose::Masked, contact: Disclose::Masked },
    }
}
