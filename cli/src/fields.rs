//! What the command line takes as a record's fields and key: `--fields` is one JSON object that
//! names each field once and at least one, `--key` is not empty. JSON itself lets an object
//! name a key twice (a parser keeps the last), which would drop a value the operator typed
//! without a word; here it is an error.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A `--fields` object, its fields in the order given.
pub type Fields = serde_json::Map<String, serde_json::Value>;

struct Checked(Fields);

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Checked;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                let mut out = Fields::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!(
                            "field {k:?} is given twice; give each field once"
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(Checked(out))
            }
        }
        d.deserialize_map(Object)
    }
}

/// Parses `--fields`: a JSON object naming at least one field, each once.
pub fn parse(text: &str) -> Result<Fields, String> {
    let Checked(fields) =
        serde_json::from_str(text).map_err(|e| format!("--fields is not a JSON object: {e}"))?;
    if fields.is_empty() {
        return Err(
            "--fields names no field: nothing to write (e.g. --fields '{\"city\": \"Lyon\"}')"
                .into(),
        );
    }
    Ok(fields)
}

/// Checks `--key`: a record's key is not empty.
pub fn key(key: &str) -> Result<&str, String> {
    if key.is_empty() {
        return Err("--key is empty: a record needs a key".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_must_be_one_object_naming_each_field_once_and_at_least_one() {
        let ok = parse(r#"{"name": "Dupont", "city": "Lyon"}"#).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(
            parse(r#"{"city": "Lyon", "city": "Paris"}"#)
                .unwrap_err()
                .contains("\"city\" is given twice")
        );
        assert!(parse("{}").unwrap_err().contains("names no field"));
        assert!(parse("[1]").unwrap_err().contains("not a JSON object"));
        assert!(parse("{").unwrap_err().contains("not a JSON object"));
        assert!(key("").is_err());
        assert_eq!(key("K1"), Ok("K1"));
    }
}
