//! `outpost central serve`: central's daemon. One process owns central's store; it runs the
//! automaton (A1–A3) on a thread of its own and serves the remotes over HTTP (T2, port 2638 by
//! default), with TLS when a certificate is configured.
//!
//! The protocol (version 1, every route under `/v1/`; JSON for metadata, raw bytes for flows):
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /v1/health` | anyone | `ok` |
//! | `GET /v1/emissions/{seq}` | the site | how much of its emission `seq` is stored: `{"offset", "received"}` |
//! | `PUT /v1/emissions/{seq}` | the site | upload from `Upload-Offset` of `Upload-Length` bytes (resumable, T3) |
//! | `GET /v1/returns?after=SEQ&wait_ms=MS` | the site | its newest return after `SEQ`, waiting up to `MS`; 204 if none |
//! | `POST /v1/acks` | the site | reports of returns applied or refused (J1 execution at the remote) |
//! | `GET /v1/acknowledgement` | the site | what central holds of the site's own changes and central's clock, `{"ack": knowledge, "clock": stamp}`: asked before each emission, so that a remote without returns (M3) does not send them again |
//! | `GET /v1/journal?site=CODE` | admin | the journal (J1) |
//! | `GET /v1/status` | admin | the automaton's activity (`Att Dep`, `Tra D02`…), the pending emissions, and where central's restore from a backup stands |
//! | `GET /monitor`, `/v1/monitor/…`, `/v1/alerts` | admin | the sync monitor (see [`monitor`]) |
//! | `/ws/v1/…` | a workstation user | central's own workstations: the routes of `outpost site serve` ([`crate::site`]) |
//!
//! Every request but the health check carries `Authorization: Bearer CODE.secret`; the site it
//! authenticates is the only site the request may act for (S2): the emission's sequence number
//! is taken under the authenticated site, and a flow whose header names another site is refused
//! and logged. The administrator's credential is central's own.

// Handlers return a ready `Response` as their error, axum's idiom: once per request, the size
// of the `Err` variant costs nothing worth boxing.
#![allow(clippy::result_large_err)]

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path as UrlPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use outpost_api::{ErrorBody, ErrorKind, UploadOffset};
use outpost_engine::{Clock, Site, SiteDirectory, SiteId, Store};
use outpost_replicator::automaton::{self, Activity, CentralAutomaton, Command};
use outpost_replicator::flow::{FlowId, FlowReader, ReturnAck};
use outpost_replicator::{central, incarnation, journal};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::auth;
use outpost::SystemClock;

mod alerts;
pub mod monitor;

pub use alerts::AlertConfig;

/// The daemon's settings: a TOML file (`--config`, or `outpost.toml` in the data directory).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address and port to listen on (T2: port 2638).
    pub listen: String,
    /// PEM certificate chain: with `tls_key`, the daemon speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP on an address other than loopback: refused unless set (credentials would
    /// travel in clear).
    pub allow_plain_http: bool,
    /// The largest flow accepted, in bytes.
    pub max_flow_bytes: u64,
    /// How long the daemon waits for a request's headers, or for the next part of an upload,
    /// before giving up on the connection (a slow client cannot hold a slot forever).
    pub request_timeout_s: u64,
    /// Requests served at once; beyond it the answer is 503 and the client retries.
    pub max_concurrent_requests: usize,
    /// The longest a remote may wait for its return in one request.
    pub return_wait_max_s: u64,
    /// The automaton's safety-net sweep (A1: 20 s).
    pub sweep_s: u64,
    /// An emission stamped further ahead of central's clock than this is held (clock-skew
    /// quarantine) until its site's clock is set right.
    pub clock_skew_max_s: u64,
    /// Log filter (`info`, `debug`, `outpost=debug,warn`…); `RUST_LOG` overrides it.
    pub log: String,
    /// Alerts and their e-mail (C3).
    pub alerts: AlertConfig,
    /// Central's own workstations (`/ws`): their log's entries older than this many days are
    /// removed; 0 keeps them all.
    pub workstation_log_keep_days: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:2638".into(),
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            max_flow_bytes: 1 << 30,
            request_timeout_s: 30,
            max_concurrent_requests: 64,
            return_wait_max_s: 300,
            sweep_s: outpost_replicator::config::SWEEP_MS_DEFAULT / 1000,
            clock_skew_max_s: outpost_engine::SKEW_MS_MAX_DEFAULT / 1000,
            log: "info".into(),
            alerts: AlertConfig::default(),
            workstation_log_keep_days: crate::site::LOG_KEEP_DAYS_DEFAULT,
        }
    }
}

/// Brings central's alerts up to date now, as the daemon does on its timer, with `config`'s
/// thresholds: for `outpost journal --alerts` while no daemon runs (a deployment that syncs by
/// files only).
pub fn update_alerts(store: &Store, data: &Path, config: &ServeConfig) -> Result<(), String> {
    alerts::update(store, data, &config.alerts, config.sweep_s.max(1) * 1000)
}

impl ServeConfig {
    /// Reads the settings file; a missing `path` gives the defaults.
    pub fn load(path: Option<&Path>) -> crate::Result<Self> {
        let Some(path) = path else {
            return Ok(ServeConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config: ServeConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        // Relative files are read from the settings file's folder, wherever the daemon starts.
        let base = path.parent().unwrap_or(Path::new(""));
        for file in [&mut config.tls_cert, &mut config.tls_key]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    fn checked_addr(&self) -> crate::Result<SocketAddr> {
        let addr: SocketAddr = self.listen.parse().map_err(|e| {
            format!(
                "listen = {:?}: {e} (write it as 127.0.0.1:2638)",
                self.listen
            )
        })?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err("tls_cert and tls_key go together: set both, or neither".into());
            }
            (None, None) if !addr.ip().is_loopback() && !self.allow_plain_http => {
                return Err(format!(
                    "{addr} is not a loopback address: configure tls_cert and tls_key, or set allow_plain_http = true to send credentials in clear"
                ).into());
            }
            _ => {}
        }
        if self.max_concurrent_requests == 0 || self.request_timeout_s == 0 {
            return Err("max_concurrent_requests and request_timeout_s must be above 0".into());
        }
        self.alerts.check()?;
        Ok(addr)
    }
}

/// What the automaton thread is told.
#[derive(Debug)]
enum Event {
    /// An emission became file ready.
    FlowReady(FlowId),
    /// The configuration may have changed (a command run through the control socket): read
    /// it again.
    Reload,
    /// Finish the current work and stop.
    Stop,
}

/// What the status route shows.
#[derive(Clone, Debug, Default, Serialize)]
struct StatusView {
    activity: String,
    last_error: Option<String>,
    processed: u64,
    returns_prepared: u64,
}

#[derive(Debug)]
struct AppState {
    store: Arc<Store>,
    /// The sites, read at start and again after each command run through the control socket
    /// (a remote added): the store's own copy is behind the write lock, which a long apply
    /// holds for seconds.
    sites: std::sync::RwLock<Arc<SiteDirectory>>,
    uploads: PathBuf,
    config: ServeConfig,
    events: Mutex<mpsc::Sender<Event>>,
    /// Bumped each time returns are prepared: waiting downloads look again.
    returns: tokio::sync::watch::Sender<u64>,
    status: Arc<Mutex<StatusView>>,
    /// Emissions being uploaded right now: a second upload of the same flow gets 409.
    uploading: Mutex<HashSet<FlowId>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// The monitor's signed-in browsers.
    sessions: monitor::Sessions,
    /// Uploads refused per peer address, recently: repeated refusals raise an alert.
    refusals: Mutex<std::collections::HashMap<std::net::IpAddr, PeerRefusals>>,
    /// When each removed site last raised its event for still syncing.
    removed_calls: Arc<Mutex<std::collections::HashMap<SiteId, u64>>>,
    /// How the alert e-mails went.
    mail_status: Arc<Mutex<alerts::MailStatus>>,
}

type Shared = Arc<AppState>;

impl AppState {
    /// The sites as last read.
    fn sites(&self) -> Arc<SiteDirectory> {
        Arc::clone(
            &self
                .sites
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// An error answer: a status and a message the client shows its user, as the one error body
/// (`{"error", "kind"}`, the kind of that status).
fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    crate::http::error_answer(ErrorBody::new(
        ErrorKind::of_status(status.as_u16()),
        message,
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the daemon until SIGTERM or Ctrl-C; then stops taking requests, lets those under way
/// finish, lets the automaton finish what it is doing, and returns.
pub fn serve(data: &Path, config: ServeConfig) -> crate::Result<()> {
    let addr = config.checked_addr()?;
    let store = Arc::new(
        crate::data_dir::open_owned(data)?
            .with_skew_ms_max(config.clock_skew_max_s.saturating_mul(1000)),
    );
    if !store.site().is_central() {
        return Err(format!(
            "{} holds the store of remote {}: only central serves",
            data.display(),
            store.site()
        )
        .into());
    }
    match outpost_replicator::monitor::ensure_indexed(&store) {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "the journal indexed for the monitor"),
        Err(e) => return Err(format!("indexing the journal for the monitor: {e}").into()),
    }
    let sync_config = central::config(&store)?
        .ok_or("central has no configuration: run `outpost central init` first")?;
    alerts::check_recipients(&store, &config.alerts)?;
    let mut automaton = CentralAutomaton::new(&sync_config, SystemClock.now_ms())
        .map_err(|e| format!("the sync configuration: {e}"))?;
    automaton.set_sweep_ms(config.sweep_s.max(1) * 1000);
    let uploads = data.join("uploads");
    std::fs::create_dir_all(&uploads).map_err(|e| format!("{}: {e}", uploads.display()))?;
    sweep_parts(&store, &uploads);

    let (events, inbox) = mpsc::channel();
    let (returns, _) = tokio::sync::watch::channel(0u64);
    let status = Arc::new(Mutex::new(StatusView {
        activity: Activity::Waiting.to_string(),
        ..StatusView::default()
    }));
    let mail_status = Arc::new(Mutex::new(alerts::MailStatus {
        configured: config.alerts.smtp_url.is_some(),
        ..alerts::MailStatus::default()
    }));
    let state: Shared = Arc::new(AppState {
        sessions: monitor::Sessions::default(),
        refusals: Mutex::new(std::collections::HashMap::new()),
        removed_calls: Arc::new(Mutex::new(std::collections::HashMap::new())),
        mail_status: Arc::clone(&mail_status),
        sites: std::sync::RwLock::new(Arc::new(store.sites())),
        store: Arc::clone(&store),
        uploads,
        permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
        config: config.clone(),
        events: Mutex::new(events.clone()),
        returns: returns.clone(),
        status: Arc::clone(&status),
        uploading: Mutex::new(HashSet::new()),
    });

    let work = Arc::new(Mutex::new(()));
    let changed = {
        let state = Arc::clone(&state);
        let own = store.site().id;
        let digest = Mutex::new(central::credential_digest(&store, own).ok().flatten());
        move || {
            // Central's own credential replaced (`central new-credential --site ASOC`): the
            // monitor's sessions signed in with the old one end.
            let now = central::credential_digest(&state.store, own).ok().flatten();
            if *lock(&digest) != now {
                state.sessions.clear();
                tracing::info!("central's credential was replaced: the monitor's sessions end");
                *lock(&digest) = now;
            }
            let sites = Arc::new(state.store.sites());
            *state
                .sites
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = sites;
            let _ = lock(&state.events).send(Event::Reload);
        }
    };
    let control = crate::control::start(crate::control::Daemon {
        name: "central serve",
        dir: data.to_path_buf(),
        store: Arc::clone(&store),
        work: Arc::clone(&work),
        changed: Some(Box::new(changed)),
    })?;
    let worker = {
        let store = Arc::clone(&store);
        std::thread::Builder::new()
            .name("automaton".into())
            .spawn(move || run_automaton(&store, automaton, &inbox, &returns, &status, &work))
            .map_err(|e| format!("cannot start the automaton: {e}"))?
    };
    let (stop_alerts, alerts_thread) = alerts::spawn(
        Arc::clone(&store),
        data.to_path_buf(),
        config.alerts.clone(),
        config.sweep_s.max(1) * 1000,
        mail_status,
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the network runtime: {e}"))?;
    let served = runtime.block_on(serve_http(addr, state));
    drop(control);
    // The automaton finishes the command it is on (each is one atomic commit) and stops.
    let _ = events.send(Event::Stop);
    let _ = stop_alerts.send(());
    let _ = worker.join();
    let _ = alerts_thread.join();
    tracing::info!("stopped");
    served
}

async fn serve_http(addr: SocketAddr, state: Shared) -> crate::Result<()> {
    let config = state.config.clone();
    let timeout = Duration::from_secs(config.request_timeout_s);
    let app = axum::Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/emissions/{seq}", get(upload_offset).put(upload))
        .route("/v1/returns", get(download_return))
        .route("/v1/acks", post(acks))
        .route("/v1/acknowledgement", get(acknowledgement))
        .route("/v1/journal", get(journal_rows))
        .route("/v1/status", get(status))
        .merge(monitor::routes())
        .layer(middleware::from_fn_with_state(Arc::clone(&state), limit))
        .layer(middleware::from_fn(crate::http::json_errors))
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Central's own workstations: their long polls must not take the remotes' request
        // slots, so outside the limit.
        .nest_service(
            "/ws",
            crate::site::workstation_routes(
                Arc::clone(&state.store),
                state.uploads.parent().unwrap_or(Path::new(".")),
                config.workstation_log_keep_days,
            )?,
        )
        .with_state(state);
    crate::http::listen(
        addr,
        app,
        crate::http::Listen {
            name: "central".to_owned(),
            tls: config.tls_cert.clone().zip(config.tls_key.clone()),
            grace: Duration::from_secs(30),
            header_timeout: Some(timeout),
        },
    )
    .await
}

/// Bounded concurrency: beyond the configured number of requests in flight, 503 at once.
async fn limit(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match Arc::clone(&state.permits).try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "central is busy: try again shortly",
        ),
    }
}

/// The automaton follows central's configuration as it is now in the store.
fn reload(store: &Store, automaton: &mut CentralAutomaton) {
    match central::config(store) {
        Ok(Some(config)) => {
            if let Err(e) = automaton.reconfigure(&config) {
                tracing::error!("the changed sync configuration is not followed: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!("reading the sync configuration: {e}"),
    }
}

/// The automaton's thread: events and time in, commands run on the store (under `work`,
/// which commands run through the control socket take too).
fn run_automaton(
    store: &Store,
    mut automaton: CentralAutomaton,
    inbox: &mpsc::Receiver<Event>,
    returns: &tokio::sync::watch::Sender<u64>,
    status: &Mutex<StatusView>,
    work: &Mutex<()>,
) {
    // Emissions left file ready or cut off mid-processing by a stop are taken up at once.
    let mut commands = vec![Command::Sweep];
    loop {
        if !commands.is_empty() {
            lock(status).activity = first_activity(store, &commands);
            let ran = {
                // A command run through the control socket (an import, a remote added) waits.
                let _work = lock(work);
                automaton::run_central(store, &mut automaton, commands)
            };
            match ran {
                Ok(run) => {
                    for id in &run.processed {
                        tracing::info!(flow = %id, "emission processed");
                    }
                    for (id, why) in &run.failed {
                        tracing::warn!(flow = %id, "emission refused: {why}");
                    }
                    for (site, id) in &run.returns {
                        tracing::info!(flow = %id, site = %site, "return prepared");
                    }
                    let mut s = lock(status);
                    s.processed += run.processed.len() as u64;
                    s.returns_prepared += run.returns.len() as u64;
                    if !run.returns.is_empty() {
                        returns.send_modify(|n| *n += 1);
                    }
                }
                Err(e) => {
                    tracing::error!("the automaton's work failed: {e}");
                    lock(status).last_error = Some(e.to_string());
                }
            }
            lock(status).activity = automaton.status().to_string();
        }
        let now = SystemClock.now_ms();
        let wait = automaton.next_wakeup_ms(now).saturating_sub(now).max(1);
        commands = match inbox.recv_timeout(Duration::from_millis(wait)) {
            Ok(Event::FlowReady(id)) => automaton.on_flow_ready(id),
            Ok(Event::Reload) => {
                reload(store, &mut automaton);
                Vec::new()
            }
            Ok(Event::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => automaton.on_time(SystemClock.now_ms()),
        };
    }
}

fn first_activity(store: &Store, commands: &[Command]) -> String {
    let activity = commands.iter().find_map(|c| match c {
        Command::Process(id) => journal::row(store, *id)
            .ok()
            .flatten()
            .map(|r| Activity::Processing(r.site)),
        Command::PrepareReturn(site) => Some(Activity::Returning(*site)),
        Command::Sweep => None,
    });
    activity.unwrap_or(Activity::Waiting).to_string()
}

/// The site a request acts for, or the 401 it gets (logged).
fn authenticated(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Site, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth::authenticate(&state.store, &state.sites(), presented).map_err(|denied| {
        tracing::warn!(%peer, "refused: {denied}");
        let message = match &denied {
            auth::Denied::Removed { code, site, at_ms } => {
                let removed = outpost_replicator::schedule::Zone::UTC.datetime_at(*at_ms);
                note_removed_site_call(state, peer, *site, code, &removed);
                format!(
                    "site {code} was removed from this deployment on {removed} UTC: central \
                     takes nothing more from this store, and what is written here reaches no \
                     other site; stop syncing it and ask the person responsible for syncs"
                )
            }
            _ => {
                "a valid site credential is required (Authorization: Bearer CODE.secret)".to_owned()
            }
        };
        let mut r = fail(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    })
}

/// A removed site's store still syncing with its own credential: an event for the person
/// responsible, once a day per site (recorded on a blocking thread; the store keeps when it
/// was last raised, this daemon's memory spares it the write).
fn note_removed_site_call(
    state: &AppState,
    peer: SocketAddr,
    site: SiteId,
    code: &str,
    removed: &str,
) {
    let now = state.store.now_ms();
    {
        let mut last = lock(&state.removed_calls);
        match last.get(&site) {
            Some(t) if now.saturating_sub(*t) < central::REMOVED_SITE_EVENT_MS => return,
            _ => last.insert(site, now),
        };
    }
    let store = Arc::clone(&state.store);
    let calls = Arc::clone(&state.removed_calls);
    let text = format!(
        "{code}, removed from this deployment on {removed} UTC, still syncs (from {peer}): what \
         its store takes reaches no other site; stop its sync program there, or add the shop \
         again as a new remote"
    );
    tokio::task::spawn_blocking(move || {
        if let Err(e) = central::record_removed_site_call(&store, site, now, text) {
            tracing::error!("a removed site's sync could not be recorded: {e}");
            // Its next attempt tries again.
            lock(&calls).remove(&site);
        }
    });
}

fn peer_of(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

/// A handler's argument: the site the request's credential authenticates. Extracted before
/// the body is read, so an unauthenticated request never has its body read (401, logged).
struct Authed(Site);

impl FromRequestParts<Shared> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        authenticated(state, peer_of(parts), &parts.headers).map(Authed)
    }
}

/// A handler's argument: the request carries the administrator's credential (central's own);
/// a remote's credential gets 403.
struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        // The monitor page's requests: a signed-in browser's session cookie.
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            match state.sessions.check(&parts.headers, SystemClock.now_ms()) {
                monitor::Session::Valid => return Ok(Admin),
                monitor::Session::Ended => {
                    return Err(fail(
                        StatusCode::UNAUTHORIZED,
                        "your monitor session has ended (it lasts 12 hours, and a restart of \
                         the daemon ends it): sign in again at /monitor",
                    ));
                }
                monitor::Session::None => {}
            }
        }
        let peer = peer_of(parts);
        let site = authenticated(state, peer, &parts.headers)?;
        if site.is_central() {
            Ok(Admin)
        } else {
            tracing::warn!(%peer, site = %site.code, "refused: an administrator's route asked with a remote's credential");
            Err(fail(
                StatusCode::FORBIDDEN,
                "this needs the administrator's credential",
            ))
        }
    }
}

/// The part files of one site's unfinished uploads.
fn parts_of(state: &AppState, site: SiteId) -> usize {
    let prefix = format!("emission-{}-", site.0);
    std::fs::read_dir(&state.uploads).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count()
    })
}

/// At start: part files of flows already in the sync table (a stop between storing a flow and
/// removing its part file) are removed.
fn sweep_parts(store: &Store, uploads: &Path) {
    let Ok(dir) = std::fs::read_dir(uploads) else {
        return;
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parsed = name
            .strip_prefix("emission-")
            .and_then(|r| r.strip_suffix(".part"))
            .and_then(|r| r.split_once('-'))
            .and_then(|(site, seq)| Some((site.parse().ok()?, seq.parse().ok()?)));
        if let Some((site, seq)) = parsed {
            let id = FlowId {
                site: SiteId(site),
                seq,
            };
            if already_received(store, id, None).unwrap_or(false) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn part_path(state: &AppState, id: FlowId) -> PathBuf {
    state
        .uploads
        .join(format!("emission-{}-{}.part", id.site.0, id.seq))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Whether central holds emission `id` — the one whose creation stamp the uploader gives
/// (header `Upload-Stamp`, hex), if it gives one: another store's emission under the same number
/// is not held, and its upload is refused for what it is (R1, `incarnation`).
fn already_received(
    store: &Store,
    id: FlowId,
    made: Option<(outpost_engine::Stamp, u64)>,
) -> Result<bool, String> {
    let held = journal::row(store, id)
        .map(|r| r.is_some())
        .map_err(|e| e.to_string())?;
    // An emission central holds no stamp of (received before stamps were kept) is not taken
    // as held either: the upload goes through `central::receive`, which judges it.
    let same = match made {
        None => true,
        Some((stamp, wall_ms)) => incarnation::received_made(store, id)
            .map_err(|e| e.to_string())?
            .is_some_and(|known| known.is(stamp, wall_ms)),
    };
    Ok(held && same)
}

fn upload_stamp(headers: &HeaderMap) -> Option<(outpost_engine::Stamp, u64)> {
    headers
        .get("upload-stamp")
        .and_then(|v| v.to_str().ok())
        .and_then(incarnation::parse_made)
}

/// How much of an emission central holds: where an upload resumes.
async fn upload_offset(
    State(state): State<Shared>,
    Authed(site): Authed,
    UrlPath(seq): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    let id = FlowId { site: site.id, seq };
    let store = Arc::clone(&state.store);
    let stamp = upload_stamp(&headers);
    let answer = blocking(move || {
        let received = already_received(&store, id, stamp)?;
        // A received emission held for clock skew: the remote is told why (it waits in vain
        // for a return otherwise).
        let held = match received {
            true => journal::row(&store, id)
                .map_err(|e| e.to_string())?
                .and_then(|r| match r.hold {
                    journal::Hold::Quarantined { reason } => Some(reason),
                    _ => None,
                }),
            false => None,
        };
        Ok::<_, String>((received, held))
    })
    .await;
    let (received, held) = match answer {
        Ok(r) => r,
        Err(r) => return r,
    };
    let offset = std::fs::metadata(part_path(&state, id)).map_or(0, |m| m.len());
    Json(UploadOffset {
        offset,
        received,
        held,
    })
    .into_response()
}

/// Forgets an upload under way when the request ends, however it ends.
struct Uploading<'a> {
    state: &'a AppState,
    id: FlowId,
}

impl Drop for Uploading<'_> {
    fn drop(&mut self) {
        lock(&self.state.uploading).remove(&self.id);
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Response> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("{name} is not a number"))),
    }
}

/// Receives (part of) an emission. The bytes are appended to a part file as they arrive; when
/// the part file holds `Upload-Length` bytes the flow goes into the sync table, checked whole
/// (T3), and the automaton is told. A connection cut mid-way leaves what arrived: the client
/// asks [`upload_offset`] and sends the rest.
async fn upload(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Authed(site): Authed,
    UrlPath(seq): UrlPath<u64>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = FlowId { site: site.id, seq };
    let (total, offset) = match (
        header_u64(&headers, "upload-length"),
        header_u64(&headers, "upload-offset"),
    ) {
        (Ok(Some(t)), Ok(o)) => (t, o.unwrap_or(0)),
        (Ok(None), _) => return fail(StatusCode::BAD_REQUEST, "Upload-Length is required"),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if total > state.config.max_flow_bytes {
        let why = format!(
            "a flow of {total} bytes is above this central's limit of {} bytes",
            state.config.max_flow_bytes
        );
        return refused_upload(
            &state,
            peer,
            site.id,
            id,
            total,
            StatusCode::PAYLOAD_TOO_LARGE,
            why,
        )
        .await;
    }
    let store = Arc::clone(&state.store);
    let stamp = upload_stamp(&headers);
    match blocking(move || already_received(&store, id, stamp)).await {
        Ok(true) => {
            return Json(serde_json::json!({ "status": "duplicate", "id": id.to_string() }))
                .into_response();
        }
        Ok(false) => {}
        Err(r) => return r,
    }
    if !lock(&state.uploading).insert(id) {
        return fail(
            StatusCode::CONFLICT,
            format!("an upload of {id} is already under way"),
        );
    }
    let _uploading = Uploading { state: &state, id };
    let path = part_path(&state, id);
    let mut held = std::fs::metadata(&path).map_or(0, |m| m.len());
    if held > total {
        // A part file longer than this flow: left by another try at this number; start over.
        let _ = tokio::fs::remove_file(&path).await;
        held = 0;
    }
    if held == 0 && parts_of(&state, site.id) >= PARTS_PER_SITE_MAX {
        tracing::warn!(%peer, site = %site.code, flow = %id, "refused: too many unfinished uploads");
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{PARTS_PER_SITE_MAX} unfinished uploads of this site already: finish them first"
            ),
        );
    }
    if offset != held {
        return (
            StatusCode::CONFLICT,
            Json(UploadOffset {
                offset: held,
                received: false,
                held: None,
            }),
        )
            .into_response();
    }
    if held > 0 {
        tracing::info!(%peer, flow = %id, offset = held, "upload resumed at offset {held}");
    }
    let file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let timeout = Duration::from_secs(state.config.request_timeout_s);
    let (have, cut) = match append_body(file, body, held, total, timeout).await {
        Ok(appended) => appended,
        Err(Appending::TooLong) => {
            let _ = tokio::fs::remove_file(&path).await;
            return refused_upload(
                &state,
                peer,
                site.id,
                id,
                total,
                StatusCode::PAYLOAD_TOO_LARGE,
                "more bytes than Upload-Length: the upload is dropped, start again".into(),
            )
            .await;
        }
        Err(Appending::Disk(e)) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if have < total {
        if let Some(why) = cut {
            tracing::info!(%peer, flow = %id, have, total, "upload cut: {why}");
        }
        return (
            StatusCode::ACCEPTED,
            Json(UploadOffset {
                offset: have,
                received: false,
                held: None,
            }),
        )
            .into_response();
    }
    // Whole: into the sync table, checked (T3).
    into_sync_table(&state, peer, &site, id, path).await
}

/// How long refusals from one peer are counted together, and how many raise an alert.
const REFUSALS_WINDOW_MS: u64 = 10 * 60_000;
const REFUSALS_ALERT: u32 = 3;

/// A peer's recent refused uploads.
#[derive(Debug, Clone, Copy)]
struct PeerRefusals {
    since_ms: u64,
    count: u32,
    alerted: bool,
}

/// An upload refused before its flow reached the sync table (too large, no flow at all, another
/// site's flow): kept in the refused-flow log with the peer's address (`journal --refused`, the
/// monitor), an alert raised for an impersonation and for repeated refusals from one peer.
/// Blocking: called from a blocking task.
fn note_refused(
    state: &AppState,
    peer: SocketAddr,
    sender: SiteId,
    id: FlowId,
    bytes: u64,
    why: &str,
    impersonation: bool,
) {
    tracing::warn!(%peer, site = %sender, flow = %id, "upload refused: {why}");
    let now = SystemClock.now_ms();
    let repeated = {
        let mut map = lock(&state.refusals);
        map.retain(|_, r| now.saturating_sub(r.since_ms) < REFUSALS_WINDOW_MS);
        let r = map.entry(peer.ip()).or_insert(PeerRefusals {
            since_ms: now,
            count: 0,
            alerted: false,
        });
        r.count += 1;
        let raise = r.count >= REFUSALS_ALERT && !r.alerted;
        r.alerted |= raise;
        raise.then_some(r.count)
    };
    let refused = central::RefusedFlow {
        at_ms: now,
        sender: Some(sender),
        bytes,
        reason: format!("upload of {id} from {peer}: {why}"),
    };
    let alert = if impersonation {
        Some((central::RefusalAlert::Impersonation, id))
    } else {
        None
    };
    if let Err(e) = central::record_refused(&state.store, &refused, alert) {
        tracing::error!("the refused upload could not be logged: {e}");
    }
    if let Some(count) = repeated {
        let repeated = central::RefusedFlow {
            reason: format!(
                "{count} uploads from {peer} refused within {} minutes; the last: {why}",
                REFUSALS_WINDOW_MS / 60_000
            ),
            ..refused
        };
        let event = central::record_refused(
            &state.store,
            &repeated,
            Some((central::RefusalAlert::Repeated, id)),
        );
        if let Err(e) = event {
            tracing::error!("the repeated refusals could not be logged: {e}");
        }
    }
}

/// [`note_refused`] from the request's task, then the answer.
async fn refused_upload(
    state: &Shared,
    peer: SocketAddr,
    sender: SiteId,
    id: FlowId,
    bytes: u64,
    status: StatusCode,
    why: String,
) -> Response {
    let shared = Arc::clone(state);
    let logged = why.clone();
    let _ = tokio::task::spawn_blocking(move || {
        note_refused(&shared, peer, sender, id, bytes, &logged, false);
    })
    .await;
    fail(status, why)
}

/// Why appending a request's body to a part file stopped short of an answer.
enum Appending {
    /// More bytes than `Upload-Length`.
    TooLong,
    /// The part file could not be written.
    Disk(std::io::Error),
}

/// Appends `body` to the part file `file`, which holds `held` bytes, up to `total`; flushed and
/// synced. Returns the bytes the part file holds and, when the body stopped before its end, why
/// (the connection broke, or nothing came for `timeout`).
async fn append_body(
    mut file: tokio::fs::File,
    body: Body,
    held: u64,
    total: u64,
    timeout: Duration,
) -> Result<(u64, Option<String>), Appending> {
    let mut stream = body.into_data_stream();
    let mut have = held;
    let mut cut: Option<String> = None;
    loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(bytes))) => {
                if have + bytes.len() as u64 > total {
                    return Err(Appending::TooLong);
                }
                file.write_all(&bytes).await.map_err(Appending::Disk)?;
                have += bytes.len() as u64;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                cut = Some(format!("the connection broke: {e}"));
                break;
            }
            Err(_) => {
                cut = Some(format!("nothing came for {} s", timeout.as_secs()));
                break;
            }
        }
    }
    file.flush()
        .await
        .and(file.sync_all().await)
        .map_err(Appending::Disk)?;
    Ok((have, cut))
}

/// A whole part file at `part` into the sync table, checked (T3), and the automaton told; the
/// answer to the upload.
async fn into_sync_table(
    state: &Shared,
    peer: SocketAddr,
    site: &Site,
    id: FlowId,
    part: PathBuf,
) -> Response {
    let store = Arc::clone(&state.store);
    let sender = site.id;
    let waker = Arc::clone(state);
    // The automaton is told from the blocking task itself: if the client goes away meanwhile,
    // this handler is dropped at its next await, but a flow made file ready is processed now,
    // not at the next sweep. A duplicate not yet processed (its first upload's client went
    // away before the automaton was told) wakes it too.
    let received = tokio::task::spawn_blocking(move || {
        let received = receive_part(&waker, peer, &part, sender, id);
        let _ = std::fs::remove_file(&part);
        let wake = match &received {
            Ok(central::Received::Ready { id, .. }) => Some(*id),
            Ok(central::Received::Duplicate(id)) => central::pending_emissions(&store)
                .is_ok_and(|p| p.contains(id))
                .then_some(*id),
            Err(_) => None,
        };
        if let Some(id) = wake {
            let _ = lock(&waker.events).send(Event::FlowReady(id));
        }
        received
    })
    .await;
    match received {
        Ok(Ok(central::Received::Ready { id, bytes, note })) => {
            tracing::info!(%peer, flow = %id, bytes, "emission received: file ready");
            Json(serde_json::json!({
                "status": "ready", "id": id.to_string(), "bytes": bytes, "note": note
            }))
            .into_response()
        }
        Ok(Ok(central::Received::Duplicate(id))) => {
            Json(serde_json::json!({ "status": "duplicate", "id": id.to_string() })).into_response()
        }
        // Not yet (central's restore waits for every remote's report): the reason says that
        // nothing was kept and the next sync sends it again.
        Ok(Err((ErrorKind::NotYet, why))) => {
            tracing::info!(%peer, site = %site.code, flow = %id, "{why}");
            crate::http::error_answer(ErrorBody::new(ErrorKind::NotYet, why))
        }
        Ok(Err((kind, why))) => {
            tracing::warn!(%peer, site = %site.code, flow = %id, "refused, nothing kept: {why}");
            crate::http::error_answer(ErrorBody::new(
                kind,
                format!("refused, nothing kept: {why}"),
            ))
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A whole part file into the sync table. A body that is no flow, and a flow whose header
/// names another site than the authenticated one (forbidden), are refused before anything is
/// stored, and listed with the refused flows.
fn receive_part(
    state: &AppState,
    peer: SocketAddr,
    part: &Path,
    sender: SiteId,
    id: FlowId,
) -> Result<central::Received, (ErrorKind, String)> {
    let store = &state.store;
    let bytes = std::fs::metadata(part).map_or(0, |m| m.len());
    let open = || File::open(part).map(BufReader::new);
    let file = open().map_err(|e| (ErrorKind::Store, e.to_string()))?;
    let header = match FlowReader::open(file) {
        Ok(r) => r.header().clone(),
        Err(e) => {
            let why = if bytes == 0 {
                "an empty body: no flow".to_owned()
            } else {
                format!("not a flow: {e}")
            };
            note_refused(state, peer, sender, id, bytes, &why, false);
            return Err((ErrorKind::FlowRefused, why));
        }
    };
    if header.source != sender || header.id.site != sender {
        let why = format!(
            "flow {} claims to come from site {} but the credential is site {sender}'s",
            header.id, header.source
        );
        note_refused(state, peer, sender, id, bytes, &why, true);
        return Err((ErrorKind::Forbidden, why));
    }
    let file = open().map_err(|e| (ErrorKind::Store, e.to_string()))?;
    central::receive(store, file, Some(sender)).map_err(|e| {
        // Not yet (central's restore waits for every remote's report): the remote retries.
        let kind = if matches!(e, outpost_replicator::Error::Deferred(_)) {
            ErrorKind::NotYet
        } else if e.is_the_flows() {
            ErrorKind::FlowRefused
        } else {
            ErrorKind::Store
        };
        (kind, e.to_string())
    })
}

#[derive(Deserialize, Debug)]
struct ReturnQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

/// The newest return for the authenticated site after `after`, waiting up to `wait_ms` for one
/// to be prepared (A3). The bytes are streamed from one snapshot of the sync table.
async fn download_return(
    State(state): State<Shared>,
    Authed(site): Authed,
    Query(q): Query<ReturnQuery>,
) -> Response {
    let wait =
        Duration::from_millis(q.wait_ms).min(Duration::from_secs(state.config.return_wait_max_s));
    let deadline = tokio::time::Instant::now() + wait;
    let mut prepared = state.returns.subscribe();
    loop {
        prepared.mark_unchanged();
        match stream_return(&state, site.id, q.after).await {
            Ok(Some(r)) => return r,
            Ok(None) => {}
            Err(r) => return r,
        }
        tokio::select! {
            changed = prepared.changed() => {
                if changed.is_err() {
                    return StatusCode::NO_CONTENT.into_response();
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return StatusCode::NO_CONTENT.into_response();
            }
        }
    }
}

const STREAM_CHUNK: usize = 64 * 1024;

async fn stream_return(
    state: &AppState,
    site: SiteId,
    after: u64,
) -> Result<Option<Response>, Response> {
    let store = Arc::clone(&state.store);
    let runtime = tokio::runtime::Handle::current();
    let stall = Duration::from_secs(state.config.request_timeout_s);
    let (meta_tx, meta_rx) = tokio::sync::oneshot::channel();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let found = central::fetch_return(&store, site, after).and_then(|found| {
            Ok(match found {
                Some((id, reader)) => {
                    let link = journal::row(&store, id)?.and_then(|r| r.link);
                    Some((id, link, reader))
                }
                None => None,
            })
        });
        let mut reader = match found {
            Ok(Some((id, link, reader))) => {
                let _ = meta_tx.send(Ok(Some((id, link))));
                reader
            }
            Ok(None) => {
                let _ = meta_tx.send(Ok(None));
                return;
            }
            Err(e) => {
                let _ = meta_tx.send(Err(e.to_string()));
                return;
            }
        };
        let mut buf = vec![0u8; STREAM_CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    // A client that went away, or stopped reading, releases the snapshot.
                    let sent = runtime.block_on(tokio::time::timeout(stall, tx.send(Ok(chunk))));
                    if !matches!(sent, Ok(Ok(()))) {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.try_send(Err(e));
                    return;
                }
            }
        }
    });
    let meta = meta_rx
        .await
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (id, link) = match meta {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(e) => return Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e)),
    };
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("outpost-flow-seq", id.seq.into());
    h.insert("outpost-link-seq", link.map_or(0, |l| l.seq).into());
    Ok(Some(response))
}

/// The largest body of reports accepted.
const ACKS_MAX_BYTES: usize = 64 * 1024;

/// Unfinished uploads one site may have at once (each a part file up to `max_flow_bytes`).
const PARTS_PER_SITE_MAX: usize = 4;

/// A remote's reports of returns applied or refused.
async fn acks(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Authed(site): Authed,
    body: Body,
) -> Response {
    // Read only once authenticated, bounded in size and time.
    let timeout = Duration::from_secs(state.config.request_timeout_s);
    let body = match tokio::time::timeout(timeout, axum::body::to_bytes(body, ACKS_MAX_BYTES)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reports above {ACKS_MAX_BYTES} bytes"),
            );
        }
        Err(_) => {
            return fail(
                StatusCode::REQUEST_TIMEOUT,
                "the reports did not come in time",
            );
        }
    };
    let reports: Vec<ReturnAck> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("not a list of reports: {e}"),
            );
        }
    };
    let store = Arc::clone(&state.store);
    let done =
        tokio::task::spawn_blocking(move || central::record_acks(&store, site.id, &reports)).await;
    match done {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) if e.is_the_flows() => {
            tracing::warn!(%peer, site = %site.code, "refused reports: {e}");
            fail(StatusCode::FORBIDDEN, e.to_string())
        }
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, Debug)]
struct JournalQuery {
    site: Option<String>,
}

async fn journal_rows(
    State(state): State<Shared>,
    _admin: Admin,
    Query(q): Query<JournalQuery>,
) -> Response {
    let filter = match q.site {
        None => None,
        Some(code) => match state.sites().by_code(&code) {
            Some(s) => Some(s.id),
            None => return fail(StatusCode::NOT_FOUND, format!("no site {code}")),
        },
    };
    let store = Arc::clone(&state.store);
    match blocking(move || journal::rows(&store, filter, None, None).map_err(|e| e.to_string()))
        .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(r) => r,
    }
}

/// What central holds of the authenticated site's own changes (`central::acknowledgement`).
async fn acknowledgement(State(state): State<Shared>, Authed(site): Authed) -> Response {
    let store = Arc::clone(&state.store);
    match blocking(move || central::acknowledgement(&store, site.id).map_err(|e| e.to_string()))
        .await
    {
        Ok(ack) => Json(ack).into_response(),
        Err(r) => r,
    }
}

async fn status(State(state): State<Shared>, _admin: Admin) -> Response {
    let store = Arc::clone(&state.store);
    let read = move || -> outpost_replicator::Result<_> {
        Ok((
            central::pending_emissions(&store)?,
            central::restore_status(&store)?,
        ))
    };
    let (pending, restore) = match blocking(move || read().map_err(|e| e.to_string())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let view = lock(&state.status).clone();
    Json(serde_json::json!({
        "site": state.store.site().code.to_string(),
        "activity": view.activity,
        "pending_emissions": pending.iter().map(ToString::to_string).collect::<Vec<_>>(),
        // Central's restore from a backup, while one is under way (null otherwise).
        "restore": restore,
        "processed": view.processed,
        "returns_prepared": view.returns_prepared,
        "last_error": view.last_error,
    }))
    .into_response()
}
