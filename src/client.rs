//! The client library of a site server (`outpost site serve`, SPEC S3): a workstation's program
//! works on the site's store over the shop's network with the same typed records and the same
//! errors as the embedded API — a write refused by a rule is an
//! [`Error::Refused`](outpost_engine::Error::Refused) carrying the same [`Refusal`], whichever
//! way the store is reached.
//!
//! ```no_run
//! # fn main() -> outpost::Result<()> {
//! use outpost::client::{Client, Records};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Customer { name: String, city: String }
//!
//! let till = Client::new("http://192.168.1.10:2639", "ANNE.0f3c…")?;
//! till.put("customers", "BSOC-C1", &Customer { name: "Dupont".into(), city: "Lyon".into() })?;
//! let c: Option<Customer> = till.get("customers", "BSOC-C1")?;
//! # Ok(()) }
//! ```
//!
//! [`Records`] is implemented by [`Store`] (embedded) and [`Client`] (a site server), so a host
//! application picks one by configuration and writes the rest once. [`AsyncClient`] offers the
//! same calls as `async fn`s for programs on tokio.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outpost_engine::{Error, Refusal, Result, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::site::ChangeEvent;

/// What [`Client::changes`] returns.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Changes {
    /// Pass it as `after` next time.
    pub seq: u64,
    /// Changes were missed before these (the watcher fell too far behind, or the server
    /// restarted): read the records it shows again.
    pub gap: bool,
    /// The changes, in commit order.
    pub changes: Vec<ChangeEvent>,
}

/// Records by table and key: the calls a workstation program makes, embedded or over the
/// network.
pub trait Records {
    /// A record as `T` (its fields by name); `None` when there is none.
    fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>>;
    /// Writes `value`'s fields into the record (R3–R8 apply).
    fn put<T: Serialize + ?Sized>(&self, table: &str, key: &str, value: &T) -> Result<()>;
    /// A new record under the site's next key; returns the key.
    fn create<T: Serialize + ?Sized>(&self, table: &str, value: &T) -> Result<String>;
    /// Deletes the record.
    fn delete(&self, table: &str, key: &str) -> Result<()>;
    /// Reserves a document (R7) for this user. Embedded, it stays reserved until released;
    /// through a site server it is a lease of the server's default length (renew it by
    /// reserving again, or use [`Client::hold`]).
    fn reserve(&self, table: &str, key: &str) -> Result<()>;
    /// Releases it.
    fn release(&self, table: &str, key: &str) -> Result<()>;
}

/// The embedded store, acting as one holder (the workstation's user).
#[derive(Debug, Clone)]
pub struct Embedded {
    store: Arc<Store>,
    user: String,
}

impl Embedded {
    /// `store`, written as `user` (the holder of the reservations it makes, R7).
    pub fn new(store: Arc<Store>, user: impl Into<String>) -> Self {
        Embedded {
            store,
            user: user.into(),
        }
    }
}

impl Records for Embedded {
    fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        self.store.get(table, key)
    }
    fn put<T: Serialize + ?Sized>(&self, table: &str, key: &str, value: &T) -> Result<()> {
        self.store
            .write_as(&self.user, |tx| tx.put(table, key, value))
    }
    fn create<T: Serialize + ?Sized>(&self, table: &str, value: &T) -> Result<String> {
        self.store.write_as(&self.user, |tx| {
            let key = tx.new_key(table)?;
            tx.put(table, &key, value)?;
            Ok(key)
        })
    }
    fn delete(&self, table: &str, key: &str) -> Result<()> {
        self.store.write_as(&self.user, |tx| tx.delete(table, key))
    }
    fn reserve(&self, table: &str, key: &str) -> Result<()> {
        self.store.reserve(table, key, &self.user)
    }
    fn release(&self, table: &str, key: &str) -> Result<()> {
        self.store.release(table, key, &self.user)
    }
}

/// A connection to a site server, as one workstation user.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    credential: String,
    workstation: Option<String>,
    agent: ureq::Agent,
}

/// A failure of the network or of the server, as the embedded API's error type.
fn transport(what: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(what.to_string()))
}

/// Escapes one path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the site server at `base_url` (`http://host:2639`) for the user whose
    /// credential is `USER.secret`.
    pub fn new(base_url: &str, credential: &str) -> Result<Self> {
        Self::build(base_url, credential, None)
    }

    /// Like [`Client::new`], for a server over HTTPS whose certificate is signed by the PEM
    /// file `ca` (a private CA, or the server's self-signed certificate).
    pub fn with_ca(base_url: &str, credential: &str, ca: &std::path::Path) -> Result<Self> {
        Self::build(base_url, credential, Some(ca))
    }

    fn build(base_url: &str, credential: &str, ca: Option<&std::path::Path>) -> Result<Self> {
        if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
            return Err(transport(format!(
                "{base_url:?} is not a URL: write http://host:2639"
            )));
        }
        let tls = crate::sync::tls_trusting(ca).map_err(transport)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(330)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Client {
            base: base_url.trim_end_matches('/').to_owned(),
            credential: credential.trim().to_owned(),
            workstation: None,
            agent,
        })
    }

    /// Names this workstation (`till-2`): its reservations are held by `USER@till-2`, so two
    /// tills signed in as the same user do not share them, and a refusal names the till.
    #[must_use]
    pub fn workstation(mut self, name: &str) -> Self {
        self.workstation = Some(name.to_owned());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.credential)
    }

    /// Sends a request and reads the JSON answer, turning error answers into the engine's
    /// errors.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = self.url(path);
        let ws = self.workstation.clone().unwrap_or_default();
        let sent = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url).header("authorization", self.auth());
                if !ws.is_empty() {
                    r = r.header("outpost-workstation", &ws);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url).header("authorization", self.auth());
                if !ws.is_empty() {
                    r = r.header("outpost-workstation", &ws);
                }
                r.call()
            }
            (m, b) => {
                let text = b.map_or_else(|| "{}".to_owned(), ToString::to_string);
                let mut req = if m == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                req = req
                    .header("authorization", self.auth())
                    .header("content-type", "application/json");
                if !ws.is_empty() {
                    req = req.header("outpost-workstation", &ws);
                }
                req.send(text)
            }
        };
        let mut response = sent.map_err(|e| {
            let hint = match e.to_string() {
                t if t.contains("onnection refused") => {
                    " (is the site server running at that address and port?)"
                }
                t if t.contains("InvalidContentType") || t.contains("invalid HTTP version") => {
                    " (http:// or https://: the server speaks the other one)"
                }
                _ => "",
            };
            transport(format!("{url}: {e}{hint}"))
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| transport(format!("{url}: {e}")))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            let hint = if status == 404 {
                " (not a site server's route: on central's daemon the workstation routes are \
                 under /ws)"
            } else {
                ""
            };
            transport(format!("{url}: {status} {}{hint}", text.trim()))
        })?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(error_from(status, &value))
        }
    }

    /// A record's fields as JSON; `None` when there is none.
    pub fn record(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        match self.call(
            "GET",
            &format!("/v1/records/{}/{}", seg(table), seg(key)),
            None,
        ) {
            Ok(v) => Ok(v.get("fields").and_then(|f| f.as_object()).cloned()),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records in key order from `from` (inclusive) to `to` (exclusive), at most `limit`.
    pub fn scan(
        &self,
        table: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Map<String, serde_json::Value>)>> {
        let mut q = format!("?limit={limit}");
        if let Some(f) = from {
            q.push_str(&format!("&from={}", seg(f)));
        }
        if let Some(t) = to {
            q.push_str(&format!("&to={}", seg(t)));
        }
        let v = self.call("GET", &format!("/v1/records/{}{q}", seg(table)), None)?;
        Ok(v.as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        Some((
                            r.get("key")?.as_str()?.to_owned(),
                            r.get("fields")?.as_object()?.clone(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Reserves a document for this user for `lease` (renew it by asking again before it runs
    /// out, or use [`Client::hold`]).
    pub fn reserve_for(&self, table: &str, key: &str, lease: Duration) -> Result<()> {
        self.call(
            "POST",
            &format!(
                "/v1/reservations/{}/{}?lease_s={}",
                seg(table),
                seg(key),
                lease.as_secs().max(1)
            ),
            None,
        )
        .map(drop)
    }

    /// Reserves a document and keeps its lease renewed from a thread until the [`Hold`] is
    /// dropped, which releases it. If this program dies, the lease runs out and the server
    /// releases the document.
    pub fn hold(&self, table: &str, key: &str, lease: Duration) -> Result<Hold> {
        self.reserve_for(table, key, lease)?;
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(std::sync::Mutex::new(None));
        let renewer = {
            let client = self.clone();
            let (table, key, stop) = (table.to_owned(), key.to_owned(), Arc::clone(&stop));
            let lost = Arc::clone(&lost);
            std::thread::spawn(move || {
                let step = (lease / 3).max(Duration::from_millis(200));
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    waited += Duration::from_millis(50);
                    if waited >= step {
                        waited = Duration::ZERO;
                        match client.reserve_for(&table, &key, lease) {
                            Ok(()) => {}
                            // Refused: someone else holds it now (the lease ran out).
                            Err(e @ Error::Refused(_)) => {
                                if let Ok(mut l) = lost.lock() {
                                    *l = Some(e.to_string());
                                }
                                return;
                            }
                            // The network: tried again at the next step, within the lease.
                            Err(_) => {}
                        }
                    }
                }
            })
        };
        Ok(Hold {
            client: self.clone(),
            table: table.to_owned(),
            key: key.to_owned(),
            stop,
            lost,
            renewer: Some(renewer),
        })
    }

    /// Asks the site server for an immediate sync with central; its summary.
    pub fn sync(&self) -> Result<String> {
        let v = self.call("POST", "/v1/sync", None)?;
        Ok(v["summary"].as_str().unwrap_or_default().to_owned())
    }

    /// Changes committed after `after` (0: from the server's start), waiting up to `wait` for
    /// some.
    pub fn changes(&self, after: u64, wait: Duration) -> Result<Changes> {
        let v = self.call(
            "GET",
            &format!("/v1/changes?after={after}&wait_ms={}", wait.as_millis()),
            None,
        )?;
        serde_json::from_value(v).map_err(|e| transport(format!("changes: {e}")))
    }

    /// The site's settings (C6).
    pub fn settings(&self) -> Result<BTreeMap<String, String>> {
        let v = self.call("GET", "/v1/settings", None)?;
        serde_json::from_value(v).map_err(|e| transport(format!("settings: {e}")))
    }

    /// The workstation log after entry `after` (an admin user only), as JSON entries.
    pub fn log(&self, after: u64) -> Result<Vec<serde_json::Value>> {
        let v = self.call("GET", &format!("/v1/log?after={after}"), None)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Changes a setting (an admin user only).
    pub fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.call(
            "PUT",
            &format!("/v1/settings/{}", seg(name)),
            Some(&serde_json::Value::String(value.to_owned())),
        )
        .map(drop)
    }

    /// The site's workstation users (an admin user only).
    pub fn users(&self) -> Result<Vec<crate::site::UserView>> {
        let v = self.call("GET", "/v1/users", None)?;
        serde_json::from_value(v).map_err(|e| transport(format!("the list of users: {e}")))
    }

    /// Adds a workstation user, or gives one a new credential (its old one stops working), and
    /// returns the credential (`CODE.secret`), which the site does not keep (an admin only).
    pub fn add_user(&self, code: &str, admin: bool) -> Result<String> {
        let v = self.call(
            "POST",
            &format!("/v1/users/{}", seg(code)),
            Some(&serde_json::json!({ "admin": admin })),
        )?;
        v["credential"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| transport("the site server's answer has no credential"))
    }

    /// Removes a workstation user: its credential stops working at once (an admin user only;
    /// nobody removes themselves).
    pub fn remove_user(&self, code: &str) -> Result<()> {
        self.call("DELETE", &format!("/v1/users/{}", seg(code)), None)
            .map(drop)
    }
}

/// The engine's error for a server's error answer.
fn error_from(status: u16, v: &serde_json::Value) -> Error {
    let text = v["error"].as_str().unwrap_or("").to_owned();
    match v["kind"].as_str() {
        Some("refused") => match serde_json::from_value::<Refusal>(v["refusal"].clone()) {
            Ok(r) => Error::Refused(Box::new(r)),
            Err(_) => transport(text),
        },
        Some("schema") => Error::Schema(text),
        Some("mapping") => Error::Mapping(text),
        Some("not_found") => Error::NotFound {
            table: v["table"].as_str().unwrap_or_default().to_owned(),
            key: v["key"].as_str().unwrap_or_default().to_owned(),
        },
        Some("not_reservable") => {
            Error::NotReservable(v["table"].as_str().unwrap_or_default().to_owned())
        }
        Some("unauthorized" | "forbidden") => Error::Io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            text,
        )),
        Some("unknown_user") => Error::Io(std::io::Error::new(std::io::ErrorKind::NotFound, text)),
        _ => transport(format!("the site server answered {status}: {text}")),
    }
}

fn to_fields<T: Serialize + ?Sized>(value: &T) -> Result<serde_json::Value> {
    let v = serde_json::to_value(value).map_err(|e| Error::Mapping(e.to_string()))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(Error::Mapping(
            "a record is written from a struct or a map of fields".into(),
        ))
    }
}

impl Records for Client {
    fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        self.record(table, key)?
            .map(|fields| {
                serde_json::from_value(serde_json::Value::Object(fields))
                    .map_err(|e| Error::Mapping(e.to_string()))
            })
            .transpose()
    }
    fn put<T: Serialize + ?Sized>(&self, table: &str, key: &str, value: &T) -> Result<()> {
        let body = to_fields(value)?;
        self.call(
            "PUT",
            &format!("/v1/records/{}/{}", seg(table), seg(key)),
            Some(&body),
        )
        .map(drop)
    }
    fn create<T: Serialize + ?Sized>(&self, table: &str, value: &T) -> Result<String> {
        let body = to_fields(value)?;
        let v = self.call("POST", &format!("/v1/records/{}", seg(table)), Some(&body))?;
        Ok(v["key"].as_str().unwrap_or_default().to_owned())
    }
    fn delete(&self, table: &str, key: &str) -> Result<()> {
        self.call(
            "DELETE",
            &format!("/v1/records/{}/{}", seg(table), seg(key)),
            None,
        )
        .map(drop)
    }
    fn reserve(&self, table: &str, key: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/v1/reservations/{}/{}", seg(table), seg(key)),
            None,
        )
        .map(drop)
    }
    fn release(&self, table: &str, key: &str) -> Result<()> {
        self.call(
            "DELETE",
            &format!("/v1/reservations/{}/{}", seg(table), seg(key)),
            None,
        )
        .map(drop)
    }
}

/// A reservation kept alive by a thread; dropping it releases the document.
#[derive(Debug)]
pub struct Hold {
    client: Client,
    table: String,
    key: String,
    stop: Arc<AtomicBool>,
    lost: Arc<std::sync::Mutex<Option<String>>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Hold {
    /// Why the reservation was lost, if it was (a renewal refused: the lease had run out and
    /// another workstation reserved the document).
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let _ = self.client.release(&self.table, &self.key);
    }
}

/// [`Client`] for async programs: each call runs the blocking client on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct AsyncClient(Arc<Client>);

impl AsyncClient {
    /// See [`Client::new`].
    pub fn new(base_url: &str, credential: &str) -> Result<Self> {
        Client::new(base_url, credential).map(|c| AsyncClient(Arc::new(c)))
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let client = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&client))
            .await
            .map_err(transport)?
    }

    /// See [`Records::get`].
    pub async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<T>> {
        let (t, k) = (table.to_owned(), key.to_owned());
        self.run(move |c| c.get(&t, &k)).await
    }

    /// See [`Records::put`].
    pub async fn put<T: Serialize>(&self, table: &str, key: &str, value: &T) -> Result<()> {
        let body = to_fields(value)?;
        let (t, k) = (table.to_owned(), key.to_owned());
        self.run(move |c| c.put(&t, &k, &body)).await
    }

    /// See [`Records::create`].
    pub async fn create<T: Serialize>(&self, table: &str, value: &T) -> Result<String> {
        let body = to_fields(value)?;
        let t = table.to_owned();
        self.run(move |c| c.create(&t, &body)).await
    }

    /// See [`Records::delete`].
    pub async fn delete(&self, table: &str, key: &str) -> Result<()> {
        let (t, k) = (table.to_owned(), key.to_owned());
        self.run(move |c| c.delete(&t, &k)).await
    }

    /// See [`Client::reserve_for`].
    pub async fn reserve_for(&self, table: &str, key: &str, lease: Duration) -> Result<()> {
        let (t, k) = (table.to_owned(), key.to_owned());
        self.run(move |c| c.reserve_for(&t, &k, lease)).await
    }

    /// See [`Records::release`].
    pub async fn release(&self, table: &str, key: &str) -> Result<()> {
        let (t, k) = (table.to_owned(), key.to_owned());
        self.run(move |c| c.release(&t, &k)).await
    }

    /// See [`Client::sync`].
    pub async fn sync(&self) -> Result<String> {
        self.run(Client::sync).await
    }

    /// See [`Client::changes`].
    pub async fn changes(&self, after: u64, wait: Duration) -> Result<Changes> {
        self.run(move |c| c.changes(after, wait)).await
    }

    /// See [`Client::record`].
    pub async fn record(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let (t, k) = (table.to_owned(), key.to_owned());
        self.run(move |c| c.record(&t, &k)).await
    }

    /// See [`Client::scan`].
    pub async fn scan(
        &self,
        table: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Map<String, serde_json::Value>)>> {
        let (t, f, e) = (
            table.to_owned(),
            from.map(str::to_owned),
            to.map(str::to_owned),
        );
        self.run(move |c| c.scan(&t, f.as_deref(), e.as_deref(), limit))
            .await
    }

    /// See [`Client::settings`].
    pub async fn settings(&self) -> Result<BTreeMap<String, String>> {
        self.run(Client::settings).await
    }
}
