//! `outpost`: the command-line program — the simulator, the SPEC's example plan (`outpost demo`),
//! central's daemon (`outpost central serve`), a remote's network syncs, sync files, the journal,
//! and record access for operators.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outpost_cli::admin;

#[derive(Parser, Debug)]
#[command(
    name = "outpost",
    version,
    about = "Embedded, replicated, local-first storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum SiteCommand {
    /// Serve the site's store to its workstations over HTTP, and run its sync scheduler.
    Serve {
        /// The site's data directory (a remote's).
        #[arg(long)]
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
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        /// PEM private key.
        #[arg(long)]
        tls_key: Option<PathBuf>,
        /// Remove workstation log entries older than this many days (0 keeps them all).
        #[arg(long, default_value_t = outpost_server::site::LOG_KEEP_DAYS_DEFAULT)]
        log_keep_days: u64,
    },
    /// Add a workstation user (or give it a new credential); prints its credential once.
    AddUser {
        /// The site's data directory (the server stopped).
        #[arg(long)]
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
        #[arg(long)]
        data: PathBuf,
    },
    /// Remove a workstation user: its credential stops working (while the server runs:
    /// `outpost client remove-user`).
    RemoveUser {
        /// The site's data directory (the server stopped).
        #[arg(long)]
        data: PathBuf,
        /// The user's code.
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
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
        #[arg(long)]
        table: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
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
        #[arg(long)]
        name: String,
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
        #[arg(long)]
        table: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        fields: String,
        /// Write every time to this one key instead.
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
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
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run a scripted scenario (a TOML file, see docs/scenarios.md) instead of a random run.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Draw the sync schedule across time zones (the last seed's) as SVG to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Play the SPEC's example plan (C5): central ASOC, remotes BSOC and CSOC, one day.
    Demo {
        /// Directory for the three stores (default: a new directory under the system's
        /// temporary directory).
        #[arg(long)]
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
        #[arg(long)]
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
        #[arg(long)]
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
struct RecordArgs {
    /// The store's data directory.
    #[arg(long)]
    data: PathBuf,
    /// The table.
    #[arg(long)]
    table: String,
    /// The record's key.
    #[arg(long)]
    key: String,
}

#[derive(Subcommand, Debug)]
enum CentralCommand {
    /// Create central's store (the seed's settings, no remote yet).
    Init {
        /// The data directory.
        #[arg(long)]
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
        #[arg(long)]
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
        #[arg(long)]
        bootstrap: PathBuf,
        /// Central's address as the remote will reach it, e.g. https://central.example:2638
        /// (written into the bootstrap file; the remote can also give it with --central).
        #[arg(long)]
        url: Option<String>,
    },
    /// A remote's store was lost, or set up twice from one bootstrap: refuse every store of
    /// the site set up before, and write a new bootstrap (with a new credential) for the one
    /// that speaks for it from now on (docs/OPERATIONS.md).
    Reprovision {
        /// Central's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The remote's establishment code.
        #[arg(long)]
        site: String,
        /// Where to write the new bootstrap file (a file name, or a directory).
        #[arg(long)]
        bootstrap: PathBuf,
        /// Central's address as the remote will reach it (written into the bootstrap file).
        #[arg(long)]
        url: Option<String>,
    },
    /// Run central's daemon: the automaton and the HTTP(S) server remotes sync with (T2).
    Serve {
        /// Central's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The daemon's settings (TOML; default: outpost.toml in the data directory, if any).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen on this address instead of the configured one (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Copy central's store, credential and settings into a directory (with the daemon
    /// stopped: it owns the store while it runs).
    Backup {
        /// Central's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Where to put the copy (a new directory).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup in place of central's data directory (what was there is moved aside) and
    /// make it safe to run again; the remotes send again what was lost.
    Restore {
        /// The backup directory.
        #[arg(long)]
        backup: PathBuf,
        /// Central's data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Give a site a new network credential (the old one stops working).
    NewCredential {
        /// Central's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The site's establishment code (central's own: the administrator's credential).
        #[arg(long)]
        site: String,
    },
    /// Receive an emission file into the sync table and process it.
    Import {
        /// Central's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The emission file.
        file: PathBuf,
    },
    /// Write the return for one remote as a file.
    ExportReturn {
        /// Central's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The remote's establishment code.
        #[arg(long)]
        site: String,
        /// Where to write it (a file name, or a directory).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum RemoteCommand {
    /// Create a remote's store from the bootstrap file central wrote for it.
    Init {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The bootstrap file.
        #[arg(long)]
        bootstrap: PathBuf,
    },
    /// Write an emission (everything central has not acknowledged) as a file.
    Export {
        /// The remote's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Where to write it (a file name, or a directory).
        #[arg(long)]
        out: PathBuf,
    },
    /// Apply a return file from central.
    Import {
        /// The remote's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The return file.
        file: PathBuf,
    },
    /// After this site's clock was found ahead and set right (central holds its emissions,
    /// "quarantined" in the journal): stamp again, from the clock as it is now, the writes
    /// central has not taken, so that the next sync carries them.
    Restamp {
        /// The remote's data directory.
        #[arg(long)]
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
struct NetArgs {
    /// The remote's data directory.
    #[arg(long)]
    data: PathBuf,
    /// Central's address (default: central_url in the data directory's remote.toml).
    #[arg(long)]
    central: Option<String>,
    /// A PEM certificate to trust for central (default: ca_cert in remote.toml, else the
    /// usual public roots).
    #[arg(long)]
    ca: Option<PathBuf>,
}

/// `30s`, `2m`, `1h`, `1500ms`, or a number of seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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

fn init_logs(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn serve(
    data: &std::path::Path,
    config: Option<PathBuf>,
    listen: Option<String>,
) -> Result<(), String> {
    let default = data.join("outpost.toml");
    let path = config.or_else(|| default.exists().then_some(default));
    let mut cfg = outpost_server::serve::ServeConfig::load(path.as_deref())?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    init_logs(&cfg.log);
    outpost_server::serve::serve(data, cfg).map_err(String::from)
}

fn remote_net(net: &NetArgs) -> Result<(outpost::Store, outpost_server::sync::Link), String> {
    let link =
        outpost_server::sync::Link::new(&net.data, net.central.as_deref(), net.ca.as_deref())?;
    let store = admin::open(&net.data)?;
    if store.site().is_central() {
        return Err(format!(
            "{} holds central's store, not a remote's",
            net.data.display()
        ));
    }
    Ok((store, link))
}

/// Prints a command's error the way the person at the terminal reads it.
fn done(result: Result<impl Sized, String>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn site(command: SiteCommand) -> Result<(), String> {
    match command {
        SiteCommand::Serve {
            data,
            listen,
            central,
            lease_s,
            no_scheduler,
            allow_plain_http,
            tls_cert,
            tls_key,
            log_keep_days,
        } => {
            init_logs("info");
            outpost_server::site::serve(
                &data,
                outpost_server::site::SiteServeConfig {
                    listen,
                    central,
                    lease_s,
                    scheduler: !no_scheduler,
                    allow_plain_http,
                    tls_cert,
                    tls_key,
                    log_keep_days,
                    ..outpost_server::site::SiteServeConfig::default()
                },
            )
            .map_err(String::from)
        }
        SiteCommand::AddUser { data, user, admin } => {
            let credential = outpost_server::site::add_user(&data, &user, admin)?;
            println!("{credential}");
            eprintln!(
                "this is {user}'s credential, shown once: give it to the workstation \
                 (--credential or OUTPOST_CREDENTIAL)"
            );
            Ok(())
        }
        SiteCommand::Users { data } => {
            for u in outpost_server::site::list_users(&data)? {
                println!("{}{}", u.user, if u.admin { " (admin)" } else { "" });
            }
            Ok(())
        }
        SiteCommand::RemoveUser { data, user } => {
            outpost_server::site::remove_user(&data, &user)?;
            println!("removed {user}: its credential no longer works");
            Ok(())
        }
    }
}

/// A flag set on Ctrl-C or SIGTERM (watched from a thread with its own small runtime).
fn stop_requested() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, String> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = std::sync::Arc::clone(&flag);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        runtime.block_on(outpost_server::site::stop_signal());
        set.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(flag)
}

fn client(
    server: &str,
    credential: &str,
    workstation: Option<&str>,
    ca: Option<&std::path::Path>,
    command: ClientCommand,
) -> Result<(), String> {
    use outpost_client::{Client, Records};
    let mut c = match ca {
        Some(ca) => Client::with_ca(server, credential, ca),
        None => Client::new(server, credential),
    }
    .map_err(|e| e.to_string())?;
    if let Some(ws) = workstation {
        c = c.workstation(ws);
    }
    let e = |e: outpost::Error| e.to_string();
    let object = |text: &str| -> Result<serde_json::Value, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("--fields is not JSON: {e}"))?;
        if v.is_object() {
            Ok(v)
        } else {
            Err("--fields must be a JSON object".into())
        }
    };
    match command {
        ClientCommand::Get { table, key } => {
            let r = c.record(&table, &key).map_err(e)?;
            println!(
                "{}",
                r.map_or(serde_json::Value::Null, serde_json::Value::Object)
            );
        }
        ClientCommand::Put { table, key, fields } => {
            c.put(&table, &key, &object(&fields)?).map_err(e)?;
        }
        ClientCommand::Create { table, fields } => {
            println!("{}", c.create(&table, &object(&fields)?).map_err(e)?);
        }
        ClientCommand::Delete { table, key } => c.delete(&table, &key).map_err(e)?,
        ClientCommand::Scan {
            table,
            from,
            to,
            limit,
        } => {
            for (key, fields) in c
                .scan(&table, from.as_deref(), to.as_deref(), limit)
                .map_err(e)?
            {
                println!("{}", serde_json::json!({ "key": key, "fields": fields }));
            }
        }
        ClientCommand::Hold {
            table,
            key,
            lease_s,
        } => {
            let hold = c
                .hold(&table, &key, std::time::Duration::from_secs(lease_s))
                .map_err(e)?;
            println!("holding {table}/{key} (Ctrl-C or SIGTERM releases it)");
            let stop = stop_requested()?;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Some(why) = hold.lost() {
                    return Err(format!("the reservation of {table}/{key} was lost: {why}"));
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(hold);
                    println!("released {table}/{key}");
                    return Ok(());
                }
            }
        }
        ClientCommand::Release { table, key } => c.release(&table, &key).map_err(e)?,
        ClientCommand::Sync => println!("{}", c.sync().map_err(e)?),
        ClientCommand::Settings => {
            let settings = c.settings().map_err(e)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&settings).map_err(|e| e.to_string())?
            );
        }
        ClientCommand::SetSetting { name, value } => c.set_setting(&name, &value).map_err(e)?,
        ClientCommand::Users => {
            for u in c.users().map_err(e)? {
                println!("{}{}", u.user, if u.admin { " (admin)" } else { "" });
            }
        }
        ClientCommand::AddUser { user, admin } => {
            println!("{}", c.add_user(&user, admin).map_err(e)?);
            eprintln!(
                "this is {user}'s credential, shown once: give it to the workstation \
                 (--credential or OUTPOST_CREDENTIAL)"
            );
        }
        ClientCommand::RemoveUser { user } => {
            c.remove_user(&user).map_err(e)?;
            println!("removed {user}: its credential no longer works");
        }
        ClientCommand::Log { after } => {
            for entry in c.log(after).map_err(e)? {
                println!("{entry}");
            }
        }
        ClientCommand::Watch { mut after, count } => {
            let count = count.unwrap_or(u64::MAX);
            let mut printed = 0;
            while printed < count {
                let got = c
                    .changes(after, std::time::Duration::from_secs(30))
                    .map_err(e)?;
                if got.gap {
                    println!("{}", serde_json::json!({ "gap": true }));
                }
                for ch in got.changes {
                    println!("{}", serde_json::to_string(&ch).map_err(|e| e.to_string())?);
                    printed += 1;
                }
                after = got.seq;
            }
        }
        ClientCommand::Load {
            table,
            prefix,
            n,
            fields,
            key,
        } => {
            for i in 0..n {
                let v = object(&fields.replace("{i}", &i.to_string()))?;
                let k = key.clone().unwrap_or_else(|| format!("{prefix}{i:06}"));
                c.put(&table, &k, &v).map_err(e)?;
            }
            println!("{n} records written");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Site { command } => done(site(command)),
        Command::Client {
            server,
            credential,
            workstation,
            ca,
            command,
        } => done(client(
            &server,
            &credential,
            workstation.as_deref(),
            ca.as_deref(),
            command,
        )),
        Command::Sim {
            sites,
            days,
            seed,
            faults,
            seeds,
            json,
            scenario,
            svg,
        } => match scenario {
            Some(path) => run_scenario(&path, json),
            None => sim(sites, days, seed, faults, seeds, json, svg),
        },
        Command::Central { command } => done(match command {
            CentralCommand::Init {
                data,
                code,
                id,
                tz,
                return_at,
            } => admin::central_init(&data, &code, id, &tz, &return_at),
            CentralCommand::AddRemote {
                data,
                id,
                code,
                tz,
                sync,
                deny,
                bootstrap,
                url,
            } => admin::add_remote(
                &data,
                &admin::NewRemote {
                    id,
                    code: &code,
                    tz: &tz,
                    sync: &sync,
                    deny: &deny,
                    url: url.as_deref(),
                },
                &bootstrap,
            )
            .map(drop),
            CentralCommand::Reprovision {
                data,
                site,
                bootstrap,
                url,
            } => admin::reprovision(&data, &site, url.as_deref(), &bootstrap).map(drop),
            CentralCommand::Serve {
                data,
                config,
                listen,
            } => serve(&data, config, listen),
            CentralCommand::NewCredential { data, site } => admin::new_credential(&data, &site),
            CentralCommand::Backup { data, to } => admin::central_backup(&data, &to),
            CentralCommand::Restore { backup, data } => admin::central_restore(&backup, &data),
            CentralCommand::Import { data, file } => admin::central_import(&data, &file),
            CentralCommand::ExportReturn { data, site, out } => {
                admin::central_export_return(&data, &site, &out).map(drop)
            }
        }),
        Command::Remote { command } => done(match command {
            RemoteCommand::Init { data, bootstrap } => admin::remote_init(&data, &bootstrap),
            RemoteCommand::Export { data, out } => admin::remote_export(&data, &out).map(drop),
            RemoteCommand::Import { data, file } => admin::remote_import(&data, &file),
            RemoteCommand::Restamp { data } => admin::remote_restamp(&data),
            RemoteCommand::Sync {
                net,
                no_return,
                wait,
            } => {
                init_logs("warn");
                remote_net(&net).and_then(|(store, link)| {
                    let req = outpost_server::sync::SyncRequest { no_return, wait };
                    outpost_server::sync::sync_now(&store, &link, &net.data, req)
                        .map(|summary| println!("{summary}"))
                        .map_err(|e| e.to_string())
                })
            }
            RemoteCommand::Run { net } => {
                init_logs("info");
                remote_net(&net).and_then(|(store, link)| {
                    outpost_server::sync::run(&store, &link, &net.data, None).map_err(String::from)
                })
            }
        }),
        Command::Journal {
            data, json, alerts, ..
        } if alerts => done(admin::alerts(&data, json)),
        Command::Journal {
            data,
            site,
            json,
            refused,
            ..
        } => done(admin::journal(&data, site.as_deref(), json, refused)),
        Command::Get(r) => done(admin::get(&r.data, &r.table, &r.key)),
        Command::Put {
            record,
            fields,
            user,
        } => done(admin::put(
            &record.data,
            &record.table,
            &record.key,
            &fields,
            &user,
        )),
        Command::Delete { record, user } => done(admin::delete(
            &record.data,
            &record.table,
            &record.key,
            &user,
        )),
        Command::Reserve { record, user } => done(admin::reserve(
            &record.data,
            &record.table,
            &record.key,
            &user,
            false,
        )),
        Command::Release { record, user } => done(admin::reserve(
            &record.data,
            &record.table,
            &record.key,
            &user,
            true,
        )),
        Command::Demo { data } => {
            let dir = data.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("outpost-demo-{}", std::process::id()))
            });
            if dir.join("ASOC").exists() {
                eprintln!(
                    "error: {} already holds a demo; choose an empty directory with --data",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
            match outpost_cli::demo::run(&dir) {
                Ok((transcript, ok)) => {
                    print!("{transcript}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn sim(
    sites: usize,
    days: u32,
    seed: u64,
    faults: bool,
    seeds: u64,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> ExitCode {
    use std::io::{IsTerminal, Write};
    let mut failed = false;
    let mut last = None;
    for s in seed..seed.saturating_add(seeds.max(1)) {
        let cfg = outpost_sim::SimConfig {
            sites,
            days,
            seed: s,
            faults,
            broken_rules: Vec::new(),
        };
        let started = std::time::Instant::now();
        let show = std::io::stderr().is_terminal() && days >= 30;
        let mut progress = |done: u32| {
            if show {
                let width = 40;
                let filled = (done as usize * width) / days.max(1) as usize;
                let mut err = std::io::stderr();
                let _ = write!(
                    err,
                    "\r[{}{}] day {done}/{days}",
                    "=".repeat(filled),
                    " ".repeat(width - filled.min(width))
                );
                let _ = err.flush();
            }
        };
        let result = outpost_sim::run_with_progress(&cfg, &mut progress);
        if show {
            eprintln!();
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}\nreproduce: {}", cfg.reproduce());
                return ExitCode::FAILURE;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let site_days = (sites as f64 + 1.0) * f64::from(days);
        println!(
            "seed {s}: {} sites × {} days in {secs:.2} s ({:.0} site-days/s) — {} writes, {} emissions, {} returns, {} bytes, {} conflicts, {} forbidden attempts refused, {} rejections, {} re-executions, faults {:?}, converged {}",
            sites,
            days,
            site_days / secs.max(1e-9),
            report.writes,
            report.emissions,
            report.returns,
            report.bytes,
            report.conflicts,
            report.forbidden_refused,
            report.rejections,
            report.executions_over_1,
            report.faults_injected,
            report.converged
        );
        if !report.violations.is_empty() {
            failed = true;
            for v in &report.violations {
                println!("  VIOLATION: {v}");
            }
            println!("  reproduce: {}", cfg.reproduce());
        }
        last = Some(report);
    }
    if let (Some(path), Some(report)) = (svg, last.as_ref())
        && let Err(e) = std::fs::write(&path, outpost_sim::svg(report))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if let (Some(path), Some(report)) = (json, last)
        && let Err(e) = write_json(&path, &report)
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_scenario(path: &std::path::Path, json: Option<PathBuf>) -> ExitCode {
    let scenario = match outpost_sim::scenario::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("outpost-scenario-{}", std::process::id()));
    let report = match outpost_sim::scenario::run(&scenario, &dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    for (step, outcome) in scenario.step.iter().zip(&report.steps) {
        println!(
            "{} {:<6} {} → {}",
            step.at,
            step.site,
            step.describe(),
            match (&outcome.error, outcome.ok) {
                (None, _) => "ok".to_owned(),
                (Some(e), true) => e.clone(),
                (Some(e), false) => format!("FAILED: {e}"),
            }
        );
    }
    println!(
        "converged: {}; violations: {}",
        report.converged,
        report.violations.len()
    );
    for v in &report.violations {
        println!("  VIOLATION: {v}");
    }
    if let Some(path) = json
        && let Err(e) = write_json(&path, &report)
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if report.violations.is_empty() && report.converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Writes a report as pretty JSON.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
