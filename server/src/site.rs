//! `outpost site serve`: one site's store served to the workstations of that site (SPEC S3): a
//! shop's tills and back office, several programs on several machines, one store. The same
//! process runs the site's sync scheduler (`outpost remote run`'s), so one process owns the
//! store.
//!
//! Every write goes through the store's guards (R3–R8) as the embedded API's do, acting as the
//! workstation's user, and a refusal comes back with its rule and reason; the client library
//! (`outpost-client`) turns it into the same [`outpost_engine::Error`] the embedded API
//! returns. Each request carries `Authorization: Bearer USER.secret` (a workstation user's
//! credential, made by `outpost site add-user`; the site keeps only its digest).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /v1/health` | anyone | `ok` |
//! | `GET /v1/records/{table}/{key}` | user | `{"key", "fields"}`; 404 when there is none |
//! | `PUT /v1/records/{table}/{key}` | user | body `{"field": value…}`: those fields written |
//! | `POST /v1/records/{table}` | user | body as above: a new record under the site's next key; `{"key"}` |
//! | `DELETE /v1/records/{table}/{key}` | user | deletes the record |
//! | `GET /v1/records/{table}?from=&to=&limit=` | user | records in key order, `from` inclusive, `to` exclusive |
//! | `POST /v1/reservations/{table}/{key}?lease_s=` | user | reserves a document (R7) for the user, for a lease; asking again renews it |
//! | `DELETE /v1/reservations/{table}/{key}` | user | releases it |
//! | `POST /v1/sync` | user | an immediate sync with central now; the summary |
//! | `GET /v1/changes?after=SEQ&wait_ms=MS` | user | committed changes after `SEQ` (local writes and those a sync brought), waiting up to `MS` for some |
//! | `GET /v1/settings` | user | the site's settings (C6) |
//! | `PUT /v1/settings/{name}` | admin | body: the value, as a JSON string |
//! | `GET /v1/log?after=N` | admin | who wrote what from which workstation, refused writes included |
//!
//! A reservation lasts as long as its lease: a workstation that disappears (killed, unplugged)
//! stops renewing it, and the server releases it when the lease runs out — a document is never
//! locked for ever by a till that is gone.

#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use outpost_api::{ChangeEvent, Changes, ErrorBody, ErrorKind, RecordView, UserView};
use outpost_engine::{Clock, Knowledge, Slot, Store, Value};
use outpost_replicator::local::{SITE_LOG as LOG, SITE_LOG_SEQ as LOG_SEQ, SITE_USERS as USERS};
use serde::{Deserialize, Serialize};

use crate::Result;
use outpost::SystemClock;

/// `outpost site serve`'s settings (command-line flags).
#[derive(Clone, Debug)]
pub struct SiteServeConfig {
    /// Address and port (loopback by default; the shop's network otherwise).
    pub listen: String,
    /// Central's address for the syncs, instead of `remote.toml`'s.
    pub central: Option<String>,
    /// A reservation's lease when the workstation does not say (seconds).
    pub lease_s: u64,
    /// The longest lease a workstation may ask for (seconds).
    pub lease_max_s: u64,
    /// Run the site's sync scheduler (fixed-time syncs, M1) in this process.
    pub scheduler: bool,
    /// Serve plain HTTP on an address other than loopback (credentials in clear on the shop's
    /// network): refused unless set.
    pub allow_plain_http: bool,
    /// PEM certificate chain: with `tls_key`, HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Workstation log entries older than this many days are removed (checked at start and
    /// every hour); 0 keeps them all.
    pub log_keep_days: u64,
}

/// How long the workstation log is kept by default: a year and a day, so that last year's
/// entries are there for the year-end.
pub const LOG_KEEP_DAYS_DEFAULT: u64 = 366;

impl Default for SiteServeConfig {
    fn default() -> Self {
        SiteServeConfig {
            listen: "127.0.0.1:2639".into(),
            central: None,
            lease_s: 60,
            lease_max_s: 3600,
            scheduler: true,
            allow_plain_http: false,
            tls_cert: None,
            tls_key: None,
            log_keep_days: LOG_KEEP_DAYS_DEFAULT,
        }
    }
}

/// A workstation user as the site keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    /// SHA-256 of the secret, hex.
    digest: String,
    /// May change the site's settings (C2, C6).
    admin: bool,
}

fn user_key(code: &str) -> Vec<u8> {
    let mut k = USERS.to_vec();
    k.extend_from_slice(code.as_bytes());
    k
}

fn check_user_code(code: &str) -> Result<()> {
    if code.is_empty()
        || code.len() > 32
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(
            format!("{code:?} is not a user code: 1 to 32 letters, digits, '_' or '-'").into(),
        );
    }
    Ok(())
}

/// A new credential for `code`: what the site keeps (its digest) and what the user is given
/// (`CODE.secret`).
fn new_credential(code: &str, admin: bool) -> Result<(Vec<u8>, String)> {
    check_user_code(code)?;
    let secret = crate::auth::new_token()?;
    let user = User {
        digest: crate::auth::hex_digest(&secret),
        admin,
    };
    let bytes = serde_json::to_vec(&user).map_err(|e| e.to_string())?;
    Ok((bytes, format!("{code}.{secret}")))
}

/// The site's workstation users, by code.
fn users_in(store: &Store) -> outpost_engine::Result<Vec<UserView>> {
    let mut end = USERS.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Ok(store
        .snapshot()?
        .local_range(USERS, &end, None)?
        .into_iter()
        .filter_map(|(k, v)| {
            let code = std::str::from_utf8(k.get(USERS.len()..)?).ok()?.to_owned();
            let user: User = serde_json::from_slice(&v).ok()?;
            Some(UserView {
                user: code,
                admin: user.admin,
            })
        })
        .collect())
}

/// `outpost site add-user`: a workstation user and its credential (`USER.secret`), printed
/// once; the site keeps its digest. Adding an existing user gives it a new credential.
pub fn add_user(dir: &Path, code: &str, admin: bool) -> Result<String> {
    let (bytes, credential) = new_credential(code, admin)?;
    let store = crate::data_dir::open(dir)?;
    let key = user_key(code);
    store
        .write(|tx| {
            let op = if tx.local_get(&key)?.is_some() {
                "user given a new credential"
            } else {
                "user added"
            };
            tx.local_put(&key, &bytes)?;
            let mut log = entry(OFFLINE_ADMIN, op, "", code);
            log.fields = Some(serde_json::json!({ "admin": admin }));
            log_put(tx, &mut log)
        })
        .map_err(|e| e.to_string())?;
    Ok(credential)
}

/// Who the workstation log names for users managed from the data directory, server stopped.
const OFFLINE_ADMIN: &str = "(outpost site, on the data directory)";

/// `outpost site users`: the site's workstation users (the server stopped; while it runs, an
/// admin user lists them with `outpost client users`).
pub fn list_users(dir: &Path) -> Result<Vec<UserView>> {
    let store = crate::data_dir::open(dir)?;
    Ok(users_in(&store)?)
}

/// `outpost site remove-user`: the user's credential stops working; what it wrote stays, and a
/// reservation it held is released when its lease runs out.
pub fn remove_user(dir: &Path, code: &str) -> Result<()> {
    check_user_code(code)?;
    let store = crate::data_dir::open(dir)?;
    let key = user_key(code);
    let removed = store
        .write(|tx| {
            if tx.local_get(&key)?.is_none() {
                return Ok(false);
            }
            tx.local_remove(&key)?;
            log_put(tx, &mut entry(OFFLINE_ADMIN, "user removed", "", code))?;
            Ok(true)
        })
        .map_err(|e| e.to_string())?;
    if removed {
        Ok(())
    } else {
        Err(format!("{code} is not a workstation user of this site").into())
    }
}

/// One line of the workstation log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its number.
    pub seq: u64,
    /// When (UTC ms, the site's clock).
    pub at_ms: u64,
    /// The workstation user.
    pub user: String,
    /// `put`, `create`, `delete`, `reserve`, `release`, `release (lease ran out)`, `setting`.
    pub op: String,
    /// The table (empty for a setting).
    pub table: String,
    /// The record's key (a setting's name).
    pub key: String,
    /// What was written, as JSON.
    pub fields: Option<serde_json::Value>,
    /// Why it was refused (the rule and reason), if it was.
    pub refused: Option<String>,
}

/// Appends an entry to the workstation log inside a write transaction.
fn log_put(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    entry: &mut LogEntry,
) -> outpost_engine::Result<()> {
    let n = tx
        .local_get(LOG_SEQ)?
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
        + 1;
    tx.local_put(LOG_SEQ, &n.to_be_bytes())?;
    entry.seq = n;
    let bytes =
        serde_json::to_vec(&entry).map_err(|e| outpost_engine::Error::Mapping(e.to_string()))?;
    let mut key = LOG.to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    tx.local_put(&key, &bytes)
}

const DAY_MS: u64 = 86_400_000;

fn log_end() -> Vec<u8> {
    let mut end = LOG.to_vec();
    end.extend_from_slice(&u64::MAX.to_be_bytes());
    end
}

fn read_entry(v: &[u8]) -> Option<LogEntry> {
    serde_json::from_slice(v).ok()
}

/// The time before which the workstation log's entries go in one pruning run (hourly), or
/// `None` when the log is kept whole. Entries older than `keep_days` go, age counted from
/// `now_ms` or the newest entry, whichever is earlier; and one run takes at most a day's worth
/// of entries from the oldest on. So a clock set far ahead does not wipe the log at once: it
/// loses it no faster than 24 days of entries a day, while central's clock-skew quarantine
/// reports the clock. A log that is behind (a year of entries at the first start of this
/// version) catches up at the same pace.
fn prune_cutoff(store: &Store, now_ms: u64, keep_days: u64) -> outpost_engine::Result<Option<u64>> {
    if keep_days == 0 {
        return Ok(None);
    }
    let snap = store.snapshot()?;
    let end = log_end();
    let newest = snap
        .local_range_rev(LOG, &end, Some(1))?
        .first()
        .and_then(|(_, v)| read_entry(v))
        .map_or(now_ms, |e| e.at_ms);
    let Some(oldest) = snap
        .local_range(LOG, &end, Some(1))?
        .first()
        .map(|(_, v)| read_entry(v).map_or(0, |e| e.at_ms))
    else {
        return Ok(None);
    };
    let by_age = now_ms
        .min(newest)
        .saturating_sub(keep_days.saturating_mul(DAY_MS));
    Ok(Some(by_age.min(oldest.saturating_add(DAY_MS))))
}

/// Removes up to `max` of the workstation log's entries written before `cutoff`, oldest first,
/// in one transaction; returns how many went and whether more may be due (the limit was
/// reached). Entries are numbered in the order they were written, so the pruning stops at the
/// first one young enough. An entry that cannot be read is kept (and reported), and the scan
/// goes on past it.
fn prune_log(store: &Store, cutoff: u64, max: usize) -> outpost_engine::Result<(usize, bool)> {
    let snap = store.snapshot()?;
    let end = log_end();
    let mut start = LOG.to_vec();
    let mut doomed = Vec::new();
    let mut unreadable = 0;
    let mut young = false;
    'pages: while doomed.len() < max && !young {
        let page = snap.local_range(&start, &end, Some(max))?;
        let Some((last, _)) = page.last() else { break };
        start = last.clone();
        start.push(0);
        let full = page.len() == max;
        for (k, v) in page {
            match read_entry(&v) {
                Some(e) if e.at_ms < cutoff => {
                    doomed.push(k);
                    if doomed.len() == max {
                        break 'pages;
                    }
                }
                Some(_) => {
                    young = true;
                    break;
                }
                None => unreadable += 1,
            }
        }
        if !full {
            break;
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            entries = unreadable,
            "workstation log entries that cannot be read are kept"
        );
    }
    if doomed.is_empty() {
        return Ok((0, false));
    }
    store.write(|tx| {
        for k in &doomed {
            tx.local_remove(k)?;
        }
        Ok(())
    })?;
    Ok((doomed.len(), doomed.len() == max))
}

/// Entries the log pruning removes in one transaction (one per housekeeping tick).
const PRUNE_BATCH: usize = 10_000;

/// One batch of a pruning run up to `cutoff`; whether more may be due.
fn prune_log_batch(state: &SiteState, cutoff: u64) -> bool {
    match prune_log(&state.store, cutoff, PRUNE_BATCH) {
        Ok((0, _)) => false,
        Ok((n, more)) => {
            tracing::info!(
                entries = n,
                keep_days = state.config.log_keep_days,
                "workstation log pruned"
            );
            more
        }
        Err(e) => {
            tracing::warn!("cannot prune the workstation log: {e}");
            false
        }
    }
}

/// Appends an entry to the workstation log in a transaction of its own.
fn log_write(store: &Store, mut entry: LogEntry) {
    if let Err(e) = store.write(|tx| log_put(tx, &mut entry)) {
        tracing::error!("cannot write the workstation log: {e}");
    }
}

/// The changes committed since the server started, for watchers.
#[derive(Debug)]
struct Feed {
    knowledge: Knowledge,
    next: u64,
    events: VecDeque<ChangeEvent>,
}

/// Events kept for watchers that fall behind.
const FEED_MAX: usize = 100_000;

/// A reservation's lease: who holds it, until when.
type Leases = HashMap<(String, String), (String, u64)>;

#[derive(Debug)]
struct SiteState {
    store: Arc<Store>,
    dir: PathBuf,
    config: SiteServeConfig,
    leases: Mutex<Leases>,
    feed: Mutex<Feed>,
    feed_bumped: tokio::sync::watch::Sender<u64>,
    /// Central, when the site syncs over the network.
    link: Option<crate::sync::Link>,
    /// One sync at a time: the scheduler's and those workstations ask for.
    syncing: Arc<Mutex<()>>,
}

type Shared = Arc<SiteState>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An error answer in the shape the client library reads back ([`ErrorBody`]).
fn fail(kind: ErrorKind, message: impl Into<String>) -> Response {
    crate::http::error_answer(ErrorBody::new(kind, message))
}

/// The answer for an engine error: a refused write with its refusal, as the client library
/// turns it back into the engine's error.
fn engine_error(e: &outpost_engine::Error) -> Response {
    crate::http::error_answer(ErrorBody::from_engine(e))
}

/// The authenticated workstation user.
struct Workstation {
    /// The user and, when the request names it (`Outpost-Workstation`), the workstation:
    /// `ANNE@till-2`. Reservations are held by it, and the log names it.
    user: String,
    /// The user's code alone (`ANNE`).
    code: String,
    admin: bool,
}

/// Refuses a user who is not an administrator of the site: `what` names what it asked for.
fn require_admin(w: &Workstation, what: &str) -> Result<(), Response> {
    if w.admin {
        Ok(())
    } else {
        Err(fail(
            ErrorKind::Forbidden,
            format!(
                "{} is not an administrator of this site (needed for {what})",
                w.user
            ),
        ))
    }
}

/// A workstation's name as a request gives it: 1 to 32 letters, digits, '_', '-' or '.'.
fn workstation_name(parts: &Parts) -> Result<Option<String>, Response> {
    let Some(v) = parts.headers.get("outpost-workstation") else {
        return Ok(None);
    };
    let name = v.to_str().unwrap_or("").trim();
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(fail(
            ErrorKind::Mapping,
            "Outpost-Workstation: 1 to 32 letters, digits, '_', '-' or '.'",
        ));
    }
    Ok(Some(name.to_owned()))
}

impl FromRequestParts<Shared> for Workstation {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let denied = || {
            fail(
                ErrorKind::Unauthorized,
                "a workstation user's credential is required (Authorization: Bearer USER.secret; \
                 outpost site add-user makes one)",
            )
        };
        let not_accepted = || {
            fail(
                ErrorKind::Unauthorized,
                "the credential was not accepted: it is not one of this site's workstation users' \
                 (outpost site add-user prints them; a user added again has a new one)",
            )
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(denied)?;
        let presented = presented.strip_prefix("Bearer ").ok_or_else(not_accepted)?;
        let (code, secret) = presented.trim().split_once('.').ok_or_else(not_accepted)?;
        let stored = state
            .store
            .snapshot()
            .and_then(|s| s.local_get(&user_key(code)))
            .map_err(|e| engine_error(&e))?;
        let user: Option<User> = stored.and_then(|b| serde_json::from_slice(&b).ok());
        // An unknown user costs the same digest as a known one.
        let digest = user.as_ref().map_or("", |u| u.digest.as_str());
        let matches = crate::auth::digests_match(digest, secret);
        match user {
            Some(u) if matches => Ok(Workstation {
                user: match workstation_name(parts)? {
                    Some(ws) => format!("{code}@{ws}"),
                    None => code.to_owned(),
                },
                code: code.to_owned(),
                admin: u.admin,
            }),
            _ => {
                tracing::warn!(user = code, "refused: a wrong workstation credential");
                Err(not_accepted())
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(fail(ErrorKind::Store, e.to_string())),
    }
}

fn answer<T: Serialize>(r: Result<T, Response>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// Brings the watchers' feed up to date with what the store committed (O(Δ)).
fn refresh_feed(state: &SiteState) {
    let mut feed = lock(&state.feed);
    let lacking = match state.store.changes_lacking(&feed.knowledge, false) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the change feed: {e}");
            return;
        }
    };
    let knowledge = lacking.knowledge().clone();
    let sites = state.store.sites();
    let mut batch = Vec::new();
    for change in lacking {
        let change = match change {
            Ok(c) => c,
            Err(e) => {
                // Nothing of this pass is fed: the next pass starts from the same knowledge.
                tracing::error!("the change feed: {e}");
                return;
            }
        };
        batch.push(change);
    }
    let mut added = false;
    for change in batch {
        let (field, value) = match &change.slot {
            Slot::Created => continue,
            Slot::Tombstone => (None, serde_json::Value::Bool(true)),
            Slot::Field(f) => (Some(f.clone()), outpost_api::to_json(&change.value)),
        };
        let seq = feed.next;
        feed.next += 1;
        feed.events.push_back(ChangeEvent {
            seq,
            table: change.table,
            key: change.key,
            field,
            value,
            site: sites
                .get(change.dot.site)
                .map_or_else(|| change.dot.site.to_string(), |s| s.code.to_string()),
        });
        added = true;
        if feed.events.len() > FEED_MAX {
            feed.events.pop_front();
        }
    }
    feed.knowledge = knowledge;
    let next = feed.next;
    drop(feed);
    if added {
        state.feed_bumped.send_replace(next);
    }
}

fn fields_from(
    store: &Store,
    table: &str,
    body: &[u8],
) -> Result<(serde_json::Value, Vec<(String, Value)>), Response> {
    let parsed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| {
            fail(
                ErrorKind::Mapping,
                format!("the body is not a JSON object of fields: {e}"),
            )
        })?;
    let def = store
        .schema()
        .table(table)
        .ok_or_else(|| engine_error(&outpost_engine::Error::Schema(format!("no table {table}"))))?;
    let values = parsed
        .iter()
        .map(|(f, v)| {
            outpost_api::from_json(def.field_kind(f), v)
                .map(|v| (f.clone(), v))
                .map_err(|e| fail(ErrorKind::Mapping, format!("{f}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((serde_json::to_value(&parsed).unwrap_or_default(), values))
}

fn view(r: &outpost_engine::Record) -> RecordView {
    RecordView {
        key: r.key.clone(),
        fields: r
            .fields
            .iter()
            .map(|(f, v)| (f.clone(), outpost_api::to_json(v)))
            .collect(),
    }
}

async fn get_record(
    State(state): State<Shared>,
    _w: Workstation,
    UrlPath((table, key)): UrlPath<(String, String)>,
) -> Response {
    let store = Arc::clone(&state.store);
    answer(
        blocking(move || match store.record(&table, &key) {
            Ok(Some(r)) => Ok(view(&r)),
            Ok(None) => Err(engine_error(&outpost_engine::Error::NotFound {
                table,
                key,
            })),
            Err(e) => Err(engine_error(&e)),
        })
        .await,
    )
}

fn entry(user: &str, op: &str, table: &str, key: &str) -> LogEntry {
    LogEntry {
        seq: 0,
        at_ms: SystemClock.now_ms(),
        user: user.to_owned(),
        op: op.to_owned(),
        table: table.to_owned(),
        key: key.to_owned(),
        fields: None,
        refused: None,
    }
}

/// A write as `user`, logged with its outcome, then the feed brought up to date.
fn logged_write<R>(
    state: &SiteState,
    mut log: LogEntry,
    f: impl FnOnce(&mut outpost_engine::WriteTx<'_, '_>, &mut LogEntry) -> outpost_engine::Result<R>,
) -> Result<R, Response> {
    // The write and its log entry commit together; a refused write is logged on its own.
    let user = log.user.clone();
    let done = state.store.write_as(&user, |tx| {
        let mut entry = log.clone();
        let r = f(tx, &mut entry)?;
        log_put(tx, &mut entry)?;
        Ok(r)
    });
    if let Err(e) = &done {
        log.refused = Some(e.to_string());
        log_write(&state.store, log);
    }
    refresh_feed(state);
    done.map_err(|e| engine_error(&e))
}

async fn put_record(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath((table, key)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let (json, values) = fields_from(&shared.store, &table, &body)?;
            let mut log = entry(&w.user, "put", &table, &key);
            log.fields = Some(json);
            logged_write(&shared, log, |tx, _| tx.set_fields(&table, &key, values))?;
            Ok(serde_json::json!({ "key": key }))
        })
        .await,
    )
}

async fn create_record(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath(table): UrlPath<String>,
    body: Bytes,
) -> Response {
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let (json, values) = fields_from(&shared.store, &table, &body)?;
            let mut log = entry(&w.user, "create", &table, "");
            log.fields = Some(json);
            let key = logged_write(&shared, log, |tx, log| {
                let key = tx.new_key(&table)?;
                log.key.clone_from(&key);
                tx.set_fields(&table, &key, values)?;
                Ok(key)
            })?;
            Ok(serde_json::json!({ "key": key }))
        })
        .await,
    )
}

async fn delete_record(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath((table, key)): UrlPath<(String, String)>,
) -> Response {
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let log = entry(&w.user, "delete", &table, &key);
            logged_write(&shared, log, |tx, _| tx.delete(&table, &key))?;
            Ok(serde_json::json!({ "key": key }))
        })
        .await,
    )
}

#[derive(Deserialize, Debug)]
struct ScanQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// The most records one scan returns.
const SCAN_LIMIT_MAX: usize = 10_000;

async fn scan_records(
    State(state): State<Shared>,
    _w: Workstation,
    UrlPath(table): UrlPath<String>,
    Query(q): Query<ScanQuery>,
) -> Response {
    let store = Arc::clone(&state.store);
    let limit = q.limit.unwrap_or(1000).clamp(1, SCAN_LIMIT_MAX);
    answer(
        blocking(move || {
            let snap = store.snapshot().map_err(|e| engine_error(&e))?;
            let records = snap
                .scan(&table, q.from.as_deref(), Some(limit))
                .map_err(|e| engine_error(&e))?;
            Ok(records
                .iter()
                .filter(|r| q.to.as_deref().is_none_or(|to| r.key.as_str() < to))
                .map(view)
                .collect::<Vec<_>>())
        })
        .await,
    )
}

#[derive(Deserialize, Debug)]
struct LeaseQuery {
    lease_s: Option<u64>,
}

async fn reserve(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath((table, key)): UrlPath<(String, String)>,
    Query(q): Query<LeaseQuery>,
) -> Response {
    let lease_s = q
        .lease_s
        .unwrap_or(state.config.lease_s)
        .clamp(1, state.config.lease_max_s.max(1));
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            // The lease map is held across the store's reservation, so that a renewal, a
            // release and an expiry of one document never interleave.
            let mut leases = lock(&shared.leases);
            let renewing = leases
                .get(&(table.clone(), key.clone()))
                .is_some_and(|(holder, _)| holder == &w.user);
            let done = shared.store.reserve(&table, &key, &w.user);
            if !renewing || done.is_err() {
                let mut log = entry(&w.user, "reserve", &table, &key);
                log.refused = done.as_ref().err().map(ToString::to_string);
                log_write(&shared.store, log);
            }
            done.map_err(|e| engine_error(&e))?;
            let until = SystemClock.now_ms() + lease_s * 1000;
            leases.insert((table, key), (w.user, until));
            Ok(serde_json::json!({ "lease_s": lease_s, "until_ms": until }))
        })
        .await,
    )
}

async fn release(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath((table, key)): UrlPath<(String, String)>,
) -> Response {
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let mut leases = lock(&shared.leases);
            let done = shared.store.release(&table, &key, &w.user);
            let mut log = entry(&w.user, "release", &table, &key);
            log.refused = done.as_ref().err().map(ToString::to_string);
            log_write(&shared.store, log);
            done.map_err(|e| engine_error(&e))?;
            leases.remove(&(table.clone(), key.clone()));
            drop(leases);
            refresh_feed(&shared);
            Ok(serde_json::json!({ "released": true }))
        })
        .await,
    )
}

/// Releases the reservations whose lease ran out, under the lease map's lock (a renewal either
/// comes first and keeps the document, or after and reserves it again).
fn expire_leases(state: &SiteState) {
    let now = SystemClock.now_ms();
    let mut leases = lock(&state.leases);
    let expired: Vec<((String, String), String)> = leases
        .iter()
        .filter(|(_, (_, until))| *until <= now)
        .map(|(k, (holder, _))| (k.clone(), holder.clone()))
        .collect();
    for ((table, key), holder) in expired {
        leases.remove(&(table.clone(), key.clone()));
        match state.store.release(&table, &key, &holder) {
            Ok(()) => {
                tracing::info!(%table, %key, %holder, "reservation released: its lease ran out");
                log_write(
                    &state.store,
                    entry(&holder, "release (lease ran out)", &table, &key),
                );
            }
            Err(e) => tracing::warn!(%table, %key, "cannot release an expired reservation: {e}"),
        }
    }
}

async fn sync_now(State(state): State<Shared>, w: Workstation) -> Response {
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let Some(link) = &shared.link else {
                return Err(fail(
                    ErrorKind::NoCentral,
                    "no central to sync with: central's own workstations do not sync (its \
                     daemon processes the remotes' flows); a remote's site server needs \
                     --central or central_url and credential in remote.toml",
                ));
            };
            let Ok(_one) = shared.syncing.try_lock() else {
                return Err(fail(
                    ErrorKind::SyncUnderWay,
                    "a sync of this site is under way (the scheduler's or another \
                     workstation's): try again when it is done",
                ));
            };
            tracing::info!(user = %w.user, "sync asked by a workstation");
            let done = crate::sync::sync_now(
                &shared.store,
                link,
                &shared.dir,
                crate::sync::SyncRequest {
                    no_return: false,
                    wait: None,
                },
            );
            refresh_feed(&shared);
            match done {
                Ok(summary) => Ok(serde_json::json!({ "summary": summary.to_string() })),
                Err(e) => Err(fail(ErrorKind::Sync, e.to_string())),
            }
        })
        .await,
    )
}

#[derive(Deserialize, Debug)]
struct ChangesQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

fn changes_after(state: &SiteState, after: u64) -> Changes {
    let feed = lock(&state.feed);
    let first = feed.events.front().map_or(feed.next, |e| e.seq);
    // A cursor from an earlier run of the server (beyond what this one has numbered), or one
    // older than what is kept: changes were missed; start again from what is kept.
    let lost = after >= feed.next || after.saturating_add(1) < first;
    let from = if lost { first } else { after.saturating_add(1) };
    let skip = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
    let changes: Vec<ChangeEvent> = feed.events.iter().skip(skip).take(5_000).cloned().collect();
    let seq = changes
        .last()
        .map_or(if lost { first.saturating_sub(1) } else { after }, |e| {
            e.seq
        });
    Changes {
        seq,
        gap: lost && !(after == 0 && first == 1),
        changes,
    }
}

async fn changes(
    State(state): State<Shared>,
    _w: Workstation,
    Query(q): Query<ChangesQuery>,
) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.min(300_000));
    let mut bumped = state.feed_bumped.subscribe();
    loop {
        bumped.mark_unchanged();
        let view = changes_after(&state, q.after);
        if !view.changes.is_empty() || view.gap {
            return Json(view).into_response();
        }
        tokio::select! {
            r = bumped.changed() => if r.is_err() { return Json(view).into_response(); },
            () = tokio::time::sleep_until(deadline) => return Json(view).into_response(),
        }
    }
}

async fn settings(State(state): State<Shared>, w: Workstation) -> Response {
    if let Err(r) = require_admin(&w, "settings (C2, C6)") {
        return r;
    }
    let store = Arc::clone(&state.store);
    answer(
        blocking(move || {
            outpost_replicator::remote::settings(&store)
                .map_err(|e| fail(ErrorKind::Store, e.to_string()))
        })
        .await,
    )
}

async fn set_setting(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = require_admin(&w, "settings (C2)") {
        return r;
    }
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let value: String = serde_json::from_slice(&body).map_err(|e| {
                fail(
                    ErrorKind::Mapping,
                    format!("the body is the value as a JSON string: {e}"),
                )
            })?;
            let mut log = entry(&w.user, "setting", "", &name);
            log.fields = Some(serde_json::Value::String(value.clone()));
            let done = outpost_replicator::remote::set_setting(&shared.store, &name, &value);
            log.refused = done.as_ref().err().map(ToString::to_string);
            log_write(&shared.store, log);
            done.map_err(|e| fail(ErrorKind::Store, e.to_string()))?;
            Ok(serde_json::json!({ name: value }))
        })
        .await,
    )
}

#[derive(Deserialize, Debug)]
struct LogQuery {
    #[serde(default)]
    after: u64,
}

async fn workstation_log(
    State(state): State<Shared>,
    w: Workstation,
    Query(q): Query<LogQuery>,
) -> Response {
    if let Err(r) = require_admin(&w, "the workstation log") {
        return r;
    }
    let store = Arc::clone(&state.store);
    answer(blocking(move || log_entries(&store, q.after).map_err(|e| engine_error(&e))).await)
}

async fn list_users_route(State(state): State<Shared>, w: Workstation) -> Response {
    if let Err(r) = require_admin(&w, "the list of users") {
        return r;
    }
    let store = Arc::clone(&state.store);
    answer(blocking(move || users_in(&store).map_err(|e| engine_error(&e))).await)
}

/// What `POST /v1/users/{code}` may say of the user.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[serde(default)]
    admin: bool,
}

/// Whether `code` is still an administrator, read inside the transaction that acts for it: an
/// admin removed or demoted by another meanwhile no longer manages users.
fn still_admin(tx: &outpost_engine::WriteTx<'_, '_>, code: &str) -> outpost_engine::Result<bool> {
    Ok(tx
        .local_get(&user_key(code))?
        .and_then(|b| serde_json::from_slice::<User>(&b).ok())
        .is_some_and(|u| u.admin))
}

fn no_longer_admin(w: &Workstation) -> Response {
    fail(
        ErrorKind::Forbidden,
        format!("{} is no longer an administrator of this site", w.code),
    )
}

/// An admin adds a user, or gives one a new credential (the old one stops working at once);
/// the answer carries the credential, shown this once. An admin does not take away its own
/// admin right, so the site keeps an administrator who can reach it.
async fn add_user_route(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath(code): UrlPath<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = require_admin(&w, "users") {
        return r;
    }
    let store = Arc::clone(&state.store);
    answer(
        blocking(move || {
            let asked: NewUser = if body.iter().all(u8::is_ascii_whitespace) {
                NewUser::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    fail(
                        ErrorKind::Mapping,
                        format!("the body is {{\"admin\": true|false}}: {e}"),
                    )
                })?
            };
            if code == w.code && !asked.admin {
                return Err(fail(
                    ErrorKind::Forbidden,
                    format!(
                        "{code} cannot take away its own admin right: another administrator can \
                         (a new credential for yourself: ask with \"admin\": true)"
                    ),
                ));
            }
            let (bytes, credential) =
                new_credential(&code, asked.admin).map_err(|e| fail(ErrorKind::Mapping, e))?;
            let key = user_key(&code);
            let done = store
                .write(|tx| {
                    if !still_admin(tx, &w.code)? {
                        return Ok(None);
                    }
                    let op = if tx.local_get(&key)?.is_some() {
                        "user given a new credential"
                    } else {
                        "user added"
                    };
                    tx.local_put(&key, &bytes)?;
                    let mut log = entry(&w.user, op, "", &code);
                    log.fields = Some(serde_json::json!({ "admin": asked.admin }));
                    log_put(tx, &mut log)?;
                    Ok(Some(op))
                })
                .map_err(|e| engine_error(&e))?;
            let Some(op) = done else {
                return Err(no_longer_admin(&w));
            };
            tracing::info!(user = %code, admin = asked.admin, by = %w.user, "{op}");
            Ok(serde_json::json!({ "user": code, "admin": asked.admin, "credential": credential }))
        })
        .await,
    )
}

/// An admin removes a user: its credential stops working at once; what it wrote stays, and a
/// reservation it held is released when its lease runs out. Nobody removes themselves, so the
/// site keeps an administrator who can reach it.
async fn remove_user_route(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath(code): UrlPath<String>,
) -> Response {
    if let Err(r) = require_admin(&w, "users") {
        return r;
    }
    if let Err(e) = check_user_code(&code) {
        return fail(ErrorKind::Mapping, e);
    }
    if code == w.code {
        return fail(
            ErrorKind::Forbidden,
            format!("{code} cannot remove itself: another administrator can"),
        );
    }
    let store = Arc::clone(&state.store);
    answer(
        blocking(move || {
            let key = user_key(&code);
            let removed = store
                .write(|tx| {
                    if !still_admin(tx, &w.code)? {
                        return Ok(None);
                    }
                    if tx.local_get(&key)?.is_none() {
                        return Ok(Some(false));
                    }
                    tx.local_remove(&key)?;
                    log_put(tx, &mut entry(&w.user, "user removed", "", &code))?;
                    Ok(Some(true))
                })
                .map_err(|e| engine_error(&e))?;
            match removed {
                None => Err(no_longer_admin(&w)),
                Some(false) => Err(fail(
                    ErrorKind::UnknownUser,
                    format!("{code} is not a workstation user of this site"),
                )),
                Some(true) => {
                    tracing::info!(user = %code, by = %w.user, "workstation user removed");
                    Ok(serde_json::json!({ "removed": code }))
                }
            }
        })
        .await,
    )
}

/// The workstation log after entry `after`, at most 10,000 entries.
pub fn log_entries(store: &Store, after: u64) -> outpost_engine::Result<Vec<LogEntry>> {
    let snap = store.snapshot()?;
    let mut start = LOG.to_vec();
    start.extend_from_slice(&(after + 1).to_be_bytes());
    let mut end = LOG.to_vec();
    end.extend_from_slice(&u64::MAX.to_be_bytes());
    Ok(snap
        .local_range(&start, &end, Some(10_000))?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// The workstations' state for `store`: reservations left by an earlier run get a lease of
/// their own (renewed by their holder if it is still there, released otherwise).
fn new_state(
    store: Arc<Store>,
    dir: &Path,
    config: &SiteServeConfig,
    link: Option<crate::sync::Link>,
    lease_existing: bool,
) -> Result<Shared> {
    let knowledge = store.knowledge();
    let (feed_bumped, _) = tokio::sync::watch::channel(0u64);
    let state: Shared = Arc::new(SiteState {
        store: Arc::clone(&store),
        dir: dir.to_path_buf(),
        leases: Mutex::new(HashMap::new()),
        feed: Mutex::new(Feed {
            knowledge,
            next: 1,
            events: VecDeque::new(),
        }),
        feed_bumped,
        link,
        syncing: Arc::new(Mutex::new(())),
        config: config.clone(),
    });
    // Reservations left by workstations of an earlier run get a lease of their own: renewed by
    // their holder if it is still there, released otherwise.
    if lease_existing {
        let until = SystemClock.now_ms() + config.lease_s * 1000;
        let held = store
            .snapshot()
            .and_then(|s| s.reservations())
            .map_err(|e| e.to_string())?;
        let mut leases = lock(&state.leases);
        for (table, key, holder) in held {
            leases.insert((table, key), (holder, until));
        }
    }
    Ok(state)
}

/// The workstation routes and their housekeeping (leases that ran out, changes a sync brought
/// in), for central's daemon to serve under `/ws` to central's own workstations: the same
/// routes, guards and errors as `outpost site serve` (`/ws/v1/sync` answers 409: central does
/// not sync with anyone). Reservations made otherwise than through these routes keep no lease.
/// Call from within a tokio runtime.
pub(crate) fn workstation_routes(
    store: Arc<Store>,
    dir: &Path,
    log_keep_days: u64,
) -> Result<axum::Router> {
    let config = SiteServeConfig {
        log_keep_days,
        ..SiteServeConfig::default()
    };
    let state = new_state(store, dir, &config, None, false)?;
    spawn_housekeeping(&state);
    Ok(router(state))
}

fn router(state: Shared) -> axum::Router {
    axum::Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route(
            "/v1/records/{table}/{key}",
            get(get_record).put(put_record).delete(delete_record),
        )
        .route("/v1/records/{table}", get(scan_records).post(create_record))
        .route(
            "/v1/reservations/{table}/{key}",
            post(reserve).delete(release),
        )
        .route("/v1/sync", post(sync_now))
        .route("/v1/changes", get(changes))
        .route("/v1/settings", get(settings))
        .route("/v1/settings/{name}", put(set_setting))
        .route("/v1/log", get(workstation_log))
        .route("/v1/users", get(list_users_route))
        .route(
            "/v1/users/{code}",
            post(add_user_route).delete(remove_user_route),
        )
        .layer(axum::extract::DefaultBodyLimit::max(8 << 20))
        .with_state(state)
}

fn spawn_housekeeping(state: &Shared) {
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // The log is pruned at start, then every hour (14,400 ticks): the run's cutoff is
        // fixed when it starts, and it goes one batch a tick while there is more, so leases
        // and the feed are never held up long.
        let mut ticks: u64 = 0;
        let mut pruning: Option<u64> = None;
        loop {
            tick.tick().await;
            let s = Arc::clone(&state);
            let new_run = ticks.is_multiple_of(14_400);
            ticks += 1;
            pruning = tokio::task::spawn_blocking(move || {
                expire_leases(&s);
                refresh_feed(&s);
                let cutoff = match pruning {
                    Some(c) => Some(c),
                    None if new_run => {
                        prune_cutoff(&s.store, SystemClock.now_ms(), s.config.log_keep_days)
                            .unwrap_or_else(|e| {
                                tracing::warn!("cannot prune the workstation log: {e}");
                                None
                            })
                    }
                    None => None,
                };
                cutoff.filter(|c| prune_log_batch(&s, *c))
            })
            .await
            .unwrap_or(None);
        }
    });
}

/// Runs the site's server until SIGTERM or Ctrl-C.
pub fn serve(dir: &Path, config: SiteServeConfig) -> Result<()> {
    let addr: SocketAddr = config
        .listen
        .parse()
        .map_err(|e| format!("--listen {:?}: {e}", config.listen))?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if !addr.ip().is_loopback() && tls.is_none() {
        if !config.allow_plain_http {
            return Err(format!(
                "{addr} is not a loopback address: the workstations' credentials would travel in \
                 clear; give --tls-cert and --tls-key, or on a network you trust pass \
                 --allow-plain-http"
            )
            .into());
        }
        tracing::warn!(%addr, "serving workstations over plain HTTP on the local network");
    }
    let store = Arc::new(crate::data_dir::open(dir)?);
    if store.site().is_central() {
        return Err(format!(
            "{} holds central's store: central's own workstations use central's daemon, which \
             serves the same routes under /ws (outpost central serve; client --server \
             http://central:2638/ws); site serve serves a remote's store",
            dir.display()
        )
        .into());
    }
    let net = crate::sync::RemoteNet::load(dir)?;
    let link =
        if config.central.is_some() || (net.central_url.is_some() && net.credential.is_some()) {
            Some(crate::sync::Link::new(
                dir,
                config.central.as_deref(),
                None,
            )?)
        } else {
            None
        };
    let state = new_state(Arc::clone(&store), dir, &config, link, true)?;
    if config.scheduler
        && let Some(link) = state.link.clone()
    {
        let store = Arc::clone(&store);
        let dir = dir.to_path_buf();
        let one = Arc::clone(&state.syncing);
        std::thread::Builder::new()
            .name("sync-scheduler".into())
            .spawn(move || {
                if let Err(e) = crate::sync::run_with(&store, &link, &dir, None, Some(&one)) {
                    tracing::error!("the sync scheduler stopped: {e}");
                }
            })
            .map_err(|e| format!("cannot start the sync scheduler: {e}"))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the network runtime: {e}"))?;
    runtime.block_on(serve_http(addr, state, tls))
}

async fn serve_http(
    addr: SocketAddr,
    state: Shared,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<()> {
    let app = router(Arc::clone(&state));
    spawn_housekeeping(&state);
    crate::http::listen(
        addr,
        app,
        crate::http::Listen {
            name: format!("site {}", state.store.site().code),
            tls,
            grace: Duration::from_secs(10),
            header_timeout: None,
        },
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM: the site server then stops taking requests and lets those
/// under way finish; `outpost client hold` releases its reservation.
pub use crate::http::stop_signal;

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_engine::{Site, StoreConfig};

    fn state_with(events: std::ops::Range<u64>, next: u64) -> Shared {
        let site = Site::remote(2, "BSOC").unwrap_or_else(|e| panic!("{e}"));
        let store = Store::in_memory(StoreConfig::new(
            site,
            outpost::retail::schema(),
            SystemClock,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let state = new_state(
            Arc::new(store),
            Path::new("."),
            &SiteServeConfig::default(),
            None,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        {
            let mut feed = lock(&state.feed);
            feed.next = next;
            for seq in events {
                feed.events.push_back(ChangeEvent {
                    seq,
                    table: "customers".into(),
                    key: format!("K{seq}"),
                    field: Some("name".into()),
                    value: serde_json::Value::from(seq),
                    site: "BSOC".into(),
                });
            }
        }
        state
    }

    #[test]
    fn s3_the_workstation_log_keeps_what_is_younger_than_its_retention_and_loses_nothing_else() {
        let s = state_with(0..0, 1);
        let day = DAY_MS;
        let now = 1_000 * day;
        let put = |s: &SiteState, key: &str, at_ms: u64| {
            let mut e = entry("ANNE", "put", "customers", key);
            e.at_ms = at_ms;
            s.store
                .write(|tx| log_put(tx, &mut e))
                .unwrap_or_else(|e| panic!("{e}"));
            e.seq
        };
        // Twenty entries half a day apart, the oldest 9.5 days before now.
        for i in 0..20u64 {
            put(&s, &format!("K{i}"), now - (19 - i) * day / 2);
        }
        let keys = |s: &SiteState| -> Vec<String> {
            log_entries(&s.store, 0)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        let cutoff =
            |at: u64, keep: u64| prune_cutoff(&s.store, at, keep).unwrap_or_else(|e| panic!("{e}"));
        let prune = |c: u64, max: usize| prune_log(&s.store, c, max).ok();
        // Keeping everything: no run.
        assert_eq!(cutoff(now, 0), None);
        // Keeping 30 days: a run that finds nothing old enough.
        assert_eq!(prune(cutoff(now, 30).unwrap_or(0), 100), Some((0, false)));
        assert_eq!(keys(&s).len(), 20);
        // Keeping 4 days, from a clock half a day later than the newest entry (age counts from
        // the entry): a run takes at most a day of entries from the oldest on, in batches.
        let c = cutoff(now + day / 2, 4).unwrap_or(0);
        assert_eq!(c, now - 19 * day / 2 + day);
        // (A full batch says more may be due; the next finds out.)
        assert_eq!(prune(c, 1), Some((1, true)));
        assert_eq!(prune(c, 1), Some((1, true)));
        assert_eq!(prune(c, 1), Some((0, false)));
        assert_eq!(keys(&s).first().map(String::as_str), Some("K2"));
        // The next runs catch up a day each, down to what is younger than 4 days.
        for _ in 0..10 {
            let c = cutoff(now, 4).unwrap_or(0);
            prune(c, 100);
        }
        assert_eq!(keys(&s).len(), 9, "{:?}", keys(&s));
        assert_eq!(keys(&s).first().map(String::as_str), Some("K11"));
        // A clock years ahead, then an entry stamped by it: one run still takes a day's worth.
        let far = now + 3_000 * day;
        put(&s, "K-far", far);
        assert_eq!(prune(cutoff(far, 4).unwrap_or(0), 100), Some((2, false)));
        assert_eq!(keys(&s).first().map(String::as_str), Some("K13"));
        // Numbering goes on after the pruned ones; a reader's cursor still works.
        let last = put(&s, "K-next", far + day);
        assert_eq!(last, 22);
        let tail: Vec<u64> = log_entries(&s.store, 19)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(tail, [20, 21, 22]);
        // Entries that cannot be read are kept, and the scan goes past them: even when there
        // are more of them than a batch.
        for n in 0..3u64 {
            let mut junk = LOG.to_vec();
            junk.extend_from_slice(&n.to_be_bytes());
            s.store
                .write(|tx| tx.local_put(&junk, b"not an entry"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let c = now - 2 * day;
        assert_eq!(prune(c, 2), Some((2, true)));
        assert_eq!(prune(c, 2), Some((0, false)));
        assert_eq!(keys(&s).first().map(String::as_str), Some("K15"));
        let junk_left = s
            .store
            .snapshot()
            .and_then(|t| t.local_range(LOG, &log_end(), None))
            .map(|r| r.iter().filter(|(_, v)| read_entry(v).is_none()).count());
        assert_eq!(junk_left.ok(), Some(3));
    }

    fn seqs(v: &Changes) -> Vec<u64> {
        v.changes.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn s3_the_change_feed_says_when_a_watcher_missed_changes() {
        // Everything kept since the start: no gap, from the cursor on.
        let s = state_with(1..6, 6);
        let v = changes_after(&s, 0);
        assert_eq!((seqs(&v), v.gap, v.seq), (vec![1, 2, 3, 4, 5], false, 5));
        let v = changes_after(&s, 3);
        assert_eq!((seqs(&v), v.gap, v.seq), (vec![4, 5], false, 5));
        let v = changes_after(&s, 5);
        assert_eq!((seqs(&v), v.gap, v.seq), (vec![], false, 5));
        // The oldest were dropped: a watcher before them is told.
        let s = state_with(10..13, 13);
        let v = changes_after(&s, 4);
        assert_eq!((seqs(&v), v.gap), (vec![10, 11, 12], true));
        let v = changes_after(&s, 0);
        assert_eq!((seqs(&v), v.gap), (vec![10, 11, 12], true));
        // A cursor of an earlier run of the server (beyond what this one numbered).
        let s = state_with(1..3, 3);
        let v = changes_after(&s, 40);
        assert_eq!((seqs(&v), v.gap, v.seq), (vec![1, 2], true, 2));
        let v = changes_after(&s, u64::MAX);
        assert!(v.gap);
    }
}
