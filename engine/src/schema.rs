//! The schema: tables, their fields and their ownership policies, declared by the host
//! application and identical on every site. Its [`Schema::fingerprint`] lets flows refuse a
//! mismatch.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Who may write a table's records (SPEC R2–R8).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Policy {
    /// Any site creates and updates; field-level last-writer-wins (R2). Customers, prospects.
    Shared,
    /// Only central writes (R3). Articles, prices, the sync configuration.
    CentralOnly,
    /// Only the creating site or central writes (R5); reservable (R7). With
    /// `frozen_once_synced`, the remote creator may no longer write once the document has been
    /// emitted to central (R6); a cash register opts out (it stays open across syncs).
    Document {
        /// Whether emission freezes the document for its remote creator (R6).
        frozen_once_synced: bool,
    },
}

/// The type a field's values must have. `Null` is always accepted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum FieldKind {
    /// Any value.
    Any,
    /// [`Value::Bool`].
    Bool,
    /// [`Value::Int`].
    Integer,
    /// [`Value::Float`].
    Float,
    /// [`Value::Decimal`] — money and quantities with decimals.
    Decimal,
    /// [`Value::Text`].
    Text,
    /// [`Value::Bytes`].
    Bytes,
}

impl FieldKind {
    /// Whether `value` fits this kind.
    pub fn accepts(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (_, Value::Null)
                | (FieldKind::Any, _)
                | (FieldKind::Bool, Value::Bool(_))
                | (FieldKind::Integer, Value::Int(_))
                | (FieldKind::Float, Value::Float(_))
                | (FieldKind::Decimal, Value::Decimal(_))
                | (FieldKind::Text, Value::Text(_))
                | (FieldKind::Bytes, Value::Bytes(_))
        )
    }
}

/// One table's declaration.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TableDef {
    name: String,
    policy: Policy,
    fields: BTreeMap<String, FieldKind>,
    // Invariant: every owner-exclusive field is declared in `fields`.
    owner_exclusive: BTreeSet<String>,
}

impl TableDef {
    /// A table with a policy and no fields yet.
    pub fn new(name: &str, policy: Policy) -> Self {
        TableDef {
            name: name.to_owned(),
            policy,
            fields: BTreeMap::new(),
            owner_exclusive: BTreeSet::new(),
        }
    }

    /// A [`Policy::Shared`] table.
    pub fn shared(name: &str) -> Self {
        Self::new(name, Policy::Shared)
    }

    /// A [`Policy::CentralOnly`] table.
    pub fn central_only(name: &str) -> Self {
        Self::new(name, Policy::CentralOnly)
    }

    /// A [`Policy::Document`] table, frozen for its remote creator once synced.
    pub fn document(name: &str) -> Self {
        Self::new(
            name,
            Policy::Document {
                frozen_once_synced: true,
            },
        )
    }

    /// Declares a field.
    pub fn field(mut self, name: &str, kind: FieldKind) -> Self {
        self.fields.insert(name.to_owned(), kind);
        self
    }

    /// Declares a field that only the record's creator site may write, not even central (R8).
    pub fn owner_exclusive_field(mut self, name: &str, kind: FieldKind) -> Self {
        self.fields.insert(name.to_owned(), kind);
        self.owner_exclusive.insert(name.to_owned());
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The declared type of a field, if declared.
    pub fn field_kind(&self, field: &str) -> Option<FieldKind> {
        self.fields.get(field).copied()
    }

    /// The declared fields, by name.
    pub fn fields(&self) -> impl Iterator<Item = (&str, FieldKind)> {
        self.fields.iter().map(|(n, k)| (n.as_str(), *k))
    }

    /// Whether only the creator may write this field (R8).
    pub fn is_owner_exclusive(&self, field: &str) -> bool {
        self.owner_exclusive.contains(field)
    }

    /// Whether records of this table are documents (R5–R7).
    pub fn is_document(&self) -> bool {
        matches!(self.policy, Policy::Document { .. })
    }

    /// Whether its records can be frozen for their remote creator once synced (R6): only then
    /// does a write need to look the freeze up.
    pub fn freezes(&self) -> bool {
        matches!(
            self.policy,
            Policy::Document {
                frozen_once_synced: true
            }
        )
    }
}

/// What is wrong with a schema declaration.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A table or field name outside `[a-z_][a-z0-9_]*`, up to 64 bytes.
    #[error(
        "invalid {what} name {name:?}: use a-z, 0-9 and _, starting with a letter or _, at most 64 bytes"
    )]
    InvalidName {
        /// "table" or "field".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The same table declared twice.
    #[error("table {0} is declared twice")]
    DuplicateTable(String),
    /// A table without fields.
    #[error("table {0} declares no field")]
    NoFields(String),
}

/// The longest table or field name.
pub const NAME_LEN_MAX: usize = 64;

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= NAME_LEN_MAX
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The set of tables every site of a deployment declares identically.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Schema {
    tables: BTreeMap<String, TableDef>,
}

impl Schema {
    /// Checks and assembles a schema.
    pub fn new(tables: impl IntoIterator<Item = TableDef>) -> Result<Self, SchemaError> {
        let mut out = BTreeMap::new();
        for table in tables {
            if !valid_name(&table.name) {
                return Err(SchemaError::InvalidName {
                    what: "table",
                    name: table.name,
                });
            }
            if table.fields.is_empty() {
                return Err(SchemaError::NoFields(table.name));
            }
            if let Some(bad) = table.fields.keys().find(|f| !valid_name(f)) {
                return Err(SchemaError::InvalidName {
                    what: "field",
                    name: bad.clone(),
                });
            }
            if out.contains_key(&table.name) {
                return Err(SchemaError::DuplicateTable(table.name));
            }
            out.insert(table.name.clone(), table);
        }
        Ok(Schema { tables: out })
    }

    /// A table's declaration.
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.get(name)
    }

    /// Every table, by name.
    pub fn tables(&self) -> impl Iterator<Item = &TableDef> {
        self.tables.values()
    }

    /// A 64-bit fingerprint of the declaration (FNV-1a over its canonical postcard encoding):
    /// two sites with the same fingerprint declared the same tables, fields and policies.
    pub fn fingerprint(&self) -> u64 {
        // The encoding of BTreeMaps is ordered, so it is canonical. Encoding into a Vec cannot
        // fail for these plain types; an empty input would still give a stable fingerprint.
        let bytes = postcard::to_stdvec(&self.tables).unwrap_or_default();
        fnv1a64(&bytes)
    }
}

/// FNV-1a, 64-bit (a simple, stable, documented hash; not for security).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_validation_and_fingerprint() {
        let a = Schema::new([
            TableDef::shared("customers").field("name", FieldKind::Text),
            TableDef::central_only("articles").field("price", FieldKind::Decimal),
        ])
        .unwrap();
        let b = Schema::new([
            TableDef::central_only("articles").field("price", FieldKind::Decimal),
            TableDef::shared("customers").field("name", FieldKind::Text),
        ])
        .unwrap();
        assert_eq!(
            a.fingerprint(),
            b.fingerprint(),
            "order of declaration is irrelevant"
        );
        let c = Schema::new([
            TableDef::shared("customers").field("name", FieldKind::Text),
            TableDef::shared("articles").field("price", FieldKind::Decimal),
        ])
        .unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint(), "a policy change shows");

        assert!(matches!(
            Schema::new([TableDef::shared("Bad").field("x", FieldKind::Any)]),
            Err(SchemaError::InvalidName { what: "table", .. })
        ));
        assert!(matches!(
            Schema::new([TableDef::shared("t").field("x y", FieldKind::Any)]),
            Err(SchemaError::InvalidName { what: "field", .. })
        ));
        assert!(matches!(
            Schema::new([TableDef::shared("t")]),
            Err(SchemaError::NoFields(_))
        ));
        assert!(matches!(
            Schema::new([
                TableDef::shared("t").field("x", FieldKind::Any),
                TableDef::shared("t").field("y", FieldKind::Any)
            ]),
            Err(SchemaError::DuplicateTable(_))
        ));
    }

    #[test]
    fn field_kinds_accept_null_and_their_own_values() {
        assert!(FieldKind::Text.accepts(&Value::Null));
        assert!(FieldKind::Text.accepts(&Value::Text("x".into())));
        assert!(!FieldKind::Text.accepts(&Value::Int(1)));
        assert!(!FieldKind::Decimal.accepts(&Value::Float(1.0)));
        assert!(FieldKind::Any.accepts(&Value::Bytes(vec![])));
    }
}
