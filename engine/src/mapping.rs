//! The serde mapping between a host application's own structs and a record's fields: one
//! register per top-level field.
//!
//! A struct (or a map with text keys) maps to its fields. Each field's value must be a scalar:
//! bool, integer (up to `i64`), float, [`Decimal`](crate::Decimal), text, char, bytes
//! (`serde_bytes`), unit enum variants (stored as their name as text), or an `Option` of one of
//! these (`None` is [`Value::Null`]). Nested structs, sequences and maps are refused with a clear
//! error: give them a table of their own, or store them as bytes.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};
use serde::ser::{self, Impossible, Serialize};

use crate::error::Error;
use crate::value::{DECIMAL_SERDE_NAME, Value};

/// A mapping failure.
#[derive(Debug)]
pub struct MapError(String);

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MapError {}

impl ser::Error for MapError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        MapError(msg.to_string())
    }
}

impl de::Error for MapError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        MapError(msg.to_string())
    }
}

impl From<MapError> for Error {
    fn from(e: MapError) -> Self {
        Error::Mapping(e.0)
    }
}

fn unsupported(what: &str) -> MapError {
    MapError(format!(
        "a field cannot hold {what}: fields hold scalars (store nested data in its own table, or as bytes)"
    ))
}

/// A host value's top-level fields as `(name, value)` pairs.
pub fn to_fields<T: Serialize + ?Sized>(value: &T) -> Result<Vec<(String, Value)>, MapError> {
    value.serialize(RecordSerializer)
}

/// A host value rebuilt from a record's fields.
pub fn from_fields<T: DeserializeOwned>(fields: &BTreeMap<String, Value>) -> Result<T, Error> {
    T::deserialize(RecordDeserializer { fields }).map_err(Error::from)
}

/// One value to a [`Value`].
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, MapError> {
    value.serialize(ValueSerializer)
}

struct RecordSerializer;

/// Collects the fields of a struct or map.
struct FieldsCollector {
    fields: Vec<(String, Value)>,
    pending_key: Option<String>,
}

impl ser::Serializer for RecordSerializer {
    type Ok = Vec<(String, Value)>;
    type Error = MapError;
    type SerializeSeq = Impossible<Self::Ok, MapError>;
    type SerializeTuple = Impossible<Self::Ok, MapError>;
    type SerializeTupleStruct = Impossible<Self::Ok, MapError>;
    type SerializeTupleVariant = Impossible<Self::Ok, MapError>;
    type SerializeMap = FieldsCollector;
    type SerializeStruct = FieldsCollector;
    type SerializeStructVariant = Impossible<Self::Ok, MapError>;

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<FieldsCollector, MapError> {
        Ok(FieldsCollector {
            fields: Vec::with_capacity(len),
            pending_key: None,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<FieldsCollector, MapError> {
        Ok(FieldsCollector {
            fields: Vec::with_capacity(len.unwrap_or(0)),
            pending_key: None,
        })
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Self::Ok, MapError> {
        value.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_i8(self, _: i8) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_i16(self, _: i16) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_i32(self, _: i32) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_i64(self, _: i64) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_u8(self, _: u8) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_u16(self, _: u16) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_u32(self, _: u32) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_u64(self, _: u64) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_f32(self, _: f32) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_f64(self, _: f64) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_char(self, _: char) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_str(self, _: &str) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_none(self) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_unit(self) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, MapError> {
        Err(not_a_record())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, MapError> {
        Err(not_a_record())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, MapError> {
        Err(not_a_record())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, MapError> {
        Err(not_a_record())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, MapError> {
        Err(not_a_record())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, MapError> {
        Err(not_a_record())
    }
}

fn not_a_record() -> MapError {
    MapError("a record maps from a struct or a map with text keys".into())
}

impl ser::SerializeStruct for FieldsCollector {
    type Ok = Vec<(String, Value)>;
    type Error = MapError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), MapError> {
        let v = value
            .serialize(ValueSerializer)
            .map_err(|e| MapError(format!("field {key}: {e}")))?;
        self.fields.push((key.to_owned(), v));
        Ok(())
    }
    fn end(self) -> Result<Self::Ok, MapError> {
        Ok(self.fields)
    }
}

impl ser::SerializeMap for FieldsCollector {
    type Ok = Vec<(String, Value)>;
    type Error = MapError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), MapError> {
        match key.serialize(ValueSerializer)? {
            Value::Text(k) => {
                self.pending_key = Some(k);
                Ok(())
            }
            other => Err(MapError(format!(
                "map keys must be text, not {}",
                other.kind_name()
            ))),
        }
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), MapError> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| MapError("map value without a key".into()))?;
        let v = value
            .serialize(ValueSerializer)
            .map_err(|e| MapError(format!("field {key}: {e}")))?;
        self.fields.push((key, v));
        Ok(())
    }
    fn end(self) -> Result<Self::Ok, MapError> {
        Ok(self.fields)
    }
}

/// Serializes one scalar into a [`Value`].
struct ValueSerializer;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = MapError;
    type SerializeSeq = Impossible<Value, MapError>;
    type SerializeTuple = Impossible<Value, MapError>;
    type SerializeTupleStruct = Impossible<Value, MapError>;
    type SerializeTupleVariant = Impossible<Value, MapError>;
    type SerializeMap = Impossible<Value, MapError>;
    type SerializeStruct = Impossible<Value, MapError>;
    type SerializeStructVariant = Impossible<Value, MapError>;

    fn serialize_bool(self, v: bool) -> Result<Value, MapError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, MapError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, MapError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, MapError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, MapError> {
        Ok(Value::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, MapError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, MapError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, MapError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, MapError> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| MapError(format!("{v} does not fit a 64-bit signed integer")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, MapError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, MapError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, MapError> {
        Ok(Value::Text(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, MapError> {
        Ok(Value::Text(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, MapError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, MapError> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, MapError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, MapError> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, MapError> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value, MapError> {
        Ok(Value::Text(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value, MapError> {
        let inner = value.serialize(ValueSerializer)?;
        if name == DECIMAL_SERDE_NAME {
            let text = inner
                .as_text()
                .ok_or_else(|| MapError("a decimal serializes as text".into()))?;
            return text
                .parse()
                .map(Value::Decimal)
                .map_err(|e| MapError(e.to_string()));
        }
        Ok(inner)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Value, MapError> {
        Err(unsupported("an enum variant with data"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, MapError> {
        Err(unsupported("a sequence"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, MapError> {
        Err(unsupported("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, MapError> {
        Err(unsupported("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, MapError> {
        Err(unsupported("an enum variant with data"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, MapError> {
        Err(unsupported("a map"))
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, MapError> {
        Err(unsupported("a nested struct"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, MapError> {
        Err(unsupported("an enum variant with data"))
    }
}

/// Deserializes a struct from a record's fields.
struct RecordDeserializer<'a> {
    fields: &'a BTreeMap<String, Value>,
}

impl<'de> de::Deserializer<'de> for RecordDeserializer<'_> {
    type Error = MapError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        visitor.visit_map(FieldsAccess {
            iter: self.fields.iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct FieldsAccess<'a> {
    iter: std::collections::btree_map::Iter<'a, String, Value>,
    value: Option<&'a Value>,
}

impl<'de> MapAccess<'de> for FieldsAccess<'_> {
    type Error = MapError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, MapError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.as_str().into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, MapError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| MapError("value without key".into()))?;
        seed.deserialize(ValueDeserializer(v))
    }
}

/// Deserializes one scalar from a [`Value`].
struct ValueDeserializer<'a>(&'a Value);

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_> {
    type Error = MapError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Decimal(d) => visitor.visit_string(d.to_string()),
            Value::Text(s) => visitor.visit_str(s),
            Value::Bytes(b) => visitor.visit_bytes(b),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, MapError> {
        if name == DECIMAL_SERDE_NAME {
            return match self.0 {
                Value::Decimal(d) => visitor.visit_string(d.to_string()),
                Value::Text(s) => visitor.visit_str(s),
                other => Err(MapError(format!(
                    "expected a decimal, found {}",
                    other.kind_name()
                ))),
            };
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, MapError> {
        match self.0 {
            Value::Text(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(MapError(format!(
                "expected an enum variant name as text, found {}",
                other.kind_name()
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::value::Decimal;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Status {
        Draft,
        Confirmed,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Invoice {
        customer: String,
        total: Decimal,
        lines: u32,
        paid: bool,
        note: Option<String>,
        status: Status,
        ratio: f64,
    }

    #[test]
    fn a_host_struct_maps_to_one_register_per_field_and_back() {
        let inv = Invoice {
            customer: "BSOC-000001".into(),
            total: "123.40".parse().unwrap(),
            lines: 3,
            paid: false,
            note: None,
            status: Status::Confirmed,
            ratio: 0.5,
        };
        let fields = to_fields(&inv).unwrap();
        let map: BTreeMap<String, Value> = fields.into_iter().collect();
        assert_eq!(map["total"], Value::Decimal("123.40".parse().unwrap()));
        assert_eq!(map["note"], Value::Null);
        assert_eq!(map["status"], Value::Text("Confirmed".into()));
        assert_eq!(map["lines"], Value::Int(3));
        let back: Invoice = from_fields(&map).unwrap();
        assert_eq!(back, inv);
        let _ = Status::Draft;
    }

    #[test]
    fn nested_data_and_scalars_are_refused_clearly() {
        #[derive(Serialize)]
        struct Nested {
            inner: Vec<u32>,
        }
        let err = to_fields(&Nested { inner: vec![1] })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field inner") && err.contains("sequence"),
            "{err}"
        );
        assert!(to_fields(&5u32).is_err());
        assert!(to_value(&u64::MAX).is_err());
    }

    #[test]
    fn a_missing_option_field_reads_as_none_and_a_missing_plain_field_is_an_error() {
        #[derive(Deserialize, Debug)]
        struct Partial {
            #[allow(dead_code)]
            name: String,
            city: Option<String>,
        }
        let mut map = BTreeMap::new();
        map.insert("name".to_owned(), Value::Text("x".into()));
        let p: Partial = from_fields(&map).unwrap();
        assert_eq!(p.city, None);
        let empty = BTreeMap::new();
        let err = from_fields::<Partial>(&empty).unwrap_err().to_string();
        assert!(err.contains("name"), "{err}");
    }
}
