//! What central's daemon and the site server share of HTTP: one way to listen ([`listen`]:
//! the socket, TLS, the stop signal and the graceful stop) and the error answer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_api::ErrorBody;

use crate::Result;

/// An error answer: `{"error", "kind", …}` with the status of its kind.
pub(crate) fn error_answer(body: ErrorBody) -> Response {
    let status =
        StatusCode::from_u16(body.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// Makes every error answer the one JSON error body, whoever wrote it: a route's own answers
/// already are; axum's rejections (a path or query that does not parse, an unknown route, a
/// wrong method, a body of the wrong type) are plain text or empty, and become
/// `{"error", "kind"}` with their status and headers kept. HTML pages (the monitor's) stay HTML.
pub(crate) async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let typed = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if typed {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let error = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => format!("no route {path}: see docs/network.md"),
        (StatusCode::METHOD_NOT_ALLOWED, true) => format!("{method} is not allowed on {path}"),
        (_, true) => status.canonical_reason().unwrap_or("error").to_lowercase(),
        (_, false) => text,
    };
    let kind = match outpost_api::ErrorKind::of_status(status.as_u16()) {
        outpost_api::ErrorKind::Store if status.is_client_error() => {
            outpost_api::ErrorKind::BadRequest
        }
        kind => kind,
    };
    let answer = error_answer(ErrorBody::new(kind, error));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let (answer_parts, answer_body) = answer.into_parts();
    parts.headers.extend(answer_parts.headers);
    Response::from_parts(parts, answer_body)
}

/// How a server listens, besides its address and its routes.
#[derive(Debug, Clone)]
pub(crate) struct Listen {
    /// Who listens, as the line printed once listening names it: `central`, `site BSOC`.
    pub name: String,
    /// HTTPS with this PEM certificate chain and private key; plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// After a stop signal, how long requests under way are given to finish.
    pub grace: Duration,
    /// How long a request's headers may take to arrive; `None`: hyper's default.
    pub header_timeout: Option<Duration>,
}

/// Serves `app` on `addr` until Ctrl-C or SIGTERM, then stops taking requests and gives those
/// under way `grace` to finish. The certificate and key are read before anything says the
/// server listens; then one line, `NAME listening on SCHEME://ADDR` (with port 0, the port
/// actually taken), is printed for operators and tests to wait for. Handlers may take the
/// peer's address (`ConnectInfo<SocketAddr>`).
pub(crate) async fn listen(addr: SocketAddr, app: axum::Router, opts: Listen) -> Result<()> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = match &opts.tls {
        Some((cert, key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| {
                    format!(
                        "TLS certificate {} or key {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("{} listening on {scheme}://{bound}", opts.name);
    tracing::info!(%bound, scheme, "listening");
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        let grace = opts.grace;
        tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("stopping: finishing the requests under way");
            handle.graceful_shutdown(Some(grace));
        });
    }
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        Some(config) => {
            let mut server = axum_server::from_tcp_rustls(listener, config)
                .map_err(|e| e.to_string())?
                .handle(handle);
            if let Some(t) = opts.header_timeout {
                server.http_builder().http1().header_read_timeout(t);
            }
            server.serve(service).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(|e| e.to_string())?
                .handle(handle);
            if let Some(t) = opts.header_timeout {
                server.http_builder().http1().header_read_timeout(t);
            }
            server.serve(service).await
        }
    };
    served.map_err(|e| format!("the server stopped: {e}"))?;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM (Ctrl-C alone where SIGTERM cannot be watched).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
                return;
            }
            Err(e) => tracing::error!("cannot watch SIGTERM: {e}"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
