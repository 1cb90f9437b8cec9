//! The `outpost` program's arguments: the commands and their options (clap), apart from what
//! running them does (`main.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "outpost",
    version,
    about = "Embedded, replicated, local-first storage"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SiteCommand {
    /// Serve the site's store to its workstations over HTTP, and run its sync scheduler.
    Serve {
        /// The site's data directory (a remote's).
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// Address and port to listen on (the shop's network: e.g. 0.0.0.0:2639).
        #[arg(long, default_value = "127.0.0.1:2639")]
        listen: String,
        /// Central's address, instead of the one in remote.toml.
        #[arg(long)]
        central: Option<String>,
        /// A reservation's lease when the workstation does not ask for one (seconds).
        #[arg(long, default_value_t = 60)]
        lease_s: u64,
        /// Do not run the fixed-time sync scheduler here (syncs only when a workstation asks).
        #[arg(long)]
        no_scheduler: bool,
        /// Serve plain HTTP on an address other than loopback (credentials in clear on the
        /// shop's network): refused unless given.
        #[arg(long)]
        allow_plain_http: bool,
        /// PEM certificate chain: with --tls-key, HTTPS only.
        #[arg(long, value_parser = outpost_cli::out::path)]
        tls_cert: Option<PathBuf>,
        /// PEM private key.
        #[arg(long, value_parser = outpost_cli::out::path)]
        tls_key: Option<PathBuf>,
        /// Remove workstation log entries older than this many days (0 keeps them all).
        #[arg(long, default_value_t = outpost_server::site::LOG_KEEP_DAYS_DEFAULT)]
        log_keep_days: u64,
    },
    /// Add a workstation user (or give it a new credential); prints its credential once.
    AddUser {
        /// The site's data directory (the server stopped).
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The user's code (letters, digits, '_' or '-').
        #[arg(long)]
        user: String,
        /// May change the site's settings, read the workstation log and manage users.
        #[arg(long)]
        admin: bool,
    },
    /// List the workstation users (while the server runs: `outpost client users`).
    Users {
        /// The site's data directory (the server stopped).
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
    },
    /// Remove a workstation user: its credential stops working (while the server runs:
    /// `outpost client remove-user`).
    RemoveUser {
        /// The site's data directory (the server stopped).
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The user's code.
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ClientCommand {
    /// Print a record's fields as JSON (`null` when there is none).
    Get {
        #[arg(long)]
        table: String,
        #[arg(long)]
        key: String,
    },
    /// Write fields (a JSON object) to a record.
    Put {
        #[arg(long)]
        table: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        fields: String,
    },
    /// Create a record under the site's next key; prints the key.
    Create {
        #[arg(long)]
        table: String,
        #[arg(long)]
        fields: String,
    },
    /// Delete a record.
    Delete {
        #[arg(long)]
        table: String,
        #[arg(long)]
        key: String,
    },
    /// Print records in key order as JSON lines.
    Scan {
        /// The table to list.
        #[arg(long)]
        table: String,
        /// The first key to list (included).
        #[arg(long)]
        from: Option<String>,
        /// The key to stop before (excluded).
        #[arg(long)]
        to: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Reserve a document and hold it, renewing its lease, until this program is stopped.
    Hold {
        #[arg(long)]
        table: String,
        #[arg(long)]
        key: String,
        /// The lease (seconds): how long the document stays reserved if this program dies.
        #[arg(long, default_value_t = 30)]
        lease_s: u64,
    },
    /// Release a document this user reserved.
    Release {
        #[arg(long)]
        table: String,
        #[arg(long)]
        key: String,
    },
    /// Ask the site server for an immediate sync with central.
    Sync,
    /// Print committed changes as JSON lines as they come (a deletion has `"field": null` and
    /// `"value": true`), until stopped or `--count` were printed.
    Watch {
        /// Start after this change number (a previous line's `seq`); 0: from the server's start.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print the site's settings (an admin user).
    Settings,
    /// Change a setting (an admin user).
    SetSetting {
        /// The setting's name: `sync_types`, `time_zone`, `central_time_zone`, `return_time`,
        /// `central_host`, `central_port`.
        #[arg(long)]
        name: String,
        /// Its new value, checked as central checks its configuration (a known setting, well
        /// formed, a schedule possible against central's common return: C4, M1).
        #[arg(long)]
        value: String,
    },
    /// List the site's workstation users (an admin).
    Users,
    /// Add a workstation user, or give one a new credential; prints it once (an admin).
    AddUser {
        /// The user's code (letters, digits, '_' or '-').
        #[arg(long)]
        user: String,
        /// May change settings, read the workstation log and manage users.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a workstation user: its credential stops working at once (an admin; not
    /// yourself).
    RemoveUser {
        #[arg(long)]
        user: String,
    },
    /// Print the workstation log as JSON lines: who wrote what, refusals included (an admin).
    Log {
        /// Entries after this number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Write `--n` records, one request each (a busy till): `{prefix}{i}` with the fields
    /// given, `{i}` in values replaced by the number.
    Load {
        /// The table to write to.
        #[arg(long)]
        table: String,
        /// The keys' start: `{prefix}000000`, `{prefix}000001`…
        #[arg(long)]
        prefix: String,
        /// How many records.
        #[arg(long)]
        n: usize,
        /// The fields, as a JSON object; `{i}` in it is replaced by the record's number.
        #[arg(long)]
        fields: String,
        /// Write every time to this one key instead.
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the deterministic multi-site simulator.
    Sim {
        /// Number of remote sites.
        #[arg(long, default_value_t = 10)]
        sites: usize,
        /// Number of simulated days.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// The seed (the same seed reproduces the run exactly).
        #[arg(long, default_value_t = 8812)]
        seed: u64,
        /// Inject faults the system must survive.
        #[arg(long)]
        faults: bool,
        /// Run this many seeds, from --seed on.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Write the report (the last seed's) as JSON to this file.
        #[arg(long, value_parser = outpost_cli::out::path)]
        json: Option<PathBuf>,
        /// Run a scripted scenario (a TOML file, see docs/scenarios.md) instead of a random run.
        #[arg(long, value_parser = outpost_cli::out::path)]
        scenario: Option<PathBuf>,
        /// Draw the sync schedule of every site across time zones and each remote's staleness
        /// over the run (the last seed's, or the scenario's) as SVG to this file, for a browser.
        #[arg(long, value_parser = outpost_cli::out::path)]
        svg: Option<PathBuf>,
    },
    /// Play the SPEC's example plan (C5): central ASOC, remotes BSOC and CSOC, one day.
    Demo {
        /// Directory for the three stores (default: a new directory under the system's
        /// temporary directory).
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: Option<PathBuf>,
    },
    /// Administer central's store: create it, add remotes, exchange sync files (S4).
    Central {
        #[command(subcommand)]
        command: CentralCommand,
    },
    /// A multi-workstation site (S3): serve one site's store to the workstations of that site.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// A workstation: work on a site server's store over the network (the client library).
    Client {
        /// The site server, e.g. http://192.168.1.10:2639.
        #[arg(long)]
        server: String,
        /// The workstation user's credential (USER.secret); default: $OUTPOST_CREDENTIAL.
        #[arg(long, env = "OUTPOST_CREDENTIAL", hide_env_values = true)]
        credential: String,
        /// This workstation's name (till-2): reservations are held by USER@till-2.
        #[arg(long)]
        workstation: Option<String>,
        /// Trust the site server's certificate from this PEM file (HTTPS with a private CA or a
        /// self-signed certificate).
        #[arg(long, value_parser = outpost_cli::out::path)]
        ca: Option<PathBuf>,
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Administer a remote's store: create it from its bootstrap file, exchange sync files.
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
    /// Central's list of flows (J1): SynID, link, file ready, executions, refusals…
    Journal {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// Only this remote's flows (its establishment code).
        #[arg(long)]
        site: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// List the flows refused at receipt instead (damaged, of another deployment…):
        /// nothing of them was kept.
        #[arg(long, conflicts_with = "alerts")]
        refused: bool,
        /// List the alerts instead (C3): the open ones, then the recent closed ones — the
        /// same as the monitor page shows.
        #[arg(long)]
        alerts: bool,
    },
    /// Print a record's fields as JSON (`null` when there is none).
    Get(RecordArgs),
    /// List a table's records in key order, one JSON object per line: `{"key", "fields"}`.
    Scan {
        /// The store's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The table.
        #[arg(long)]
        table: String,
        /// The first key to list (included).
        #[arg(long)]
        from: Option<String>,
        /// At most this many records (all when not given).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Write a whole table out: JSON lines (as `scan`) or CSV (a `key` column, then one column
    /// per field of the schema, values as JSON).
    Export {
        /// The store's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The table.
        #[arg(long)]
        table: String,
        /// `jsonl` or `csv`.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
    /// List the schema: each table with its policy (the ownership rule), each field with its type.
    Schema {
        /// The store's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
    },
    /// Write fields (a JSON object) to a record, under every ownership rule (R3–R8).
    Put {
        #[command(flatten)]
        record: RecordArgs,
        /// The fields, as a JSON object: `{"city": "Lyon"}`.
        #[arg(long)]
        fields: String,
        /// The user writing (recorded with the change; holds reservations).
        #[arg(long, default_value = "operator")]
        user: String,
    },
    /// Delete a record.
    Delete {
        #[command(flatten)]
        record: RecordArgs,
        /// The user writing.
        #[arg(long, default_value = "operator")]
        user: String,
    },
    /// Reserve a document for a user (R7): only they may write it, and it stays out of syncs.
    Reserve {
        #[command(flatten)]
        record: RecordArgs,
        /// The user holding it.
        #[arg(long, default_value = "operator")]
        user: String,
    },
    /// Release a reservation.
    Release {
        #[command(flatten)]
        record: RecordArgs,
        /// The user holding it.
        #[arg(long, default_value = "operator")]
        user: String,
    },
}

/// A record in a store.
#[derive(clap::Args, Debug)]
pub(crate) struct RecordArgs {
    /// The store's data directory.
    #[arg(long, value_parser = outpost_cli::out::path)]
    pub(crate) data: PathBuf,
    /// The table.
    #[arg(long)]
    pub(crate) table: String,
    /// The record's key.
    #[arg(long)]
    pub(crate) key: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum CentralCommand {
    /// Create central's store (the seed's settings, no remote yet).
    Init {
        /// The data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// Central's establishment code.
        #[arg(long, default_value = "ASOC")]
        code: String,
        /// Central's site id.
        #[arg(long, default_value_t = 1)]
        id: u16,
        /// Central's IANA time zone.
        #[arg(long, default_value = "Europe/Paris")]
        tz: String,
        /// The common deferred-return time (M1), HH:MM in central's time zone.
        #[arg(long, default_value = "23:00")]
        return_at: String,
    },
    /// Create a remote establishment and write its bootstrap file.
    AddRemote {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The remote's site id (shown as Dnn).
        #[arg(long)]
        id: u16,
        /// Its establishment code.
        #[arg(long)]
        code: String,
        /// Its IANA time zone.
        #[arg(long, default_value = "Europe/Paris")]
        tz: String,
        /// A sync type: `fixed 21:00 23:20`, `immediate 60`, `no-return` (repeatable).
        #[arg(long = "sync", default_value = "immediate 60")]
        sync: Vec<String>,
        /// A table it may not write (R4/R9), e.g. stock_documents (repeatable).
        #[arg(long)]
        deny: Vec<String>,
        /// Where to write the bootstrap file (a file name, or a directory). It carries the
        /// remote's network credential: hand it over as a secret.
        #[arg(long, value_parser = outpost_cli::out::path)]
        bootstrap: PathBuf,
        /// Central's address as the remote will reach it, e.g. https://central.example:2638
        /// (written into the bootstrap file; the remote can also give it with --central).
        #[arg(long)]
        url: Option<String>,
    },
    /// Change a remote's schedule, time zone or permissions, checked as `add-remote` checks
    /// them (C4, M1); the remote gets them with its next return (C6).
    SetRemote {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The remote's establishment code.
        #[arg(long)]
        site: String,
        /// Its IANA time zone (unchanged when not given).
        #[arg(long)]
        tz: Option<String>,
        /// Its sync types, all of them: `fixed 21:00 23:20`, `immediate 60`, `no-return`
        /// (repeatable; unchanged when not given).
        #[arg(long = "sync")]
        sync: Vec<String>,
        /// The tables it may not write (R4/R9), all of them (repeatable; unchanged when not
        /// given, none with --allow-all).
        #[arg(long, conflicts_with = "allow_all")]
        deny: Vec<String>,
        /// It may write every table its rules allow (R4/R9: no table denied).
        #[arg(long)]
        allow_all: bool,
    },
    /// Retire a remote (a shop closed): it leaves the schedule and the common return, its
    /// credential stops working, its flows are refused from now on; what it wrote and its
    /// journal rows stay at central (docs/OPERATIONS.md).
    RemoveRemote {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The remote's establishment code.
        #[arg(long)]
        site: String,
        /// Remove it even though its last sync reported documents reserved: what its tills
        /// wrote to them was never sent and is lost (the shop's store is gone).
        #[arg(long)]
        drop_reserved: bool,
        /// Remove it even though central is being restored from a backup and the remote has
        /// not yet sent back what central lost of it: that is lost (the shop's store is gone).
        #[arg(long)]
        drop_unsent: bool,
    },
    /// A remote's store was lost, or set up twice from one bootstrap: refuse every store of
    /// the site set up before, and write a new bootstrap (with a new credential) for the one
    /// that speaks for it from now on (docs/OPERATIONS.md).
    Reprovision {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The remote's establishment code.
        #[arg(long)]
        site: String,
        /// Where to write the new bootstrap file (a file name, or a directory).
        #[arg(long, value_parser = outpost_cli::out::path)]
        bootstrap: PathBuf,
        /// Central's address as the remote will reach it (written into the bootstrap file).
        #[arg(long)]
        url: Option<String>,
    },
    /// Run central's daemon: the automaton and the HTTP(S) server remotes sync with (T2).
    Serve {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The daemon's settings (TOML; default: outpost.toml in the data directory, if any).
        #[arg(long, value_parser = outpost_cli::out::path)]
        config: Option<PathBuf>,
        /// Listen on this address instead of the configured one (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Copy central's store, credential and settings into a directory (with the daemon
    /// stopped: it owns the store while it runs).
    Backup {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// Where to put the copy (a new directory).
        #[arg(long, value_parser = outpost_cli::out::path)]
        to: PathBuf,
    },
    /// Put a backup in place of central's data directory (what was there is moved aside) and
    /// make it safe to run again; the remotes send again what was lost.
    Restore {
        /// The backup directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        backup: PathBuf,
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
    },
    /// Give a site a new network credential (the old one stops working).
    NewCredential {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The site's establishment code (central's own: the administrator's credential).
        #[arg(long)]
        site: String,
    },
    /// Receive an emission file into the sync table and process it.
    Import {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The emission file.
        #[arg(value_parser = outpost_cli::out::path)]
        file: PathBuf,
    },
    /// Write the return for one remote as a file.
    ExportReturn {
        /// Central's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The remote's establishment code.
        #[arg(long)]
        site: String,
        /// Where to write it (a file name, or a directory).
        #[arg(long, value_parser = outpost_cli::out::path)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RemoteCommand {
    /// Create a remote's store from the bootstrap file central wrote for it.
    Init {
        /// The data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The bootstrap file.
        #[arg(long, value_parser = outpost_cli::out::path)]
        bootstrap: PathBuf,
    },
    /// Write an emission (everything central has not acknowledged) as a file.
    Export {
        /// The remote's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// Where to write it (a file name, or a directory).
        #[arg(long, value_parser = outpost_cli::out::path)]
        out: PathBuf,
    },
    /// Apply a return file from central.
    Import {
        /// The remote's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
        /// The return file.
        #[arg(value_parser = outpost_cli::out::path)]
        file: PathBuf,
    },
    /// After this site's clock was found ahead and set right (central holds its emissions,
    /// "quarantined" in the journal): stamp again, from the clock as it is now, the writes
    /// central has not taken, so that the next sync carries them.
    Restamp {
        /// The remote's data directory.
        #[arg(long, value_parser = outpost_cli::out::path)]
        data: PathBuf,
    },
    /// Sync now over the network (A3): send an emission, then wait for its return.
    Sync {
        #[command(flatten)]
        net: NetArgs,
        /// Send only; no return (M3).
        #[arg(long, conflicts_with = "wait")]
        no_return: bool,
        /// How long to wait for the return, e.g. 30s, 2m (default: the site's configured wait).
        #[arg(long, value_parser = parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// Run the site's sync schedule (M1): fixed-time emissions and fetches, connecting only
    /// for each sync and retrying while central is unreachable. Stops on Ctrl-C/SIGTERM.
    Run {
        #[command(flatten)]
        net: NetArgs,
    },
}

/// How a remote reaches central.
#[derive(clap::Args, Debug)]
pub(crate) struct NetArgs {
    /// The remote's data directory.
    #[arg(long, value_parser = outpost_cli::out::path)]
    pub(crate) data: PathBuf,
    /// Central's address (default: central_url in the data directory's remote.toml).
    #[arg(long)]
    pub(crate) central: Option<String>,
    /// A PEM certificate to trust for central (default: ca_cert in remote.toml, else the
    /// usual public roots).
    #[arg(long, value_parser = outpost_cli::out::path)]
    pub(crate) ca: Option<PathBuf>,
}

/// `30s`, `2m`, `1h`, `1500ms`, or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (30s, 2m, 1h, 1500ms)"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a duration (30s, 2m, 1h, 1500ms)"))?;
    Ok(std::time::Duration::from_millis(ms))
}
