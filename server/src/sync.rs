//! A remote's network syncs: `outpost remote sync` (an immediate sync, A3) and `outpost remote
//! run` (the fixed-time scheduler, M1). A remote connects only for the duration of a sync (S2).
//!
//! An emission is first written whole into the remote's `outbox/` directory, then uploaded; it
//! leaves the outbox only once central has it. A sync cut off (network down, process killed)
//! resumes the upload where central's part file ends, at the next sync.

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_api::{ErrorBody, UploadOffset};
use outpost_client::tls_trusting;
use outpost_engine::{Clock, Store};
use outpost_replicator::automaton::DEFAULT_IMMEDIATE_WAIT_MS;
use outpost_replicator::executor::{
    Failure, Fetched, RemoteExecutor, RemoteRun, RemoteTransport, SyncAsk,
};
use outpost_replicator::flow::{FlowHeader, FlowId, FlowReader, SyncMode};
use outpost_replicator::{files, remote};
use serde::{Deserialize, Serialize};

use crate::Result;
use outpost::SystemClock;

/// The remote's network settings: `remote.toml` in its data directory, written by
/// `outpost remote init` from what the bootstrap file carried.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteNet {
    /// Central's address, e.g. `https://central.example:2638`.
    pub central_url: Option<String>,
    /// This site's credential (`CODE.secret`).
    pub credential: Option<String>,
    /// A PEM certificate to trust for central (a private CA or a self-signed certificate);
    /// without it, the usual public roots.
    pub ca_cert: Option<PathBuf>,
}

/// The file name of a remote's network settings.
pub const REMOTE_NET_FILE: &str = "remote.toml";

impl RemoteNet {
    /// Reads `remote.toml` from a data directory (empty settings when there is none).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(REMOTE_NET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()).into())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RemoteNet::default()),
            Err(e) => Err(format!("{}: {e}", path.display()).into()),
        }
    }

    /// Writes `remote.toml`, readable by its owner only (it holds the credential).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        crate::data_dir::write_private(&dir.join(REMOTE_NET_FILE), text.trim_end())
    }
}

/// How to reach central, resolved from `remote.toml` and the command line.
#[derive(Debug, Clone)]
pub struct Link {
    base: String,
    credential: String,
    agent: ureq::Agent,
}

impl Link {
    /// Central's address and this site's credential; `url` and `ca` override `remote.toml`.
    pub fn new(dir: &Path, url: Option<&str>, ca: Option<&Path>) -> Result<Self> {
        let net = RemoteNet::load(dir)?;
        let base = url
            .map(str::to_owned)
            .or(net.central_url)
            .ok_or("no central address: give --central URL, or set central_url in remote.toml")?;
        let credential = net.credential.ok_or_else(|| {
            format!(
                "no credential in {}: ask central's administrator for one (outpost central new-credential)",
                dir.join(REMOTE_NET_FILE).display()
            )
        })?;
        // `ca_cert` in remote.toml is read from the data directory when relative.
        let ca = ca
            .map(Path::to_path_buf)
            .or(net.ca_cert.map(|p| dir.join(p)));
        let tls = tls_trusting(ca.as_deref()).map_err(|e| e.to_string())?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(330)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Link {
            base: base.trim_end_matches('/').to_owned(),
            credential,
            agent,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.credential)
    }
}

/// A network failure: central unreachable, or it answered with an error.
#[derive(Debug)]
pub enum NetError {
    /// Could not talk to central (retry later).
    Unreachable(String),
    /// Central answered, refusing (retrying the same thing will not help).
    Refused(u16, String),
    /// Something local failed (the store, a file).
    Local(String),
    /// Central does not take this site's emission yet (after its restore from a backup,
    /// until every remote has reported): it stays in the outbox for the next sync.
    NotYet(String),
    /// Central received this site's emission and holds it without applying it (clock-skew
    /// quarantine): central's reason, which says what to do.
    Held(String),
}

impl std::error::Error for NetError {}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Unreachable(e) => write!(f, "central is unreachable: {e}"),
            NetError::Refused(401, e) => write!(f, "central refused this site's credential: {e}"),
            NetError::Refused(code, e) => write!(f, "central refused ({code}): {e}"),
            NetError::Local(e) => f.write_str(e),
            NetError::NotYet(e) => write!(f, "emission not sent yet: {e}"),
            NetError::Held(e) => write!(f, "central holds this site's emission, not applied: {e}"),
        }
    }
}

/// Central could not be talked to, with what to do when the failure says it (by its kind, not
/// its words): plain HTTP to a TLS port, a certificate this site does not trust.
fn unreachable(e: ureq::Error) -> NetError {
    // rustls's error comes as itself or inside the I/O error of the handshake.
    let tls = match &e {
        ureq::Error::Rustls(t) => Some(t),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    let hint = match (&e, tls) {
        (ureq::Error::Protocol(_), _) => {
            " — central did not answer in HTTP: if it serves HTTPS, the URL must start with https://"
        }
        (_, Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))) => {
            " — central's certificate is not signed by an authority this site trusts: give the certificate of the authority that signed it with --ca (ca_cert in the remote's configuration)"
        }
        _ => "",
    };
    NetError::Unreachable(format!("{e}{hint}"))
}

fn local(e: impl std::fmt::Display) -> NetError {
    NetError::Local(e.to_string())
}

fn error_of(mut r: ureq::http::Response<ureq::Body>) -> NetError {
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) if b.kind == outpost_api::ErrorKind::NotYet => NetError::NotYet(b.error),
        Ok(b) => NetError::Refused(status, b.error),
        Err(_) => NetError::Refused(status, text),
    }
}

/// What a sync did, for its summary.
#[derive(Debug, Default)]
pub struct Summary {
    /// Emissions sent: id, changes, bytes that travelled (a resumed upload counts what it
    /// sent, not the whole file).
    pub sent: Vec<(FlowId, u64, u64)>,
    /// Returns applied: id and changes.
    pub received: Vec<(FlowId, u64)>,
    /// Bytes of returns downloaded.
    pub received_bytes: u64,
    /// This site's changes central refused, brought back by the returns applied.
    pub rejected: u64,
    /// What is worth telling (a wait that expired…).
    pub notes: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sent: u64 = self.sent.iter().map(|s| s.1).sum();
        let bytes: u64 = self.sent.iter().map(|s| s.2).sum();
        let received: u64 = self.received.iter().map(|r| r.1).sum();
        write!(
            f,
            "sent {} emission(s), {sent} changes, {bytes} bytes; received {} return(s), {received} changes, {} bytes; {} change(s) refused by central; {:.2} s",
            self.sent.len(),
            self.received.len(),
            self.received_bytes,
            self.rejected,
            self.elapsed.as_secs_f64()
        )?;
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}

fn outbox(dir: &Path) -> Result<PathBuf> {
    let out = dir.join("outbox");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// Emissions written and not yet held by central, oldest first.
fn waiting_emissions(outbox: &Path) -> Result<Vec<(FlowId, PathBuf)>, NetError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(outbox).map_err(local)? {
        let path = entry.map_err(local)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("outpost") {
            continue;
        }
        let file = File::open(&path).map_err(local)?;
        match FlowReader::open(std::io::BufReader::new(file)) {
            Ok(r) => found.push((r.header().id, path)),
            Err(e) => {
                return Err(NetError::Local(format!(
                    "{}: {e} (move it away to go on)",
                    path.display()
                )));
            }
        }
    }
    found.sort_by_key(|(id, _)| id.seq);
    Ok(found)
}

/// Progress on a terminal, for large flows.
struct Progress {
    show: bool,
    total: u64,
    done: u64,
    last: Instant,
}

impl Progress {
    fn new(total: u64, done: u64) -> Self {
        Progress {
            show: total >= 1 << 20 && std::io::stderr().is_terminal(),
            total,
            done,
            last: Instant::now(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n as u64;
        if self.show
            && (self.last.elapsed() > Duration::from_millis(200) || self.done == self.total)
        {
            self.last = Instant::now();
            let width = 30u64;
            let filled = (self.done * width).checked_div(self.total).unwrap_or(width);
            eprint!(
                "\r[{}{}] {:.1} / {:.1} MiB",
                "#".repeat(usize::try_from(filled).unwrap_or(0)),
                " ".repeat(usize::try_from(width.saturating_sub(filled)).unwrap_or(0)),
                self.done as f64 / 1_048_576.0,
                self.total as f64 / 1_048_576.0
            );
            if self.done == self.total {
                eprintln!();
            }
        }
    }
}

struct Counting<'a, R> {
    inner: R,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n);
        Ok(n)
    }
}

/// Why central holds emission `id` of this site without applying it, if it does.
fn held_at_central(link: &Link, id: FlowId) -> Result<Option<String>, NetError> {
    Ok(upload_offset(link, id, None)?.held)
}

/// What central holds of emission `id` of this site (`GET /v1/emissions/{seq}`); `stamp`, the
/// emission's creation stamp, tells central which store's emission is meant (R1).
fn upload_offset(link: &Link, id: FlowId, stamp: Option<&str>) -> Result<UploadOffset, NetError> {
    let url = link.url(&format!("/v1/emissions/{}", id.seq));
    let mut get = link.agent.get(&url).header("authorization", link.bearer());
    if let Some(stamp) = stamp {
        get = get.header("upload-stamp", stamp);
    }
    let mut r = get.call().map_err(unreachable)?;
    if !r.status().is_success() {
        return Err(error_of(r));
    }
    serde_json::from_str(&r.body_mut().read_to_string().map_err(local)?).map_err(local)
}

/// Uploads one emission file, resuming where central's copy ends. Returns once central holds
/// it whole (file ready, or already received), with the bytes that travelled (what central
/// already had is not sent again).
pub fn upload(link: &Link, id: FlowId, path: &Path) -> Result<u64, NetError> {
    let total = std::fs::metadata(path).map_err(local)?.len();
    let url = link.url(&format!("/v1/emissions/{}", id.seq));
    // Which emission this is: central holding another store's under the same number does not
    // hold this one (R1).
    let stamp = outpost_replicator::incarnation::made_text(
        FlowReader::open(std::io::BufReader::new(File::open(path).map_err(local)?))
            .map_err(local)?
            .header(),
    );
    let mut attempts = 0u64;
    let mut travelled = 0;
    loop {
        attempts += 1;
        let at = upload_offset(link, id, Some(&stamp))?;
        if at.received {
            return Ok(travelled);
        }
        let mut file = File::open(path).map_err(local)?;
        let from = at.offset.min(total);
        file.seek(SeekFrom::Start(from)).map_err(local)?;
        let mut progress = Progress::new(total, from);
        let mut body = Counting {
            inner: file.take(total - from),
            progress: &mut progress,
        };
        let sent = link
            .agent
            .put(&url)
            .header("authorization", link.bearer())
            .header("upload-offset", from.to_string())
            .header("upload-length", total.to_string())
            .header("upload-stamp", &stamp)
            .header("content-type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut body));
        travelled += progress.done - from;
        match sent {
            Ok(r) if r.status().as_u16() == 200 => return Ok(travelled),
            // 202: part of it stored (the connection broke); 409: the offset moved, or central
            // still counts a broken try as under way — give it a moment.
            Ok(r) if matches!(r.status().as_u16(), 202 | 409) && attempts < 5 => {
                std::thread::sleep(Duration::from_millis(500 * attempts));
            }
            Ok(r) => return Err(error_of(r)),
            Err(e) if attempts < 3 => {
                tracing::info!("upload of {id} cut ({e}); resuming");
            }
            Err(e) => return Err(unreachable(e)),
        }
    }
}

/// Sends every emission waiting in the outbox, oldest first. An emission central refuses
/// (too large, damaged, not this site's) is set aside in `outbox/refused/`: an older one is a
/// note (the next emission carries the same changes, since central's knowledge did not move);
/// `current`, the emission this sync just made, is the sync's failure. Gives the ids of the
/// emissions set aside.
fn send_outbox(
    store: &Store,
    link: &Link,
    dir: &Path,
    current: Option<FlowId>,
    summary: &mut Summary,
) -> Result<Vec<FlowId>, NetError> {
    let mut set_aside = Vec::new();
    let outbox = outbox(dir).map_err(local)?;
    for (id, path) in waiting_emissions(&outbox)? {
        let travelled = match upload(link, id, &path) {
            Ok(n) => n,
            Err(NetError::Refused(code @ (403 | 413 | 422), why)) => {
                let aside = outbox.join("refused");
                std::fs::create_dir_all(&aside).map_err(local)?;
                let to = aside.join(path.file_name().unwrap_or_default());
                std::fs::rename(&path, &to).map_err(local)?;
                let what = format!(
                    "emission {id} refused by central ({code}: {why}); set aside in {}",
                    to.display()
                );
                if current == Some(id) {
                    return Err(NetError::Refused(
                        code,
                        format!(
                            "{why} — emission {id} set aside in {}; nothing was synced: fix \
                             what central says (this site's credential, central's size \
                             limit) and sync again",
                            to.display()
                        ),
                    ));
                }
                summary.notes.push(what);
                set_aside.push(id);
                continue;
            }
            Err(e) => return Err(e),
        };
        let n = remote::log_rows(store)
            .map_err(local)?
            .into_iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.n_changes);
        summary.sent.push((id, n, travelled));
        std::fs::remove_file(&path).map_err(local)?;
    }
    Ok(set_aside)
}

/// Downloads the newest return after return `after`, waiting up to `wait_ms` for one, into
/// `inbox/`; gives the emission it answers and the file to apply.
fn download(
    link: &Link,
    dir: &Path,
    after: u64,
    wait_ms: u64,
) -> Result<Option<(Option<u64>, File, u64)>, NetError> {
    let mut r = link
        .agent
        .get(&link.url("/v1/returns"))
        .header("authorization", link.bearer())
        .query("after", after.to_string())
        .query("wait_ms", wait_ms.to_string())
        .call()
        .map_err(unreachable)?;
    match r.status().as_u16() {
        204 => return Ok(None),
        200 => {}
        _ => return Err(error_of(r)),
    }
    let link_seq: u64 = r
        .headers()
        .get("outpost-link-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).map_err(local)?;
    let path = inbox.join("return.partial");
    let bytes = {
        let mut file = File::create(&path).map_err(local)?;
        let mut reader = r.body_mut().with_config().limit(u64::MAX).reader();
        let n = std::io::copy(&mut reader, &mut file)
            .map_err(|e| NetError::Unreachable(format!("the return was cut off: {e}")))?;
        file.sync_all().map_err(local)?;
        n
    };
    let file = File::open(&path).map_err(local)?;
    // Open, it stays readable; where the system keeps it (Windows), the next download
    // overwrites it.
    let _ = std::fs::remove_file(&path);
    Ok(Some(((link_seq > 0).then_some(link_seq), file, bytes)))
}

/// Tells central at once that returns were applied (J1: execution at the remote).
fn report_acks(store: &Store, link: &Link) -> Result<(), NetError> {
    let acks = remote::unreported_acks(store).map_err(local)?;
    if acks.is_empty() {
        return Ok(());
    }
    let body = serde_json::to_vec(&acks).map_err(local)?;
    let r = link
        .agent
        .post(&link.url("/v1/acks"))
        .header("authorization", link.bearer())
        .header("content-type", "application/json")
        .send(&body[..])
        .map_err(unreachable)?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(error_of(r))
    }
}

/// What waits in the outbox sent first, then an emission written into it and sent — unless
/// the newest that waited, now sent, carries everything (one central refused does not count:
/// the sync then writes one, refused in turn with central's reason). A sync that cannot send
/// what waits (central unreachable, or not taking it yet) stops before writing another — the
/// outbox holds one emission to resume, not one more per attempt (emissions are cumulative:
/// each would carry the day again) — except the day's fixed-time one (M1), written first when
/// the newest waiting does not carry everything: the retries only send the outbox, and without
/// it the day's later changes would miss the night's return (one a day at most). A credential
/// refused writes none.
fn emit_and_send(
    store: &Store,
    link: &Link,
    dir: &Path,
    mode: SyncMode,
    summary: &mut Summary,
) -> Result<FlowId, NetError> {
    let outbox = outbox(dir).map_err(local)?;
    // The newest emission waiting, if any: once sent, it may already carry everything.
    let newest = match waiting_emissions(&outbox)?.last() {
        Some((_, path)) => {
            let file = File::open(path).map_err(local)?;
            let reader = FlowReader::open(std::io::BufReader::new(file)).map_err(local)?;
            Some(reader.header().clone())
        }
        None => None,
    };
    // Whether `h`, waiting or just sent, is this sync's emission: nothing written since.
    let carries_all = |h: &FlowHeader| {
        let unsent = store
            .knowledge()
            .only(store.site().id)
            .difference(&h.covered);
        h.mode == mode && unsent.is_empty()
    };
    let set_aside = match send_outbox(store, link, dir, None, summary) {
        Ok(set_aside) => set_aside,
        Err(e @ (NetError::Unreachable(_) | NetError::NotYet(_))) => {
            if mode == SyncMode::Deferred && !newest.as_ref().is_some_and(carries_all) {
                files::emit_to(store, &outbox, mode).map_err(local)?;
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if let Some(h) = newest.filter(|h| !set_aside.contains(&h.id))
        && carries_all(&h)
    {
        // Nothing written since: the emission just sent is this sync's.
        return Ok(h.id);
    }
    let asked = learn_acknowledgement(store, link);
    let (_, emitted) = files::emit_to(store, &outbox, mode).map_err(local)?;
    // Central unreachable: the emission waits in the outbox, without a second wait for the
    // upload to fail the same way.
    asked?;
    send_outbox(store, link, dir, Some(emitted.id), summary)?;
    Ok(emitted.id)
}

/// Asks central what it holds of this site's own changes and records it, so that the emission
/// about to be made leaves them out: a remote without returns (M3) would otherwise send again,
/// at every sync, everything since its last return. A central that does not answer
/// (unreachable, or a version without the route) changes nothing: the emission then carries
/// them again, and central takes them as already had. `Err` only when central cannot be
/// reached.
fn learn_acknowledgement(store: &Store, link: &Link) -> Result<(), NetError> {
    let asked = link
        .agent
        .get(link.url("/v1/acknowledgement"))
        .header("authorization", link.bearer())
        .call();
    let ack = match asked {
        Ok(mut r) if r.status().is_success() => {
            let read = r.body_mut().read_to_string().map_err(|e| e.to_string());
            match read.and_then(|t| {
                serde_json::from_str::<outpost_replicator::central::Acknowledgement>(&t)
                    .map_err(|e| e.to_string())
            }) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!("central's acknowledgement could not be read: {e}");
                    None
                }
            }
        }
        Ok(_) => None,
        Err(e) => return Err(unreachable(e)),
    };
    if let Some(a) = ack
        && let Err(e) = remote::record_acknowledgement(store, &a)
    {
        tracing::warn!("central's acknowledgement was not recorded: {e}");
    }
    Ok(())
}

/// The network between a remote and central: emissions through the outbox and resumable
/// uploads, returns downloaded with a wait and reported at once. What it sent and what it
/// noted go into `summary`.
struct Net<'a> {
    link: &'a Link,
    dir: &'a Path,
    summary: Summary,
    /// Central answered, during this sync, that it does not take this site's emission yet
    /// ([`NetError::NotYet`]): no return will answer it.
    not_yet: bool,
}

impl<'a> Net<'a> {
    fn new(link: &'a Link, dir: &'a Path) -> Self {
        Net {
            link,
            dir,
            summary: Summary::default(),
            not_yet: false,
        }
    }

    /// Notes that central does not take this site's emission yet (once per sync).
    fn not_yet(&mut self, e: &NetError) {
        self.not_yet = true;
        let note = e.to_string();
        if !self.summary.notes.contains(&note) {
            self.summary.notes.push(note);
        }
    }
}

impl RemoteTransport for Net<'_> {
    type Error = NetError;

    fn is_transient(error: &NetError) -> bool {
        matches!(
            error,
            NetError::Unreachable(_)
                | NetError::NotYet(_)
                | NetError::Refused(409 | 429 | 500..=599, _)
        )
    }

    fn emit(&mut self, store: &Store, mode: SyncMode) -> Result<FlowId, NetError> {
        let sent = emit_and_send(store, self.link, self.dir, mode, &mut self.summary);
        if let Err(e @ NetError::NotYet(_)) = &sent {
            self.not_yet(e);
        }
        sent
    }

    fn fetch_return(
        &mut self,
        store: &Store,
        after: u64,
        wait_ms: u64,
    ) -> Result<Option<Fetched<'_>>, NetError> {
        // Once central has said it does not take this site's emission yet (its restore waits
        // for other remotes' reports), no return answers it this sync: the outbox is not sent
        // again, and only a return already prepared (a common one) is fetched, without waiting.
        let mut deferred = None;
        let wait_ms = if self.not_yet {
            0
        } else {
            match send_outbox(store, self.link, self.dir, None, &mut self.summary) {
                Ok(_) => wait_ms,
                Err(e @ NetError::NotYet(_)) => {
                    self.not_yet(&e);
                    deferred = Some(e);
                    0
                }
                Err(e) => return Err(e),
            }
        };
        match download(self.link, self.dir, after, wait_ms)? {
            // Nothing to apply and the emission waits: the executor tries again after its
            // pause (`remote run`), as when central is unreachable.
            None => deferred.map_or(Ok(None), Err),
            Some((answers, file, bytes)) => {
                self.summary.received_bytes += bytes;
                Ok(Some(Fetched {
                    answers,
                    reader: Box::new(std::io::BufReader::new(file)),
                }))
            }
        }
    }

    fn returns_applied(&mut self, store: &Store) -> Result<(), NetError> {
        report_acks(store, self.link)
    }
}

/// Adds what an executor's run did to the summary: returns applied and their notes, changes
/// refused by central (counted from `refused_before`), the executor's notes.
fn account(
    store: &Store,
    run: &mut RemoteRun<NetError>,
    refused_before: usize,
    summary: &mut Summary,
) -> Result<(), NetError> {
    for applied in run.applied.drain(..) {
        match applied {
            remote::Applied::Applied {
                id, report, note, ..
            } => {
                summary.received.push((id, report.outcomes.len() as u64));
                summary.notes.extend(note);
            }
            remote::Applied::AlreadyApplied(_) => {}
            remote::Applied::RefusedStale { id, newest } => summary.notes.push(format!(
                "return {id} refused: return {newest} is newer and already applied"
            )),
            remote::Applied::RefusedOtherStore { id } => summary.notes.push(format!(
                "return {id} refused: it was made for another store of this site"
            )),
        }
    }
    let now = remote::refused_by_central(store).map_err(local)?.len();
    summary.rejected += now.saturating_sub(refused_before) as u64;
    summary.notes.append(&mut run.notes);
    Ok(())
}

/// What `outpost remote sync` is asked.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest {
    /// Emit only (M3).
    pub no_return: bool,
    /// How long to wait for the return; default: the site's configured immediate wait, or
    /// [`DEFAULT_IMMEDIATE_WAIT_MS`].
    pub wait: Option<Duration>,
}

/// `outpost remote sync`: an immediate sync (A3, M2/M4) through the site's executor: emit,
/// then wait for the return — the site's configured wait, or the default one where the site
/// has none (a fixed-time or no-return site asking for an immediate sync still gets its
/// return). An emission central refuses fails the sync at once, with central's reason.
pub fn sync_now(
    store: &Store,
    link: &Link,
    dir: &Path,
    req: SyncRequest,
) -> Result<Summary, NetError> {
    let started = Instant::now();
    let mut exec = RemoteExecutor::new(store).map_err(local)?;
    let mut net = Net::new(link, dir);
    let ask = if req.no_return {
        SyncAsk::NoReturn
    } else {
        if req.wait.is_none() && exec.scheduler().configured_wait_ms().is_none() {
            net.summary.notes.push(format!(
                "this site has no wait configured for immediate syncs: waited up to the \
                 default {} s for the return",
                DEFAULT_IMMEDIATE_WAIT_MS / 1000
            ));
        }
        SyncAsk::Immediate {
            wait_ms: req
                .wait
                .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
        }
    };
    let wait_ms = match ask {
        SyncAsk::NoReturn => 0,
        SyncAsk::Immediate { wait_ms } => wait_ms
            .or(exec.scheduler().configured_wait_ms())
            .unwrap_or(DEFAULT_IMMEDIATE_WAIT_MS),
    };
    let refused_before = remote::refused_by_central(store).map_err(local)?.len();
    let mut run = exec.request_sync(store, &mut net, ask).map_err(local)?;
    // Central may end a long poll before the wait is over: poll again until it is.
    while run.failed.is_empty()
        && run.unreachable.is_none()
        && exec.waiting_until().is_some_and(|u| store.now_ms() < u)
    {
        let polled = Instant::now();
        let more = exec.wait_for_return(store, &mut net).map_err(local)?;
        if more.applied.is_empty() && polled.elapsed() < Duration::from_millis(100) {
            std::thread::sleep(Duration::from_millis(200));
        }
        run.extend(more);
    }
    if let Some(failure) = run.failed.into_iter().next() {
        return Err(match failure {
            Failure::Transport(e) => e,
            Failure::Return(e) => NetError::Local(format!("the return was not applied: {e}")),
        });
    }
    run.failed = Vec::new();
    match run.unreachable.take() {
        // Central's restore waits for other remotes' reports: not a failure of this sync (a
        // return already prepared was fetched all the same); the emission goes with the next.
        Some(NetError::NotYet(_)) => {}
        Some(e) => return Err(e),
        None => {}
    }
    // No return: central may hold the emission for clock skew — said, and the sync failed.
    if exec.is_waiting()
        && !net.not_yet
        && let Some(id) = run.emitted.last()
        && let Some(why) = held_at_central(link, *id)?
    {
        return Err(NetError::Held(why));
    }
    let mut summary = std::mem::take(&mut net.summary);
    account(store, &mut run, refused_before, &mut summary)?;
    if exec.is_waiting() && !net.not_yet {
        summary.notes.push(format!(
            "no return within {} s: it will be fetched at the next connection",
            wait_ms / 1000
        ));
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Carries out the schedule's `commands` now, as `remote run` does when their time comes — the
/// fixed-time emission (`Emit(Deferred)`) or fetch (`FetchReturn`) — through the same executor,
/// once; a driver that keeps its own clock (the fleet harness) calls it at its times.
pub fn scheduled(
    store: &Store,
    link: &Link,
    dir: &Path,
    commands: Vec<outpost_replicator::automaton::RemoteCommand>,
) -> Result<Summary, NetError> {
    let started = Instant::now();
    let mut exec = RemoteExecutor::new(store).map_err(local)?;
    let mut net = Net::new(link, dir);
    let refused_before = remote::refused_by_central(store).map_err(local)?.len();
    let mut run = exec.carry_out(store, &mut net, commands).map_err(local)?;
    match run.unreachable.take() {
        // Not taken yet (central's restore): a note, as for `remote sync`.
        Some(NetError::NotYet(_)) | None => {}
        Some(e) => return Err(e),
    }
    if let Some(f) = run.failed.first() {
        return Err(NetError::Local(f.to_string()));
    }
    let mut summary = std::mem::take(&mut net.summary);
    account(store, &mut run, refused_before, &mut summary)?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// `outpost remote run`: the site's executor (M1), connecting only for each sync (S2) and
/// retrying with backoff while central is unreachable. It follows the site's settings as they
/// change (a return, a local admin's edit: C4, C6) without a restart. Runs until the process is
/// stopped; a stop at any point loses nothing (the emission is in the outbox, the upload
/// resumes).
pub fn run(store: &Store, link: &Link, dir: &Path, once_by_ms: Option<u64>) -> Result<()> {
    run_with(store, link, dir, once_by_ms, None)
}

/// An instant as `remote run` prints it: the site's local date and time.
fn stamp(exec: &RemoteExecutor, ms: u64) -> String {
    exec.schedule().zone.datetime_at(ms)
}

/// What `remote run` will do next, in the site's time and central's: the next fixed-time
/// emission and fetch (M1), and whether immediate syncs are configured.
fn plan_line(store: &Store, exec: &RemoteExecutor, now_ms: u64) -> String {
    let central = remote::settings(store)
        .ok()
        .and_then(|s| s.get("central_time_zone").and_then(|z| z.parse().ok()));
    plan_text(
        &store.site().to_string(),
        exec.schedule().zone,
        central,
        exec.scheduler().next_fixed(now_ms),
        exec.scheduler().configured_wait_ms(),
    )
}

fn plan_text(
    site: &str,
    zone: outpost_replicator::schedule::Zone,
    central: Option<outpost_replicator::schedule::Zone>,
    next_fixed: Option<(u64, u64)>,
    wait_ms: Option<u64>,
) -> String {
    let both = |ms: u64| match central {
        Some(c) if c != zone => format!(
            "{} {} ({} {} central time)",
            zone.date_at(ms),
            zone.hhmm_at(ms),
            c.date_at(ms),
            c.hhmm_at(ms)
        ),
        _ => format!("{} {}", zone.date_at(ms), zone.hhmm_at(ms)),
    };
    let mut parts = vec![format!("site {site} ({zone})")];
    match next_fixed {
        Some((emit, fetch)) => {
            parts.push(format!("next emission {}", both(emit)));
            parts.push(format!("next fetch {}", both(fetch)));
        }
        None => parts.push("no fixed-time sync".to_owned()),
    }
    if let Some(wait) = wait_ms {
        parts.push(format!(
            "immediate syncs on request (return awaited {} s)",
            wait / 1000
        ));
    }
    parts.join("; ")
}

/// [`run`] as `outpost remote run` runs it: the store held, commands on its data directory
/// run inside this process through its control socket ([`crate::control`]), a forwarded sync
/// or import never at the same time as a scheduled one.
pub fn run_daemon(store: Arc<Store>, link: &Link, dir: &Path) -> Result<()> {
    let one = Arc::new(std::sync::Mutex::new(()));
    let _control = crate::control::start(crate::control::Daemon {
        name: "remote run",
        dir: dir.to_path_buf(),
        store: Arc::clone(&store),
        work: Arc::clone(&one),
        changed: None,
    })?;
    run_with(&store, link, dir, None, Some(&one))
}

/// [`run`], taking `one` around each sync when given: a site server's workstations can ask for
/// syncs too, and two syncs of one site must not run at once.
pub fn run_with(
    store: &Store,
    link: &Link,
    dir: &Path,
    once_by_ms: Option<u64>,
    one: Option<&std::sync::Mutex<()>>,
) -> Result<()> {
    let mut exec = RemoteExecutor::new(store).map_err(|e| e.to_string())?;
    println!("{}", plan_line(store, &exec, SystemClock.now_ms()));
    // Catch up first: an emission left in the outbox, a return waiting at central.
    exec.catch_up();
    let mut net = Net::new(link, dir);
    loop {
        {
            let _one_at_a_time =
                one.map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            let started = Instant::now();
            let refused_before = remote::refused_by_central(store).map_or(0, |r| r.len());
            net.not_yet = false;
            match exec.on_time(store, &mut net) {
                Ok(mut run) => {
                    let mut summary = std::mem::take(&mut net.summary);
                    if let Err(e) = account(store, &mut run, refused_before, &mut summary) {
                        eprintln!("error: {e}");
                    }
                    summary.elapsed = started.elapsed();
                    let at = stamp(&exec, SystemClock.now_ms());
                    if !summary.sent.is_empty() || !summary.received.is_empty() {
                        for line in summary.to_string().lines() {
                            println!("{at} {line}");
                        }
                        println!("{at} {}", plan_line(store, &exec, SystemClock.now_ms()));
                    } else {
                        for n in &summary.notes {
                            println!("{at} note: {n}");
                        }
                    }
                    for f in &run.failed {
                        eprintln!("{at} error: {f}");
                    }
                    if let (Some(e), Some(retry)) = (&run.unreachable, run.retry_at) {
                        eprintln!(
                            "{at} {e}; retrying in {} s",
                            retry.saturating_sub(store.now_ms()).div_ceil(1000)
                        );
                    }
                }
                Err(e) => eprintln!("{} error: {e}", stamp(&exec, SystemClock.now_ms())),
            }
        }
        let now = SystemClock.now_ms();
        if once_by_ms.is_some_and(|until| now >= until) {
            return Ok(());
        }
        // At least once a minute: a changed setting is followed within a minute.
        let next = exec.next_wakeup_ms(now).saturating_sub(now);
        std::thread::sleep(Duration::from_millis(next.clamp(200, 60_000)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use outpost_replicator::schedule::Zone;

    /// M1, T1: `remote run` says when it will next emit and fetch, in the site's time and in
    /// central's when they differ.
    #[test]
    fn m1_remote_run_tells_the_next_emission_and_fetch_in_both_times() {
        let ny: Zone = "America/New_York".parse().unwrap();
        let paris: Zone = "Europe/Paris".parse().unwrap();
        // 2027-01-15 21:00 and 23:20 in New York (UTC-5).
        let emit = 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + 2 * 3_600_000;
        let fetch = emit + 140 * 60_000;
        let text = plan_text("BSOC", ny, Some(paris), Some((emit, fetch)), Some(60_000));
        assert!(text.starts_with("site BSOC (America/New_York)"), "{text}");
        let local = format!("next emission {} {}", ny.date_at(emit), ny.hhmm_at(emit));
        let central = format!(
            "{} {} central time",
            paris.date_at(emit),
            paris.hhmm_at(emit)
        );
        assert!(text.contains(&local) && text.contains(&central), "{text}");
        assert_ne!(ny.hhmm_at(emit), paris.hhmm_at(emit));
        assert!(text.contains(&format!(
            "next fetch {} {}",
            ny.date_at(fetch),
            ny.hhmm_at(fetch)
        )));
        assert!(text.contains("return awaited 60 s"), "{text}");
        // Same zone: one time; no fixed time: said so.
        let same = plan_text("CSOC", paris, Some(paris), None, None);
        assert_eq!(same, "site CSOC (Europe/Paris); no fixed-time sync");
    }

    /// M3 across versions: an acknowledgement from a central that states no clock (before
    /// 2026-12-05) is read with none, and the clock round-trips.
    #[test]
    fn m3_an_acknowledgement_without_central_s_clock_is_read_as_saying_none() {
        use outpost_replicator::central::Acknowledgement;
        let mut known = outpost_engine::Knowledge::new();
        known.insert(outpost_engine::Dot {
            site: outpost_engine::SiteId(2),
            seq: 7,
        });
        let ack = serde_json::to_string(&known).unwrap();
        let old: Acknowledgement = serde_json::from_str(&format!(r#"{{"ack":{ack}}}"#)).unwrap();
        assert_eq!((old.ack, old.clock), (known, None));
        let now = Acknowledgement {
            ack: outpost_engine::Knowledge::new(),
            clock: Some(outpost_engine::Stamp::new(1_800_000_000_000, 3)),
        };
        let text = serde_json::to_string(&now).unwrap();
        assert_eq!(serde_json::from_str::<Acknowledgement>(&text).unwrap(), now);
    }
}
