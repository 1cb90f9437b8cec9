//! Alerts (SPEC C3): the daemon brings them up to date on a timer
//! ([`outpost_replicator::monitor::evaluate`]) and e-mails what is new to the responsible
//! collaborator through the configured SMTP server — one digest at most every `digest_s`, not
//! one message per alert. What could not be sent stays marked unsent and goes with the next
//! digest.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use outpost_engine::{Clock, Store};
use outpost_replicator::central;
use outpost_replicator::monitor::{self, Alert, Disk, Thresholds};
use serde::{Deserialize, Serialize};

use super::lock;
use outpost::SystemClock;

/// The `[alerts]` table of `outpost.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// The SMTP server: `smtp://host:25` (plain, for a relay on the local network),
    /// `smtp://user:password@host:587?tls=required` (STARTTLS), `smtps://user:password@host`
    /// (TLS). Without it alerts are only on the page and in `outpost journal --alerts`.
    pub smtp_url: Option<String>,
    /// The sender address.
    pub from: String,
    /// Recipients; empty: the responsible collaborator's e-mail address (C3).
    pub to: Vec<String>,
    /// How often conditions are checked, in seconds.
    pub check_s: u64,
    /// At most one e-mail per this many seconds: a digest of everything new.
    pub digest_s: u64,
    /// A remote is silent once this many seconds past its due emission.
    pub silent_margin_s: u64,
    /// A remote without a fixed-time sync is expected to emit at least this often (seconds;
    /// 0: no expectation).
    pub expect_every_s: u64,
    /// An emission still unprocessed after this many automaton cycles raises an alert.
    pub pending_cycles: u32,
    /// An alert when the disk of the store has less than this share free (percent).
    pub disk_free_min_pct: u8,
    /// A remote is stale once its newest emission came this many seconds after the first return
    /// made for it that it has not reported applied (0: never).
    pub stale_after_s: u64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        let t = Thresholds::default();
        AlertConfig {
            smtp_url: None,
            from: "outpost@localhost".into(),
            to: Vec::new(),
            check_s: 30,
            digest_s: 300,
            silent_margin_s: t.silent_margin_ms / 1000,
            expect_every_s: t.expect_every_ms / 1000,
            pending_cycles: t.pending_cycles,
            disk_free_min_pct: t.disk_free_min_pct,
            stale_after_s: t.stale_after_ms / 1000,
        }
    }
}

impl AlertConfig {
    fn thresholds(&self, cycle_ms: u64) -> Thresholds {
        Thresholds {
            silent_margin_ms: self.silent_margin_s.saturating_mul(1000),
            expect_every_ms: self.expect_every_s.saturating_mul(1000),
            pending_cycles: self.pending_cycles,
            cycle_ms,
            disk_free_min_pct: self.disk_free_min_pct,
            stale_after_ms: self.stale_after_s.saturating_mul(1000),
        }
    }

    /// Checks what can be checked before the daemon starts.
    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(url) = &self.smtp_url {
            lettre::SmtpTransport::from_url(url).map_err(|e| {
                format!(
                    "alerts.smtp_url {:?}: {e} (write smtp://host:25, \
                     smtp://user:password@host:587?tls=required or smtps://user:password@host)",
                    redacted(url)
                )
            })?;
            self.from.parse::<lettre::message::Mailbox>().map_err(|e| {
                format!("alerts.from {:?} is not an e-mail address: {e}", self.from)
            })?;
        }
        for to in &self.to {
            to.parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("alerts.to {to:?} is not an e-mail address: {e}"))?;
        }
        if self.check_s == 0 {
            return Err("alerts.check_s must be above 0".into());
        }
        Ok(())
    }
}

/// The SMTP URL without its password, for messages and logs.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) => {
            let user = rest.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:…{}", url.get(at..).unwrap_or(""))
        }
        _ => url.to_owned(),
    }
}

/// How the e-mails went, for the page.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct MailStatus {
    /// E-mail is configured.
    pub configured: bool,
    /// Digests sent since the daemon started.
    pub sent: u64,
    /// The last one (central's clock, UTC ms).
    pub last_sent_ms: Option<u64>,
    /// The last failure to send.
    pub last_error: Option<String>,
}

/// Free space on the disk holding `path`.
fn disk(path: &Path) -> Option<Disk> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(Disk {
        available: s.f_bavail.saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// Brings the alerts up to date now, as the daemon's timer does (see [`run`]).
pub(super) fn update(
    store: &Store,
    data: &Path,
    config: &AlertConfig,
    cycle_ms: u64,
) -> Result<(), String> {
    monitor::evaluate(
        store,
        SystemClock.now_ms(),
        &config.thresholds(cycle_ms),
        disk(data),
    )
    .map(|_| ())
    .map_err(|e| format!("cannot bring the alerts up to date: {e}"))
}

/// The alerts' thread: until told to stop (or the daemon drops the sender).
pub(super) fn run(
    store: &Store,
    data: &Path,
    config: &AlertConfig,
    cycle_ms: u64,
    stop: &mpsc::Receiver<()>,
    status: &Mutex<MailStatus>,
) {
    let thresholds = config.thresholds(cycle_ms);
    let mut next_mail_ms = 0;
    loop {
        let now = SystemClock.now_ms();
        match monitor::evaluate(store, now, &thresholds, disk(data)) {
            Ok(raised) => {
                for a in raised {
                    tracing::warn!(alert = a.id, "alert: {}", a.text);
                }
            }
            Err(e) => tracing::error!("cannot bring the alerts up to date: {e}"),
        }
        if let Some(url) = &config.smtp_url
            && now >= next_mail_ms
        {
            match mail_digest(store, url, config, now) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(alerts = n, "alert digest e-mailed");
                    let mut s = lock(status);
                    s.sent += 1;
                    s.last_sent_ms = Some(now);
                    s.last_error = None;
                    next_mail_ms = now.saturating_add(config.digest_s.saturating_mul(1000));
                }
                Err(e) => {
                    tracing::error!("cannot e-mail the alerts: {e}");
                    lock(status).last_error = Some(e);
                }
            }
        }
        match stop.recv_timeout(Duration::from_secs(config.check_s.max(1))) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Refuses a daemon whose alerts would be e-mailed nowhere: an SMTP server set, but the
/// recipients (C3: the responsible collaborator's address, unless `to` names others) missing,
/// or an address of a domain reserved for examples — `central init` writes the seed's
/// configuration, whose responsible collaborator RSYN has `rsyn@asoc.example`: a mail server
/// takes such a message, it bounces, and nobody is told anything while the monitor says
/// "e-mailed".
pub(super) fn check_recipients(store: &Store, config: &AlertConfig) -> Result<(), String> {
    if config.smtp_url.is_none() {
        return Ok(());
    }
    let to = recipients(store, config).map_err(|e| {
        format!("alerts: {e}; name who gets them: `to = [\"you@your.company\"]` under [alerts] in outpost.toml")
    })?;
    match to.iter().find(|t| is_placeholder(t)) {
        Some(t) => Err(format!(
            "alerts would be e-mailed to {t}, an address of a domain reserved for examples{}: \
             name who gets them, `to = [\"you@your.company\"]` under [alerts] in outpost.toml",
            if config.to.is_empty() {
                " (the responsible collaborator's in the seed's configuration, C3)"
            } else {
                ""
            }
        )),
        None => Ok(()),
    }
}

/// Whether `address` is of a domain reserved for examples and tests (RFC 2606 and 6761): no
/// mail reaches it. (`localhost` is not: a local mail server may deliver to `root@localhost`.)
fn is_placeholder(address: &str) -> bool {
    let domain = address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .trim_end_matches('>')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    ["example", "invalid", "test"]
        .iter()
        .any(|tld| domain == *tld || domain.ends_with(&format!(".{tld}")))
        || ["example.com", "example.net", "example.org"]
            .iter()
            .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
}

/// The recipients: those configured, or the responsible collaborator's address (C3).
fn recipients(store: &Store, config: &AlertConfig) -> Result<Vec<String>, String> {
    if !config.to.is_empty() {
        return Ok(config.to.clone());
    }
    let sync = central::config(store)
        .map_err(|e| e.to_string())?
        .ok_or("central has no configuration")?;
    let responsible = &sync.central.responsible;
    sync.central
        .users
        .iter()
        .find(|u| &u.code == responsible)
        .and_then(|u| u.email.clone())
        .map(|e| vec![e])
        .ok_or_else(|| format!("the responsible collaborator {responsible} has no e-mail address"))
}

/// E-mails the alerts not yet sent, as one message; returns how many it carried.
fn mail_digest(store: &Store, url: &str, config: &AlertConfig, now: u64) -> Result<usize, String> {
    let unmailed = monitor::unmailed(store).map_err(|e| e.to_string())?;
    if unmailed.is_empty() {
        return Ok(0);
    }
    let to = recipients(store, config)?;
    let left_out = monitor::unmailed_left_out(store).map_err(|e| e.to_string())?;
    let (subject, body) = digest_text(store, &unmailed, left_out);
    let mut message = lettre::Message::builder()
        .from(
            config
                .from
                .parse()
                .map_err(|e| format!("alerts.from: {e}"))?,
        )
        .subject(subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for t in &to {
        message = message.to(t.parse().map_err(|e| format!("{t:?}: {e}"))?);
    }
    let message = message.body(body).map_err(|e| e.to_string())?;
    let transport = lettre::SmtpTransport::from_url(url)
        .map_err(|e| e.to_string())?
        .timeout(Some(Duration::from_secs(30)))
        .build();
    lettre::Transport::send(&transport, &message).map_err(|e| {
        format!(
            "sending to {} through {}: {e}",
            to.join(", "),
            redacted(url)
        )
    })?;
    let ids: Vec<u64> = unmailed.iter().map(|a| a.id).collect();
    monitor::mark_mailed(store, &ids, now).map_err(|e| e.to_string())?;
    Ok(unmailed.len())
}

fn digest_text(store: &Store, alerts: &[Alert], left_out: u64) -> (String, String) {
    let zone =
        crate::data_dir::journal_zone(store).unwrap_or(outpost_replicator::schedule::Zone::UTC);
    let site = store.site().code.to_string();
    let open = alerts.iter().filter(|a| a.is_open()).count();
    let lead = alerts
        .iter()
        .find(|a| a.is_open())
        .or_else(|| alerts.first())
        .map_or("", |a| a.text.split(". ").next().unwrap_or(&a.text));
    let subject = format!(
        "[outpost {site}] {} alert(s){}: {lead}",
        alerts.len(),
        if open > 0 {
            format!(", {open} open")
        } else {
            String::new()
        },
    );
    let subject: String = subject.chars().take(160).collect();
    let mut body = format!(
        "Central {site} raised these alerts since its last message (times in {zone}). OPEN: the \
         condition still holds (it closes by itself once it no longer does); EVENT: something \
         that happened; CLOSED: a condition that held and no longer does.\n\n"
    );
    if left_out > 0 {
        body.push_str(&format!(
            "{left_out} older alert(s) are left out of this message (e-mail failed for a while \
             and the backlog kept for it is bounded; open ones are all here): see the monitor \
             page or `outpost journal --data DIR --alerts`.\n\n"
        ));
    }
    for a in alerts {
        body.push_str(&format!(
            "- {} {} {}\n  {}\n\n",
            zone.datetime_at(a.raised_ms),
            match a.closed_ms {
                None => "OPEN  ",
                Some(c) if c == a.raised_ms => "EVENT ",
                Some(_) => "CLOSED",
            },
            a.key,
            a.text
        ));
    }
    body.push_str(
        "The sync monitor shows them with the journal: /monitor on central's daemon (port 2638 \
         unless configured otherwise); `outpost journal --data DIR --alerts` lists them too.\n",
    );
    (subject, body)
}

/// Starts the alerts' thread.
pub(super) fn spawn(
    store: Arc<Store>,
    data: PathBuf,
    config: AlertConfig,
    cycle_ms: u64,
    status: Arc<Mutex<MailStatus>>,
) -> Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>), String> {
    let (stop_tx, stop_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || run(&store, &data, &config, cycle_ms, &stop_rx, &status))
        .map_err(|e| format!("cannot start the alerts: {e}"))?;
    Ok((stop_tx, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_engine::{Site, StoreConfig};

    fn central_with(rsyn_email: &str) -> Store {
        let site = Site::central(1, "ASOC").unwrap_or_else(|e| panic!("{e}"));
        let config = StoreConfig::new(site, outpost::retail::schema(), SystemClock);
        let store = Store::in_memory(config).unwrap_or_else(|e| panic!("{e}"));
        let mut sync = outpost_replicator::config::seed_example();
        for u in &mut sync.central.users {
            if u.code == sync.central.responsible {
                u.email = Some(rsyn_email.to_owned());
            }
        }
        central::set_config(&store, &sync).unwrap_or_else(|e| panic!("{e}"));
        store
    }

    fn mailing(to: &[&str]) -> AlertConfig {
        AlertConfig {
            smtp_url: Some("smtp://127.0.0.1:25".into()),
            to: to.iter().map(|t| (*t).to_owned()).collect(),
            ..AlertConfig::default()
        }
    }

    /// C3: the alerts go to the responsible collaborator unless `to` names others — never to
    /// an address of a domain reserved for examples, such as the seed's, which `central init`
    /// writes: the daemon does not start, saying what to set.
    #[test]
    fn c3_alerts_go_to_the_responsible_collaborator_and_never_to_a_placeholder() {
        let real = central_with("rsyn@asoc.fr");
        assert_eq!(
            recipients(&real, &mailing(&[])),
            Ok(vec!["rsyn@asoc.fr".into()])
        );
        assert_eq!(check_recipients(&real, &mailing(&[])), Ok(()));
        let seed = central_with("rsyn@asoc.example");
        let err = check_recipients(&seed, &mailing(&[])).unwrap_err();
        assert!(
            err.contains("rsyn@asoc.example") && err.contains("to = ["),
            "{err}"
        );
        assert_eq!(check_recipients(&seed, &mailing(&["ops@asoc.fr"])), Ok(()));
        let err = check_recipients(&seed, &mailing(&["ops@shop.test"])).unwrap_err();
        assert!(err.contains("ops@shop.test"), "{err}");
        // No SMTP server: nothing is e-mailed, nothing to check.
        let quiet = AlertConfig::default();
        assert_eq!(check_recipients(&seed, &quiet), Ok(()));
        for (address, placeholder) in [
            ("a@asoc.example", true),
            ("a@example.com", true),
            ("a@mail.example.org", true),
            ("root@localhost", false),
            ("a@shop.invalid", true),
            ("a@asoc.fr", false),
            ("a@examples.com", false),
        ] {
            assert_eq!(is_placeholder(address), placeholder, "{address}");
        }
    }
}
