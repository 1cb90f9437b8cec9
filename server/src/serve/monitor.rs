//! The sync monitor (SPEC J1–J4, C3): a web page served by central's daemon on its own port,
//! for the person responsible for syncs, behind the administrator's credential.
//!
//! | route | what |
//! |---|---|
//! | `GET /monitor` | the page (a sign-in form without a session) |
//! | `POST /monitor/login` | `credential=CODE.secret` (central's): a session cookie |
//! | `POST /monitor/logout` | ends the session |
//! | `GET /monitor/app.js`, `/monitor/app.css` | the page's script and style, in the binary |
//! | `GET /v1/monitor/journal` | a page of the journal, newest first (filters below) |
//! | `GET /v1/monitor/sites` | per remote: last emission, last applied return, staleness, clock |
//! | `GET /v1/monitor/staleness?days=` | per remote: its staleness over the last days (7 by default, at most 31), as points |
//! | `GET /v1/monitor/rejections?q=` | refused changes, newest first, searched |
//! | `GET /v1/alerts` | open alerts, then the recent closed ones |
//!
//! The data routes take the administrator's `Authorization: Bearer` header or the session
//! cookie. The page polls them every two seconds; it needs nothing from outside the binary.

#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use outpost_engine::{SiteId, Store};
use outpost_replicator::flow::{FlowId, FlowKind, SyncMode};
use outpost_replicator::monitor::{self, Alert, LoggedRejection, RowState, SiteSeen};
use outpost_replicator::schedule::Zone;
use outpost_replicator::{central, journal::JournalRow};
use serde::{Deserialize, Serialize};

use super::{Admin, AppState, Shared, blocking, fail, lock};
use outpost::SystemClock;
use outpost_engine::Clock;

/// The session cookie's name.
const COOKIE: &str = "outpost_session";
/// How long a session lasts.
const SESSION_MS: u64 = 12 * 3600 * 1000;
/// The most rows one page may ask for.
const PAGE_MAX: usize = 500;

/// Signed-in browsers: session token → expiry (UTC ms). Kept in memory: a restart signs
/// everyone out.
#[derive(Debug, Default)]
pub(super) struct Sessions(std::sync::Mutex<HashMap<String, u64>>);

impl Sessions {
    fn open(&self, now_ms: u64) -> Result<String, String> {
        let token = crate::auth::new_token()?;
        let mut map = lock(&self.0);
        map.retain(|_, expiry| *expiry > now_ms);
        map.insert(token.clone(), now_ms + SESSION_MS);
        Ok(token)
    }

    fn close(&self, token: &str) {
        lock(&self.0).remove(token);
    }

    /// Signs everyone out (central's credential was replaced).
    pub(super) fn clear(&self) {
        lock(&self.0).clear();
    }

    /// The request carries a live session cookie.
    pub(super) fn valid(&self, headers: &HeaderMap, now_ms: u64) -> bool {
        self.check(headers, now_ms) == Session::Valid
    }

    /// What the request's session cookie is worth.
    pub(super) fn check(&self, headers: &HeaderMap, now_ms: u64) -> Session {
        match session_token(headers) {
            None => Session::None,
            Some(t) if lock(&self.0).get(t).is_some_and(|e| *e > now_ms) => Session::Valid,
            Some(_) => Session::Ended,
        }
    }
}

/// A request's monitor session.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Session {
    /// No session cookie.
    None,
    /// A live session.
    Valid,
    /// A cookie of a session that expired, or from before a restart.
    Ended,
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

const PAGE: &str = include_str!("monitor/index.html");
const LOGIN: &str = include_str!("monitor/login.html");
const SCRIPT: &str = include_str!("monitor/app.js");
const STYLE: &str = include_str!("monitor/app.css");

fn asset(kind: &'static str, body: &'static str) -> Response {
    hardened(
        (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
    )
}

/// The page's own files only (no inline script, nothing from elsewhere), never in a frame.
fn hardened(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    r
}

pub(super) fn routes() -> axum::Router<Shared> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/monitor") }),
        )
        .route("/monitor", get(page))
        .route("/monitor/login", post(login))
        .route("/monitor/logout", post(logout))
        .route(
            "/monitor/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/monitor/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/v1/monitor/journal", get(journal_page))
        .route("/v1/monitor/sites", get(sites))
        .route("/v1/monitor/staleness", get(staleness))
        .route("/v1/monitor/rejections", get(rejections))
        .route("/v1/alerts", get(alerts))
}

async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let signed_in = state.sessions.valid(&headers, SystemClock.now_ms());
    let html = if signed_in { PAGE } else { LOGIN };
    let code = state.store.site().code.to_string();
    hardened(Html(html.replace("{{SITE}}", &code).replace("{{ERROR}}", "")).into_response())
}

#[derive(Deserialize, Debug)]
struct LoginForm {
    credential: String,
}

async fn login(
    State(state): State<Shared>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let presented = format!("Bearer {}", form.credential.trim());
    let site = crate::auth::authenticate(&state.store, &state.sites(), Some(&presented));
    let refused = |why: &str| {
        let code = state.store.site().code.to_string();
        hardened(
            (
                StatusCode::UNAUTHORIZED,
                Html(LOGIN.replace("{{SITE}}", &code).replace(
                    "{{ERROR}}",
                    &format!("<p class=\"error\" id=\"login-error\">{why}</p>"),
                )),
            )
                .into_response(),
        )
    };
    match site {
        Ok(s) if s.is_central() => {}
        Ok(s) => {
            tracing::warn!(%peer, site = %s.code, "monitor sign-in refused: a remote's credential");
            return refused("This is a remote's credential: the monitor needs central's.");
        }
        Err(denied) => {
            tracing::warn!(%peer, "monitor sign-in refused: {denied}");
            return refused("That credential is not central's administrator credential.");
        }
    }
    let token = match state.sessions.open(SystemClock.now_ms()) {
        Ok(t) => t,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let secure = if state.config.tls_cert.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_MS / 1000
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/monitor".to_owned()),
        ],
    )
        .into_response()
}

async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(t) = session_token(&headers) {
        state.sessions.close(t);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            ),
            (header::LOCATION, "/monitor".to_owned()),
        ],
    )
        .into_response()
}

/// Time zones: central's, and each remote's.
struct Zones {
    central: Zone,
    sites: HashMap<SiteId, Zone>,
}

impl Zones {
    fn of(store: &Store) -> Zones {
        let config = central::config(store).ok().flatten();
        let central_zone = config
            .as_ref()
            .and_then(|c| c.central.time_zone.parse().ok())
            .unwrap_or(Zone::UTC);
        let sites = config
            .iter()
            .flat_map(|c| c.remotes.iter())
            .filter_map(|r| Some((r.id, r.time_zone.parse().ok()?)))
            .collect();
        Zones {
            central: central_zone,
            sites,
        }
    }

    fn at(&self, site: SiteId, ms: Option<u64>) -> Option<Times> {
        let ms = ms?;
        let zone = self.sites.get(&site).copied().unwrap_or(self.central);
        Some(Times {
            ms,
            central: self.central.datetime_at(ms),
            site: zone.datetime_at(ms),
        })
    }
}

/// An instant in central's time zone and in the site's.
#[derive(Serialize, Debug)]
struct Times {
    ms: u64,
    central: String,
    site: String,
}

/// One journal row as the page shows it.
#[derive(Serialize, Debug)]
struct RowView {
    id: String,
    site: String,
    kind: &'static str,
    mode: &'static str,
    link: Option<String>,
    link_note: &'static str,
    file_ready: Option<Times>,
    exec_start: Option<Times>,
    exec_end: Option<Times>,
    executions: u32,
    refused_by_remote: bool,
    changes: u64,
    rejections: u64,
    bytes: u64,
    state: RowState,
    error: Option<String>,
}

fn kind_name(k: FlowKind) -> &'static str {
    match k {
        FlowKind::Emission => "emission",
        FlowKind::Return => "return",
        FlowKind::Bootstrap => "bootstrap",
    }
}

fn mode_name(m: SyncMode) -> &'static str {
    match m {
        SyncMode::Deferred => "deferred",
        SyncMode::Immediate => "immediate",
        SyncMode::NoReturn => "no return",
        SyncMode::Provisioning => "provisioning",
    }
}

fn code_of(state: &AppState, site: SiteId) -> String {
    state
        .sites()
        .get(site)
        .map_or_else(|| site.to_string(), |s| s.code.to_string())
}

/// What link 0 means for this row (J1, J2).
fn link_note(row: &JournalRow, seen: Option<&SiteSeen>) -> &'static str {
    if row.link.is_some() {
        return "";
    }
    match (row.kind, row.mode) {
        (FlowKind::Bootstrap, _) => "bootstrap",
        (FlowKind::Return, _) => "answers no new emission",
        (FlowKind::Emission, SyncMode::NoReturn) => "no return (M3)",
        (FlowKind::Emission, _) => {
            let answered_later = seen
                .and_then(|s| s.last_return_made)
                .zip(row.exec_end_ms)
                .is_some_and(|((_, made), end)| made >= end);
            if answered_later {
                "superseded: a later return answered it (J2)"
            } else {
                "no return yet"
            }
        }
    }
}

fn row_view(
    state: &AppState,
    zones: &Zones,
    seen: &std::collections::BTreeMap<SiteId, SiteSeen>,
    row: JournalRow,
) -> RowView {
    RowView {
        id: row.id.to_string(),
        site: code_of(state, row.site),
        kind: kind_name(row.kind),
        mode: mode_name(row.mode),
        link: row.link.map(|l| l.to_string()),
        link_note: link_note(&row, seen.get(&row.site)),
        file_ready: zones.at(row.site, row.file_ready_ms),
        exec_start: zones.at(row.site, row.exec_start_ms),
        exec_end: zones.at(row.site, row.exec_end_ms),
        executions: row.executions,
        refused_by_remote: row.refused_by_remote,
        changes: row.n_changes,
        rejections: row.n_rejections,
        bytes: row.bytes,
        state: monitor::row_state(&row),
        error: row.error,
    }
}

#[derive(Deserialize, Debug, Default)]
struct JournalQuery {
    site: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DD HH:MM`, in central's time zone.
    from: Option<String>,
    to: Option<String>,
    /// One flow (its SynID): the row alone.
    flow: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

fn nonempty(s: Option<&String>) -> Option<&str> {
    s.map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// `YYYY-MM-DD[ HH:MM]` in `zone` as UTC ms; as an end (`to`), the end of the day or minute
/// named, so that `to=2026-11-25` includes that day.
fn parse_instant(zone: Zone, s: &str, end: bool) -> Result<u64, Response> {
    let bad = |why: String| fail(StatusCode::BAD_REQUEST, why);
    let text = s.trim().replace('T', " ");
    let (date, time) = match text.split_once(' ') {
        Some((d, t)) => (d, Some(t.trim())),
        None => (text.as_str(), None),
    };
    let date: chrono::NaiveDate = date.parse().map_err(|_| {
        bad(format!(
            "{s:?} is not a date: write YYYY-MM-DD, optionally with HH:MM (in central's time zone)"
        ))
    })?;
    let Some(time) = time else {
        let day = zone.instant(date, outpost_replicator::schedule::HhMm::MIDNIGHT);
        return Ok(if end {
            date.succ_opt().map_or(u64::MAX, |next| {
                zone.instant(next, outpost_replicator::schedule::HhMm::MIDNIGHT)
            })
        } else {
            day
        });
    };
    let hhmm: outpost_replicator::schedule::HhMm = time
        .get(..5)
        .unwrap_or(time)
        .parse()
        .map_err(|e| bad(format!("{s:?}: {e}")))?;
    let at = zone.instant(date, hhmm);
    Ok(if end { at.saturating_add(60_000) } else { at })
}

/// A cursor as `next` gave it: hex digits.
fn check_cursor(before: Option<&String>) -> Result<(), Response> {
    match nonempty(before) {
        Some(c) if !c.len().is_multiple_of(2) || !c.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(fail(
                StatusCode::BAD_REQUEST,
                format!("before={c:?}: pass back a page's `next`"),
            ))
        }
        _ => Ok(()),
    }
}

/// `limit`: 1 to 500, 50 by default.
fn check_limit(limit: Option<usize>) -> Result<usize, Response> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=PAGE_MAX) => Ok(n),
        Some(n) => Err(fail(
            StatusCode::BAD_REQUEST,
            format!("limit={n}: from 1 to {PAGE_MAX}"),
        )),
    }
}

/// A query string that does not parse: JSON 400, as every other error.
fn bad_query(e: &axum::extract::rejection::QueryRejection) -> Response {
    fail(StatusCode::BAD_REQUEST, e.body_text())
}

#[derive(Serialize, Debug)]
struct PageView<T> {
    items: Vec<T>,
    next: Option<String>,
    scanned: usize,
}

impl<T> PageView<T> {
    fn of<S>(page: monitor::Page<S>, view: impl FnMut(S) -> T) -> Self {
        PageView {
            items: page.items.into_iter().map(view).collect(),
            next: page.next,
            scanned: page.scanned,
        }
    }
}

/// A blocking task's result as the answer: JSON, or the error it made.
fn answer<T: Serialize>(done: Result<T, Response>) -> Response {
    match done {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn journal_page(
    State(state): State<Shared>,
    _admin: Admin,
    q: Result<Query<JournalQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(&e),
    };
    let site = match nonempty(q.site.as_ref()) {
        None => None,
        Some(code) => match state.sites().by_code(code) {
            Some(s) => Some(s.id),
            None => return fail(StatusCode::NOT_FOUND, format!("no site {code}")),
        },
    };
    let kind = match nonempty(q.kind.as_ref()) {
        None => None,
        Some("emission") => Some(FlowKind::Emission),
        Some("return") => Some(FlowKind::Return),
        Some("bootstrap") => Some(FlowKind::Bootstrap),
        Some(k) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("kind {k:?}: emission, return or bootstrap"),
            );
        }
    };
    let row_state = match nonempty(q.state.as_ref()) {
        None => None,
        Some(s) => match serde_json::from_value::<RowState>(serde_json::Value::from(s)) {
            Ok(st) => Some(st),
            Err(_) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("state {s:?}: waiting, done, quarantined, superseded or failed"),
                );
            }
        },
    };
    let flow = match nonempty(q.flow.as_ref()) {
        None => None,
        Some(f) => match f.parse::<FlowId>() {
            Ok(id) => Some(id),
            Err(_) => return fail(StatusCode::BAD_REQUEST, format!("{f:?} is not a SynID")),
        },
    };
    let limit = match check_limit(q.limit) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if let Err(r) = check_cursor(q.before.as_ref()) {
        return r;
    }
    let central_zone = Zones::of(&state.store).central;
    let bound = |s: Option<&String>, end| nonempty(s).map(|s| parse_instant(central_zone, s, end));
    let (from, to) = match (
        bound(q.from.as_ref(), false).transpose(),
        bound(q.to.as_ref(), true).transpose(),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let shared = Arc::clone(&state);
    let done = blocking(move || {
        let store = &shared.store;
        let zones = Zones::of(store);
        let seen = monitor::sites_seen(store).map_err(|e| e.to_string())?;
        let page = if let Some(id) = flow {
            let row = outpost_replicator::journal::row(store, id).map_err(|e| e.to_string())?;
            monitor::Page {
                items: row.into_iter().collect(),
                next: None,
                scanned: 1,
            }
        } else {
            monitor::journal_page(store, from, to, q.before.as_deref(), limit, |r| {
                site.is_none_or(|s| r.site == s)
                    && kind.is_none_or(|k| r.kind == k)
                    && row_state.is_none_or(|st| monitor::row_state(r) == st)
            })
            .map_err(|e| e.to_string())?
        };
        Ok(PageView::of(page, |r| row_view(&shared, &zones, &seen, r)))
    })
    .await;
    answer(done)
}

/// One remote as the page shows it.
#[derive(Serialize, Debug)]
struct SiteView {
    code: String,
    time_zone: String,
    sync: String,
    last_emission: Option<String>,
    last_emission_at: Option<Times>,
    /// The remote's clock minus central's at its last emission (ms).
    clock_offset_ms: Option<i64>,
    last_applied_return: Option<String>,
    last_applied_return_at: Option<Times>,
    /// How old the newest information from central the remote has is (ms).
    staleness_ms: Option<u64>,
    /// Since when (the return or bootstrap it came with was made).
    staleness_since: Option<Times>,
    pending: Vec<String>,
    quarantined: Vec<String>,
    /// Documents the remote holds reserved (R7: out of syncs until released), as its newest
    /// emission reported them; `None` before one did.
    reserved: Option<u64>,
    open_alerts: usize,
}

async fn sites(State(state): State<Shared>, _admin: Admin) -> Response {
    let shared = Arc::clone(&state);
    answer(blocking(move || site_views(&shared).map_err(|e| e.to_string())).await)
}

fn site_views(state: &AppState) -> outpost_replicator::Result<Vec<SiteView>> {
    let store = &state.store;
    let now = SystemClock.now_ms();
    let zones = Zones::of(store);
    let seen = monitor::sites_seen(store)?;
    let config = central::config(store)?;
    let pending = central::pending_emissions(store)?;
    let open: Vec<Alert> = monitor::alerts(store, 0)?;
    let mut held: HashMap<SiteId, (Vec<String>, Vec<String>)> = HashMap::new();
    for id in pending {
        let quarantined = outpost_replicator::journal::row(store, id)?
            .is_some_and(|r| monitor::row_state(&r) == RowState::Quarantined);
        let entry = held.entry(id.site).or_default();
        if quarantined {
            entry.1.push(id.to_string());
        } else {
            entry.0.push(id.to_string());
        }
    }
    let snap = store.snapshot()?;
    let mut out = Vec::new();
    for remote in config.iter().flat_map(|c| c.remotes.iter()) {
        let s = seen.get(&remote.id).cloned().unwrap_or_default();
        let reserved = monitor::reserved(&snap, remote.id)?.map(|r| r.count);
        let info_since = s
            .last_applied_return
            .map(|(_, made, _)| made)
            .max(s.bootstrap_ms);
        let (pending, quarantined) = held.remove(&remote.id).unwrap_or_default();
        out.push(SiteView {
            code: remote.code.clone(),
            time_zone: remote.time_zone.clone(),
            sync: remote
                .sync_types
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            last_emission: s.last_emission.map(|(id, _)| id.to_string()),
            last_emission_at: zones.at(remote.id, s.last_emission.map(|(_, at)| at)),
            clock_offset_ms: s.clock_offset_ms,
            last_applied_return: s.last_applied_return.map(|(id, _, _)| id.to_string()),
            last_applied_return_at: zones.at(
                remote.id,
                s.last_applied_return.map(|(_, _, applied)| applied),
            ),
            staleness_ms: info_since.map(|t| now.saturating_sub(t)),
            staleness_since: zones.at(remote.id, info_since),
            pending,
            quarantined,
            reserved,
            open_alerts: open
                .iter()
                .filter(|a| a.is_open() && a.site == Some(remote.id))
                .count(),
        });
    }
    Ok(out)
}

/// The days of staleness history the page asks for by default, and at most.
const STALENESS_DAYS_DEFAULT: u64 = 7;
const STALENESS_DAYS_MAX: u64 = 31;
/// Returns and bootstraps read for one history, at most.
const STALENESS_ROWS_MAX: usize = 5_000;

#[derive(Deserialize, Debug)]
struct StalenessQuery {
    days: Option<u64>,
}

/// Each remote's staleness over the last days: what the page draws as sparklines.
#[derive(Serialize, Debug)]
struct StalenessView {
    from_ms: u64,
    to_ms: u64,
    /// `false`: the journal held more returns than were read; the oldest part of a history may
    /// be missing.
    complete: bool,
    sites: Vec<SiteStaleness>,
}

/// One remote's staleness: `[time, staleness]` pairs in ms, in time order (a sawtooth: it rises
/// with time and drops when a return is applied).
#[derive(Serialize, Debug)]
struct SiteStaleness {
    code: String,
    points: Vec<monitor::StalenessPoint>,
}

async fn staleness(
    State(state): State<Shared>,
    _admin: Admin,
    q: Result<Query<StalenessQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let days = match q {
        Ok(Query(StalenessQuery { days: None })) => STALENESS_DAYS_DEFAULT,
        Ok(Query(StalenessQuery {
            days: Some(d @ 1..=STALENESS_DAYS_MAX),
        })) => d,
        Ok(Query(StalenessQuery { days: Some(d) })) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("days={d}: from 1 to {STALENESS_DAYS_MAX}"),
            );
        }
        Err(e) => return bad_query(&e),
    };
    let shared = Arc::clone(&state);
    let done = blocking(move || {
        let store = &shared.store;
        let to_ms = SystemClock.now_ms();
        let from_ms = to_ms.saturating_sub(days * 24 * 3600 * 1000);
        let mut history = monitor::staleness_history(store, from_ms, to_ms, STALENESS_ROWS_MAX)
            .map_err(|e| e.to_string())?;
        let config = central::config(store).map_err(|e| e.to_string())?;
        let sites = config
            .iter()
            .flat_map(|c| c.remotes.iter())
            .map(|r| SiteStaleness {
                code: r.code.clone(),
                points: history.sites.remove(&r.id).unwrap_or_default(),
            })
            .collect();
        Ok(StalenessView {
            from_ms,
            to_ms,
            complete: history.complete,
            sites,
        })
    })
    .await;
    answer(done)
}

#[derive(Deserialize, Debug)]
struct RejectionQuery {
    q: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

/// One refused change as the page shows it.
#[derive(Serialize, Debug)]
struct RejectionView {
    at: Option<Times>,
    source: String,
    flow: String,
    rule: String,
    table: String,
    key: String,
    field: String,
    value: serde_json::Value,
    reason: String,
}

fn rejection_view(state: &AppState, zones: &Zones, r: &LoggedRejection) -> RejectionView {
    let rej = &r.rejection;
    RejectionView {
        at: zones.at(rej.source, Some(rej.at_ms)),
        source: code_of(state, rej.source),
        flow: r.flow.to_string(),
        rule: rej.refusal.rule.to_string(),
        table: rej.change.table.clone(),
        key: rej.change.key.clone(),
        field: rej.change.slot.to_string(),
        value: outpost_api::to_json(&rej.change.value),
        reason: rej.refusal.reason.clone(),
    }
}

async fn rejections(
    State(state): State<Shared>,
    _admin: Admin,
    q: Result<Query<RejectionQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(&e),
    };
    let limit = match check_limit(q.limit) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if let Err(r) = check_cursor(q.before.as_ref()) {
        return r;
    }
    let shared = Arc::clone(&state);
    let done = blocking(move || {
        let zones = Zones::of(&shared.store);
        let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
        let page = monitor::rejections_page(&shared.store, q.before.as_deref(), limit, |r| {
            if needle.is_empty() {
                return true;
            }
            let v = rejection_view(&shared, &zones, r);
            let hay = format!(
                "{} {} {} {} {}/{}.{} {} {}",
                v.source, v.flow, v.rule, v.reason, v.table, v.key, v.field, v.value, v.table
            )
            .to_lowercase();
            hay.contains(&needle)
        })
        .map_err(|e| e.to_string())?;
        Ok(PageView::of(page, |r| rejection_view(&shared, &zones, &r)))
    })
    .await;
    answer(done)
}

/// An alert as the page and `outpost journal --alerts` show it.
#[derive(Serialize, Debug)]
pub struct AlertView {
    /// Its number.
    pub id: u64,
    /// Still open.
    pub open: bool,
    /// The site it is about.
    pub site: Option<String>,
    /// The flow it is about (a SynID).
    pub flow: Option<String>,
    /// When it was raised, in central's time zone.
    pub raised: String,
    /// When it closed.
    pub closed: Option<String>,
    /// When it was e-mailed.
    pub mailed: Option<String>,
    /// What it says.
    pub text: String,
}

/// The open alerts and the `recent` latest closed ones, for the page and the command line.
pub fn alert_views(store: &Store, recent: usize) -> crate::Result<Vec<AlertView>> {
    let zone = Zones::of(store).central;
    let sites = store.sites();
    let alerts = monitor::alerts(store, recent)?;
    Ok(alerts
        .into_iter()
        .map(|a| AlertView {
            id: a.id,
            open: a.is_open(),
            site: a.site.map(|s| {
                sites
                    .get(s)
                    .map_or_else(|| s.to_string(), |s| s.code.to_string())
            }),
            flow: a.flow.map(|f: FlowId| f.to_string()),
            raised: zone.datetime_at(a.raised_ms),
            closed: a.closed_ms.map(|m| zone.datetime_at(m)),
            mailed: a.mailed_ms.map(|m| zone.datetime_at(m)),
            text: a.text,
        })
        .collect())
}

async fn alerts(State(state): State<Shared>, _admin: Admin) -> Response {
    let shared = Arc::clone(&state);
    let mail = lock(&state.mail_status).clone();
    match blocking(move || Ok(alert_views(&shared.store, 50)?)).await {
        Ok(v) => axum::Json(serde_json::json!({ "alerts": v, "mail": mail })).into_response(),
        Err(r) => r,
    }
}
