//! The client library of a site server (`outpost site serve`, SPEC S3): a workstation's program
//! works on the site's store over the shop's network with the same typed records and the same
//! errors as the embedded API — a write refused by a rule is an
//! [`Error::Refused`](outpost_engine::Error::Refused) carrying the same [`Refusal`], whichever
//! way the store is reached.
//!
//! ```no_run
//! # fn main() -> outpost_engine::Result<()> {
//! use outpost_client::{Client, Records};
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
//!
//! The answers' shapes are `outpost-api`'s, the same definitions the server answers with. This
//! crate has nothing of the server in it: a till program that depends on it compiles an HTTP
//! client and the engine's types, not axum, the simulator or the command line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outpost_api::{ErrorBody, NewUser, RecordKey, RecordView, SyncSummary, UserCredential};
use outpost_engine::{Error, Result, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use outpost_api::{ChangeEvent, Changes, UserView};

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

/// The most records one scan request returns (the site server refuses more).
pub use outpost_api::SCAN_LIMIT_MAX as SCAN_PAGE_MAX;

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
        let tls = tls_trusting(ca)?;
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
        let (status, text) = self.send(method, path, body)?;
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
            Err(match serde_json::from_value::<ErrorBody>(value) {
                Ok(body) => body.into_engine(status),
                Err(_) => transport(format!(
                    "the site server answered {status}: {}",
                    text.trim()
                )),
            })
        }
    }

    /// Sends a request: the answer's status and text, `Err` only when none came (the network).
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, String)> {
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
        let mut response =
            sent.map_err(|e| transport(format!("{url}: {e}{}", hint(&e, &self.base))))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| transport(format!("{url}: {e}")))?;
        Ok((status, text))
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
            Ok(v) => serde_json::from_value::<RecordView>(v)
                .map(|r| Some(r.fields))
                .map_err(|e| transport(format!("a record: {e}"))),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records in key order from `from` (inclusive) to `to` (exclusive), at most `limit` —
    /// asked in pages of at most [`SCAN_PAGE_MAX`], the most one request returns.
    pub fn scan(
        &self,
        table: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Map<String, serde_json::Value>)>> {
        let mut out = Vec::new();
        let mut next = from.map(str::to_owned);
        while out.len() < limit {
            let page = (limit - out.len()).min(SCAN_PAGE_MAX);
            let mut q = format!("?limit={page}");
            if let Some(f) = &next {
                q.push_str(&format!("&from={}", seg(f)));
            }
            if let Some(t) = to {
                q.push_str(&format!("&to={}", seg(t)));
            }
            let v = self.call("GET", &format!("/v1/records/{}{q}", seg(table)), None)?;
            let rows: Vec<RecordView> =
                serde_json::from_value(v).map_err(|e| transport(format!("records: {e}")))?;
            let full = rows.len() == page;
            // The next page starts at the smallest key after the last one.
            next = rows.last().map(|r| format!("{}\u{0}", r.key));
            out.extend(rows.into_iter().map(|r| (r.key, r.fields)));
            if !full {
                break;
            }
        }
        Ok(out)
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
    /// releases the document. If a renewal comes too late (the program was asleep past the
    /// lease: the document was released, and may have been written or synced since), or the
    /// server refuses it (another holder, the user removed, the document gone), the hold is
    /// lost ([`Hold::lost`] says why) and not taken again.
    pub fn hold(&self, table: &str, key: &str, lease: Duration) -> Result<Hold> {
        let path = format!(
            "/v1/reservations/{}/{}?lease_s={}",
            seg(table),
            seg(key),
            lease.as_secs().max(1)
        );
        let granted = self.call("POST", &path, None)?;
        // The server may grant less than asked (its longest lease): renewed within what it gave.
        let lease = granted
            .get("lease_s")
            .and_then(serde_json::Value::as_u64)
            .map_or(lease, |s| lease.min(Duration::from_secs(s.max(1))));
        let renew = format!("{path}&renew=true");
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
                        match client.send("POST", &renew, None) {
                            Ok((status, _)) if (200..300).contains(&status) => {}
                            // Refused: the lease ran out (released, perhaps written or synced
                            // since), someone else holds it, the user or the document is gone.
                            // (A server busy or restarting, 408/429/5xx, is tried again.)
                            Ok((status, text))
                                if (400..500).contains(&status)
                                    && status != 408
                                    && status != 429 =>
                            {
                                let why = serde_json::from_str::<ErrorBody>(&text)
                                    .map_or_else(|_| text.trim().to_owned(), |b| b.error);
                                if let Ok(mut l) = lost.lock() {
                                    *l = Some(format!("{table}/{key} ({status}): {why}"));
                                }
                                return;
                            }
                            // The network, or a server busy or restarting (behind a proxy):
                            // tried again at the next step, within the lease.
                            Ok(_) | Err(_) => {}
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
        serde_json::from_value::<SyncSummary>(v)
            .map(|s| s.summary)
            .map_err(|e| transport(format!("the sync's summary: {e}")))
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
    pub fn users(&self) -> Result<Vec<UserView>> {
        let v = self.call("GET", "/v1/users", None)?;
        serde_json::from_value(v).map_err(|e| transport(format!("the list of users: {e}")))
    }

    /// Adds a workstation user, or gives one a new credential (its old one stops working), and
    /// returns the credential (`CODE.secret`), which the site does not keep (an admin only).
    pub fn add_user(&self, code: &str, admin: bool) -> Result<String> {
        let body = serde_json::to_value(NewUser { admin }).map_err(transport)?;
        let v = self.call("POST", &format!("/v1/users/{}", seg(code)), Some(&body))?;
        serde_json::from_value::<UserCredential>(v)
            .map(|u| u.credential)
            .map_err(|e| transport(format!("the site server's answer has no credential: {e}")))
    }

    /// Removes a workstation user: its credential stops working at once (an admin user only;
    /// nobody removes themselves).
    pub fn remove_user(&self, code: &str) -> Result<()> {
        self.call("DELETE", &format!("/v1/users/{}", seg(code)), None)
            .map(drop)
    }
}

/// What to tell the user about a request that got no answer, from the failure's type: the
/// server is not there, or it speaks the other of http:// and https://.
fn hint(e: &ureq::Error, base: &str) -> &'static str {
    let not_there = " (is the site server running at that address and port?)";
    let other_scheme = " (http:// or https://: the server speaks the other one)";
    let io_kind = |io: &std::io::Error| io.kind();
    let not_tls = |r: &rustls::Error| matches!(r, rustls::Error::InvalidMessage(_));
    match e {
        ureq::Error::ConnectionFailed => not_there,
        ureq::Error::Io(io) if io_kind(io) == std::io::ErrorKind::ConnectionRefused => not_there,
        // Plain HTTP read from a TLS server: not an HTTP answer.
        ureq::Error::Protocol(_) if base.starts_with("http://") => other_scheme,
        // TLS to a plain HTTP server: its first bytes are not a TLS record.
        ureq::Error::Rustls(r) if not_tls(r) => other_scheme,
        ureq::Error::Io(io)
            if io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(not_tls) =>
        {
            other_scheme
        }
        _ => "",
    }
}

/// TLS settings trusting the certificates of the PEM file `ca` (a private CA or a self-signed
/// certificate), or the usual public roots without it.
pub fn tls_trusting(ca: Option<&std::path::Path>) -> std::io::Result<ureq::tls::TlsConfig> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca {
        let in_ca = |e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", ca.display()),
            )
        };
        let pem = std::fs::read(ca)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", ca.display())))?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| in_ca(&e))?;
        if certs.is_empty() {
            return Err(in_ca(&"no certificate in it"));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
    }
    Ok(tls.build())
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
        serde_json::from_value::<RecordKey>(v)
            .map(|k| k.key)
            .map_err(|e| transport(format!("the new record's key: {e}")))
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

impl From<Client> for AsyncClient {
    /// A blocking client set up as wanted (its workstation, a certificate to trust), for async
    /// programs.
    fn from(client: Client) -> Self {
        AsyncClient(Arc::new(client))
    }
}

impl AsyncClient {
    /// See [`Client::new`].
    pub fn new(base_url: &str, credential: &str) -> Result<Self> {
        Client::new(base_url, credential).map(|c| AsyncClient(Arc::new(c)))
    }

    /// See [`Client::workstation`]: tills signed in as one user but naming their workstations
    /// hold their reservations apart (R7).
    #[must_use]
    pub fn workstation(self, name: &str) -> Self {
        AsyncClient(Arc::new((*self.0).clone().workstation(name)))
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
