//! How typed values map to portable columns (TEXT, BIGINT, DOUBLE PRECISION) and back.
//!
//! Writes are canonical: addresses and hashes lowercase `0x` hex, uint256 values decimal, so two
//! spellings of one value cannot make two rows. Reads check every value and name the table and
//! column of one that does not parse ([`DbError::Corrupt`]).

use std::str::FromStr;

use alloy_primitives::{Address, B256, Bytes, U256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::DbError;

/// An address as stored: lowercase `0x` hex.
pub(crate) fn address(address: &Address) -> String {
    format!("{address:#x}")
}

/// A 32-byte hash as stored: lowercase `0x` hex.
pub(crate) fn hash(hash: &B256) -> String {
    format!("{hash:#x}")
}

/// Addresses as stored: a JSON array of lowercase `0x` hex strings.
pub(crate) fn addresses(addresses: &[Address]) -> String {
    let texts: Vec<String> = addresses.iter().map(address).collect();
    serde_json::Value::from(texts).to_string()
}

/// A count or time as stored: a signed 64-bit integer.
pub(crate) fn int(table: &'static str, column: &'static str, value: u64) -> Result<i64, DbError> {
    i64::try_from(value).map_err(|_| DbError::Unstorable {
        table,
        column,
        value: value.to_string(),
    })
}

/// A real as stored: finite only.
pub(crate) fn real(table: &'static str, column: &'static str, value: f64) -> Result<f64, DbError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DbError::Unstorable {
            table,
            column,
            value: value.to_string(),
        })
    }
}

/// Typed reads of one row of `table`.
pub(crate) struct Columns<'r> {
    row: &'r AnyRow,
    table: &'static str,
}

impl<'r> Columns<'r> {
    pub(crate) fn new(row: &'r AnyRow, table: &'static str) -> Self {
        Columns { row, table }
    }

    fn corrupt(&self, column: &'static str, value: impl Into<String>) -> DbError {
        DbError::Corrupt {
            table: self.table,
            column,
            value: value.into(),
        }
    }

    fn get<T>(&self, column: &'static str) -> Result<T, DbError>
    where
        T: for<'q> sqlx::Decode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.row
            .try_get(column)
            .map_err(|e| self.corrupt(column, format!("<unreadable: {e}>")))
    }

    pub(crate) fn text(&self, column: &'static str) -> Result<String, DbError> {
        self.get(column)
    }

    pub(crate) fn optional_text(&self, column: &'static str) -> Result<Option<String>, DbError> {
        self.get(column)
    }

    fn parsed<T>(
        &self,
        column: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, DbError> {
        let text = self.text(column)?;
        parse(&text).ok_or_else(|| self.corrupt(column, text))
    }

    pub(crate) fn address(&self, column: &'static str) -> Result<Address, DbError> {
        self.parsed(column, parse_address)
    }

    /// `""` reads as `None`.
    pub(crate) fn optional_address(
        &self,
        column: &'static str,
    ) -> Result<Option<Address>, DbError> {
        self.parsed(column, |s| {
            if s.is_empty() {
                Some(None)
            } else {
                parse_address(s).map(Some)
            }
        })
    }

    pub(crate) fn hash(&self, column: &'static str) -> Result<B256, DbError> {
        self.parsed(column, |s| {
            s.strip_prefix("0x")?;
            B256::from_str(s).ok()
        })
    }

    pub(crate) fn bytes(&self, column: &'static str) -> Result<Bytes, DbError> {
        self.parsed(column, |s| {
            s.strip_prefix("0x")?;
            Bytes::from_str(s).ok()
        })
    }

    pub(crate) fn u256(&self, column: &'static str) -> Result<U256, DbError> {
        self.parsed(column, parse_u256)
    }

    pub(crate) fn addresses(&self, column: &'static str) -> Result<Vec<Address>, DbError> {
        self.parsed(column, |s| {
            let texts: Vec<String> = serde_json::from_str(s).ok()?;
            texts.iter().map(|t| parse_address(t)).collect()
        })
    }

    pub(crate) fn u64(&self, column: &'static str) -> Result<u64, DbError> {
        let value: i64 = self.get(column)?;
        u64::try_from(value).map_err(|_| self.corrupt(column, value.to_string()))
    }

    /// SQL `NULL` reads as `None`.
    pub(crate) fn optional_u64(&self, column: &'static str) -> Result<Option<u64>, DbError> {
        let value: Option<i64> = self.get(column)?;
        value
            .map(|v| u64::try_from(v).map_err(|_| self.corrupt(column, v.to_string())))
            .transpose()
    }

    /// SQL `NULL` reads as `None`.
    pub(crate) fn optional_hash(&self, column: &'static str) -> Result<Option<B256>, DbError> {
        match self.optional_text(column)? {
            None => Ok(None),
            Some(s) => match s.strip_prefix("0x").and_then(|_| B256::from_str(&s).ok()) {
                Some(h) => Ok(Some(h)),
                None => Err(self.corrupt(column, s)),
            },
        }
    }

    /// A small integer (a class index): 0 to 255.
    pub(crate) fn u8(&self, column: &'static str) -> Result<u8, DbError> {
        let value: i64 = self.get(column)?;
        u8::try_from(value).map_err(|_| self.corrupt(column, value.to_string()))
    }

    /// SQL `NULL` reads as `None`.
    pub(crate) fn optional_u8(&self, column: &'static str) -> Result<Option<u8>, DbError> {
        let value: Option<i64> = self.get(column)?;
        value
            .map(|v| u8::try_from(v).map_err(|_| self.corrupt(column, v.to_string())))
            .transpose()
    }

    pub(crate) fn f64(&self, column: &'static str) -> Result<f64, DbError> {
        let value: f64 = self.get(column)?;
        if value.is_finite() {
            Ok(value)
        } else {
            Err(self.corrupt(column, value.to_string()))
        }
    }
}

fn parse_address(s: &str) -> Option<Address> {
    s.strip_prefix("0x")?;
    Address::from_str(s).ok()
}

/// Decimal digits only (no sign, no `0x`), at most 2^256 - 1.
fn parse_u256(s: &str) -> Option<U256> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(s, 10).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_parse_back() {
        let a = Address::repeat_byte(0xAB);
        assert_eq!(address(&a), format!("0x{}", "ab".repeat(20)));
        assert_eq!(parse_address(&address(&a)), Some(a));
        assert_eq!(parse_address(&"ab".repeat(20)), None, "0x is required");
        assert_eq!(parse_u256("0"), Some(U256::ZERO));
        assert_eq!(parse_u256(&U256::MAX.to_string()), Some(U256::MAX));
        for bad in ["", "-1", "+1", "0x10", "1e3", " 1"] {
            assert_eq!(parse_u256(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u256(&format!("{}0", U256::MAX)), None, "overflow");
        assert_eq!(addresses(&[]), "[]");
    }

    #[test]
    fn integers_above_i64_are_refused() {
        assert_eq!(int("t", "c", 5).ok(), Some(5));
        assert!(matches!(
            int("t", "c", u64::MAX),
            Err(DbError::Unstorable { column: "c", .. })
        ));
        assert!(real("t", "r", f64::NAN).is_err());
        assert!(real("t", "r", f64::INFINITY).is_err());
        assert_eq!(real("t", "r", 0.5).ok(), Some(0.5));
    }
}
