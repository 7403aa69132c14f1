//! The order state machine's tests: the legal-edge case table, the domain
//! rules one sentence at a time, and a property test over random command
//! sequences.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;
use xianlu_domain::*;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 8, 0, 0).single().expect("a valid instant")
}

/// `minutes` after the order was created.
fn t(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn courier(n: u128) -> CourierId {
    CourierId(Uuid::from_u128(1000 + n))
}

fn sha(byte: &str) -> String {
    byte.repeat(32)
}

/// 2 kg of pork belly priced 15.00 per 斤: 60.00 as ordered.
fn pork_2kg_per_jin() -> LineDraft {
    LineDraft {
        sku: "PORK-BELLY".into(),
        name: "五花肉".into(),
        quantity: Quantity::whole(2),
        unit: Unit::Kg,
        nominal_g: None,
        price: Price { fen: 1500, per: Unit::Jin },
        tolerance_permille: None,
        temperature: TemperatureClass::Chilled,
    }
}

/// 3 napa cabbages at 3.50 each: 10.50.
fn cabbage_3_pieces() -> LineDraft {
    LineDraft {
        sku: "NAPA-CABBAGE".into(),
        name: "大白菜".into(),
        quantity: Quantity::whole(3),
        unit: Unit::Piece,
        nominal_g: Some(800),
        price: Price { fen: 350, per: Unit::Piece },
        tolerance_permille: None,
        temperature: TemperatureClass::Ambient,
    }
}

/// 2 boxes of chicken wings, nominally 5 kg each, priced 30.00 per kg (catch weight).
fn chicken_wings_2_boxes_per_kg() -> LineDraft {
    LineDraft {
        sku: "CHICKEN-WINGS".into(),
        name: "鸡翅".into(),
        quantity: Quantity::whole(2),
        unit: Unit::Box,
        nominal_g: Some(5000),
        price: Price { fen: 3000, per: Unit::Kg },
        tolerance_permille: None,
        temperature: TemperatureClass::Frozen,
    }
}

/// 1 kg of beef brisket at 80.00 per kg, the usual substitute for pork.
fn beef_1kg() -> LineDraft {
    LineDraft {
        sku: "BEEF-BRISKET".into(),
        name: "牛腩".into(),
        quantity: Quantity::whole(1),
        unit: Unit::Kg,
        nominal_g: None,
        price: Price { fen: 8000, per: Unit::Kg },
        tolerance_permille: None,
        temperature: TemperatureClass::Chilled,
    }
}

fn draft(lines: Vec<LineDraft>, payment_terms: PaymentTerms) -> OrderDraft {
    OrderDraft {
        merchant_id: MerchantId(Uuid::from_u128(1)),
        warehouse_id: WarehouseId(Uuid::from_u128(2)),
        customer_id: CustomerId(Uuid::from_u128(3)),
        contact_id: Some(ContactId(Uuid::from_u128(4))),
        requested_window: TimeWindow { start: t(24 * 60), end: t(26 * 60) },
        notes: String::new(),
        payment_terms,
        lines,
    }
}

fn try_create(draft: &OrderDraft) -> Result<(Order, Event), Rejection> {
    let date = NaiveDate::from_ymd_opt(2024, 6, 1).expect("a valid date");
    create(OrderId(Uuid::from_u128(100)), OrderNumber::new("KL", date, 1), draft, t0())
}

fn new_order(draft: &OrderDraft) -> Order {
    let (order, event) = try_create(draft).unwrap_or_else(|e| panic!("create refused: {e:?}"));
    assert_eq!((event.from, event.to), (Status::Created, Status::Created));
    order
}

/// Applies a command that must be accepted, checking the edges it took.
fn ok(order: &Order, command: &Command, at: DateTime<Utc>) -> Transition {
    let transition =
        apply(order, command, at).unwrap_or_else(|e| panic!("{} refused in {}: {e:?}", command.name(), order.status));
    for event in &transition.events {
        assert!(
            is_legal_edge(event.from, event.to),
            "{} took the illegal edge {} -> {}",
            command.name(),
            event.from,
            event.to
        );
    }
    assert_eq!(transition.order.version, order.version + 1);
    transition
}

/// Applies a command that must be refused.
fn refused(order: &Order, command: &Command, at: DateTime<Utc>) -> Rejection {
    match apply(order, command, at) {
        Ok(t) => panic!("{} was accepted in {}, now {}", command.name(), order.status, t.order.status),
        Err(e) => e,
    }
}

fn drive(mut order: Order, commands: &[Command], at: DateTime<Utc>) -> Order {
    for command in commands {
        order = ok(&order, command, at).order;
    }
    order
}

fn invalid_field(rejection: &Rejection) -> &str {
    match rejection {
        Rejection::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn mark_paid_admin() -> Command {
    Command::MarkPaid { method: PaymentMethod::Admin { note: "bank transfer".into() } }
}

fn check_stock(reserved: &[(u16, i64)]) -> Command {
    Command::CheckStock {
        lines: reserved.iter().map(|&(line_no, reserved_base)| LineStock { line_no, reserved_base }).collect(),
    }
}

fn pick(line_no: u16, base: i64) -> Command {
    Command::RecordPick { line_no, base, weight_g: None, short: false }
}

fn cancel() -> Command {
    Command::Cancel { reason: "customer changed plans".into() }
}

// ---------------------------------------------------------------------------
// Orders in every status (pork 2 kg per 斤 + 3 cabbages, prepaid 70.50)
// ---------------------------------------------------------------------------

const BUILD: i64 = 5;
const PROPOSED_AT: i64 = 10;
const RESPOND_BY: i64 = 60;

fn standard_draft() -> OrderDraft {
    draft(vec![pork_2kg_per_jin(), cabbage_3_pieces()], PaymentTerms::Prepaid)
}

fn created() -> Order {
    new_order(&standard_draft())
}

fn paid() -> Order {
    drive(created(), &[mark_paid_admin()], t(BUILD))
}

fn awaiting_pick() -> Order {
    drive(paid(), &[check_stock(&[(1, 2000), (2, 3)])], t(BUILD))
}

/// Line 1 is short (1.2 kg of 2 kg reserved) with beef proposed until `RESPOND_BY`.
fn out_of_stock() -> Order {
    let order = drive(paid(), &[check_stock(&[(1, 1200), (2, 3)])], t(BUILD));
    drive(
        order,
        &[Command::ProposeSubstitution { line_no: 1, substitute: beef_1kg(), respond_by: t(RESPOND_BY) }],
        t(PROPOSED_AT),
    )
}

/// Every line already picked at its ordered quantity.
fn picking() -> Order {
    drive(awaiting_pick(), &[Command::StartPicking, pick(1, 2000), pick(2, 3)], t(BUILD))
}

fn packed() -> Order {
    drive(picking(), &[Command::Pack, Command::AssignCourier { courier_id: courier(1) }], t(BUILD))
}

fn delivering() -> Order {
    drive(packed(), &[Command::Dispatch], t(BUILD))
}

fn delivery_failed() -> Order {
    drive(delivering(), &[Command::RecordFailedAttempt { reason: FailedAttemptReason::CustomerAbsent }], t(BUILD))
}

fn exception_handling() -> Order {
    drive(
        delivering(),
        &[Command::ReportException { kind: ExceptionKind::DamagedInTransit, note: "box crushed".into() }],
        t(BUILD),
    )
}

fn returning() -> Order {
    drive(exception_handling(), &[Command::StartReturn { reason: "customer refused".into() }], t(BUILD))
}

fn returned() -> Order {
    drive(returning(), &[Command::ConfirmReturned], t(BUILD))
}

/// A claim on 500 g of the pork: worth 15.00.
fn claim_open() -> Order {
    drive(
        exception_handling(),
        &[Command::OpenClaim { lines: vec![ClaimLine { line_no: 1, base: 500 }], note: "crushed".into() }],
        t(BUILD),
    )
}

fn claim_settled() -> Order {
    drive(claim_open(), &[Command::SettleClaim { amount_fen: 1000 }], t(BUILD))
}

fn signed() -> Order {
    drive(delivering(), &[Command::Sign { lines: vec![], signature_sha256: sha("ab") }], t(BUILD))
}

fn cancelled() -> Order {
    drive(created(), &[cancel()], t(BUILD))
}

fn order_in(status: Status) -> Order {
    let order = match status {
        Status::Created => created(),
        Status::Paid => paid(),
        Status::AwaitingPick => awaiting_pick(),
        Status::OutOfStock => out_of_stock(),
        Status::Picking => picking(),
        Status::Packed => packed(),
        Status::Delivering => delivering(),
        Status::DeliveryFailed => delivery_failed(),
        Status::ExceptionHandling => exception_handling(),
        Status::Returning => returning(),
        Status::Returned => returned(),
        Status::ClaimOpen => claim_open(),
        Status::ClaimSettled => claim_settled(),
        Status::Signed => signed(),
        Status::Cancelled => cancelled(),
    };
    assert_eq!(order.status, status, "the fixture for {status} is wrong");
    order
}

// ---------------------------------------------------------------------------
// 1. The case table
// ---------------------------------------------------------------------------

/// When the table's commands are applied (after the consent window of
/// `out_of_stock` has passed).
const TABLE_AT: i64 = 120;

/// One valid instance of every command, named for the table. CHECK_STOCK and
/// ANSWER_SUBSTITUTION have two instances because they lead to two statuses.
fn table_commands() -> Vec<(&'static str, Command)> {
    vec![
        ("MARK_PAID", mark_paid_admin()),
        ("CHECK_STOCK full", check_stock(&[(1, 2000), (2, 3)])),
        ("CHECK_STOCK short", check_stock(&[(1, 1200), (2, 3)])),
        (
            "PROPOSE_SUBSTITUTION",
            Command::ProposeSubstitution { line_no: 1, substitute: beef_1kg(), respond_by: t(TABLE_AT + 60) },
        ),
        ("ANSWER_SUBSTITUTION accept", Command::AnswerSubstitution { line_no: 1, accept: true }),
        ("ANSWER_SUBSTITUTION decline", Command::AnswerSubstitution { line_no: 1, accept: false }),
        ("EXPIRE_SUBSTITUTION", Command::ExpireSubstitution { line_no: 1 }),
        ("SHORT_SHIP", Command::ShortShip { line_no: 1 }),
        ("START_PICKING", Command::StartPicking),
        ("RECORD_PICK", pick(1, 2050)),
        ("PACK", Command::Pack),
        ("ASSIGN_COURIER", Command::AssignCourier { courier_id: courier(2) }),
        ("DISPATCH", Command::Dispatch),
        ("REPORT_EXCEPTION", Command::ReportException { kind: ExceptionKind::Delay, note: "stuck in traffic".into() }),
        ("RESUME_DELIVERY", Command::ResumeDelivery { courier_id: None }),
        ("RECORD_FAILED_ATTEMPT", Command::RecordFailedAttempt { reason: FailedAttemptReason::CustomerAbsent }),
        (
            "SCHEDULE_REDELIVERY",
            Command::ScheduleRedelivery { window: TimeWindow { start: t(2 * 24 * 60), end: t(2 * 24 * 60 + 120) } },
        ),
        ("DROP_OFF_UNATTENDED", Command::DropOffUnattended { photo_sha256: sha("cd") }),
        ("SIGN", Command::Sign { lines: vec![], signature_sha256: sha("ef") }),
        ("START_RETURN", Command::StartReturn { reason: "customer refused the goods".into() }),
        ("CONFIRM_RETURNED", Command::ConfirmReturned),
        ("OPEN_CLAIM", Command::OpenClaim { lines: vec![ClaimLine { line_no: 1, base: 500 }], note: "crushed".into() }),
        ("SETTLE_CLAIM", Command::SettleClaim { amount_fen: 1000 }),
        ("CANCEL", cancel()),
    ]
}

/// Every (status, command) that is accepted, and where it leads. Everything
/// else is an illegal transition. RETURNED, CLAIM_SETTLED, SIGNED and CANCELLED
/// are terminal: nothing is accepted there.
const TABLE: &[(Status, &str, Status)] = {
    use Status::*;
    &[
        (Created, "MARK_PAID", Paid),
        (Created, "ASSIGN_COURIER", Created),
        (Created, "CANCEL", Cancelled),
        (Paid, "CHECK_STOCK full", AwaitingPick),
        (Paid, "CHECK_STOCK short", OutOfStock),
        (Paid, "ASSIGN_COURIER", Paid),
        (Paid, "CANCEL", Cancelled),
        (OutOfStock, "PROPOSE_SUBSTITUTION", OutOfStock),
        (OutOfStock, "ANSWER_SUBSTITUTION accept", AwaitingPick),
        (OutOfStock, "ANSWER_SUBSTITUTION decline", AwaitingPick),
        (OutOfStock, "EXPIRE_SUBSTITUTION", AwaitingPick),
        (OutOfStock, "SHORT_SHIP", AwaitingPick),
        (OutOfStock, "ASSIGN_COURIER", OutOfStock),
        (OutOfStock, "CANCEL", Cancelled),
        (AwaitingPick, "START_PICKING", Picking),
        (AwaitingPick, "ASSIGN_COURIER", AwaitingPick),
        (AwaitingPick, "CANCEL", Cancelled),
        (Picking, "RECORD_PICK", Picking),
        (Picking, "PACK", Packed),
        (Picking, "ASSIGN_COURIER", Picking),
        (Picking, "CANCEL", Cancelled),
        (Packed, "ASSIGN_COURIER", Packed),
        (Packed, "DISPATCH", Delivering),
        (Packed, "CANCEL", Cancelled),
        (Delivering, "SIGN", Signed),
        (Delivering, "REPORT_EXCEPTION", ExceptionHandling),
        (Delivering, "RECORD_FAILED_ATTEMPT", DeliveryFailed),
        (DeliveryFailed, "RESUME_DELIVERY", Delivering),
        (DeliveryFailed, "SCHEDULE_REDELIVERY", Packed),
        (DeliveryFailed, "DROP_OFF_UNATTENDED", Signed),
        (DeliveryFailed, "START_RETURN", Returning),
        (ExceptionHandling, "RESUME_DELIVERY", Delivering),
        (ExceptionHandling, "START_RETURN", Returning),
        (ExceptionHandling, "OPEN_CLAIM", ClaimOpen),
        (Returning, "CONFIRM_RETURNED", Returned),
        (ClaimOpen, "SETTLE_CLAIM", ClaimSettled),
    ]
};

/// The variant's position; an exhaustive match so a new variant fails to
/// compile until the table covers it.
fn variant_index(command: &Command) -> usize {
    match command {
        Command::MarkPaid { .. } => 0,
        Command::CheckStock { .. } => 1,
        Command::ProposeSubstitution { .. } => 2,
        Command::AnswerSubstitution { .. } => 3,
        Command::ExpireSubstitution { .. } => 4,
        Command::ShortShip { .. } => 5,
        Command::StartPicking => 6,
        Command::RecordPick { .. } => 7,
        Command::Pack => 8,
        Command::AssignCourier { .. } => 9,
        Command::Dispatch => 10,
        Command::ReportException { .. } => 11,
        Command::ResumeDelivery { .. } => 12,
        Command::RecordFailedAttempt { .. } => 13,
        Command::ScheduleRedelivery { .. } => 14,
        Command::DropOffUnattended { .. } => 15,
        Command::Sign { .. } => 16,
        Command::StartReturn { .. } => 17,
        Command::ConfirmReturned => 18,
        Command::OpenClaim { .. } => 19,
        Command::SettleClaim { .. } => 20,
        Command::Cancel { .. } => 21,
    }
}
const COMMAND_VARIANTS: usize = 22;

/// Applies every table command to an order in every status, checks the
/// outcome against the table, and returns the edges the accepted ones took.
fn run_case_table() -> BTreeSet<(Status, Status)> {
    let commands = table_commands();
    let labels: BTreeSet<&str> = commands.iter().map(|(label, _)| *label).collect();
    assert_eq!(labels.len(), commands.len(), "command labels are unique");
    for (status, label, _) in TABLE {
        assert!(labels.contains(label), "table row {status} {label} names no command");
    }
    let rows: BTreeSet<(Status, &str)> = TABLE.iter().map(|(s, l, _)| (*s, *l)).collect();
    assert_eq!(rows.len(), TABLE.len(), "table rows are unique");

    let at = t(TABLE_AT);
    let mut edges = BTreeSet::new();
    let mut cases = 0;
    for status in Status::ALL {
        let order = order_in(status);
        for (label, command) in &commands {
            assert!(label.starts_with(command.name()), "{label} is a {}", command.name());
            cases += 1;
            let expected = TABLE.iter().find(|(s, l, _)| *s == status && l == label).map(|(_, _, to)| *to);
            // A consent must come inside its window; everything else happens after it.
            let at = if label.starts_with("ANSWER_SUBSTITUTION") { t(RESPOND_BY - 1) } else { at };
            match (expected, apply(&order, command, at)) {
                (Some(to), Ok(transition)) => {
                    assert_eq!(transition.order.status, to, "{status} + {label}");
                    assert!(!transition.events.is_empty(), "{status} + {label} emitted nothing");
                    for event in &transition.events {
                        assert_eq!((event.from, event.to), (status, to), "{status} + {label}");
                        assert!(
                            is_legal_edge(event.from, event.to),
                            "{status} + {label}: {} -> {} is not in LEGAL_EDGES",
                            event.from,
                            event.to
                        );
                        edges.insert((event.from, event.to));
                    }
                }
                (Some(to), Err(e)) => {
                    panic!("{status} + {label} should lead to {to} but was refused: {e:?}")
                }
                (None, Ok(transition)) => {
                    panic!("{status} + {label} is not in the table but was accepted (-> {})", transition.order.status)
                }
                (None, Err(e)) => assert_eq!(
                    e,
                    Rejection::IllegalTransition { command: command.name(), status },
                    "{status} + {label}"
                ),
            }
        }
    }
    assert_eq!(cases, Status::ALL.len() * commands.len());
    edges
}

#[test]
fn the_case_table_names_one_instance_of_every_command_variant() {
    let covered: BTreeSet<usize> = table_commands().iter().map(|(_, c)| variant_index(c)).collect();
    assert_eq!(covered, (0..COMMAND_VARIANTS).collect());
}

#[test]
fn every_status_accepts_exactly_the_commands_in_the_case_table() {
    run_case_table();
}

#[test]
fn the_case_table_takes_every_legal_edge_and_no_other() {
    let taken = run_case_table();
    // Creating an order takes CREATED -> CREATED too; the table reaches it
    // through ASSIGN_COURIER.
    let legal: BTreeSet<(Status, Status)> = LEGAL_EDGES.iter().copied().collect();
    assert_eq!(legal.len(), LEGAL_EDGES.len(), "LEGAL_EDGES has duplicates");
    let missing: Vec<_> = legal.difference(&taken).collect();
    let extra: Vec<_> = taken.difference(&legal).collect();
    assert!(missing.is_empty(), "legal edges the table never takes: {missing:?}");
    assert!(extra.is_empty(), "edges outside LEGAL_EDGES: {extra:?}");
}

#[test]
fn terminal_statuses_are_exactly_those_without_outgoing_edges() {
    for status in Status::ALL {
        let has_outgoing = LEGAL_EDGES.iter().any(|(from, _)| *from == status);
        assert_eq!(status.is_terminal(), !has_outgoing, "{status}");
    }
}

// ---------------------------------------------------------------------------
// 2. Domain rules
// ---------------------------------------------------------------------------

/// A prepaid pork-only order (60.00 paid), picking started.
fn pork_order_picking() -> Order {
    let order = new_order(&draft(vec![pork_2kg_per_jin()], PaymentTerms::Prepaid));
    assert_eq!(order.lines[0].amount_ordered_fen, 6000);
    drive(order, &[mark_paid_admin(), check_stock(&[(1, 2000)]), Command::StartPicking], t(BUILD))
}

#[test]
fn pork_ordered_2kg_per_jin_picked_at_2_1kg_charges_the_actual_weight_and_the_customer_pays_more() {
    let order = pork_order_picking();
    assert_eq!(order.totals.paid_fen, 6000);

    let order = drive(order, &[pick(1, 2100)], t(20));
    // 2.1 kg = 4.2 斤 × 15.00
    assert_eq!(order.lines[0].amount_fen, 6300);

    let transition = ok(&order, &Command::Pack, t(30));
    assert_eq!(transition.order.totals.charge_fen, 6300);
    assert_eq!(transition.order.totals.balance_fen, 300, "少补: 3.00 more");
    assert!(matches!(transition.events[0].kind, EventKind::Packed { charge_fen: 6300, balance_fen: 300 }));
}

#[test]
fn pork_picked_at_1_9kg_refunds_the_difference() {
    let order = drive(pork_order_picking(), &[pick(1, 1900), Command::Pack], t(20));
    assert_eq!(order.lines[0].amount_fen, 5700);
    assert_eq!(order.totals.charge_fen, 5700);
    assert_eq!(order.totals.balance_fen, -300, "多退: 3.00 back");
}

#[test]
fn picking_outside_the_tolerance_is_rejected_unless_marked_short_below_the_lower_bound() {
    let order = pork_order_picking();
    // 10 % around 2000 g: 1800..=2200 are fine.
    for base in [1800, 2000, 2200] {
        ok(&order, &pick(1, base), t(20));
    }
    for base in [1799, 2201, 5000] {
        assert_eq!(
            refused(&order, &pick(1, base), t(20)),
            Rejection::OutOfTolerance { line_no: 1, picked: base, expected: 2000 }
        );
    }
    let short = |base| Command::RecordPick { line_no: 1, base, weight_g: None, short: true };
    let order_after = ok(&order, &short(1200), t(20)).order;
    assert_eq!(order_after.lines[0].picked, Some(Picked { base: 1200, weight_g: None, short: true }));
    assert_eq!(order_after.lines[0].amount_fen, 3600);
    // Short never excuses too much.
    assert!(matches!(refused(&order, &short(2201), t(20)), Rejection::OutOfTolerance { .. }));
    // Nor a negative weight.
    assert_eq!(invalid_field(&refused(&order, &short(-1), t(20))), "base");
}

#[test]
fn counted_lines_must_be_picked_exactly_unless_short() {
    let order = drive(awaiting_pick(), &[Command::StartPicking], t(BUILD));
    for base in [2, 4] {
        assert_eq!(
            refused(&order, &pick(2, base), t(20)),
            Rejection::OutOfTolerance { line_no: 2, picked: base, expected: 3 }
        );
    }
    let short_two = Command::RecordPick { line_no: 2, base: 2, weight_g: None, short: true };
    assert_eq!(ok(&order, &short_two, t(20)).order.lines[1].amount_fen, 700);
}

#[test]
fn a_box_priced_per_kg_must_be_weighed_at_picking_and_is_charged_on_its_scale_weight() {
    let order = new_order(&draft(vec![chicken_wings_2_boxes_per_kg(), cabbage_3_pieces()], PaymentTerms::Prepaid));
    // 2 × 5 kg nominal at 30.00/kg
    assert_eq!(order.lines[0].amount_ordered_fen, 30000);
    let order = drive(order, &[mark_paid_admin(), check_stock(&[(1, 2), (2, 3)]), Command::StartPicking], t(BUILD));
    let weighed = |weight_g| Command::RecordPick { line_no: 1, base: 2, weight_g, short: false };
    assert_eq!(invalid_field(&refused(&order, &weighed(None), t(20))), "weightG");
    assert_eq!(
        refused(&order, &weighed(Some(11_001)), t(20)),
        Rejection::OutOfTolerance { line_no: 1, picked: 11_001, expected: 10_000 }
    );
    // A line priced per piece takes no scale weight.
    let cabbage_weighed = Command::RecordPick { line_no: 2, base: 3, weight_g: Some(2400), short: false };
    assert_eq!(invalid_field(&refused(&order, &cabbage_weighed, t(20))), "weightG");

    let order = drive(order, &[weighed(Some(10_400)), pick(2, 3), Command::Pack], t(20));
    assert_eq!(order.lines[0].amount_fen, 31200);
    assert_eq!(order.totals.charge_fen, 31200 + 1050);
    assert_eq!(order.totals.balance_fen, 1200);
}

#[test]
fn partial_acceptance_of_a_catch_weight_box_charges_its_share_of_the_scale_weight() {
    let order = new_order(&draft(vec![chicken_wings_2_boxes_per_kg()], PaymentTerms::Prepaid));
    let order = drive(
        order,
        &[
            mark_paid_admin(),
            check_stock(&[(1, 2)]),
            Command::StartPicking,
            Command::RecordPick { line_no: 1, base: 2, weight_g: Some(10_400), short: false },
            Command::Pack,
            Command::AssignCourier { courier_id: courier(1) },
            Command::Dispatch,
        ],
        t(BUILD),
    );
    let sign = Command::Sign {
        lines: vec![LineAcceptance { line_no: 1, rejected_base: 1, reason: RejectReason::Damaged }],
        signature_sha256: sha("ab"),
    };
    let order = ok(&order, &sign, t(60)).order;
    // One box of 10.4 kg for two boxes: 5.2 kg × 30.00
    assert_eq!(order.lines[0].amount_fen, 15600);
    assert_eq!(order.totals.balance_fen, 15600 - 30000);
}

/// Pork short (1.2 kg of 2 kg), beef proposed until `RESPOND_BY`.
fn answer(order: &Order, accept: bool) -> Transition {
    ok(order, &Command::AnswerSubstitution { line_no: 1, accept }, t(PROPOSED_AT + 10))
}

#[test]
fn an_accepted_substitution_appends_the_substitute_line_and_the_order_awaits_picking() {
    let order = out_of_stock();
    assert_eq!(order.lines[0].shortage.as_ref().map(|s| s.available_base), Some(1200));
    let transition = answer(&order, true);
    let order = transition.order;
    assert_eq!(order.status, Status::AwaitingPick);
    assert_eq!(order.lines.len(), 3);
    let substitute = &order.lines[2];
    assert_eq!(substitute.line_no, 3);
    assert_eq!(substitute.sku, "BEEF-BRISKET");
    assert_eq!(substitute.substitute_for, Some(1));
    assert_eq!(substitute.base_reserved, substitute.base_ordered);
    assert_eq!(substitute.amount_fen, 8000);
    let original = &order.lines[0];
    assert_eq!(original.base_to_ship, 0);
    assert_eq!(original.amount_fen, 0);
    assert_eq!(
        original.shortage.as_ref().map(|s| s.resolution.clone()),
        Some(ShortageResolution::Substituted { line_no: 3 })
    );
    let kinds: Vec<&str> = transition.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["SUBSTITUTION_ACCEPTED", "STOCK_RESOLVED"]);
    assert_eq!(order.totals.charge_fen, 8000 + 1050);

    // The replaced line ships nothing, so it is neither picked nor awaited.
    let order = drive(order, &[Command::StartPicking], t(30));
    assert_eq!(invalid_field(&refused(&order, &pick(1, 2000), t(30))), "lineNo");
    let order = drive(order, &[pick(2, 3), pick(3, 1000), Command::Pack], t(30));
    assert_eq!(order.status, Status::Packed);
}

#[test]
fn a_declined_substitution_ships_what_is_available() {
    let transition = answer(&out_of_stock(), false);
    let order = transition.order;
    assert_eq!(order.status, Status::AwaitingPick);
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.lines[0].base_to_ship, 1200);
    assert_eq!(order.lines[0].amount_fen, 3600);
    assert_eq!(order.lines[0].shortage.as_ref().map(|s| s.resolution.clone()), Some(ShortageResolution::ShortShipped));
    let kinds: Vec<&EventKind> = transition.events.iter().map(|e| &e.kind).collect();
    assert_eq!(
        kinds,
        [
            &EventKind::SubstitutionDeclined { line_no: 1, expired: false },
            &EventKind::LineShortShipped { line_no: 1, base_to_ship: 1200 },
            &EventKind::StockResolved,
        ]
    );
}

#[test]
fn expiring_a_substitution_before_respond_by_is_refused_and_after_it_ships_short() {
    let order = out_of_stock();
    let expire = Command::ExpireSubstitution { line_no: 1 };
    assert_eq!(
        refused(&order, &expire, t(RESPOND_BY - 1)),
        Rejection::ConsentWindowOpen { line_no: 1, respond_by: t(RESPOND_BY) }
    );
    let transition = ok(&order, &expire, t(RESPOND_BY));
    assert_eq!(transition.order.status, Status::AwaitingPick);
    assert_eq!(transition.order.lines[0].base_to_ship, 1200);
    assert_eq!(transition.events[0].kind, EventKind::SubstitutionDeclined { line_no: 1, expired: true });
    // A line without a proposal cannot expire.
    let plain = drive(paid(), &[check_stock(&[(1, 1200), (2, 3)])], t(BUILD));
    assert_eq!(invalid_field(&refused(&plain, &expire, t(RESPOND_BY))), "lineNo");
}

#[test]
fn a_substitution_must_be_answered_in_the_future_and_for_a_short_line() {
    let order = drive(paid(), &[check_stock(&[(1, 1200), (2, 3)])], t(BUILD));
    let propose = |line_no, respond_by| Command::ProposeSubstitution { line_no, substitute: beef_1kg(), respond_by };
    assert_eq!(invalid_field(&refused(&order, &propose(1, t(20)), t(20))), "respondBy");
    assert_eq!(invalid_field(&refused(&order, &propose(2, t(60)), t(20))), "lineNo");
    assert_eq!(refused(&order, &propose(9, t(60)), t(20)), Rejection::UnknownLine(9));
}

#[test]
fn short_shipping_every_line_to_zero_cancels_the_order_and_refunds_the_payment() {
    let order = drive(paid(), &[check_stock(&[])], t(BUILD));
    assert_eq!(order.status, Status::OutOfStock);
    let order = ok(&order, &Command::ShortShip { line_no: 1 }, t(20)).order;
    assert_eq!(order.status, Status::OutOfStock, "line 2 is still open");
    assert_eq!(order.lines[0].base_to_ship, 0);

    let transition = ok(&order, &Command::ShortShip { line_no: 2 }, t(20));
    let order = transition.order;
    assert_eq!(order.status, Status::Cancelled);
    assert_eq!(order.cancellation.as_ref().map(|c| c.from), Some(Status::OutOfStock));
    assert_eq!(order.totals.charge_fen, 0);
    assert_eq!(order.totals.balance_fen, -7050);
    assert!(transition.events.iter().any(|e| matches!(e.kind, EventKind::Cancelled { refund_fen: 7050, .. })));
}

#[test]
fn partial_acceptance_at_sign_off_reprices_on_the_accepted_part() {
    let order = delivering();
    assert_eq!(order.totals.charge_fen, 7050);
    let sign = Command::Sign {
        lines: vec![
            LineAcceptance { line_no: 1, rejected_base: 500, reason: RejectReason::Damaged },
            LineAcceptance { line_no: 2, rejected_base: 1, reason: RejectReason::Quality },
        ],
        signature_sha256: sha("ab"),
    };
    let transition = ok(&order, &sign, t(60));
    let order = transition.order;
    assert_eq!(order.status, Status::Signed);
    assert_eq!(
        order.lines[0].acceptance,
        Some(Acceptance { accepted_base: 1500, rejected_base: 500, reason: Some(RejectReason::Damaged) })
    );
    assert_eq!(order.lines[0].amount_fen, 4500);
    assert_eq!(order.lines[1].amount_fen, 700);
    assert_eq!(order.totals.charge_fen, 5200);
    assert_eq!(order.totals.balance_fen, 5200 - 7050);
    assert!(matches!(
        &transition.events[0].kind,
        EventKind::Signed { rejected, charge_fen: 5200, balance_fen: -1850, unattended: false, .. }
            if rejected.len() == 2
    ));
}

#[test]
fn rejecting_everything_at_sign_off_is_refused() {
    let order = delivering();
    let reject = |pork, cabbage| Command::Sign {
        lines: vec![
            LineAcceptance { line_no: 1, rejected_base: pork, reason: RejectReason::Quality },
            LineAcceptance { line_no: 2, rejected_base: cabbage, reason: RejectReason::Quality },
        ],
        signature_sha256: sha("ab"),
    };
    assert_eq!(invalid_field(&refused(&order, &reject(2000, 3), t(60))), "lines");
    // More than was delivered is no better.
    assert_eq!(invalid_field(&refused(&order, &reject(2001, 0), t(60))), "lines");
    assert_eq!(invalid_field(&refused(&order, &reject(-1, 0), t(60))), "lines");
    // Everything but one cabbage is fine.
    ok(&order, &reject(2000, 2), t(60));
    // So is a refusal, which starts the return flow.
    let failed = delivery_failed();
    ok(&failed, &Command::StartReturn { reason: "refused".into() }, t(60));
}

#[test]
fn a_claim_settles_for_at_most_the_claimed_amount() {
    let order = claim_open();
    let claimed = order.claim.as_ref().map(|c| c.claimed_fen);
    // 500 g of the 60.00 pork line
    assert_eq!(claimed, Some(1500));
    for amount_fen in [-1, 1501, 1_000_000] {
        assert_eq!(invalid_field(&refused(&order, &Command::SettleClaim { amount_fen }, t(60))), "amountFen");
    }
    let order = ok(&order, &Command::SettleClaim { amount_fen: 1500 }, t(60)).order;
    assert_eq!(order.status, Status::ClaimSettled);
    assert_eq!(order.totals.charge_fen, 7050 - 1500);
    assert_eq!(order.totals.balance_fen, -1500);
}

#[test]
fn a_claim_covers_only_what_was_delivered() {
    let order = exception_handling();
    let claim = |line_no, base| Command::OpenClaim { lines: vec![ClaimLine { line_no, base }], note: String::new() };
    assert_eq!(invalid_field(&refused(&order, &claim(1, 2001), t(60))), "lines");
    assert_eq!(invalid_field(&refused(&order, &claim(1, 0), t(60))), "lines");
    assert_eq!(refused(&order, &claim(7, 1), t(60)), Rejection::UnknownLine(7));
    let empty = Command::OpenClaim { lines: vec![], note: String::new() };
    assert_eq!(invalid_field(&refused(&order, &empty, t(60))), "lines");
}

#[test]
fn cancelling_after_picking_is_allowed_and_refunds_what_was_paid() {
    let order = picking();
    assert_eq!(order.totals.paid_fen, 7050);
    let transition = ok(&order, &cancel(), t(60));
    let order = transition.order;
    assert_eq!(order.status, Status::Cancelled);
    assert_eq!(order.cancellation.as_ref().map(|c| c.from), Some(Status::Picking));
    assert_eq!(order.totals.charge_fen, 0);
    assert_eq!(order.totals.paid_fen, 7050);
    assert_eq!(order.totals.balance_fen, -7050);
    assert!(matches!(transition.events[0].kind, EventKind::Cancelled { refund_fen: 7050, .. }));
    // A cancellation needs a reason.
    let blank = Command::Cancel { reason: " ".into() };
    assert_eq!(invalid_field(&refused(&picking(), &blank, t(60))), "reason");
}

#[test]
fn dispatch_without_a_courier_is_refused() {
    let order = drive(picking(), &[Command::Pack], t(BUILD));
    assert_eq!(refused(&order, &Command::Dispatch, t(20)), Rejection::NoCourier);
    let order = drive(order, &[Command::AssignCourier { courier_id: courier(7) }], t(20));
    let transition = ok(&order, &Command::Dispatch, t(30));
    assert_eq!(transition.events[0].kind, EventKind::Dispatched { courier_id: courier(7) });
}

#[test]
fn packing_needs_every_line_picked_and_something_to_ship() {
    let order = drive(awaiting_pick(), &[Command::StartPicking, pick(1, 2000)], t(BUILD));
    assert_eq!(refused(&order, &Command::Pack, t(20)), Rejection::LinesNotPicked(vec![2]));
    let nothing = drive(
        awaiting_pick(),
        &[
            Command::StartPicking,
            Command::RecordPick { line_no: 1, base: 0, weight_g: None, short: true },
            Command::RecordPick { line_no: 2, base: 0, weight_g: None, short: true },
        ],
        t(BUILD),
    );
    assert_eq!(refused(&nothing, &Command::Pack, t(20)), Rejection::NothingToShip);
}

#[test]
fn credit_terms_are_only_for_credit_customers() {
    let credit_terms = Command::MarkPaid { method: PaymentMethod::CreditTerms };
    let prepaid = created();
    assert_eq!(invalid_field(&refused(&prepaid, &credit_terms, t(1))), "method");

    let on_credit = new_order(&draft(vec![pork_2kg_per_jin(), cabbage_3_pieces()], PaymentTerms::Credit { days: 30 }));
    let order = ok(&on_credit, &credit_terms, t(1)).order;
    assert_eq!(order.status, Status::Paid);
    assert_eq!(order.totals.paid_fen, 0);
    assert_eq!(order.totals.balance_fen, 7050, "billed at month end");
}

#[test]
fn invalid_drafts_are_rejected_as_invalid() {
    let with_line = |edit: fn(&mut LineDraft)| {
        let mut line = chicken_wings_2_boxes_per_kg();
        edit(&mut line);
        draft(vec![line], PaymentTerms::Prepaid)
    };
    let mut window_backwards = standard_draft();
    window_backwards.requested_window = TimeWindow { start: t(26 * 60), end: t(24 * 60) };
    let mut window_empty = standard_draft();
    window_empty.requested_window.end = window_empty.requested_window.start;

    let cases = [
        ("no lines", draft(vec![], PaymentTerms::Prepaid), "lines"),
        ("zero quantity", with_line(|l| l.quantity = Quantity::ZERO), "lines[0].quantity"),
        ("negative quantity", with_line(|l| l.quantity = Quantity::whole(-1)), "lines[0].quantity"),
        ("half a box", with_line(|l| l.quantity = Quantity::from_milli(500)), "lines[0].quantity"),
        ("a box without nominal weight", with_line(|l| l.nominal_g = None), "lines[0].nominalG"),
        (
            "pork with a nominal weight",
            draft(vec![LineDraft { nominal_g: Some(500), ..pork_2kg_per_jin() }], PaymentTerms::Prepaid),
            "lines[0].nominalG",
        ),
        (
            "pork priced per box",
            draft(
                vec![LineDraft { price: Price { fen: 100, per: Unit::Box }, ..pork_2kg_per_jin() }],
                PaymentTerms::Prepaid,
            ),
            "lines[0].price.per",
        ),
        ("window start after end", window_backwards, "requestedWindow"),
        ("window of no length", window_empty, "requestedWindow"),
    ];
    for (name, draft, field) in cases {
        match try_create(&draft) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert_eq!(invalid_field(&e), field, "{name}"),
        }
    }
}

#[test]
fn a_counted_line_heavier_than_100_t_is_rejected_instead_of_overflowing_the_totals() {
    // 100 million boxes of 100 t at 1 000 000 CNY per gram: each line is worth
    // more than an i64 of fen, and two of them used to overflow the totals.
    let huge = LineDraft {
        quantity: Quantity::whole(100_000_000),
        nominal_g: Some(100_000_000),
        price: Price { fen: 100_000_000, per: Unit::G },
        ..chicken_wings_2_boxes_per_kg()
    };
    let rejection = try_create(&draft(vec![huge.clone(), huge], PaymentTerms::Prepaid))
        .expect_err("a 10 000 000 000 t line is refused");
    assert_eq!(invalid_field(&rejection), "lines[0].quantity");

    // The largest lines allowed, as many as allowed, still add up exactly.
    let limit = LineDraft {
        quantity: Quantity::whole(20_000),
        nominal_g: Some(5000),
        price: Price { fen: 100_000_000, per: Unit::G },
        ..chicken_wings_2_boxes_per_kg()
    };
    let lines = vec![limit; xianlu_domain::machine::MAX_LINES];
    let order = new_order(&draft(lines, PaymentTerms::Prepaid));
    assert_eq!(order.totals.ordered_fen, 200 * 100_000_000 * 100_000_000);
}

// ---------------------------------------------------------------------------
// 3. Property test: random command sequences keep the invariants
// ---------------------------------------------------------------------------

fn tolerance() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![Just(None), (0u16..=500).prop_map(Some)]
}

fn temperature() -> impl Strategy<Value = TemperatureClass> {
    prop::sample::select(vec![TemperatureClass::Ambient, TemperatureClass::Chilled, TemperatureClass::Frozen])
}

const WEIGHT_UNITS: [Unit; 4] = [Unit::G, Unit::Kg, Unit::Jin, Unit::Liang];
const COUNTED_UNITS: [Unit; 2] = [Unit::Piece, Unit::Box];

/// A valid line: by weight, counted and priced per piece, or counted and
/// priced by weight (catch weight).
fn line_draft() -> impl Strategy<Value = LineDraft> {
    let by_weight =
        (prop::sample::select(WEIGHT_UNITS.to_vec()), 1i64..=20_000, prop::sample::select(WEIGHT_UNITS.to_vec()))
            .prop_map(|(unit, grams, per)| {
                // Any whole number of grams is an exact quantity of every weight unit.
                let quantity = Quantity::from_milli(grams * 1000 / unit.base_per_unit());
                (unit, quantity, None, per)
            });
    let counted = (
        prop::sample::select(COUNTED_UNITS.to_vec()),
        1i64..=10,
        1i64..=20_000,
        prop::sample::select(vec![Unit::Piece, Unit::Box, Unit::G, Unit::Kg, Unit::Jin, Unit::Liang]),
    )
        .prop_map(|(unit, count, nominal, per)| (unit, Quantity::whole(count), Some(nominal), per));
    (prop_oneof![by_weight, counted], 0i64..=10_000, tolerance(), temperature(), 0u8..100).prop_map(
        |((unit, quantity, nominal_g, per), fen, tolerance_permille, temperature, n)| LineDraft {
            sku: format!("SKU-{n}"),
            name: format!("商品{n}"),
            quantity,
            unit,
            nominal_g,
            price: Price { fen, per },
            tolerance_permille,
            temperature,
        },
    )
}

fn order_draft() -> impl Strategy<Value = OrderDraft> {
    (
        prop::collection::vec(line_draft(), 1..=4),
        prop_oneof![Just(PaymentTerms::Prepaid), (0u16..=60).prop_map(|days| PaymentTerms::Credit { days })],
    )
        .prop_map(|(lines, terms)| draft(lines, terms))
}

/// A quantity relative to what the order expects (permille of it), or any
/// number at all.
#[derive(Debug, Clone, Copy)]
enum Amount {
    Rel(i64),
    Abs(i64),
}

impl Amount {
    fn of(self, reference: i64) -> i64 {
        match self {
            Amount::Rel(permille) => reference * permille / 1000,
            Amount::Abs(value) => value,
        }
    }
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        4 => Just(Amount::Rel(1000)),
        3 => (850i64..=1150).prop_map(Amount::Rel),
        2 => (0i64..=1300).prop_map(Amount::Rel),
        2 => (-100i64..=30_000).prop_map(Amount::Abs),
    ]
}

/// A line number: an explicit one (0 and 5.. rarely exist), or `Auto`, the
/// line the command most plausibly means in the current order.
#[derive(Debug, Clone, Copy)]
enum LineSel {
    No(u16),
    Auto,
}

fn line_sel() -> impl Strategy<Value = LineSel> {
    prop_oneof![
        2 => (0u16..=6).prop_map(LineSel::No),
        3 => Just(LineSel::Auto),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Weigh {
    /// A scale weight when the line is catch weight, none otherwise.
    Auto(Amount),
    Never,
    Always(Amount),
}

/// A command before it meets the order: the arguments that refer to the
/// order's lines and amounts are resolved against it when applied, so random
/// sequences get past the early statuses.
#[derive(Debug, Clone)]
enum Op {
    MarkPaid(u8),
    CheckStock {
        full: bool,
        lines: Vec<Option<Amount>>,
    },
    Propose {
        line: LineSel,
        substitute: LineDraft,
        respond_in: i64,
    },
    Answer {
        line: LineSel,
        accept: bool,
    },
    Expire(LineSel),
    ShortShip(LineSel),
    StartPicking,
    RecordPick {
        line: LineSel,
        base: Amount,
        weigh: Weigh,
        short: bool,
    },
    Pack,
    AssignCourier(u8),
    Dispatch,
    ReportException {
        kind: ExceptionKind,
        long_note: bool,
    },
    ResumeDelivery(Option<u8>),
    RecordFailedAttempt(FailedAttemptReason),
    ScheduleRedelivery {
        start_in: i64,
        length: i64,
    },
    DropOff {
        valid_photo: bool,
    },
    Sign {
        rejected: Vec<(LineSel, Amount, RejectReason)>,
        valid_signature: bool,
    },
    StartReturn {
        reason: bool,
    },
    ConfirmReturned,
    OpenClaim {
        lines: Vec<(LineSel, Amount)>,
    },
    SettleClaim(Amount),
    Cancel {
        reason: bool,
    },
    /// One of the commands that plausibly move the order on from its current
    /// status (`choice` picks among them), so sequences reach the late
    /// statuses as often as the early ones.
    Forward {
        choice: u8,
        amount: Amount,
        short: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let exception_kind = prop::sample::select(vec![
        ExceptionKind::TrafficAccident,
        ExceptionKind::VehicleBreakdown,
        ExceptionKind::Delay,
        ExceptionKind::DamagedInTransit,
        ExceptionKind::CustomerRefused,
        ExceptionKind::TemperatureExcursion,
        ExceptionKind::Other,
    ]);
    let failed_reason = prop::sample::select(vec![
        FailedAttemptReason::CustomerAbsent,
        FailedAttemptReason::Closed,
        FailedAttemptReason::AddressProblem,
        FailedAttemptReason::Other,
    ]);
    let reject_reason = prop::sample::select(vec![
        RejectReason::Shortage,
        RejectReason::Damaged,
        RejectReason::Quality,
        RejectReason::WrongItem,
        RejectReason::Other,
    ]);
    let substitute = prop_oneof![
        4 => line_draft(),
        1 => line_draft().prop_map(|mut l| {
            l.quantity = Quantity::ZERO;
            l
        }),
    ];
    let weigh = prop_oneof![
        4 => amount().prop_map(Weigh::Auto),
        1 => Just(Weigh::Never),
        1 => amount().prop_map(Weigh::Always),
    ];
    prop_oneof![
        3 => (0u8..5).prop_map(Op::MarkPaid),
        3 => (any::<bool>(), prop::collection::vec(prop::option::of(amount()), 0..=6))
            .prop_map(|(full, lines)| Op::CheckStock { full, lines }),
        2 => (line_sel(), substitute, -30i64..=240)
            .prop_map(|(line, substitute, respond_in)| Op::Propose { line, substitute, respond_in }),
        2 => (line_sel(), any::<bool>()).prop_map(|(line, accept)| Op::Answer { line, accept }),
        2 => line_sel().prop_map(Op::Expire),
        2 => line_sel().prop_map(Op::ShortShip),
        3 => Just(Op::StartPicking),
        8 => (line_sel(), amount(), weigh, prop::bool::weighted(0.2))
            .prop_map(|(line, base, weigh, short)| Op::RecordPick { line, base, weigh, short }),
        3 => Just(Op::Pack),
        3 => (0u8..3).prop_map(Op::AssignCourier),
        3 => Just(Op::Dispatch),
        2 => (exception_kind, prop::bool::weighted(0.1))
            .prop_map(|(kind, long_note)| Op::ReportException { kind, long_note }),
        2 => prop::option::of(0u8..3).prop_map(Op::ResumeDelivery),
        2 => failed_reason.prop_map(Op::RecordFailedAttempt),
        2 => (-120i64..=2880, -60i64..=240)
            .prop_map(|(start_in, length)| Op::ScheduleRedelivery { start_in, length }),
        2 => prop::bool::weighted(0.9).prop_map(|valid_photo| Op::DropOff { valid_photo }),
        3 => (
            prop::collection::vec((line_sel(), amount(), reject_reason), 0..=3),
            prop::bool::weighted(0.9),
        )
            .prop_map(|(rejected, valid_signature)| Op::Sign { rejected, valid_signature }),
        2 => prop::bool::weighted(0.9).prop_map(|reason| Op::StartReturn { reason }),
        2 => Just(Op::ConfirmReturned),
        2 => prop::collection::vec((line_sel(), amount()), 0..=3)
            .prop_map(|lines| Op::OpenClaim { lines }),
        2 => amount().prop_map(Op::SettleClaim),
        1 => prop::bool::weighted(0.9).prop_map(|reason| Op::Cancel { reason }),
        60 => (any::<u8>(), amount(), prop::bool::weighted(0.1))
            .prop_map(|(choice, amount, short)| Op::Forward { choice, amount, short }),
    ]
}

/// The `Op`s that plausibly come next in `order`'s status.
fn forward(order: &Order, choice: u8, amount: Amount, short: bool) -> Op {
    let options: Vec<Op> = match order.status {
        Status::Created => vec![Op::MarkPaid(match order.payment_terms {
            PaymentTerms::Credit { .. } => 2,
            PaymentTerms::Prepaid => choice % 2,
        })],
        Status::Paid => vec![
            Op::CheckStock { full: true, lines: vec![] },
            Op::CheckStock {
                full: false,
                lines: order
                    .lines
                    .iter()
                    .enumerate()
                    .map(|(i, _)| Some(if i == 0 { amount } else { Amount::Rel(1000) }))
                    .collect(),
            },
        ],
        Status::OutOfStock => vec![
            Op::Propose { line: LineSel::Auto, substitute: beef_1kg(), respond_in: 30 },
            Op::Answer { line: LineSel::Auto, accept: true },
            Op::Answer { line: LineSel::Auto, accept: false },
            Op::Expire(LineSel::Auto),
            Op::ShortShip(LineSel::Auto),
        ],
        Status::AwaitingPick => vec![Op::StartPicking],
        Status::Picking => {
            if order.lines.iter().any(|l| l.base_to_ship > 0 && l.picked.is_none()) {
                vec![Op::RecordPick { line: LineSel::Auto, base: amount, weigh: Weigh::Auto(Amount::Rel(1000)), short }]
            } else {
                vec![Op::Pack]
            }
        }
        Status::Packed => {
            if order.courier_id.is_none() {
                vec![Op::AssignCourier(choice % 3)]
            } else {
                vec![Op::Dispatch]
            }
        }
        Status::Delivering => vec![
            Op::Sign { rejected: vec![], valid_signature: true },
            Op::Sign { rejected: vec![(LineSel::Auto, amount, RejectReason::Damaged)], valid_signature: true },
            Op::ReportException { kind: ExceptionKind::DamagedInTransit, long_note: false },
            Op::RecordFailedAttempt(FailedAttemptReason::Closed),
        ],
        Status::DeliveryFailed => vec![
            Op::ResumeDelivery(None),
            Op::ScheduleRedelivery { start_in: 60, length: 120 },
            Op::DropOff { valid_photo: true },
            Op::StartReturn { reason: true },
        ],
        Status::ExceptionHandling => vec![
            Op::ResumeDelivery(Some(choice % 3)),
            Op::StartReturn { reason: true },
            Op::OpenClaim { lines: vec![(LineSel::Auto, amount)] },
        ],
        Status::Returning => vec![Op::ConfirmReturned],
        Status::ClaimOpen => vec![Op::SettleClaim(amount)],
        Status::Returned | Status::ClaimSettled | Status::Signed | Status::Cancelled => {
            vec![Op::Cancel { reason: true }]
        }
    };
    let index = usize::from(choice) % options.len();
    options.into_iter().nth(index).unwrap_or(Op::Pack)
}

fn first_line(order: &Order, wanted: impl Fn(&OrderLine) -> bool) -> u16 {
    order.lines.iter().find(|l| wanted(l)).map_or(1, |l| l.line_no)
}

fn resolve(sel: LineSel, order: &Order, wanted: impl Fn(&OrderLine) -> bool) -> u16 {
    match sel {
        LineSel::No(n) => n,
        LineSel::Auto => first_line(order, wanted),
    }
}

fn base_of(order: &Order, line_no: u16, f: impl Fn(&OrderLine) -> i64) -> i64 {
    order.line(line_no).map_or(1000, f)
}

fn is_catch_weight(line: &OrderLine) -> bool {
    line.dimension == Dimension::Pieces && line.price.per.dimension() == Dimension::Grams
}

/// Resolves an `Op` against the current order into a concrete command.
fn materialize(op: &Op, order: &Order, at: DateTime<Utc>) -> Command {
    let short_line = |sel| resolve(sel, order, OrderLine::is_short_unresolved);
    let delivered = |sel| resolve(sel, order, |l| l.base_delivered() > 0);
    match op {
        Op::MarkPaid(kind) => Command::MarkPaid {
            method: match kind {
                0 => PaymentMethod::Gateway { gateway: "wechat".into(), reference: "wx-4200001".into() },
                1 => PaymentMethod::Admin { note: "bank transfer".into() },
                2 => PaymentMethod::CreditTerms,
                3 => PaymentMethod::Gateway { gateway: "alipay".into(), reference: " ".into() },
                _ => PaymentMethod::Admin { note: "长".repeat(1001) },
            },
        },
        Op::CheckStock { full, lines } => {
            let lines = if *full {
                order.lines.iter().map(|l| LineStock { line_no: l.line_no, reserved_base: l.base_ordered }).collect()
            } else {
                lines
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| {
                        let line_no = i as u16 + 1;
                        a.map(|a| LineStock {
                            line_no,
                            reserved_base: a.of(base_of(order, line_no, |l| l.base_ordered)),
                        })
                    })
                    .collect()
            };
            Command::CheckStock { lines }
        }
        Op::Propose { line, substitute, respond_in } => Command::ProposeSubstitution {
            line_no: short_line(*line),
            substitute: substitute.clone(),
            respond_by: at + Duration::minutes(*respond_in),
        },
        Op::Answer { line, accept } => Command::AnswerSubstitution { line_no: short_line(*line), accept: *accept },
        Op::Expire(line) => Command::ExpireSubstitution { line_no: short_line(*line) },
        Op::ShortShip(line) => Command::ShortShip { line_no: short_line(*line) },
        Op::StartPicking => Command::StartPicking,
        Op::RecordPick { line, base, weigh, short } => {
            let line_no = resolve(*line, order, |l| l.base_to_ship > 0 && l.picked.is_none());
            let base = base.of(base_of(order, line_no, |l| l.base_to_ship));
            let nominal_weight = base.saturating_mul(order.line(line_no).and_then(|l| l.nominal_g).unwrap_or(1000));
            let catch_weight = order.line(line_no).is_some_and(is_catch_weight);
            let weight_g = match weigh {
                Weigh::Auto(w) => catch_weight.then(|| w.of(nominal_weight)),
                Weigh::Never => None,
                Weigh::Always(w) => Some(w.of(nominal_weight)),
            };
            Command::RecordPick { line_no, base, weight_g, short: *short }
        }
        Op::Pack => Command::Pack,
        Op::AssignCourier(n) => Command::AssignCourier { courier_id: courier(u128::from(*n)) },
        Op::Dispatch => Command::Dispatch,
        Op::ReportException { kind, long_note } => Command::ReportException {
            kind: *kind,
            note: if *long_note { "x".repeat(1001) } else { "on the road".into() },
        },
        Op::ResumeDelivery(n) => Command::ResumeDelivery { courier_id: n.map(|n| courier(u128::from(n))) },
        Op::RecordFailedAttempt(reason) => Command::RecordFailedAttempt { reason: *reason },
        Op::ScheduleRedelivery { start_in, length } => {
            let start = at + Duration::minutes(*start_in);
            Command::ScheduleRedelivery { window: TimeWindow { start, end: start + Duration::minutes(*length) } }
        }
        Op::DropOff { valid_photo } => {
            Command::DropOffUnattended { photo_sha256: if *valid_photo { sha("0f") } else { "not-a-hash".into() } }
        }
        Op::Sign { rejected, valid_signature } => Command::Sign {
            lines: rejected
                .iter()
                .map(|(sel, amount, reason)| {
                    let line_no = delivered(*sel);
                    LineAcceptance {
                        line_no,
                        rejected_base: amount.of(base_of(order, line_no, OrderLine::base_delivered)),
                        reason: *reason,
                    }
                })
                .collect(),
            signature_sha256: if *valid_signature { sha("a5") } else { sha("zz") },
        },
        Op::StartReturn { reason } => {
            Command::StartReturn { reason: if *reason { "refused".into() } else { String::new() } }
        }
        Op::ConfirmReturned => Command::ConfirmReturned,
        Op::OpenClaim { lines } => Command::OpenClaim {
            lines: lines
                .iter()
                .map(|(sel, amount)| {
                    let line_no = delivered(*sel);
                    ClaimLine { line_no, base: amount.of(base_of(order, line_no, OrderLine::base_delivered)) }
                })
                .collect(),
            note: "damaged".into(),
        },
        Op::SettleClaim(amount) => {
            Command::SettleClaim { amount_fen: amount.of(order.claim.as_ref().map_or(0, |c| c.claimed_fen)) }
        }
        Op::Cancel { reason } => {
            Command::Cancel { reason: if *reason { "changed plans".into() } else { String::new() } }
        }
        Op::Forward { choice, amount, short } => materialize(&forward(order, *choice, *amount, *short), order, at),
    }
}

/// What must hold of every order the machine hands out.
fn check_order(order: &Order) -> Result<(), TestCaseError> {
    let mut numbers = BTreeSet::new();
    for line in &order.lines {
        let n = line.line_no;
        prop_assert!(numbers.insert(n), "line {} twice", n);
        prop_assert!(line.base_ordered > 0, "line {}: base_ordered {}", n, line.base_ordered);
        prop_assert!(line.base_reserved >= 0, "line {}: base_reserved {}", n, line.base_reserved);
        prop_assert!(
            line.base_reserved <= line.base_ordered,
            "line {}: reserved {} of {}",
            n,
            line.base_reserved,
            line.base_ordered
        );
        prop_assert!(line.base_to_ship >= 0, "line {}: base_to_ship {}", n, line.base_to_ship);
        prop_assert!(
            line.base_to_ship <= line.base_ordered,
            "line {}: to ship {} of {}",
            n,
            line.base_to_ship,
            line.base_ordered
        );
        if let Some(picked) = line.picked {
            prop_assert!(picked.base >= 0, "line {}: picked {}", n, picked.base);
            prop_assert!(picked.weight_g.is_none_or(|w| w >= 0), "line {}: weight", n);
        }
        if let Some(acceptance) = line.acceptance {
            prop_assert!(acceptance.accepted_base >= 0, "line {}: {:?}", n, acceptance);
            prop_assert!(acceptance.rejected_base >= 0, "line {}: {:?}", n, acceptance);
            prop_assert_eq!(acceptance.accepted_base + acceptance.rejected_base, line.base_delivered(), "line {}", n);
        }
        prop_assert!(line.amount_fen >= 0, "line {}: amount {}", n, line.amount_fen);
        prop_assert!(line.amount_ordered_fen >= 0, "line {}", n);
    }

    let totals = order.totals;
    let ordered: Fen = order.lines.iter().map(|l| l.amount_ordered_fen).sum();
    prop_assert_eq!(totals.ordered_fen, ordered);
    let paid = order.payment.as_ref().map_or(0, |p| p.paid_fen);
    prop_assert_eq!(totals.paid_fen, paid);
    prop_assert_eq!(totals.balance_fen, totals.charge_fen - totals.paid_fen);
    let lines_fen: Fen = order.lines.iter().map(|l| l.amount_fen).sum();
    let settled = order.claim.as_ref().and_then(|c| c.settled_fen).unwrap_or(0);
    let charge = match order.status {
        Status::Cancelled | Status::Returned => 0,
        _ => lines_fen - settled,
    };
    prop_assert_eq!(totals.charge_fen, charge, "status {}", order.status);

    // The status agrees with the data behind it.
    let unresolved = order.lines.iter().any(OrderLine::is_short_unresolved);
    match order.status {
        Status::OutOfStock => prop_assert!(unresolved, "OUT_OF_STOCK without an open shortage"),
        Status::AwaitingPick | Status::Picking | Status::Packed | Status::Delivering => {
            prop_assert!(!unresolved, "{} with an open shortage", order.status)
        }
        _ => {}
    }
    if matches!(order.status, Status::Delivering | Status::DeliveryFailed | Status::ExceptionHandling) {
        prop_assert!(order.courier_id.is_some(), "{} without a courier", order.status);
    }
    if matches!(order.status, Status::Packed | Status::Delivering | Status::Signed) {
        prop_assert!(
            order.lines.iter().all(|l| l.base_to_ship == 0 || l.picked.is_some()),
            "{} with unpicked lines",
            order.status
        );
        prop_assert!(order.lines.iter().any(|l| l.base_delivered() > 0), "{} with nothing delivered", order.status);
    }
    prop_assert_eq!(order.status == Status::Signed, order.sign_off.is_some());
    prop_assert_eq!(order.status == Status::Cancelled, order.cancellation.is_some());
    Ok(())
}

fn check_step(
    before: &Order,
    command: &Command,
    at: DateTime<Utc>,
    result: &Result<Transition, Rejection>,
) -> Result<(), TestCaseError> {
    let transition = match result {
        Err(rejection) => {
            if before.status.is_terminal() {
                prop_assert!(
                    matches!(rejection, Rejection::IllegalTransition { .. }),
                    "{} in terminal {} refused with {:?}",
                    command.name(),
                    before.status,
                    rejection
                );
            }
            return Ok(());
        }
        Ok(transition) => transition,
    };
    let after = &transition.order;
    prop_assert!(!before.status.is_terminal(), "{} accepted in terminal {}", command.name(), before.status);
    prop_assert_eq!(after.version, before.version + 1);
    prop_assert_eq!(after.updated_at, at);
    prop_assert_eq!(after.id, before.id);
    prop_assert_eq!(after.created_at, before.created_at);
    prop_assert!(after.lines.len() >= before.lines.len(), "a line vanished");
    prop_assert!(!transition.events.is_empty(), "{} emitted no event", command.name());
    for event in &transition.events {
        prop_assert_eq!((event.from, event.to), (before.status, after.status));
        prop_assert!(
            is_legal_edge(event.from, event.to),
            "{}: illegal edge {} -> {}",
            command.name(),
            event.from,
            event.to
        );
    }
    check_order(after)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(10_000)
    })]

    #[test]
    fn random_command_sequences_keep_the_order_consistent(
        draft in order_draft(),
        steps in prop::collection::vec((op(), 0i64..=90), 1..=30),
    ) {
        let (mut order, _) = try_create(&draft)
            .map_err(|e| TestCaseError::fail(format!("a valid draft was refused: {e:?}")))?;
        check_order(&order)?;
        let mut at = t0();
        for (op, minutes) in &steps {
            at += Duration::minutes(*minutes);
            let command = materialize(op, &order, at);
            let result = apply(&order, &command, at);
            check_step(&order, &command, at, &result)?;
            if let Ok(transition) = result {
                order = transition.order;
            }
        }
    }
}

#[test]
fn shipping_weight_and_volume_follow_what_ships() {
    // 2 kg of pork (3 000 ml per kg) and 3 cabbages (800 g, 4 000 ml each).
    let volume = |sku: &str| match sku {
        "PORK-BELLY" => Some(3_000),
        "NAPA-CABBAGE" => Some(4_000),
        _ => None,
    };
    let ordered = awaiting_pick();
    assert_eq!(ordered.shipping_weight_g(), 2_000 + 3 * 800);
    assert_eq!(ordered.shipping_volume_ml(volume), 6_000 + 12_000);
    assert_eq!(ordered.shipping_volume_ml(|_| None), 0, "unknown volumes take no room");
    // Picked: 1.8 kg of pork and 2 cabbages (nominal weight).
    let picked = drive(
        awaiting_pick(),
        &[
            Command::StartPicking,
            pick(1, 1_800),
            Command::RecordPick { line_no: 2, base: 2, weight_g: None, short: true },
        ],
        t(BUILD),
    );
    assert_eq!(picked.shipping_weight_g(), 1_800 + 2 * 800);
    assert_eq!(picked.shipping_volume_ml(volume), 5_400 + 8_000);
}

#[test]
fn after_sales_are_taken_on_a_signed_order_within_the_window_for_what_was_received() {
    use xianlu_domain::aftersales::{AfterSalesKind, AfterSalesLine, NewAfterSales, check_new};
    let order = signed();
    let at = t(100);
    let matter = |line_no, base| NewAfterSales {
        kind: AfterSalesKind::QualityComplaint,
        lines: vec![AfterSalesLine { line_no, base }],
        note: "菜叶发黄".into(),
        photos: vec!["a".repeat(64)],
    };
    assert_eq!(check_new(&order, at, at + chrono::TimeDelta::hours(47), 48, &matter(1, 500)), Ok(()));
    let late = check_new(&order, at, at + chrono::TimeDelta::hours(49), 48, &matter(1, 500));
    assert!(matches!(late, Err(Rejection::Invalid { field, .. }) if field == "window"));
    assert!(matches!(check_new(&order, at, at, 48, &matter(9, 1)), Err(Rejection::UnknownLine(9))));
    let received = order.lines[0].acceptance.as_ref().map_or(order.lines[0].base_to_ship, |a| a.accepted_base);
    assert!(check_new(&order, at, at, 48, &matter(1, received)).is_ok());
    assert!(check_new(&order, at, at, 48, &matter(1, received + 1)).is_err(), "more than was received");
    assert!(check_new(&order, at, at, 48, &matter(1, 0)).is_err());
    let mut bad_photo = matter(1, 1);
    bad_photo.photos = vec!["not-a-digest".into()];
    assert!(check_new(&order, at, at, 48, &bad_photo).is_err());
    assert!(matches!(check_new(&delivering(), at, at, 48, &matter(1, 1)), Err(Rejection::IllegalTransition { .. })));
}
