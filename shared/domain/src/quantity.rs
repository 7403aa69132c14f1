//! Units, exact quantities and money.
//!
//! Nothing here is a float: quantities are integers in thousandths of their
//! unit, base quantities are whole grams or pieces, money is whole fen
//! (0.01 CNY). Floats appear only at the JSON edge, and only for values that
//! convert back exactly.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The unit a line is ordered or priced in.
///
/// 1 斤 (jin) is exactly 500 g and 1 两 (liang) exactly 50 g, as in mainland
/// Chinese trade. Boxes and pieces are counted; a line ordered in them carries a
/// nominal weight per piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Gram.
    G,
    /// Kilogram.
    Kg,
    /// 斤, 500 g.
    Jin,
    /// 两, 50 g.
    Liang,
    /// A single piece (a cabbage, a tray of eggs).
    Piece,
    /// A box or case.
    Box,
}

/// What a base quantity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Grams,
    Pieces,
}

impl Unit {
    /// Grams in one unit, for units of weight.
    pub const fn grams(self) -> Option<i64> {
        match self {
            Unit::G => Some(1),
            Unit::Kg => Some(1000),
            Unit::Jin => Some(500),
            Unit::Liang => Some(50),
            Unit::Piece | Unit::Box => None,
        }
    }

    pub const fn dimension(self) -> Dimension {
        match self.grams() {
            Some(_) => Dimension::Grams,
            None => Dimension::Pieces,
        }
    }

    /// How the unit is written on a Chinese delivery note.
    pub const fn label_zh(self) -> &'static str {
        match self {
            Unit::G => "克",
            Unit::Kg => "公斤",
            Unit::Jin => "斤",
            Unit::Liang => "两",
            Unit::Piece => "个",
            Unit::Box => "箱",
        }
    }

    /// Base units (grams or pieces) in one of this unit.
    pub const fn base_per_unit(self) -> i64 {
        match self.grams() {
            Some(g) => g,
            None => 1,
        }
    }
}

/// An exact quantity in thousandths of its unit (2.5 kg is `Quantity(2500)`).
///
/// On the wire it is a JSON number with at most three decimals; more precision
/// is rejected rather than rounded away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = f64))]
pub struct Quantity(i64);

impl Quantity {
    pub const ZERO: Quantity = Quantity(0);

    pub const fn from_milli(milli: i64) -> Self {
        Quantity(milli)
    }

    pub const fn whole(units: i64) -> Self {
        Quantity(units * 1000)
    }

    pub const fn milli(self) -> i64 {
        self.0
    }

    /// Parses a decimal number with at most three fractional digits.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if frac_part.len() > 3
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let int: i64 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        let mut frac: i64 = if frac_part.is_empty() { 0 } else { frac_part.parse().ok()? };
        for _ in frac_part.len()..3 {
            frac *= 10;
        }
        let milli = int.checked_mul(1000)?.checked_add(frac)?;
        Some(Quantity(if negative { -milli } else { milli }))
    }

    /// Base units for this many `unit`s, or `None` when the result would not be
    /// a whole number of grams or pieces (0.5 piece, 0.0001 kg).
    pub fn to_base(self, unit: Unit) -> Option<i64> {
        let scaled = self.0.checked_mul(unit.base_per_unit())?;
        (scaled % 1000 == 0).then_some(scaled / 1000)
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / 1000, abs % 1000);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:03}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            serializer.serialize_i64(self.0 / 1000)
        } else {
            // Shortest round-trip formatting prints 2500/1000 as 2.5 exactly.
            serializer.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number with at most three decimals")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                v.checked_mul(1000).map(Quantity).ok_or_else(|| E::custom("quantity out of range"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                i64::try_from(v).map_err(|_| E::custom("quantity out of range")).and_then(|v| self.visit_i64(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                // Go through the shortest decimal form so 0.1 means 0.1.
                self.visit_str(&format!("{v}"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v)
                    .ok_or_else(|| E::custom(format!("{v} is not a quantity with at most three decimals")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Money in fen (0.01 CNY).
pub type Fen = i64;

/// A unit price: `fen` for one `per`.
///
/// Fresh produce is often priced per 斤 while stock is counted in kilograms; a
/// box may be priced per kilogram (catch weight) and weighed at picking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    pub fen: Fen,
    pub per: Unit,
}

/// Divides and rounds half away from zero (四舍五入), without overflow for the
/// magnitudes an order can reach.
pub fn div_round(numerator: i128, denominator: i128) -> i128 {
    debug_assert!(denominator > 0);
    let half = denominator / 2;
    if numerator >= 0 { (numerator + half) / denominator } else { -((-numerator + half) / denominator) }
}

impl Price {
    /// The amount for `base` grams (if the price is per weight) or pieces.
    pub fn amount(self, base: i64) -> Fen {
        let amount = div_round(i128::from(base) * i128::from(self.fen), i128::from(self.per.base_per_unit()));
        Fen::try_from(amount).unwrap_or(Fen::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jin_and_liang_are_exact_grams() {
        assert_eq!(Quantity::whole(3).to_base(Unit::Jin), Some(1500));
        assert_eq!(Quantity::parse("2.5").and_then(|q| q.to_base(Unit::Liang)), Some(125));
        assert_eq!(Quantity::parse("1.25").and_then(|q| q.to_base(Unit::Kg)), Some(1250));
        assert_eq!(Quantity::parse("0.5").and_then(|q| q.to_base(Unit::Box)), None);
    }

    #[test]
    fn quantities_round_trip_through_json_exactly() {
        for text in ["5", "2.5", "0.1", "0.001", "1234.567"] {
            let q: Quantity = serde_json::from_str(text).expect("parses");
            assert_eq!(serde_json::to_string(&q).expect("serialises"), text);
        }
        assert!(serde_json::from_str::<Quantity>("0.0001").is_err());
        assert!(serde_json::from_str::<Quantity>("\"abc\"").is_err());
    }

    #[test]
    fn price_per_jin_applies_to_grams_and_rounds_half_up() {
        let spinach = Price { fen: 350, per: Unit::Jin };
        assert_eq!(spinach.amount(2500), 1750);
        // 1 g at 3.50/斤 is 0.7 fen → 1 fen
        assert_eq!(spinach.amount(1), 1);
        let pork = Price { fen: 3999, per: Unit::Kg };
        // 1.234 kg × 39.99 = 49.34766 → 49.35
        assert_eq!(pork.amount(1234), 4935);
    }
}
