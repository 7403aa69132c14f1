//! The words of the apps, Chinese first.

use xianlu_domain::aftersales::AfterSalesKind;
use xianlu_domain::{EventKind, RejectReason, Status, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// The name of the language in itself, for a switch.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Zh => "中文",
            Lang::En => "English",
        }
    }

    /// A fixed phrase.
    pub fn t(self, key: Key) -> &'static str {
        let (zh, en) = match key {
            Key::Loading => ("正在加载订单…", "Loading the order…"),
            Key::Expired => (
                "此追踪链接已过期，请向商家索取新的链接。",
                "This tracking link has expired; ask the merchant for a new one.",
            ),
            Key::NotFound => ("找不到这个订单。", "No such order."),
            Key::Unreachable => ("暂时无法连接服务器，正在重试", "The server cannot be reached; retrying"),
            Key::Cancelled => ("订单已取消", "The order was cancelled"),
            Key::Courier => ("配送员", "Courier"),
            Key::Eta => ("预计送达", "Expected"),
            Key::Promised => ("约定时段", "Promised window"),
            Key::Items => ("商品", "Items"),
            Key::Timeline => ("订单进度", "Progress"),
            Key::LastSeen => ("最后位置更新", "Last seen"),
            Key::SecondsAgo => ("秒前", "s ago"),
            Key::MinutesAgo => ("分钟前", "min ago"),
            Key::ArrivingIn => ("配送员即将到达，约", "Arriving in about"),
            Key::Minutes => ("分钟", "minutes"),
            Key::StopOf => ("站", "stop"),
            Key::Live => ("实时", "Live"),
            Key::Reconnecting => ("正在重新连接…", "Reconnecting…"),
            Key::Deliver => ("收货地址", "Deliver to"),
            Key::Server => ("服务器", "Server"),
            Key::Username => ("用户名", "Username"),
            Key::Password => ("密码", "Password"),
            Key::LogIn => ("登录", "Log in"),
            Key::MyOrders => ("我的订单", "My orders"),
            Key::Back => ("返回", "Back"),
            Key::SignFor => ("签收", "Sign for it"),
            Key::CheckLines => (
                "逐项验收：全部收下，或填写拒收数量与原因",
                "Check each line: accept it, or refuse a quantity with a reason",
            ),
            Key::Refuse => ("拒收", "Refuse"),
            Key::SignHere => ("请在此签名", "Sign here"),
            Key::Clear => ("重签", "Clear"),
            Key::Confirm => ("确认签收", "Confirm sign-off"),
            Key::Receipt => ("签收回执", "Receipt"),
            Key::Hash => ("签名哈希", "Signature hash"),
            Key::Charge => ("实收金额", "Charged"),
            Key::Balance => ("多退少补", "Balance"),
            Key::Verify => ("核验回执", "Check receipt"),
            Key::Verified => {
                ("已核验：服务器保存的签名与回执一致", "Verified: the server holds this signature, intact")
            }
            Key::Missing => ("服务器上没有这个签名", "The server holds no such signature"),
            Key::Altered => ("签名图像已被改动", "The signature image was altered"),
            Key::AfterSales => ("申请售后", "After-sales"),
            Key::Note => ("说明", "Note"),
            Key::Submit => ("提交", "Submit"),
            Key::Submitted => ("已提交，商家会尽快处理", "Sent; the merchant will follow up"),
            Key::Matters => ("售后记录", "After-sales matters"),
            Key::Photos => ("照片", "Photos"),
            Key::OnDuty => ("上班中", "On duty"),
            Key::OffDuty => ("未上班", "Off duty"),
            Key::GoOnDuty => ("上班", "Go on duty"),
            Key::GoOffDuty => ("下班", "Go off duty"),
            Key::SharingLocation => ("正在共享位置", "Sharing location"),
            Key::Today => ("今日配送", "Today's stops"),
            Key::NoStops => ("暂无配送任务", "Nothing to deliver yet"),
            Key::Cold => ("冷链", "Cold chain"),
            Key::OfflineBanner => ("离线：操作已保存在本机", "Offline: your changes are kept on this phone"),
            Key::ChangesWaiting => ("条待同步", "changes waiting to sync"),
            Key::NeedsAttention => ("需要处理", "Needs attention"),
            Key::PickUp => ("已取货，出发", "Picked up"),
            Key::Arrived => ("已到达", "Arrived"),
            Key::DeliverNow => ("交付签收", "Deliver"),
            Key::FailedAttempt => ("未能送达", "Could not deliver"),
            Key::DropOff => ("放在门口（拍照）", "Leave at the door (photo)"),
            Key::Report => ("上报异常", "Report a problem"),
            Key::Map => ("地图", "Map"),
            Key::Planned => ("计划到达", "Planned"),
            Key::NewOrder => ("新订单", "New order"),
            Key::HandedToYou => ("转派给你，请到事故车辆处取货", "Handed to you: collect it at the stopped van"),
            Key::TakenAway => ("已转给其他配送员", "Given to another courier"),
            Key::Call => ("拨打电话", "Call"),
            Key::CopyAddress => ("复制地址", "Copy address"),
            Key::Navigate => ("导航", "Navigate"),
            Key::Notes => ("备注", "Notes"),
            Key::DeliveryNotePhoto => ("签收单照片（可选）", "Photo of the signed note (optional)"),
            Key::Reason => ("原因", "Reason"),
            Key::Retry => ("重新发送", "Send again"),
            Key::Discard => ("放弃此操作", "Give it up"),
            Key::ConfirmQuestion => ("确认？", "Confirm?"),
            Key::Yes => ("确认", "Yes"),
            Key::Cancel => ("取消", "Cancel"),
            Key::Done => ("已完成", "Done"),
            Key::Collect => ("接驳取货", "Collect from the van"),
            Key::Dismiss => ("知道了", "OK"),
            Key::Saved => ("已记录，联网后自动同步", "Saved; it syncs by itself"),
            Key::Weight => ("重量", "Weight"),
            Key::Waiting => ("待同步", "Waiting to sync"),
            Key::Contact => ("联系人", "Contact"),
            Key::WaitingForOffice => ("等待商家安排再次配送或退货", "Waiting for the office: redelivery or return"),
            Key::ReturnToWarehouse => ("退回仓库", "Return to the warehouse"),
            Key::Send => ("发送", "Send"),
            Key::WhatToDo => ("处理建议", "What to do"),
            Key::Position => ("当前位置", "Position"),
            Key::Refresh => ("刷新", "Refresh"),
            Key::LogOut => ("退出登录", "Log out"),
            Key::RedeliverTomorrow => ("明天同一时段再送", "Redeliver tomorrow, same window"),
            Key::Couriers => ("配送员", "Couriers"),
            Key::Aboard => ("在途", "Aboard"),
            Key::NextStop => ("下一站", "Next stop"),
            Key::LockRoute => ("锁定路线", "Lock route"),
            Key::Unlock => ("解锁路线", "Unlock route"),
            Key::PinTo => ("指派订单给", "Pin order to"),
            Key::ShortShip => ("按实发货", "Ship short"),
            Key::OpenClaim => ("登记破损理赔", "Open a claim"),
            Key::SettleClaim => ("理赔结算", "Settle claim"),
            Key::Amount => ("金额（分）", "Amount (fen)"),
            Key::AllWindows => ("全部时段", "Any window"),
            Key::From => ("从", "From"),
            Key::To => ("到", "To"),
            Key::Severity => ("级别", "Severity"),
            Key::Board => ("订单看板", "Order board"),
            Key::Alerts => ("告警", "Alerts"),
            Key::Acknowledge => ("确认已知", "Acknowledge"),
            Key::Search => ("搜索单号或客户", "Search number or customer"),
            Key::AllWarehouses => ("全部仓库", "All warehouses"),
            Key::AllCouriers => ("全部配送员", "All couriers"),
            Key::AllStatuses => ("全部状态", "All statuses"),
            Key::Behind => ("有未同步的更改或正在重连", "Changes not yet sent, or reconnecting"),
            Key::StartPicking => ("开始拣货", "Start picking"),
            Key::RecordPick => ("确认称重", "Confirm weight"),
            Key::Pack => ("打包完成", "Packed"),
            Key::HandToCourier => ("交给配送员", "Hand to courier"),
            Key::DispatchNow => ("出库配送", "Dispatch"),
            Key::ResumeDelivery => ("恢复配送", "Resume delivery"),
            Key::StartReturn => ("安排退货", "Start return"),
            Key::ConfirmReturned => ("确认退回入库", "Confirm returned"),
            Key::CancelOrder => ("取消订单", "Cancel order"),
            Key::Evidence => ("签收凭证", "Evidence"),
            Key::PickList => ("拣货单", "Pick list"),
            Key::NoAlerts => ("暂无告警", "No alerts"),
            Key::Open => ("未处理", "Open"),
            Key::Cleared => ("已解除", "Cleared"),
            Key::Acknowledged => ("已确认", "Acknowledged"),
            Key::Customer => ("客户", "Customer"),
            Key::Lines => ("商品明细", "Lines"),
            Key::Picked => ("已拣", "Picked"),
            Key::ProposeSubstitute => ("提议替换", "Propose a substitute"),
            Key::NothingToSubstitute => ("仓库没有可替换的商品", "Nothing in stock to substitute"),
            Key::OrderedQuantity => ("订", "ordered"),
            Key::CanPick => ("可拣", "in stock"),
            Key::PricePerUnit => ("单价（分）每", "Price (fen) per"),
            Key::AnswerBy => ("请在此前答复", "Answer by"),
            Key::SubstituteOffered => ("缺货，商家提议替换为", "Short; the merchant offers instead"),
            Key::Accept => ("同意替换", "Accept"),
            Key::Decline => ("不要替换", "Decline"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    pub fn status(self, status: Status) -> &'static str {
        let (zh, en) = match status {
            Status::Created => ("已下单", "Created"),
            Status::Paid => ("已付款", "Paid"),
            Status::AwaitingPick => ("待拣货", "Awaiting picking"),
            Status::OutOfStock => ("缺货处理中", "Out of stock"),
            Status::Picking => ("拣货中", "Picking"),
            Status::Packed => ("已打包", "Packed"),
            Status::Delivering => ("配送中", "Out for delivery"),
            Status::DeliveryFailed => ("配送未成功", "Delivery failed"),
            Status::ExceptionHandling => ("异常处理中", "Exception being handled"),
            Status::Returning => ("退货中", "Returning"),
            Status::Returned => ("已退回", "Returned"),
            Status::ClaimOpen => ("理赔处理中", "Claim open"),
            Status::ClaimSettled => ("理赔已完成", "Claim settled"),
            Status::Signed => ("已签收", "Signed"),
            Status::Cancelled => ("已取消", "Cancelled"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    pub fn event(self, kind: &EventKind) -> String {
        let (zh, en): (&str, &str) = match kind {
            EventKind::Created { .. } => ("订单已创建", "Order created"),
            EventKind::Paid { .. } => ("已付款", "Paid"),
            EventKind::StockChecked { .. } => ("库存已确认", "Stock checked"),
            EventKind::SubstitutionProposed { .. } => ("缺货，商家提议替换", "Short: a substitute was proposed"),
            EventKind::SubstitutionAccepted { .. } => ("已同意替换", "Substitute accepted"),
            EventKind::SubstitutionDeclined { .. } => ("已拒绝替换", "Substitute declined"),
            EventKind::LineShortShipped { .. } => ("部分缺货，按实发货", "Shipped short"),
            EventKind::StockResolved => ("缺货已处理", "Shortage resolved"),
            EventKind::PickingStarted => ("开始拣货", "Picking started"),
            EventKind::LinePicked { .. } => ("已称重拣货", "Line picked"),
            EventKind::Packed { .. } => ("已打包", "Packed"),
            EventKind::CourierAssigned { .. } => ("已分配配送员", "Courier assigned"),
            EventKind::Dispatched { .. } => ("已出库，配送中", "Out for delivery"),
            EventKind::ExceptionReported { .. } => ("配送异常，正在处理", "Exception reported; being handled"),
            EventKind::DeliveryResumed { .. } => ("恢复配送", "Delivery resumed"),
            EventKind::DeliveryAttemptFailed { .. } => ("配送未成功", "Delivery attempt failed"),
            EventKind::RedeliveryScheduled { .. } => ("已安排再次配送", "Redelivery scheduled"),
            EventKind::Signed { .. } => ("已签收", "Signed"),
            EventKind::ReturnStarted { .. } => ("开始退货", "Return started"),
            EventKind::Returned { .. } => ("已退回仓库", "Returned"),
            EventKind::ClaimOpened { .. } => ("已提交理赔", "Claim opened"),
            EventKind::ClaimSettled { .. } => ("理赔已完成", "Claim settled"),
            EventKind::Cancelled { .. } => ("订单已取消", "Cancelled"),
            EventKind::ArrivedAtWarehouse { .. } => ("配送员到达仓库", "Courier at the warehouse"),
            EventKind::LeftWarehouse { .. } => ("配送员离开仓库", "Courier left the warehouse"),
            EventKind::ArrivedAtCustomer { .. } => ("配送员已到达", "Courier has arrived"),
            EventKind::HandedOver { .. } => ("已转交其他配送员", "Handed to another courier"),
            EventKind::GoodsCollected { .. } => ("新配送员已取货", "Goods collected by the new courier"),
            EventKind::AfterSalesOpened { .. } => ("已提交售后申请", "After-sales matter raised"),
            EventKind::AlertRaised { .. } => ("触发告警", "Alert raised"),
            EventKind::AlertCleared { .. } => ("告警已解除", "Alert cleared"),
            EventKind::AlertAcknowledged { .. } => ("告警已确认", "Alert acknowledged"),
            EventKind::ArrivingSoon { minutes, .. } => {
                return match self {
                    Lang::Zh => format!("配送员约 {minutes} 分钟后到达"),
                    Lang::En => format!("Arriving in about {minutes} minutes"),
                };
            }
            other => (other.name(), other.name()),
        };
        match self {
            Lang::Zh => zh.to_owned(),
            Lang::En => en.to_owned(),
        }
    }

    pub fn reason(self, reason: RejectReason) -> &'static str {
        let (zh, en) = match reason {
            RejectReason::Shortage => ("缺少", "Shortage"),
            RejectReason::Damaged => ("破损", "Damaged"),
            RejectReason::Quality => ("质量问题", "Quality"),
            RejectReason::WrongItem => ("货不对板", "Wrong item"),
            RejectReason::Other => ("其他", "Other"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    pub fn after_sales(self, kind: AfterSalesKind) -> &'static str {
        let (zh, en) = match kind {
            AfterSalesKind::QualityComplaint => ("质量投诉", "Quality complaint"),
            AfterSalesKind::ShortageFoundLater => ("事后发现短少", "Shortage found later"),
            AfterSalesKind::Exchange => ("换货", "Exchange"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// A reason on the courier's "report a problem" list.
    pub fn report_reason(self, reason: xianlu_core::report::ExceptionReason) -> &'static str {
        use xianlu_core::report::ExceptionReason as R;
        let (zh, en) = match reason {
            R::TrafficAccident => ("交通事故", "Traffic accident"),
            R::VehicleBreakdown => ("车辆故障", "Vehicle breakdown"),
            R::CustomerAbsent => ("客户不在", "Customer absent"),
            R::CustomerClosed => ("店铺未营业", "Closed"),
            R::CustomerRefused => ("客户拒收", "Customer refused"),
            R::GoodsDamaged => ("货物破损", "Goods damaged"),
            R::TemperatureProblem => ("温度异常", "Temperature problem"),
            R::WrongAddress => ("地址有误", "Wrong address"),
            R::Other => ("其他", "Other"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// What to do about a change the server refused.
    pub fn next_step(self, step: xianlu_core::NextStep) -> &'static str {
        use xianlu_core::NextStep as N;
        let (zh, en) = match step {
            N::RetryLater => ("稍后会自动重试", "It is retried by itself"),
            N::LogIn => ("请重新登录", "Log in again"),
            N::Reload => ("订单已变化，请刷新后重新操作", "The order changed: refresh and decide again"),
            N::FixRequest => ("内容有误，请修改后重新操作", "Something is wrong with it: do it again"),
            N::NotAllowed => ("你无权进行此操作，请联系商家", "You may not do this: call the office"),
            N::Gone => ("订单已转给他人或不存在，可放弃此操作", "The order is no longer yours: give the change up"),
            N::UpdateApp => ("请更新应用", "Update the app"),
            N::CheckDevice => ("手机存储异常，请联系商家", "The phone's storage failed: call the office"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// A column of the merchant's board.
    pub fn column(self, column: xianlu_core::board::Column) -> &'static str {
        use xianlu_core::board::Column as C;
        let (zh, en) = match column {
            C::Paid => ("待拣货", "Paid"),
            C::Picking => ("拣货/待出库", "Picking"),
            C::OutOfStock => ("缺货", "Out of stock"),
            C::Delivering => ("配送中", "Delivering"),
            C::Exception => ("异常", "Exceptions"),
            C::Signed => ("已签收", "Signed"),
            C::ReturnsAndClaims => ("退货/理赔", "Returns and claims"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// What an alert watches for.
    pub fn rule(self, rule: xianlu_domain::operations::AlertRule) -> &'static str {
        use xianlu_domain::operations::AlertRule as R;
        let (zh, en) = match rule {
            R::PredictedLate => ("预计迟到", "Predicted late"),
            R::Overdue => ("已超时", "Overdue"),
            R::PickingTooLong => ("拣货超时", "Picking too long"),
            R::NotCollected => ("待取货超时", "Not collected"),
            R::NoPosition => ("位置长时间未更新", "No position"),
            R::ShortUnresolved => ("缺货未处理", "Shortage unresolved"),
            R::ExceptionOpen => ("异常未处理", "Exception open"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// Who made a change, by kind (ids stay out of the screen; names are personal data).
    pub fn actor(self, kind: &str) -> &'static str {
        let (zh, en) = match kind {
            "courier" => ("配送员", "courier"),
            "customer" => ("客户", "customer"),
            "visitor" => ("持链接者", "link holder"),
            "system" | "server" => ("系统", "system"),
            "gateway" | "payment" => ("支付网关", "payment gateway"),
            _ => ("员工", "staff"),
        };
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    pub fn unit(self, unit: Unit) -> &'static str {
        match self {
            Lang::Zh => unit.label_zh(),
            Lang::En => match unit {
                Unit::G => "g",
                Unit::Kg => "kg",
                Unit::Jin => "jin",
                Unit::Liang => "liang",
                Unit::Piece => "pc",
                Unit::Box => "box",
            },
        }
    }
}

/// The fixed phrases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Loading,
    Expired,
    NotFound,
    Unreachable,
    Cancelled,
    Courier,
    Eta,
    Promised,
    Items,
    Timeline,
    LastSeen,
    SecondsAgo,
    MinutesAgo,
    ArrivingIn,
    Minutes,
    StopOf,
    Live,
    Reconnecting,
    Deliver,
    Server,
    Username,
    Password,
    LogIn,
    MyOrders,
    Back,
    SignFor,
    CheckLines,
    Refuse,
    SignHere,
    Clear,
    Confirm,
    Receipt,
    Hash,
    Charge,
    Balance,
    Verify,
    Verified,
    Missing,
    Altered,
    AfterSales,
    Note,
    Submit,
    Submitted,
    Matters,
    Photos,
    OnDuty,
    OffDuty,
    GoOnDuty,
    GoOffDuty,
    SharingLocation,
    Today,
    NoStops,
    Cold,
    OfflineBanner,
    ChangesWaiting,
    NeedsAttention,
    PickUp,
    Arrived,
    DeliverNow,
    FailedAttempt,
    DropOff,
    Report,
    Map,
    Planned,
    NewOrder,
    HandedToYou,
    TakenAway,
    Call,
    CopyAddress,
    Navigate,
    Notes,
    DeliveryNotePhoto,
    Reason,
    Retry,
    Discard,
    ConfirmQuestion,
    Yes,
    Cancel,
    Done,
    Collect,
    Dismiss,
    Saved,
    Weight,
    Waiting,
    Contact,
    WaitingForOffice,
    ReturnToWarehouse,
    Send,
    WhatToDo,
    Position,
    Refresh,
    LogOut,
    RedeliverTomorrow,
    Couriers,
    Aboard,
    NextStop,
    LockRoute,
    Unlock,
    PinTo,
    ShortShip,
    OpenClaim,
    SettleClaim,
    Amount,
    AllWindows,
    From,
    To,
    Severity,
    Board,
    Alerts,
    Acknowledge,
    Search,
    AllWarehouses,
    AllCouriers,
    AllStatuses,
    Behind,
    StartPicking,
    RecordPick,
    Pack,
    HandToCourier,
    DispatchNow,
    ResumeDelivery,
    StartReturn,
    ConfirmReturned,
    CancelOrder,
    Evidence,
    PickList,
    NoAlerts,
    Open,
    Cleared,
    Acknowledged,
    Customer,
    Lines,
    Picked,
    ProposeSubstitute,
    NothingToSubstitute,
    OrderedQuantity,
    CanPick,
    PricePerUnit,
    AnswerBy,
    SubstituteOffered,
    Accept,
    Decline,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_words_in_both_languages() {
        for status in Status::ALL {
            assert!(!Lang::Zh.status(status).is_empty() && !Lang::En.status(status).is_empty());
            assert_ne!(Lang::Zh.status(status), Lang::En.status(status), "{status}");
        }
    }

    #[test]
    fn units_read_as_on_a_delivery_note() {
        assert_eq!(Lang::Zh.unit(Unit::Jin), "斤");
        assert_eq!(Lang::En.unit(Unit::Liang), "liang");
    }
}
