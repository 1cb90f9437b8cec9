//! `outpost`: the command-line program — the simulator, the SPEC's example plan (`outpost demo`),
//! central's daemon (`outpost central serve`), a remote's network syncs, sync files, the journal,
//! and record access for operators.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use outpost_cli::admin;

mod args;

use args::{CentralCommand, Cli, ClientCommand, Command, NetArgs, RemoteCommand, SiteCommand};

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

fn remote_net(
    net: &NetArgs,
) -> Result<(std::sync::Arc<outpost::Store>, outpost_server::sync::Link), String> {
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
            outpost_cli::say_err!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How a command on a data directory runs when a daemon holds that directory's store.
enum InDaemon {
    /// Alongside the daemon's work (reads, an operator's writes, users).
    Alongside,
    /// Between two of the daemon's syncs or automaton runs, never during one.
    Between,
    /// Not at all, for this reason.
    Refused(&'static str),
}

/// The data directory a command works on, and how it runs in a daemon holding it.
fn data_dir_of(command: &Command) -> Option<(&std::path::Path, InDaemon)> {
    use InDaemon::{Alongside, Between, Refused};
    const RUNNING: &str = "a daemon already runs on this data directory";
    const REPLACES: &str = "a restore replaces the store: stop the daemon that holds it first";
    const EXISTS: &str = "this data directory already holds a store, in use by a daemon";
    let (dir, how): (&PathBuf, InDaemon) = match command {
        Command::Site { command } => match command {
            SiteCommand::Serve { data, .. } => (data, Refused(RUNNING)),
            SiteCommand::AddUser { data, .. }
            | SiteCommand::Users { data }
            | SiteCommand::RemoveUser { data, .. } => (data, Alongside),
        },
        Command::Central { command } => match command {
            CentralCommand::Init { data, .. } => (data, Refused(EXISTS)),
            CentralCommand::Serve { data, .. } => (data, Refused(RUNNING)),
            CentralCommand::Restore { data, .. } => (data, Refused(REPLACES)),
            CentralCommand::AddRemote { data, .. }
            | CentralCommand::SetRemote { data, .. }
            | CentralCommand::RemoveRemote { data, .. }
            | CentralCommand::Reprovision { data, .. }
            | CentralCommand::NewCredential { data, .. }
            | CentralCommand::Backup { data, .. }
            | CentralCommand::Import { data, .. }
            | CentralCommand::ExportReturn { data, .. } => (data, Between),
        },
        Command::Remote { command } => match command {
            RemoteCommand::Init { data, .. } => (data, Refused(EXISTS)),
            RemoteCommand::Run { net } => (&net.data, Refused(RUNNING)),
            RemoteCommand::Sync { net, .. } => (&net.data, Between),
            RemoteCommand::Export { data, .. }
            | RemoteCommand::Import { data, .. }
            | RemoteCommand::Restamp { data } => (data, Between),
        },
        Command::Journal { data, .. }
        | Command::Scan { data, .. }
        | Command::Export { data, .. }
        | Command::Schema { data } => (data, Alongside),
        Command::Get(r) => (&r.data, Alongside),
        Command::Put { record, .. }
        | Command::Delete { record, .. }
        | Command::Reserve { record, .. }
        | Command::Release { record, .. } => (&record.data, Alongside),
        Command::Sim { .. } | Command::Demo { .. } | Command::Client { .. } => return None,
    };
    Some((dir.as_path(), how))
}

/// A command forwarded through the control socket of the daemon that holds its data
/// directory (`outpost_server::control`), run here on the store the daemon holds.
fn in_daemon(call: outpost_server::control::Call<'_>) -> u8 {
    let outpost_server::control::Call {
        daemon,
        request,
        out,
        err,
    } = call;
    let _redirected = outpost_cli::out::redirect(out, err, request.cwd.clone());
    let cli = match Cli::try_parse_from(&request.argv) {
        Ok(cli) => cli,
        Err(e) => {
            outpost_cli::say_err!("{}", e.to_string().trim_end());
            return 2;
        }
    };
    let code = match data_dir_of(&cli.command) {
        None => {
            outpost_cli::say_err!("error: this command does not run in a daemon");
            ExitCode::FAILURE
        }
        Some((_, InDaemon::Refused(why))) => {
            outpost_cli::say_err!("error: {why} ({} runs on it)", daemon.name);
            ExitCode::FAILURE
        }
        Some((_, InDaemon::Alongside)) => dispatch(cli.command),
        Some((_, InDaemon::Between)) => daemon.exclusive(|| dispatch(cli.command)),
    };
    u8::from(code != ExitCode::SUCCESS)
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
            outpost_cli::say!("{credential}");
            outpost_cli::say_err!(
                "this is {user}'s credential, shown once: give it to the workstation \
                 (--credential or OUTPOST_CREDENTIAL)"
            );
            Ok(())
        }
        SiteCommand::Users { data } => {
            for u in outpost_server::site::list_users(&data)? {
                outpost_cli::say!("{}{}", u.user, if u.admin { " (admin)" } else { "" });
            }
            Ok(())
        }
        SiteCommand::RemoveUser { data, user } => {
            outpost_server::site::remove_user(&data, &user)?;
            outpost_cli::say!("removed {user}: its credential no longer works");
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
        outpost_cli::fields::parse(text).map(serde_json::Value::Object)
    };
    match command {
        ClientCommand::Get { table, key } => {
            let r = c.record(&table, &key).map_err(e)?;
            outpost_cli::say!(
                "{}",
                r.map_or(serde_json::Value::Null, serde_json::Value::Object)
            );
        }
        ClientCommand::Put { table, key, fields } => {
            let fields = object(&fields)?;
            c.put(&table, outpost_cli::fields::key(&key)?, &fields)
                .map_err(e)?;
        }
        ClientCommand::Create { table, fields } => {
            outpost_cli::say!("{}", c.create(&table, &object(&fields)?).map_err(e)?);
        }
        ClientCommand::Delete { table, key } => c.delete(&table, &key).map_err(e)?,
        ClientCommand::Scan {
            table,
            from,
            to,
            limit,
        } => {
            let mut out = outpost_cli::out::Stdout;
            for (key, fields) in c
                .scan(&table, from.as_deref(), to.as_deref(), limit)
                .map_err(e)?
            {
                let line = serde_json::json!({ "key": key, "fields": fields });
                // A reader that stops early (`| head -1`) is not an error: stop writing.
                match writeln!(out, "{line}") {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(err) => return Err(format!("cannot write the records: {err}")),
                }
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
            outpost_cli::say!("holding {table}/{key} (Ctrl-C or SIGTERM releases it)");
            let stop = stop_requested()?;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Some(why) = hold.lost() {
                    return Err(format!("the reservation of {table}/{key} was lost: {why}"));
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(hold);
                    outpost_cli::say!("released {table}/{key}");
                    return Ok(());
                }
            }
        }
        ClientCommand::Release { table, key } => c.release(&table, &key).map_err(e)?,
        ClientCommand::Sync => outpost_cli::say!("{}", c.sync().map_err(e)?),
        ClientCommand::Settings => {
            let settings = c.settings().map_err(e)?;
            outpost_cli::say!(
                "{}",
                serde_json::to_string_pretty(&settings).map_err(|e| e.to_string())?
            );
        }
        ClientCommand::SetSetting { name, value } => c.set_setting(&name, &value).map_err(e)?,
        ClientCommand::Users => {
            for u in c.users().map_err(e)? {
                outpost_cli::say!("{}{}", u.user, if u.admin { " (admin)" } else { "" });
            }
        }
        ClientCommand::AddUser { user, admin } => {
            outpost_cli::say!("{}", c.add_user(&user, admin).map_err(e)?);
            outpost_cli::say_err!(
                "this is {user}'s credential, shown once: give it to the workstation \
                 (--credential or OUTPOST_CREDENTIAL)"
            );
        }
        ClientCommand::RemoveUser { user } => {
            c.remove_user(&user).map_err(e)?;
            outpost_cli::say!("removed {user}: its credential no longer works");
        }
        ClientCommand::Log { after } => {
            for entry in c.log(after).map_err(e)? {
                outpost_cli::say!("{entry}");
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
                    outpost_cli::say!("{}", serde_json::json!({ "gap": true }));
                }
                for ch in got.changes {
                    outpost_cli::say!("{}", serde_json::to_string(&ch).map_err(|e| e.to_string())?);
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
            outpost_cli::say!("{n} records written");
        }
    }
    Ok(())
}

// The program's allocator: the simulator spent 40 % of its time in the C library's (a year of
// 100 sites: 858 s with it, 382 s with this one; docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A daemon holding the command's data directory runs the command on the store it holds.
    let argv: Option<Vec<String>> = std::env::args_os().map(|a| a.into_string().ok()).collect();
    if let Some((dir, _)) = data_dir_of(&cli.command)
        && let Some(argv) = argv
        && let Some(forwarded) = outpost_server::control::forward(dir, argv)
    {
        return match forwarded {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    outpost_server::control::set_handler(in_daemon);
    // Central decodes a received flow on a second thread while it merges (the core never
    // starts threads of its own; this program lends it one).
    outpost_replicator::frames::decode_beside(|job| {
        std::thread::spawn(job);
    });
    dispatch(cli.command)
}

/// Runs a command, here or in the daemon it was forwarded to.
fn dispatch(command: Command) -> ExitCode {
    match command {
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
            Some(path) => run_scenario(&path, json, svg),
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
            CentralCommand::SetRemote {
                data,
                site,
                tz,
                sync,
                deny,
                allow_all,
            } => admin::set_remote(
                &data,
                &site,
                &admin::RemoteChange {
                    tz: tz.as_deref(),
                    sync: &sync,
                    deny: (allow_all || !deny.is_empty()).then_some(deny.as_slice()),
                },
            ),
            CentralCommand::RemoveRemote {
                data,
                site,
                drop_reserved,
                drop_unsent,
            } => admin::remove_remote(
                &data,
                &site,
                outpost_replicator::central::Removal {
                    drop_reserved,
                    drop_unsent,
                },
            ),
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
                        .map(|summary| outpost_cli::say!("{summary}"))
                        .map_err(|e| e.to_string())
                })
            }
            RemoteCommand::Run { net } => {
                init_logs("info");
                remote_net(&net).and_then(|(store, link)| {
                    outpost_server::sync::run_daemon(store, &link, &net.data).map_err(String::from)
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
        Command::Scan {
            data,
            table,
            from,
            limit,
        } => done(admin::scan(&data, &table, from.as_deref(), limit)),
        Command::Export {
            data,
            table,
            format,
        } => done(admin::export(&data, &table, &format)),
        Command::Schema { data } => done(admin::schema(&data)),
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
                outpost_cli::say_err!(
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
                    outpost_cli::say_err!("error: {e}");
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
    let mut failed = false;
    let mut last = None;
    let runs = seeds.max(1);
    // Hidden unless standard error is a terminal (outpost_cli::progress).
    let bar = outpost_cli::progress::days(runs.saturating_mul(u64::from(days)));
    for (n, s) in (seed..seed.saturating_add(runs)).enumerate() {
        let before = (n as u64).saturating_mul(u64::from(days));
        let cfg = outpost_sim::SimConfig {
            sites,
            days,
            seed: s,
            faults,
            broken_rules: Vec::new(),
        };
        let started = std::time::Instant::now();
        bar.set_message(format!("seed {s}"));
        let mut progress = |done: u32| bar.set_position(before + u64::from(done));
        let result = outpost_sim::run_with_progress(&cfg, &mut progress);
        bar.set_position(before + u64::from(days));
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                eprintln!("error: {e}\nreproduce: {}", cfg.reproduce());
                return ExitCode::FAILURE;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let site_days = (sites as f64 + 1.0) * f64::from(days);
        bar.suspend(|| outpost_cli::say!(
            "seed {s}: {} sites × {} days in {secs:.2} s ({:.0} site-days/s) — {} writes ({} deletes), {} emissions, {} returns, {} bytes, {} conflicts, {} forbidden attempts refused, {} rejections, {} re-executions, faults {:?}, converged {}",
            sites,
            days,
            site_days / secs.max(1e-9),
            report.writes,
            report.deletes,
            report.emissions,
            report.returns,
            report.bytes,
            report.conflicts,
            report.forbidden_refused,
            report.rejections,
            report.executions_over_1,
            report.faults_injected,
            report.converged
        ));
        if !report.violations.is_empty() {
            failed = true;
            bar.suspend(|| {
                for v in &report.violations {
                    outpost_cli::say!("  VIOLATION: {v}");
                }
                outpost_cli::say!("  reproduce: {}", cfg.reproduce());
            });
        }
        last = Some(report);
    }
    bar.finish_and_clear();
    if let (Some(path), Some(report)) = (svg, last.as_ref())
        && let Err(e) = std::fs::write(&path, outpost_sim::svg(report))
    {
        outpost_cli::say_err!("error: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if let (Some(path), Some(report)) = (json, last)
        && let Err(e) = write_json(&path, &report)
    {
        outpost_cli::say_err!("error: {e}");
        return ExitCode::FAILURE;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_scenario(path: &std::path::Path, json: Option<PathBuf>, svg: Option<PathBuf>) -> ExitCode {
    let scenario = match outpost_sim::scenario::load(path) {
        Ok(s) => s,
        Err(e) => {
            outpost_cli::say_err!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("outpost-scenario-{}", std::process::id()));
    let report = match outpost_sim::scenario::run(&scenario, &dir) {
        Ok(r) => r,
        Err(e) => {
            outpost_cli::say_err!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    for (step, outcome) in scenario.step.iter().zip(&report.steps) {
        outpost_cli::say!(
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
    outpost_cli::say!(
        "converged: {}; violations: {}",
        report.converged,
        report.violations.len()
    );
    for v in &report.violations {
        outpost_cli::say!("  VIOLATION: {v}");
    }
    if let Some(out) = svg {
        let mut timeline = report.timeline.clone();
        timeline.title = format!(
            "outpost sim --scenario {} — {}",
            path.display(),
            report.timeline.title
        );
        if let Err(e) = std::fs::write(&out, outpost_sim::timeline_svg(&timeline)) {
            eprintln!("error: cannot write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = json
        && let Err(e) = write_json(&path, &report)
    {
        outpost_cli::say_err!("error: {e}");
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
