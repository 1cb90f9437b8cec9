//! Helpers for the end-to-end tests with real processes: the `outpost` program, the central
//! daemon, a deployment provisioned from bootstrap files, bulk writes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use outpost::Value;

pub fn outpost(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// `outpost central serve` on `data` listening on `listen`, expected to refuse to start: its
/// error output.
pub fn serve_refused(dir: &Path, data: &str, listen: &str) -> String {
    let out = outpost(
        dir,
        &["central", "serve", "--data", data, "--listen", listen],
    );
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = outpost(dir, args);
    assert!(
        out.status.success(),
        "outpost {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `outpost central reprovision` of remote `code` (central's data in `asoc`, its daemon
/// stopped), the new bootstrap written to `bootstrap`: what it says.
pub fn reprovision(dir: &Path, code: &str, bootstrap: &str) -> String {
    ok(
        dir,
        &[
            "central",
            "reprovision",
            "--data",
            "asoc",
            "--site",
            code,
            "--bootstrap",
            bootstrap,
        ],
    )
}

/// `outpost central serve`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, args: &[&str]) -> Daemon {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("serve-{n}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .current_dir(dir)
            .args(["central", "serve"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("central listening on ") {
                        break url.to_owned();
                    }
                }
                _ => panic!(
                    "central serve did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon { child, url, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and its exit status.
    #[cfg(unix)]
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        // The shell's own `kill`: present wherever `sh` is, unlike a separate kill binary.
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn credential(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.lines().find_map(|l| l.strip_prefix("credential = ")) {
        Some(quoted) => quoted.trim_matches('"').to_owned(),
        None => text.trim().to_owned(),
    }
}

/// An admin route, as JSON.
pub fn admin_get(dir: &Path, daemon: &Daemon, route: &str) -> serde_json::Value {
    let mut r = agent()
        .get(format!("{}{route}", daemon.url))
        .header(
            "authorization",
            format!("Bearer {}", credential(&dir.join("asoc/admin.credential"))),
        )
        .call()
        .unwrap();
    assert_eq!(r.status(), 200, "{route}");
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

pub fn journal_of(dir: &Path, daemon: &Daemon, site: u64) -> Vec<serde_json::Value> {
    admin_get(dir, daemon, "/v1/journal")
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["site"] == site && r["kind"] == "Emission")
        .cloned()
        .collect()
}

/// Central ASOC and remotes created from their bootstrap files, as the README has it.
pub fn deployment(dir: &Path, central: &[&str], remotes: &[(&str, &str, &[&str])]) {
    deployment_with(dir, central, remotes, &[]);
}

/// [`deployment`], with `extra` arguments for every `add-remote`.
pub fn deployment_with(
    dir: &Path,
    central: &[&str],
    remotes: &[(&str, &str, &[&str])],
    extra: &[&str],
) {
    let mut args = vec!["central", "init", "--data", "asoc"];
    args.extend(central);
    ok(dir, &args);
    for (id, (code, data, sync)) in remotes.iter().enumerate() {
        let id = (id + 2).to_string();
        let boot = format!("{data}.boot");
        let mut args = vec![
            "central",
            "add-remote",
            "--data",
            "asoc",
            "--id",
            &id,
            "--code",
            code,
            "--bootstrap",
            &boot,
        ];
        for s in *sync {
            args.extend(["--sync", s]);
        }
        args.extend(extra);
        ok(dir, &args);
        ok(
            dir,
            &["remote", "init", "--data", data, "--bootstrap", &boot],
        );
    }
}

pub fn put(dir: &Path, data: &str, key: &str, fields: &str) {
    ok(
        dir,
        &[
            "put",
            "--data",
            data,
            "--table",
            "customers",
            "--key",
            key,
            "--fields",
            fields,
        ],
    );
}

pub fn get(dir: &Path, data: &str, key: &str) -> serde_json::Value {
    serde_json::from_str(&ok(
        dir,
        &["get", "--data", data, "--table", "customers", "--key", key],
    ))
    .unwrap()
}

pub fn sync(dir: &Path, data: &str, daemon: &Daemon, extra: &[&str]) -> String {
    ok(dir, &sync_args(data, &daemon.url, extra))
}

/// `remote sync` of `data` with central at `url`, its outcome unchecked.
pub fn try_sync(dir: &Path, data: &str, url: &str, extra: &[&str]) -> Output {
    outpost(dir, &sync_args(data, url, extra))
}

fn sync_args<'a>(data: &'a str, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["remote", "sync", "--data", data, "--central", url];
    args.extend(extra);
    args
}

/// Many customers written at a remote through the library (the CLI writes one per process).
pub fn bulk(dir: &Path, data: &str, prefix: &str, n: usize) {
    let store = outpost_server::data_dir::open(&dir.join(data)).unwrap();
    store
        .write_as("seller", |tx| {
            for i in 0..n {
                tx.set_fields(
                    "customers",
                    &format!("{prefix}{i:06}"),
                    [
                        ("name".to_owned(), Value::Text(format!("customer {i}"))),
                        ("city".to_owned(), Value::Text("Lyon".into())),
                        ("phone".to_owned(), Value::Text(format!("04 {i:08}"))),
                    ],
                )?;
            }
            Ok(())
        })
        .unwrap();
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `outpost remote run`, its output in a file.
pub fn remote_run(dir: &Path, data: &str, url: &str) -> (Running, PathBuf) {
    let log = dir.join(format!("{data}-run.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .current_dir(dir)
        .args(["remote", "run", "--data", data, "--central", url])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{data}-run.err"))).unwrap())
        .spawn()
        .unwrap();
    (Running(child), log)
}

/// Waits for `what` (up to `secs`), polling.
pub fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
