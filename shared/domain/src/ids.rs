//! Typed ids. The server mints them (UUIDv7, time-ordered); the domain only
//! carries them, so it needs neither a clock nor randomness.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            pub const fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id!(
    /// An order's internal id.
    OrderId
);
id!(
    /// A merchant: the business that owns warehouses and sells.
    MerchantId
);
id!(
    /// One of a merchant's warehouses (with its stock and cold rooms).
    WarehouseId
);
id!(
    /// A customer business (restaurant or shop).
    CustomerId
);
id!(
    /// A contact person of a customer; their name and phone are personal data.
    ContactId
);
id!(
    /// A courier.
    CourierId
);

/// A human order number in the seed's style, `KL20230601001`: a merchant
/// prefix, the business date in the merchant's time zone, and a daily sequence
/// of at least three digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "KL20230601001"))]
#[serde(transparent)]
pub struct OrderNumber(String);

impl OrderNumber {
    pub fn new(prefix: &str, business_date: chrono::NaiveDate, sequence: u32) -> Self {
        OrderNumber(format!("{prefix}{}{sequence:03}", business_date.format("%Y%m%d")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts a stored or typed number: 2–8 capital letters, 8 digits of date,
    /// then at least three digits.
    pub fn parse(text: &str) -> Option<Self> {
        let prefix_len = text.bytes().take_while(u8::is_ascii_uppercase).count();
        let rest = &text[prefix_len..];
        let valid = (2..=8).contains(&prefix_len)
            && rest.len() >= 11
            && rest.bytes().all(|b| b.is_ascii_digit())
            && chrono::NaiveDate::parse_from_str(&rest[..8], "%Y%m%d").is_ok();
        valid.then(|| OrderNumber(text.to_owned()))
    }
}

impl std::fmt::Display for OrderNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The business date of an instant in a merchant's time zone. Cut-offs and
/// order numbers use it, never the UTC date.
pub fn business_date(at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> chrono::NaiveDate {
    at.with_timezone(&tz).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};

    #[test]
    fn order_number_uses_the_merchant_business_date() {
        // 2023-05-31 17:30 UTC is already 2023-06-01 in Shanghai.
        let at = Utc.with_ymd_and_hms(2023, 5, 31, 17, 30, 0).single().expect("valid");
        let date = business_date(at, chrono_tz::Asia::Shanghai);
        assert_eq!(date, NaiveDate::from_ymd_opt(2023, 6, 1).expect("valid"));
        assert_eq!(OrderNumber::new("KL", date, 1).as_str(), "KL20230601001");
        assert_eq!(OrderNumber::new("KL", date, 1234).as_str(), "KL202306011234");
    }

    #[test]
    fn order_numbers_parse_only_in_their_shape() {
        assert!(OrderNumber::parse("KL20230601001").is_some());
        assert!(OrderNumber::parse("KL20231301001").is_none());
        assert!(OrderNumber::parse("kl20230601001").is_none());
        assert!(OrderNumber::parse("KL2023060100").is_none());
    }
}
