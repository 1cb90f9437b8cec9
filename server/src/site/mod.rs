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
//!
//! Here: the server's settings and state, starting it (`serve`), its housekeeping; `users.rs`
//! (workstation users), `log.rs` (the workstation log), `feed.rs` (the change feed),
//! `routes.rs` (the routes and the authenticated `Workstation`).

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

mod feed;
mod leases;
mod log;
mod routes;
mod users;

use feed::*;
use leases::*;
pub use log::*;
use routes::*;
pub use users::*;

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

/// The workstations' state for `store`: reservations left by an earlier run get a lease of
/// their own (renewed by their holder if it is still there, released otherwise).
fn new_state(
    store: Arc<Store>,
    dir: &Path,
    config: &SiteServeConfig,
    link: Option<crate::sync::Link>,
    lease_existing: bool,
) -> Result<Shared> {
    // Read before the knowledge: a rewrite between the two tells watchers once too often, not
    // never.
    let rewrites = store.rewrites();
    let knowledge = store.knowledge();
    let start = run_start(SystemClock.now_ms());
    let (feed_bumped, _) = tokio::sync::watch::channel(0u64);
    let state: Shared = Arc::new(SiteState {
        store: Arc::clone(&store),
        dir: dir.to_path_buf(),
        leases: Mutex::new(HashMap::new()),
        feed: Mutex::new(Feed {
            knowledge,
            start,
            next: start,
            events: VecDeque::new(),
            rewrites,
        }),
        feed_bumped,
        link,
        syncing: Arc::new(Mutex::new(())),
        config: config.clone(),
    });
    // Reservations left by workstations of an earlier run get the lease they had (kept in the
    // store), renewed by their holder if it is still there, released otherwise; one made
    // without a lease keeps none. A store a server of before ran on kept no lease: there,
    // every reservation gets the longest a holder may have asked (R7: a holder renewing a long
    // lease every third of it would lose a shorter one).
    *lock(&state.leases) = leases_at_start(
        &store,
        SystemClock.now_ms(),
        lease_existing,
        config.lease_max_s.max(config.lease_s) * 1000,
    )?;
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
    let store = Arc::new(crate::data_dir::open_owned(dir)?);
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
    let _control = crate::control::start(crate::control::Daemon {
        name: "site serve",
        dir: dir.to_path_buf(),
        store: Arc::clone(&store),
        work: Arc::clone(&state.syncing),
        changed: None,
    })?;
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
            feed.start = 1;
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
        let seqs: Vec<u64> = (0..20u64)
            .map(|i| put(&s, &format!("K{i}"), now - (19 - i) * day / 2))
            .collect();
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
        let far_seq = put(&s, "K-far", far);
        assert_eq!(prune(cutoff(far, 4).unwrap_or(0), 100), Some((2, false)));
        assert_eq!(keys(&s).first().map(String::as_str), Some("K13"));
        // Numbering goes on after the pruned ones; a reader's cursor still works.
        let last = put(&s, "K-next", far + day);
        assert!(last > far_seq && far_seq > seqs[19]);
        let tail: Vec<u64> = log_entries(&s.store, seqs[18])
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(tail, [seqs[19], far_seq, last]);
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
    fn s3_the_workstation_log_of_a_store_put_back_from_a_backup_numbers_past_the_lost_store_s() {
        let s = state_with(0..0, 1);
        let put = |store: &Store, key: &str, at_ms: u64| {
            let mut e = entry("ANNE", "put", "customers", key);
            e.at_ms = at_ms;
            store
                .write(|tx| log_put(tx, &mut e))
                .unwrap_or_else(|e| panic!("{e}"));
            e.seq
        };
        let t = 1_000 * DAY_MS;
        put(&s.store, "K1", t);
        let backup = s
            .store
            .copy_in_memory(StoreConfig::new(
                s.store.site().clone(),
                outpost::retail::schema(),
                SystemClock,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        // The lost store's entries, which a log reader has read.
        let read = put(&s.store, "K2", t + 1_000).max(put(&s.store, "K3", t + 2_000));
        // The store is put back from the backup: its next entry is numbered past them, so a
        // reader asking for what follows its cursor gets it.
        let next = put(&backup, "K4", t + 3_000);
        assert!(next > read, "{next} after {read}");
        let after: Vec<String> = log_entries(&backup, read)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(after, ["K4"]);
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

    /// R3/R5 and a watcher: a return puts back a write central refused (its register goes back
    /// to central's, an older dot, or goes away). No new dot: the feed, computed from what
    /// dots it has fed, showed nothing, and a till kept showing the refused value. Every
    /// watcher is now told it missed changes (to read again what it shows).
    #[test]
    fn s3_a_refused_write_put_back_by_a_return_tells_watchers_to_read_again() {
        let site = Site::remote(2, "BSOC").unwrap_or_else(|e| panic!("{e}"));
        let config = StoreConfig::new(site, outpost::retail::schema(), SystemClock);
        let store = Arc::new(Store::in_memory(config).unwrap_or_else(|e| panic!("{e}")));
        let state = new_state(
            Arc::clone(&store),
            Path::new("."),
            &SiteServeConfig::default(),
            None,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, refused) = store
            .write_commit(|tx| tx.set("customers", "K", "name", "refused"))
            .unwrap_or_else(|e| panic!("{e}"));
        refresh_feed(&state);
        let read = changes_after(&state, 0);
        assert!(!read.changes.is_empty());
        let dot = refused.dot.unwrap_or_else(|| panic!("a dot"));
        let reverted = store
            .write(|tx| tx.revert("customers", "K", &Slot::Field("name".into()), dot, None))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(reverted);
        refresh_feed(&state);
        let v = changes_after(&state, read.seq);
        assert!(v.gap, "{v:?}");
        // A watcher that read again since is not told twice.
        let again = changes_after(&state, 0);
        assert!(!changes_after(&state, again.seq).gap);
    }

    /// R7 across a restart of the site server: a reservation left by a workstation of the
    /// earlier run got the default lease (60 s), whatever lease its holder had asked — one that
    /// renews every third of a 10-minute lease lost it at the first minute, and a sync could
    /// then emit the half-edited document and freeze it (R6). It now gets the longest lease a
    /// holder may ask: renewed if the holder is there, released after that otherwise.
    #[test]
    fn r7_a_reservation_of_an_earlier_run_keeps_the_longest_lease_a_holder_may_have_asked() {
        let site = Site::remote(2, "BSOC").unwrap_or_else(|e| panic!("{e}"));
        let config = StoreConfig::new(site, outpost::retail::schema(), SystemClock);
        let store = Arc::new(Store::in_memory(config).unwrap_or_else(|e| panic!("{e}")));
        store
            .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "draft"))
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .reserve("sales_documents", "BSOC-000001", "ANNE@till-1")
            .unwrap_or_else(|e| panic!("{e}"));
        let serve = SiteServeConfig::default();
        let before = SystemClock.now_ms();
        let state = new_state(Arc::clone(&store), Path::new("."), &serve, None, true)
            .unwrap_or_else(|e| panic!("{e}"));
        let leases = lock(&state.leases);
        let (holder, until) = leases
            .get(&("sales_documents".to_owned(), "BSOC-000001".to_owned()))
            .cloned()
            .unwrap_or_else(|| panic!("a lease: {leases:?}"));
        assert_eq!(holder, "ANNE@till-1");
        assert!(
            until >= before + serve.lease_max_s * 1000,
            "{until} < {before} + {} s",
            serve.lease_max_s
        );
    }

    /// A workstation's sync after one that panicked: the lock left poisoned answered "a sync is
    /// under way" for ever. It is the site's turn again; a sync in progress still holds it.
    #[test]
    fn s3_a_sync_that_panicked_does_not_leave_the_site_busy_for_ever() {
        let lock = Arc::new(Mutex::new(()));
        let held = Arc::clone(&lock);
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("a sync that failed badly");
        })
        .join();
        assert!(panicked.is_err() && lock.is_poisoned());
        let turn = sync_turn(&lock);
        assert!(turn.is_some());
        let other = Arc::clone(&lock);
        let busy = std::thread::spawn(move || sync_turn(&other).is_none())
            .join()
            .unwrap_or_else(|_| panic!("the probe"));
        assert!(busy, "a sync in progress holds the turn");
    }

    /// R7 across restarts, both ways. A reservation made without a lease (`outpost reserve`,
    /// an operator keeping a document out of syncs) got one when the site server restarted,
    /// and was released an hour later; on central's `/ws`, a workstation's reservation of an
    /// earlier run got none and held the document back from every shop for ever. Leases are
    /// kept in the store: after a restart, what had one has it again, what had none has none.
    #[test]
    fn r7_a_restart_keeps_leases_where_there_were_and_gives_none_where_there_were_none() {
        let site = Site::remote(2, "BSOC").unwrap_or_else(|e| panic!("{e}"));
        let config = StoreConfig::new(site, outpost::retail::schema(), SystemClock);
        let store = Arc::new(Store::in_memory(config).unwrap_or_else(|e| panic!("{e}")));
        for key in ["BSOC-000001", "BSOC-000002"] {
            store
                .write(|tx| tx.set("sales_documents", key, "status", "draft"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let serve = SiteServeConfig::default();
        let start = |lease_existing: bool| {
            new_state(
                Arc::clone(&store),
                Path::new("."),
                &serve,
                None,
                lease_existing,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let doc = |key: &str| ("sales_documents".to_owned(), key.to_owned());
        for lease_existing in [true, false] {
            let first = start(lease_existing);
            // A till's reservation through the routes (a 10-minute lease), and an operator's.
            take_reservation(
                &first,
                "ANNE@till-1",
                "sales_documents",
                "BSOC-000001",
                600,
                false,
            )
            .unwrap_or_else(|_| panic!("reserved"));
            store
                .reserve("sales_documents", "BSOC-000002", "operator")
                .unwrap_or_else(|e| panic!("{e}"));
            drop(first);
            let again = start(lease_existing);
            let leases = lock(&again.leases);
            let (holder, until) = leases
                .get(&doc("BSOC-000001"))
                .cloned()
                .unwrap_or_else(|| panic!("the till's lease: {leases:?}"));
            assert_eq!(holder, "ANNE@till-1");
            assert!(until <= SystemClock.now_ms() + 600_000 + 1_000, "{until}");
            assert!(
                !leases.contains_key(&doc("BSOC-000002")),
                "the operator's reservation has no lease: {leases:?}"
            );
            drop(leases);
            for key in ["BSOC-000001", "BSOC-000002"] {
                let holder = if key.ends_with('1') {
                    "ANNE@till-1"
                } else {
                    "operator"
                };
                store
                    .release("sales_documents", key, holder)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn s3_a_cursor_of_an_earlier_run_of_the_server_is_told_it_missed_changes() {
        let site = Site::remote(2, "BSOC").unwrap_or_else(|e| panic!("{e}"));
        let config = StoreConfig::new(site, outpost::retail::schema(), SystemClock);
        let store = Arc::new(Store::in_memory(config).unwrap_or_else(|e| panic!("{e}")));
        let run = || {
            new_state(
                Arc::clone(&store),
                Path::new("."),
                &SiteServeConfig::default(),
                None,
                false,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let write = |key: &str| {
            store
                .write(|tx| tx.set("customers", key, "name", "x"))
                .unwrap_or_else(|e| panic!("{e}"));
        };
        // A watcher reads the first run's three changes.
        let first = run();
        for key in ["A", "B", "C"] {
            write(key);
        }
        refresh_feed(&first);
        let read = changes_after(&first, 0);
        assert_eq!((read.changes.len(), read.gap), (3, false));
        // The server restarts; changes are committed, some before the watcher comes back.
        drop(first);
        std::thread::sleep(Duration::from_millis(2));
        let second = run();
        for key in ["D", "E", "F", "G", "H"] {
            write(key);
        }
        refresh_feed(&second);
        // Its cursor is the first run's: it is told it missed changes, and gets all kept.
        let v = changes_after(&second, read.seq);
        assert!(v.gap, "{v:?}");
        assert_eq!(v.changes.len(), 5, "{v:?}");
        // A new watcher starting from 0 is not.
        assert!(!changes_after(&second, 0).gap);
    }
}
