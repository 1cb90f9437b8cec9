//! outpost's wire API: what central's daemon and a site server answer and what the client
//! library and a remote's network sync read back — one definition for both sides.
//!
//! - [`ErrorBody`]: every error answer, `{"error": "…", "kind": "…"}` (plus the refusal, the
//!   record or the table for the kinds that carry one), with [`ErrorKind`] the one enum of
//!   kinds; [`ErrorBody::from_engine`] and [`ErrorBody::into_engine`] map it to and from the
//!   engine's [`Error`], so a write refused over the network is the same
//!   [`Error::Refused`] as an embedded one.
//! - [`to_json`] / [`from_json`]: the JSON codec of a field's [`Value`] (a decimal travels as a
//!   string, so no amount passes through a binary float).
//! - The views of the site server's routes ([`RecordView`], [`RecordKey`], [`ChangeEvent`],
//!   [`Changes`], [`SyncSummary`], [`UserView`], [`NewUser`], [`UserCredential`]) and of
//!   central's upload route ([`UploadOffset`]).
//!
//! This crate has no HTTP stack of its own: a status is a `u16`.

use outpost_engine::{Error, FieldKind, Refusal, Value};
use serde::{Deserialize, Serialize};

/// An error answer, from central's daemon or a site server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in words for the person who will read it.
    pub error: String,
    /// What kind of failure it is, with its details: what a program branches on.
    #[serde(flatten)]
    pub kind: ErrorKind,
}

/// The kinds of failure an answer names (`"kind"`), with what each carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A write refused by a rule (R3–R8): the refusal, as the embedded API gives it.
    Refused {
        /// The rule and the record.
        refusal: Refusal,
    },
    /// The request does not fit the schema (unknown table or field, wrong type).
    Schema,
    /// A body that does not map to a record's fields.
    Mapping,
    /// No such record.
    NotFound {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// A reservation asked on a table whose records are not documents (R7).
    NotReservable {
        /// The table.
        table: String,
    },
    /// No credential, or one that is not accepted.
    Unauthorized,
    /// A credential accepted, for something it may not do.
    Forbidden,
    /// A workstation user the site does not have.
    UnknownUser,
    /// A request that is not well formed (a header, a parameter, a body).
    BadRequest,
    /// No such thing at this address other than a record (a site, a flow).
    Missing,
    /// The request conflicts with one in progress (the same emission uploaded twice at once).
    Conflict,
    /// A body over the size limit.
    TooLarge,
    /// A flow refused at receipt, nothing kept (another store's emission, a damaged file…).
    FlowRefused,
    /// A body that did not arrive in time.
    Timeout,
    /// Too many requests at once: try again later.
    Busy,
    /// The server cannot serve this now (shutting down).
    Unavailable,
    /// An emission central does not take yet: after its restore from a backup, until every
    /// remote has reported what it holds (docs/OPERATIONS.md). Nothing of it was kept; the
    /// next sync sends it again. Also a new key asked of a store put back from a backup
    /// (`create`), until the other sites have sent back what it made after the backup; and any
    /// write at a central found put back from a backup without `outpost central restore`,
    /// until an operator runs it (the message says so).
    NotYet,
    /// The store failed (disk, damaged file…).
    Store,
    /// A sync a workstation asked for failed: central's reason (an emission refused, central
    /// unreachable).
    Sync,
    /// A sync asked of a site server with no central to sync with (central's own `/ws`).
    NoCentral,
    /// A sync asked while one of the same site is under way.
    SyncUnderWay,
    /// A kind this version does not know (an answer from a newer server).
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// The HTTP status an answer of this kind has.
    pub fn status(&self) -> u16 {
        match self {
            ErrorKind::Refused { .. } | ErrorKind::Forbidden => 403,
            ErrorKind::Schema
            | ErrorKind::Mapping
            | ErrorKind::NotReservable { .. }
            | ErrorKind::BadRequest => 400,
            ErrorKind::NotFound { .. } | ErrorKind::UnknownUser | ErrorKind::Missing => 404,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Conflict | ErrorKind::NoCentral | ErrorKind::SyncUnderWay => 409,
            ErrorKind::Sync => 502,
            ErrorKind::TooLarge => 413,
            ErrorKind::FlowRefused => 422,
            ErrorKind::Timeout => 408,
            ErrorKind::Busy => 429,
            ErrorKind::Unavailable | ErrorKind::NotYet => 503,
            ErrorKind::Store | ErrorKind::Other => 500,
        }
    }

    /// The kind an answer of `status` has when nothing more precise is known.
    pub fn of_status(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::Missing,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::TooLarge,
            422 => ErrorKind::FlowRefused,
            408 => ErrorKind::Timeout,
            429 => ErrorKind::Busy,
            502 => ErrorKind::Sync,
            503 => ErrorKind::Unavailable,
            _ => ErrorKind::Store,
        }
    }
}

impl ErrorBody {
    /// An answer of `kind` saying `error`.
    pub fn new(kind: ErrorKind, error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            kind,
        }
    }

    /// The answer for an engine error: its status and body.
    pub fn from_engine(e: &Error) -> Self {
        let kind = match e {
            Error::Refused(r) => ErrorKind::Refused {
                refusal: (**r).clone(),
            },
            Error::Schema(m) => return ErrorBody::new(ErrorKind::Schema, m.clone()),
            Error::Mapping(m) => return ErrorBody::new(ErrorKind::Mapping, m.clone()),
            Error::WrittenAfterDelete { .. } => ErrorKind::BadRequest,
            Error::KeysAfterRestore { .. } | Error::OwnWritesHeld(_) => ErrorKind::NotYet,
            Error::NotFound { table, key } => ErrorKind::NotFound {
                table: table.clone(),
                key: key.clone(),
            },
            Error::NotReservable(table) => ErrorKind::NotReservable {
                table: table.clone(),
            },
            _ => ErrorKind::Store,
        };
        ErrorBody::new(kind, e.to_string())
    }

    /// The engine error a program sees for this answer (received with `status`): the same
    /// error the embedded API gives where there is one, an I/O error otherwise.
    pub fn into_engine(self, status: u16) -> Error {
        let ErrorBody { error, kind } = self;
        match kind {
            ErrorKind::Refused { refusal } => Error::Refused(Box::new(refusal)),
            ErrorKind::Schema => Error::Schema(error),
            ErrorKind::Mapping => Error::Mapping(error),
            ErrorKind::NotFound { table, key } => Error::NotFound { table, key },
            ErrorKind::NotReservable { table } => Error::NotReservable(table),
            ErrorKind::Unauthorized | ErrorKind::Forbidden => Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                error,
            )),
            ErrorKind::UnknownUser => {
                Error::Io(std::io::Error::new(std::io::ErrorKind::NotFound, error))
            }
            _ => Error::Io(std::io::Error::other(format!(
                "the server answered {status}: {error}"
            ))),
        }
    }
}

/// A field's value that JSON cannot carry as the schema's kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAValue(pub String);

/// A field's value as JSON: a decimal as its string, bytes as an array of numbers, a float that
/// JSON cannot hold (NaN, ∞) as `null`.
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Decimal(d) => d.to_string().into(),
        Value::Text(s) => s.clone().into(),
        Value::Bytes(b) => b.iter().map(|x| serde_json::Value::from(*x)).collect(),
    }
}

/// A field's value from JSON, read as the schema's `kind` for the field where it has one (a
/// decimal from a string or a number, a float from any number).
pub fn from_json(kind: Option<FieldKind>, v: &serde_json::Value) -> Result<Value, NotAValue> {
    let not_a_number = |n: &serde_json::Number| NotAValue(format!("{n} is not a number"));
    Ok(match (kind, v) {
        (_, serde_json::Value::Null) => Value::Null,
        (Some(FieldKind::Decimal), serde_json::Value::String(s)) => {
            Value::Decimal(s.parse().map_err(|e| NotAValue(format!("{s:?}: {e}")))?)
        }
        (Some(FieldKind::Decimal), serde_json::Value::Number(n)) => {
            // Read through a double, which keeps 15 significant digits exactly: with more,
            // what was written may not be what is read (123456789012345.678 became …45.67).
            if n.is_f64() && significant_digits(&n.to_string()) > 15 {
                return Err(NotAValue(format!(
                    "{n}: a decimal of more than 15 significant digits is given as a string \
                     (\"123456789012345.678\"): as a JSON number it may be rounded"
                )));
            }
            Value::Decimal(
                n.to_string()
                    .parse()
                    .map_err(|e| NotAValue(format!("{n}: {e}")))?,
            )
        }
        (_, serde_json::Value::Bool(b)) => Value::Bool(*b),
        (Some(FieldKind::Float), serde_json::Value::Number(n)) => {
            Value::Float(n.as_f64().ok_or_else(|| not_a_number(n))?)
        }
        // A whole number beyond 64 bits is no integer: said so, not read as a float.
        (Some(FieldKind::Integer), serde_json::Value::Number(n))
            if n.as_i64().is_none() && n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
        {
            return Err(NotAValue(format!(
                "{n} is out of range for an integer ({} to {})",
                i64::MIN,
                i64::MAX
            )));
        }
        (_, serde_json::Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or_else(|| not_a_number(n))?),
        },
        (_, serde_json::Value::String(s)) => Value::Text(s.clone()),
        (_, other) => return Err(NotAValue(format!("{other} is not a field value"))),
    })
}

/// How many significant digits a number written in decimal (perhaps with an exponent) has.
fn significant_digits(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

/// The most records one scan request of the site server returns (`GET /v1/records/{table}`):
/// a request for more is refused; the client library pages.
pub const SCAN_LIMIT_MAX: usize = 10_000;

/// A record as the site server gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    /// Its key.
    pub key: String,
    /// Its fields by name, each through [`to_json`].
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A committed change as watchers see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChangeEvent {
    /// Its number in this server's feed.
    pub seq: u64,
    /// The table.
    pub table: String,
    /// The record's key.
    pub key: String,
    /// The field written; `None` for a deletion.
    pub field: Option<String>,
    /// The new value (`true` for a deletion).
    pub value: serde_json::Value,
    /// The site that made the change.
    pub site: String,
}

/// The changes after a point of the feed (`GET /v1/changes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    /// Pass it as `after` next time.
    pub seq: u64,
    /// Changes were missed before these (the watcher fell too far behind, or the server
    /// restarted): read the records it shows again.
    pub gap: bool,
    /// The changes, in commit order.
    pub changes: Vec<ChangeEvent>,
}

/// A workstation user as listed: its code, and whether it administers the site.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserView {
    /// The user's code.
    pub user: String,
    /// May change the site's settings, read the workstation log and manage users.
    pub admin: bool,
}

/// The answer to a record written, created or deleted: its key (for a creation, the new one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordKey {
    /// The record's key.
    pub key: String,
}

/// The answer to a sync a workstation asked for (`POST /v1/sync`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    /// What the sync did, in words.
    pub summary: String,
}

/// The body of `POST /v1/users/{code}` (empty: not an administrator).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// May change the site's settings, read the workstation log and manage users.
    #[serde(default)]
    pub admin: bool,
}

/// The answer to `POST /v1/users/{code}`: the user's new credential, which the site does not
/// keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCredential {
    /// The user's code.
    pub user: String,
    /// An administrator of the site.
    pub admin: bool,
    /// `CODE.secret`.
    pub credential: String,
}

/// How much of an emission central holds (`GET /v1/emissions/{seq}`): where an upload
/// resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadOffset {
    /// Bytes central holds.
    pub offset: u64,
    /// Central holds the whole emission already.
    pub received: bool,
    /// Received, and held without being applied (clock-skew quarantine): why, and what to do.
    /// Absent from the answers of a central before 2026-12-05 (night).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decimal given as a JSON number is read through a double, which keeps 15 significant
    /// digits exactly: one with more was stored rounded, at every site, without a word. It is
    /// now refused, asking for a string; one within them is read as written.
    #[test]
    fn a_decimal_given_as_a_json_number_is_never_rounded() {
        let dec = |v: serde_json::Value| from_json(Some(FieldKind::Decimal), &v);
        // As a request's body carries them.
        let body = |text: &str| {
            serde_json::from_str::<serde_json::Value>(text).unwrap_or_else(|e| panic!("{e}"))
        };
        let err = dec(body("123456789012345.678")).unwrap_err();
        assert!(err.0.contains("as a string"), "{err}");
        assert!(dec(body("0.30000000000000004")).is_err());
        for (given, read) in [
            (serde_json::json!(12.5), "12.5"),
            (serde_json::json!(0.1), "0.1"),
            (serde_json::json!(-42), "-42"),
            (serde_json::json!(12345678901234.5), "12345678901234.5"),
            (
                serde_json::json!(18446744073709551615u64),
                "18446744073709551615",
            ),
            (
                serde_json::json!("123456789012345.678"),
                "123456789012345.678",
            ),
        ] {
            let v = dec(given.clone()).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(
                v,
                Value::Decimal(read.parse().unwrap_or_else(|e| panic!("{e}")))
            );
        }
    }

    #[test]
    fn an_error_body_is_error_and_kind_with_the_kind_s_details_beside_them() {
        let body = ErrorBody::new(
            ErrorKind::NotFound {
                table: "customers".into(),
                key: "C1".into(),
            },
            "no record customers/C1",
        );
        let json = serde_json::to_value(&body).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"error": "no record customers/C1", "kind": "not_found",
                               "table": "customers", "key": "C1"})
        );
        let back: ErrorBody = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, body);
        let plain =
            serde_json::to_value(ErrorBody::new(ErrorKind::BadRequest, "no")).unwrap_or_default();
        assert_eq!(
            plain,
            serde_json::json!({"error": "no", "kind": "bad_request"})
        );
    }

    #[test]
    fn every_status_a_server_answers_has_a_kind_with_that_status() {
        for status in [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503] {
            assert_eq!(ErrorKind::of_status(status).status(), status);
        }
    }

    #[test]
    fn an_unknown_kind_is_read_as_other_and_keeps_its_text() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":"later","kind":"something_new","extra":1}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, ErrorBody::new(ErrorKind::Other, "later"));
    }

    #[test]
    fn engine_errors_come_back_as_the_same_errors() {
        for e in [
            Error::Schema("no table t".into()),
            Error::Mapping("not an object".into()),
            Error::NotFound {
                table: "t".into(),
                key: "k".into(),
            },
            Error::NotReservable("customers".into()),
        ] {
            let body = ErrorBody::from_engine(&e);
            let again = body.clone().into_engine(body.kind.status());
            assert_eq!(again.to_string(), e.to_string());
        }
    }

    #[test]
    fn values_round_trip_through_json_as_their_kind() {
        let d: outpost_engine::Decimal = "12.30".parse().unwrap_or_else(|e| panic!("{e:?}"));
        for (kind, v) in [
            (Some(FieldKind::Decimal), Value::Decimal(d)),
            (Some(FieldKind::Text), Value::Text("x".into())),
            (Some(FieldKind::Integer), Value::Int(-4)),
            (Some(FieldKind::Float), Value::Float(1.5)),
            (None, Value::Bool(true)),
            (None, Value::Null),
        ] {
            assert_eq!(from_json(kind, &to_json(&v)), Ok(v));
        }
        assert!(from_json(None, &serde_json::json!({"a": 1})).is_err());
    }

    #[test]
    fn an_integer_beyond_64_bits_is_said_out_of_range_not_a_float() {
        let big: serde_json::Value =
            serde_json::from_str("99999999999999999999").unwrap_or_else(|e| panic!("{e}"));
        let err = from_json(Some(FieldKind::Integer), &big).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        // Without a declared kind, or declared a float, it stays a float.
        assert!(matches!(from_json(None, &big), Ok(Value::Float(_))));
        assert!(matches!(
            from_json(Some(FieldKind::Float), &big),
            Ok(Value::Float(_))
        ));
    }
}
