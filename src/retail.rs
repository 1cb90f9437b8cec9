//! The retail schema: the embedding example, the schema of the stores the `outpost` program
//! and the daemons run, the simulator's workload and the demo's.

use outpost_engine::{FieldKind, Policy, Schema, SchemaError, TableDef};

/// The built-in retail schema.
///
/// | table | policy |
/// |---|---|
/// | `articles` | central only (R3) |
/// | `customers`, `prospects` | shared (R2) |
/// | `sales_documents`, `pos_receipts`, `stock_documents` | documents (R5–R7); stock documents only for permitted sites (R4) |
/// | `cash_registers` | owner-only, not frozen once synced; `closed_at` owner-exclusive (R8) |
pub fn try_schema() -> Result<Schema, SchemaError> {
    let text = FieldKind::Text;
    let party = |name: &str| {
        TableDef::shared(name)
            .field("name", text)
            .field("address", text)
            .field("city", text)
            .field("phone", text)
            .field("email", text)
    };
    Schema::new([
        TableDef::central_only("articles")
            .field("name", text)
            .field("price", FieldKind::Decimal),
        party("customers"),
        party("prospects"),
        TableDef::document("sales_documents")
            .field("customer", text)
            .field("date", text)
            .field("total", FieldKind::Decimal)
            .field("status", text),
        TableDef::document("pos_receipts")
            .field("register", text)
            .field("total", FieldKind::Decimal)
            .field("paid_with", text),
        TableDef::document("stock_documents")
            .field("article", text)
            .field("quantity", FieldKind::Integer)
            .field("kind", text),
        TableDef::new(
            "cash_registers",
            Policy::Document {
                frozen_once_synced: false,
            },
        )
        .field("opened_at", text)
        .owner_exclusive_field("closed_at", text),
    ])
}

/// The built-in retail schema (see [`try_schema`]); its declaration is constant and valid.
pub fn schema() -> Schema {
    match try_schema() {
        Ok(s) => s,
        // A constant declaration checked by this crate's tests: a failure is a bug here.
        Err(e) => unreachable!("the retail schema is invalid: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_retail_schema_is_valid() {
        super::try_schema().unwrap();
    }
}
