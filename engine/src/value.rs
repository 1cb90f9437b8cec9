//! Field values, with an exact decimal for money (no binary floats for amounts).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One field's value. Each top-level field of a record holds one.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Value {
    /// No value (an `Option::None`, or a cleared field).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A binary float — never for money: use [`Value::Decimal`].
    Float(f64),
    /// An exact decimal number: amounts, prices, quantities with decimals.
    Decimal(Decimal),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// A short name of the variant, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }

    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Decimal> for Value {
    fn from(v: Decimal) -> Self {
        Value::Decimal(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

/// The largest number of digits after the decimal point.
pub const DECIMAL_SCALE_MAX: u8 = 28;

/// An exact decimal: `mantissa × 10^-scale`. `12.50` is mantissa 1250, scale 2; the scale is kept
/// as written, so `12.5` and `12.50` are different values (as a receipt prints them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Decimal {
    mantissa: i128,
    scale: u8,
}

/// The name under which [`Decimal`] passes through serde as a newtype, so that the record
/// mapping (crate::mapping) recognises it and stores a [`Value::Decimal`] rather than text.
pub(crate) const DECIMAL_SERDE_NAME: &str = "$outpost::Decimal";

impl Decimal {
    /// `mantissa × 10^-scale`; `None` when the scale exceeds [`DECIMAL_SCALE_MAX`].
    pub fn new(mantissa: i128, scale: u8) -> Option<Self> {
        (scale <= DECIMAL_SCALE_MAX).then_some(Self { mantissa, scale })
    }

    /// The integer `mantissa`.
    pub fn mantissa(self) -> i128 {
        self.mantissa
    }

    /// The number of digits after the point.
    pub fn scale(self) -> u8 {
        self.scale
    }
}

/// Why a text is not a decimal.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error(
    "not a decimal number: {0:?} (expected digits with an optional sign and point, like -12.50)"
)]
pub struct DecimalParseError(pub String);

impl FromStr for Decimal {
    type Err = DecimalParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DecimalParseError(s.to_owned());
        let (negative, digits) = match s.as_bytes().first() {
            Some(b'-') => (true, s.get(1..).ok_or_else(err)?),
            Some(b'+') => (false, s.get(1..).ok_or_else(err)?),
            _ => (false, s),
        };
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        if !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        let scale = u8::try_from(frac_part.len())
            .ok()
            .filter(|s| *s <= DECIMAL_SCALE_MAX)
            .ok_or_else(err)?;
        let mut mantissa: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or_else(err)?;
        }
        if negative {
            mantissa = -mantissa;
        }
        Ok(Self { mantissa, scale })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = usize::from(self.scale);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int_part, frac_part) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int_part}.{frac_part}")
    }
}

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(DECIMAL_SERDE_NAME, &self.to_string())
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DecimalVisitor;
        impl<'de> serde::de::Visitor<'de> for DecimalVisitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal number as text, like \"12.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Decimal, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_newtype_struct(DECIMAL_SERDE_NAME, DecimalVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trips_through_text() {
        for s in [
            "0",
            "12.50",
            "-0.05",
            "1000",
            "-7",
            "0.000001",
            "123456789.123",
        ] {
            let d: Decimal = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("+3.1".parse::<Decimal>().unwrap().to_string(), "3.1");
        assert_eq!(".5".parse::<Decimal>().unwrap().to_string(), "0.5");
        for bad in ["", "-", ".", "1.2.3", "abc", "1e5", "--1", "1 "] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad:?} parsed");
        }
        let d = Decimal::new(-1250, 2).unwrap();
        assert_eq!(d.to_string(), "-12.50");
        assert!(Decimal::new(1, 29).is_none());
    }

    #[test]
    fn value_round_trips_through_postcard() {
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-5),
            Value::Float(1.5),
            Value::Decimal("19.99".parse().unwrap()),
            Value::Text("Lyon".into()),
            Value::Bytes(vec![0, 1, 255]),
        ];
        for v in values {
            let bytes = postcard::to_stdvec(&v).unwrap();
            let back: Value = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, v);
        }
    }
}
