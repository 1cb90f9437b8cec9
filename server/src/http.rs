//! What central's daemon and the site server share of HTTP: the error answer.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_api::ErrorBody;

/// An error answer: `{"error", "kind", …}` with the status of its kind.
pub(crate) fn error_answer(body: ErrorBody) -> Response {
    let status =
        StatusCode::from_u16(body.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}
