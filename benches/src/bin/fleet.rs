//! One central serving a fleet's nightly cycle (issue 22): a real `central serve` on loopback
//! (this program run again as a child process, so that central's memory is its own) and N
//! remotes on real stores, each with a day of writes, all on fixed-time deferred syncs whose
//! emissions come within a one-hour evening window (M1); then central's common return for
//! every remote and each remote's fetch. It reports uploads/s, central's processing per
//! emission and in total (from the journal, J1), the time to build the returns, fetch latency,
//! central's peak memory and store size, and whether everything converged (every remote holds
//! what central holds at the end).
//!
//! `cargo run --release -p outpost-benches --bin fleet -- [--remotes N] [--changes K]
//! [--threads T] [--json FILE]`
//!
//! The remotes' emissions and fetches go through the production remote executor
//! (`outpost_server::sync::scheduled`: what `remote run` does at its fixed times), driven by
//! this program's clock instead of the wall clock: the window is as long as the uploads take.
//! Central's common return is the automaton's own command (`PrepareReturn` for every deferred
//! remote, run by `run_central` inside the daemon, through its control socket) asked for once
//! every emission is processed, instead of waiting for 23:00.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use outpost::Value;
use outpost_cli::admin;
use outpost_replicator::automaton::{self, CentralAutomaton, RemoteCommand};
use outpost_replicator::config::SyncType;
use outpost_replicator::flow::{FlowKind, SyncMode};
use outpost_replicator::{central, journal};
use outpost_server::control::{self, Call};
use outpost_server::serve::ServeConfig;
use outpost_server::sync::{Link, scheduled};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The run's settings.
#[derive(Clone, Debug)]
struct Args {
    remotes: usize,
    changes: usize,
    threads: usize,
    json: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        remotes: 1000,
        changes: 300,
        threads: 4,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, name: &str| -> Result<usize, String> {
        v.and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or(format!("{name} takes a number above 0"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--remotes" => a.remotes = number(it.next(), "--remotes")?,
            "--changes" => a.changes = number(it.next(), "--changes")?,
            "--threads" => a.threads = number(it.next(), "--threads")?,
            "--json" => a.json = Some(it.next().ok_or("--json takes a file")?.into()),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: fleet [--remotes N] [--changes K] \
                     [--threads T] [--json FILE]"
                ));
            }
        }
    }
    if a.remotes > 60_000 {
        return Err("--remotes: at most 60000 (site ids are 16-bit)".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    // The child: central's daemon.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--central-serve") {
        return match serve_central(&argv) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("central: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match args().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The child process: `central serve` on the given directory and port, taking the harness's
/// two questions on its control socket.
fn serve_central(argv: &[String]) -> Result<(), String> {
    let dir = PathBuf::from(argv.get(2).ok_or("--central-serve DIR PORT")?);
    let port = argv.get(3).ok_or("--central-serve DIR PORT")?;
    control::set_handler(answer);
    outpost_replicator::frames::decode_beside(|job| {
        std::thread::spawn(job);
    });
    let config = ServeConfig {
        listen: format!("127.0.0.1:{port}"),
        log: "warn".into(),
        max_concurrent_requests: 256,
        ..ServeConfig::default()
    };
    outpost_server::serve::serve(&dir, config).map_err(String::from)
}

/// The harness's questions to central, run in the daemon on the store it holds:
/// `processed` (how far the automaton is, from the journal) and `common-return` (the
/// automaton's common return, now).
fn answer(call: Call<'_>) -> u8 {
    let Call {
        daemon,
        request,
        mut out,
        mut err,
    } = call;
    let result = match request.argv.get(1).map(String::as_str) {
        Some("processed") => processed(&daemon.store),
        Some("common-return") => daemon.exclusive(|| common_return(&daemon.store)),
        other => Err(format!("unknown question {other:?}")),
    };
    match result {
        Ok(v) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "{e}");
            1
        }
    }
}

/// How many emissions central has processed, and their processing times (J1's execution).
fn processed(store: &outpost::Store) -> Result<serde_json::Value, String> {
    let rows = journal::rows(store, None, None, None).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    let mut first_ready = u64::MAX;
    let mut last_end = 0;
    let mut bytes = 0;
    for r in rows.iter().filter(|r| r.kind == FlowKind::Emission) {
        if let (Some(start), Some(end)) = (r.exec_start_ms, r.exec_end_ms) {
            times.push(end.saturating_sub(start));
            last_end = last_end.max(end);
            bytes += r.bytes;
        }
        if let Some(ready) = r.file_ready_ms {
            first_ready = first_ready.min(ready);
        }
    }
    times.sort_unstable();
    Ok(serde_json::json!({
        "processed": times.len(),
        "processing_ms_total": times.iter().sum::<u64>(),
        "processing_ms_p50": percentile(&times, 50),
        "processing_ms_p99": percentile(&times, 99),
        "processing_ms_max": times.last().copied().unwrap_or(0),
        "first_file_ready_ms": first_ready,
        "last_processed_ms": last_end,
        "emission_bytes": bytes,
    }))
}

/// Central's common return (M1), as its automaton runs it at the return time: `PrepareReturn`
/// for every remote with a fixed-time sync, through `run_central`.
fn common_return(store: &outpost::Store) -> Result<serde_json::Value, String> {
    let config = central::config(store)
        .map_err(|e| e.to_string())?
        .ok_or("no configuration")?;
    let now = outpost_engine::Clock::now_ms(&outpost::SystemClock);
    let mut automaton = CentralAutomaton::new(&config, now).map_err(|e| e.to_string())?;
    let commands: Vec<_> = config
        .remotes
        .iter()
        .filter(|r| {
            r.sync_types
                .iter()
                .any(|t| matches!(t, SyncType::Fixed { .. }))
        })
        .map(|r| automaton::Command::PrepareReturn(r.id))
        .collect();
    let started = Instant::now();
    let run = automaton::run_central(store, &mut automaton, commands).map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "returns": run.returns.len(),
        "ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}

/// Asks the central child a question through its control socket.
fn ask(central: &Path, question: &str) -> Result<serde_json::Value, String> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = control::forward_to(
        central,
        vec!["fleet".into(), question.into()],
        &mut out,
        &mut err,
    )
    .ok_or("central's control socket does not answer")??;
    if code != 0 {
        return Err(format!(
            "central: {}",
            String::from_utf8_lossy(&err).trim_end()
        ));
    }
    serde_json::from_slice(&out).map_err(|e| format!("central's answer: {e}"))
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(i.min(sorted.len() - 1)).copied().unwrap_or(0)
}

fn percentile_f(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(i.min(sorted.len() - 1)).copied().unwrap_or(0.0)
}

/// The central child, SIGTERM'd when dropped.
struct Central {
    child: Child,
}

impl Central {
    /// Peak resident memory so far (VmHWM), in bytes.
    fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self.child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("central did not stop within 60 s of SIGTERM".into())
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `work(i)` for every remote on `threads` threads; returns each one's result in order.
fn on_threads<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(usize) -> Result<T, String> + Sync,
) -> Result<Vec<T>, String> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let failure: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || failure.lock().map_or(true, |f| f.is_some()) {
                        return;
                    }
                    match work(i) {
                        Ok(v) => {
                            if let Ok(mut r) = results.lock()
                                && let Some(slot) = r.get_mut(i)
                            {
                                *slot = Some(v);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(format!("remote {i}: {e}"));
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().map_err(|e| e.to_string())? {
        return Err(e);
    }
    results
        .into_inner()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| r.ok_or_else(|| "a remote was not run".to_owned()))
        .collect()
}

/// The administration commands print what they did: not here (per thread).
fn quiet(root: &Path) -> outpost_cli::out::Redirected {
    outpost_cli::out::redirect(
        Box::new(std::io::sink()),
        Box::new(std::io::sink()),
        root.to_path_buf(),
    )
}

fn code_of(i: usize) -> String {
    format!("S{i:04}")
}

fn run(a: &Args) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = tmp.path();
    let central_dir = root.join("central");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let _quiet = quiet(root);
    println!(
        "fleet: {} remotes, {} changes each, {} threads, in {}",
        a.remotes,
        a.changes,
        a.threads,
        root.display()
    );

    // Set-up (not the cycle): central, the remotes added and set up from their bootstraps.
    let started = Instant::now();
    admin::central_init(&central_dir, "ASOC", 1, "UTC", "23:00")?;
    let remote_dir = |i: usize| root.join(format!("r{i:04}"));
    for i in 0..a.remotes {
        let boot = root.join(format!("r{i:04}.boot"));
        // Emissions spread over the evening's hour (20:00–20:59), fetches after the return.
        let sync = format!("fixed 20:{:02} 23:30", i % 60);
        admin::add_remote(
            &central_dir,
            &admin::NewRemote {
                id: u16::try_from(i + 2).map_err(|e| e.to_string())?,
                code: &code_of(i),
                tz: "UTC",
                sync: &[sync],
                deny: &[],
                url: Some(&url),
            },
            &boot,
        )?;
        if i % 100 == 99 {
            eprintln!(
                "  {} remotes added ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let added_s = started.elapsed().as_secs_f64();
    on_threads(a.remotes, a.threads, |i| {
        let _quiet = quiet(root);
        admin::remote_init(&remote_dir(i), &root.join(format!("r{i:04}.boot")))
    })?;
    let setup_s = started.elapsed().as_secs_f64();
    println!(
        "set-up: {} remotes added at central in {added_s:.1} s, set up from their bootstraps \
         in {:.1} s",
        a.remotes,
        setup_s - added_s
    );

    // The day: each remote writes its changes (customers, three fields each, ten commits).
    let started = Instant::now();
    on_threads(a.remotes, a.threads, |i| {
        let store = admin::open(&remote_dir(i))?;
        let records = a.changes.div_ceil(3);
        let per_commit = records.div_ceil(10).max(1);
        for chunk in (0..records).collect::<Vec<_>>().chunks(per_commit) {
            store
                .write_as("seller", |tx| {
                    for r in chunk {
                        tx.set_fields(
                            "customers",
                            &format!("{}-C{r:05}", code_of(i)),
                            [
                                ("name".to_owned(), Value::Text(format!("customer {r}"))),
                                ("city".to_owned(), Value::Text("Lyon".into())),
                                ("phone".to_owned(), Value::Text(format!("04 {r:08}"))),
                            ],
                        )?;
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    println!("the day's writes: {:.1} s", started.elapsed().as_secs_f64());

    // Central's daemon, in a process of its own.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let central = Central {
        child: Command::new(exe)
            .args(["--central-serve"])
            .arg(&central_dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("central.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| e.to_string())?,
    };
    let waited = Instant::now();
    while ask(&central_dir, "processed").is_err()
        || ureq::get(format!("{url}/v1/health")).call().is_err()
    {
        if waited.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "central did not start: {}",
                std::fs::read_to_string(root.join("central.log")).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // The evening window: every remote's fixed-time emission, uploaded.
    let window = Instant::now();
    let uploads = on_threads(a.remotes, a.threads, |i| {
        let dir = remote_dir(i);
        let store = admin::open(&dir)?;
        let link = Link::new(&dir, None, None)?;
        let t = Instant::now();
        let summary = scheduled(
            &store,
            &link,
            &dir,
            vec![RemoteCommand::Emit(SyncMode::Deferred)],
        )
        .map_err(|e| e.to_string())?;
        let bytes: u64 = summary.sent.iter().map(|s| s.2).sum();
        Ok((t.elapsed().as_secs_f64() * 1000.0, bytes))
    })?;
    let window_s = window.elapsed().as_secs_f64();
    let uploaded_bytes: u64 = uploads.iter().map(|u| u.1).sum();
    let mut upload_ms: Vec<f64> = uploads.iter().map(|u| u.0).collect();
    upload_ms.sort_by(f64::total_cmp);
    println!(
        "uploads: {} emissions in {window_s:.1} s ({:.0}/s), {:.1} MB; per upload p50 {:.1} ms, \
         p99 {:.1} ms",
        a.remotes,
        a.remotes as f64 / window_s,
        uploaded_bytes as f64 / 1e6,
        percentile_f(&upload_ms, 50),
        percentile_f(&upload_ms, 99)
    );
    // Central processes each as it becomes file ready: wait for the last.
    let processed = loop {
        let p = ask(&central_dir, "processed")?;
        if p["processed"].as_u64() == Some(a.remotes as u64) {
            break p;
        }
        if window.elapsed() > Duration::from_secs(3 * 3600) {
            return Err(format!("central processed only {p} after 3 hours"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let processing_span_s = (processed["last_processed_ms"].as_u64().unwrap_or(0))
        .saturating_sub(processed["first_file_ready_ms"].as_u64().unwrap_or(0))
        as f64
        / 1000.0;
    let emissions_done_s = window.elapsed().as_secs_f64();
    println!(
        "central processed {} emissions: {:.1} s of processing in all, per emission p50 {} ms, \
         p99 {} ms, max {} ms; first file ready to last processed {processing_span_s:.1} s",
        a.remotes,
        processed["processing_ms_total"].as_u64().unwrap_or(0) as f64 / 1000.0,
        processed["processing_ms_p50"],
        processed["processing_ms_p99"],
        processed["processing_ms_max"],
    );

    // The common return (M1), for every remote.
    let returned = ask(&central_dir, "common-return")?;
    let returns_ms = returned["ms"].as_f64().unwrap_or(0.0);
    println!(
        "common return: {} returns built in {:.1} s ({:.1} ms per remote)",
        returned["returns"],
        returns_ms / 1000.0,
        returns_ms / a.remotes as f64
    );
    let cycle_s = emissions_done_s + returns_ms / 1000.0;

    // The fetches.
    let fetching = Instant::now();
    let fetches = on_threads(a.remotes, a.threads, |i| {
        let dir = remote_dir(i);
        let store = admin::open(&dir)?;
        let link = Link::new(&dir, None, None)?;
        let t = Instant::now();
        let summary = scheduled(&store, &link, &dir, vec![RemoteCommand::FetchReturn])
            .map_err(|e| e.to_string())?;
        if summary.received.is_empty() {
            return Err("no return fetched".into());
        }
        Ok((t.elapsed().as_secs_f64() * 1000.0, summary.received_bytes))
    })?;
    let fetch_s = fetching.elapsed().as_secs_f64();
    let mut fetch_ms: Vec<f64> = fetches.iter().map(|f| f.0).collect();
    fetch_ms.sort_by(f64::total_cmp);
    let fetched_bytes: u64 = fetches.iter().map(|f| f.1).sum();
    println!(
        "fetches: {} in {fetch_s:.1} s, {:.1} MB; latency p50 {:.1} ms, p99 {:.1} ms",
        a.remotes,
        fetched_bytes as f64 / 1e6,
        percentile_f(&fetch_ms, 50),
        percentile_f(&fetch_ms, 99)
    );
    let peak_rss = central.peak_rss().unwrap_or(0);
    central.stop()?;
    let store_bytes =
        std::fs::metadata(central_dir.join(outpost_engine::STORE_FILE_NAME)).map_or(0, |m| m.len());

    // Converged: every remote holds everything central holds.
    let central_store = admin::open(&central_dir)?;
    let knows = central_store.knowledge();
    let central_records = central_store
        .snapshot()
        .and_then(|s| s.scan("customers", None, None))
        .map_err(|e| e.to_string())?
        .len();
    drop(central_store);
    let lacking = on_threads(a.remotes, a.threads, |i| {
        let store = admin::open(&remote_dir(i))?;
        Ok(!knows.difference(&store.knowledge()).is_empty())
    })?;
    let diverged = lacking.iter().filter(|l| **l).count();
    let converged = diverged == 0 && central_records == a.remotes * a.changes.div_ceil(3);
    println!(
        "converged: {converged} ({} customers at central; {diverged} remote(s) lacking some)",
        central_records
    );
    println!(
        "cycle (emissions processed and returns built): {cycle_s:.1} s; central's peak memory \
         {:.0} MiB, store {:.0} MiB",
        peak_rss as f64 / 1_048_576.0,
        store_bytes as f64 / 1_048_576.0
    );
    let report = serde_json::json!({
        "remotes": a.remotes,
        "changes_per_remote": a.changes,
        "threads": a.threads,
        "setup_s": setup_s,
        "uploads_window_s": window_s,
        "uploads_per_s": a.remotes as f64 / window_s,
        "upload_ms_p50": percentile_f(&upload_ms, 50),
        "upload_ms_p99": percentile_f(&upload_ms, 99),
        "uploaded_bytes": uploaded_bytes,
        "central_processing": processed,
        "emissions_done_s": emissions_done_s,
        "returns_built": returned["returns"],
        "returns_ms": returns_ms,
        "return_ms_per_remote": returns_ms / a.remotes as f64,
        "cycle_s": cycle_s,
        "fetch_s": fetch_s,
        "fetch_ms_p50": percentile_f(&fetch_ms, 50),
        "fetch_ms_p99": percentile_f(&fetch_ms, 99),
        "fetched_bytes": fetched_bytes,
        "central_peak_rss_bytes": peak_rss,
        "central_store_bytes": store_bytes,
        "converged": converged,
    });
    if let Some(path) = &a.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if converged {
        Ok(())
    } else {
        Err("the fleet did not converge".into())
    }
}
