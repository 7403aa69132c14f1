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
