//! The routes: the authenticated workstation (`Workstation`), records, reservations with
//! leases, syncs, settings, the log and users; every write through the store's guards as the
//! workstation's user.

use super::*;
use outpost_api::{NewUser, RecordKey, SyncSummary, UserCredential};

/// An error answer in the shape the client library reads back ([`ErrorBody`]).
pub(super) fn fail(kind: ErrorKind, message: impl Into<String>) -> Response {
    crate::http::error_answer(ErrorBody::new(kind, message))
}

/// The answer for an engine error: a refused write with its refusal, as the client library
/// turns it back into the engine's error.
pub(super) fn engine_error(e: &outpost_engine::Error) -> Response {
    crate::http::error_answer(ErrorBody::from_engine(e))
}

/// The authenticated workstation user.
pub(super) struct Workstation {
    /// The user and, when the request names it (`Outpost-Workstation`), the workstation:
    /// `ANNE@till-2`. Reservations are held by it, and the log names it.
    user: String,
    /// The user's code alone (`ANNE`).
    code: String,
    admin: bool,
}

/// Refuses a user who is not an administrator of the site: `what` names what it asked for.
pub(super) fn require_admin(w: &Workstation, what: &str) -> Result<(), Response> {
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
pub(super) fn workstation_name(parts: &Parts) -> Result<Option<String>, Response> {
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

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(fail(ErrorKind::Store, e.to_string())),
    }
}

pub(super) fn answer<T: Serialize>(r: Result<T, Response>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

pub(super) fn fields_from(
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

pub(super) fn view(r: &outpost_engine::Record) -> RecordView {
    RecordView {
        key: r.key.clone(),
        fields: r
            .fields
            .iter()
            .map(|(f, v)| (f.clone(), outpost_api::to_json(v)))
            .collect(),
    }
}

pub(super) async fn get_record(
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

pub(super) async fn put_record(
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
            Ok(RecordKey { key })
        })
        .await,
    )
}

pub(super) async fn create_record(
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
            Ok(RecordKey { key })
        })
        .await,
    )
}

pub(super) async fn delete_record(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath((table, key)): UrlPath<(String, String)>,
) -> Response {
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let log = entry(&w.user, "delete", &table, &key);
            logged_write(&shared, log, |tx, _| tx.delete(&table, &key))?;
            Ok(RecordKey { key })
        })
        .await,
    )
}

#[derive(Deserialize, Debug)]
pub(super) struct ScanQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// The most records one scan returns.
pub(super) use outpost_api::SCAN_LIMIT_MAX;

pub(super) async fn scan_records(
    State(state): State<Shared>,
    _w: Workstation,
    UrlPath(table): UrlPath<String>,
    Query(q): Query<ScanQuery>,
) -> Response {
    let store = Arc::clone(&state.store);
    let limit = q.limit.unwrap_or(1000).max(1);
    if limit > SCAN_LIMIT_MAX {
        // Refused, not cut short: a reader taking "fewer than asked" for "no more" would stop.
        return fail(
            ErrorKind::BadRequest,
            format!(
                "limit {limit} is above the most one request returns ({SCAN_LIMIT_MAX}): ask \
                 again from just after the last key returned (the client library pages by itself)"
            ),
        );
    }
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
pub(super) struct LeaseQuery {
    lease_s: Option<u64>,
    /// A renewal of a lease the caller holds: refused if it ran out meanwhile (the document was
    /// released, and may have been written or synced since), not taken as a new reservation.
    #[serde(default)]
    renew: bool,
}

pub(super) async fn reserve(
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
        blocking(move || take_reservation(&shared, &w.user, &table, &key, lease_s, q.renew)).await,
    )
}

/// Reserves a document for `holder` for `lease_s` seconds, or renews its lease (`renew`: refused
/// if the lease ran out meanwhile); the lease is kept in the store with the reservation.
pub(super) fn take_reservation(
    shared: &SiteState,
    holder: &str,
    table: &str,
    key: &str,
    lease_s: u64,
    renew: bool,
) -> Result<serde_json::Value, Response> {
    // The lease map is held across the store's reservation, so that a renewal, a release and
    // an expiry of one document never interleave.
    let mut leases = lock(&shared.leases);
    let renewing = leases
        .get(&(table.to_owned(), key.to_owned()))
        .is_some_and(|(h, _)| h == holder);
    // A renewal renews what the store still holds for its holder: released meanwhile (by its
    // lease running out, or by hand, `outpost release`), it is not taken again.
    let held = || -> bool {
        shared
            .store
            .snapshot()
            .and_then(|s| s.reserved_by(table, key))
            .is_ok_and(|h| h.as_deref() == Some(holder))
    };
    if renew && !(renewing && held()) {
        let why = format!(
            "the reservation of {table}/{key} by {holder} is no longer held (its lease ran out \
             before this renewal, or it was released): it may have been written or synced \
             since — read it again and reserve it anew (R7)"
        );
        let mut log = entry(holder, "reserve (renewal too late)", table, key);
        log.refused = Some(why.clone());
        log_write(&shared.store, log);
        return Err(fail(ErrorKind::Conflict, why));
    }
    let until = SystemClock.now_ms() + lease_s * 1000;
    let done = reserve_leased(&shared.store, table, key, holder, until, lease_s * 1000);
    if !renewing || done.is_err() {
        let mut log = entry(holder, "reserve", table, key);
        log.refused = done.as_ref().err().map(ToString::to_string);
        log_write(&shared.store, log);
    }
    done.map_err(|e| engine_error(&e))?;
    leases.insert(
        (table.to_owned(), key.to_owned()),
        (holder.to_owned(), until),
    );
    Ok(serde_json::json!({ "lease_s": lease_s, "until_ms": until }))
}

pub(super) async fn release(
    State(state): State<Shared>,
    w: Workstation,
    UrlPath((table, key)): UrlPath<(String, String)>,
) -> Response {
    let shared = Arc::clone(&state);
    answer(
        blocking(move || {
            let mut leases = lock(&shared.leases);
            let done = release_leased(&shared.store, &table, &key, &w.user);
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
pub(super) fn expire_leases(state: &SiteState) {
    let now = SystemClock.now_ms();
    let mut leases = lock(&state.leases);
    let expired: Vec<((String, String), String)> = leases
        .iter()
        .filter(|(_, (_, until))| *until <= now)
        .map(|(k, (holder, _))| (k.clone(), holder.clone()))
        .collect();
    for ((table, key), holder) in expired {
        leases.remove(&(table.clone(), key.clone()));
        match release_leased(&state.store, &table, &key, &holder) {
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

/// The site's one sync at a time: `None` while another holds it. A sync that panicked left the
/// lock poisoned, not held: the next one goes on, as the scheduler's does (answering "under
/// way" for ever would hide the failure).
pub(super) fn sync_turn(lock: &Mutex<()>) -> Option<std::sync::MutexGuard<'_, ()>> {
    match lock.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

pub(super) async fn sync_now(State(state): State<Shared>, w: Workstation) -> Response {
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
            let Some(_one) = sync_turn(&shared.syncing) else {
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
                Ok(summary) => Ok(SyncSummary {
                    summary: summary.to_string(),
                }),
                Err(e) => Err(fail(ErrorKind::Sync, e.to_string())),
            }
        })
        .await,
    )
}

pub(super) async fn settings(State(state): State<Shared>, w: Workstation) -> Response {
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

pub(super) async fn set_setting(
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
            done.map_err(|e| match e {
                outpost_replicator::Error::Refused(why) => fail(ErrorKind::BadRequest, why),
                e => fail(ErrorKind::Store, e.to_string()),
            })?;
            Ok(serde_json::json!({ name: value }))
        })
        .await,
    )
}

#[derive(Deserialize, Debug)]
pub(super) struct LogQuery {
    #[serde(default)]
    after: u64,
}

pub(super) async fn workstation_log(
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

pub(super) async fn list_users_route(State(state): State<Shared>, w: Workstation) -> Response {
    if let Err(r) = require_admin(&w, "the list of users") {
        return r;
    }
    let store = Arc::clone(&state.store);
    answer(blocking(move || users_in(&store).map_err(|e| engine_error(&e))).await)
}

/// Whether `code` is still an administrator, read inside the transaction that acts for it: an
/// admin removed or demoted by another meanwhile no longer manages users.
pub(super) fn still_admin(
    tx: &outpost_engine::WriteTx<'_, '_>,
    code: &str,
) -> outpost_engine::Result<bool> {
    Ok(tx
        .local_get(&user_key(code))?
        .and_then(|b| serde_json::from_slice::<User>(&b).ok())
        .is_some_and(|u| u.admin))
}

pub(super) fn no_longer_admin(w: &Workstation) -> Response {
    fail(
        ErrorKind::Forbidden,
        format!("{} is no longer an administrator of this site", w.code),
    )
}

/// An admin adds a user, or gives one a new credential (the old one stops working at once);
/// the answer carries the credential, shown this once. An admin does not take away its own
/// admin right, so the site keeps an administrator who can reach it.
pub(super) async fn add_user_route(
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
            Ok(UserCredential {
                user: code,
                admin: asked.admin,
                credential,
            })
        })
        .await,
    )
}

/// An admin removes a user: its credential stops working at once; what it wrote stays, and a
/// reservation it held is released when its lease runs out. Nobody removes themselves, so the
/// site keeps an administrator who can reach it.
pub(super) async fn remove_user_route(
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

pub(super) fn router(state: Shared) -> axum::Router {
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
        .layer(axum::middleware::from_fn(crate::http::json_errors))
        .with_state(state)
}
