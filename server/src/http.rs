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
