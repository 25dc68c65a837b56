//! The real `fulmar daemon` as a child process on temporary directories, with
//! the test tender on its PATH, driven through the real CLI.

use crate::support::tender::Tenders;
use fulmar::wire::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub fn fulmar() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fulmar"))
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A daemon's directories, kept across daemon restarts.
pub struct Host {
    pub data: TempDir,
    pub runtime: TempDir,
    pub tenders: Tenders,
    pub daemon: Option<Child>,
}

impl Host {
    pub fn new() -> Host {
        Host::with_tenders(Tenders::install(&["solo5-hvt", "solo5-spt"]))
    }

    pub fn with_tenders(tenders: Tenders) -> Host {
        Host {
            data: tempfile::tempdir().unwrap(),
            runtime: tempfile::tempdir().unwrap(),
            tenders,
            daemon: None,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime.path().join("fulmar.sock")
    }

    /// `fulmar ARGS` against this host, with the test tender on PATH.
    pub fn command(&self, args: &[&str]) -> Command {
        self.cli().command(args)
    }

    /// What runs the CLI against this host, for other threads to keep using
    /// while this one stops and starts the daemon.
    pub fn cli(&self) -> Cli {
        Cli {
            data: self.data.path().to_owned(),
            runtime: self.runtime.path().to_owned(),
            socket: self.socket(),
            path: self.tenders.path_var(),
        }
    }

    /// Starts `fulmar daemon EXTRA` and waits until it listens.
    pub fn start(&mut self, extra: &[&str]) {
        let mut args = vec!["daemon"];
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        self.wait_listening();
    }

    pub fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(Instant::now() < deadline, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs the CLI, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "fulmar {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI, expecting failure; returns its one line of stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "fulmar {} succeeded", args.join(" "));
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().run(args)
    }

    pub fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["list", "--json"])).unwrap()
    }

    /// Where the daemon keeps block device `name`.
    pub fn block_file(&self, name: &str) -> PathBuf {
        self.data.path().join("block").join(name)
    }

    /// Every file in the block directory, sorted: the devices, and whatever
    /// a transfer left behind (none before the first device).
    pub fn block_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.data.path().join("block")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Creates block device `name` of `size_mb` holding `contents`, then
    /// zeros, through the CLI.
    pub fn device_holding(&self, name: &str, size_mb: u64, contents: &[u8]) {
        let seed = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(seed.path(), contents).unwrap();
        let seed = seed.path().to_str().unwrap();
        self.ok(&[
            "block",
            "create",
            name,
            &size_mb.to_string(),
            "--data",
            seed,
        ]);
    }

    /// `name`'s state as `list --json` says it; "" when it is not listed.
    pub fn state_of(&self, name: &str) -> String {
        self.list()
            .iter()
            .find(|u| u["name"] == name)
            .map(|u| u["state"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The pid of `name`'s tender, which must be running.
    pub fn pid_of(&self, name: &str) -> i32 {
        let pid = self
            .list()
            .iter()
            .find(|u| u["name"] == name)
            .and_then(|u| u["pid"].as_i64())
            .unwrap_or_else(|| panic!("{name} has no pid"));
        i32::try_from(pid).unwrap()
    }

    /// Fresh connections to this daemon, as the TUI's link makes them.
    pub fn connector(&self) -> fulmar::ui::link::Connect {
        let socket = self.socket();
        Box::new(move || Box::pin(client_at(socket.clone())))
    }

    /// Runs `body` with an api client of this daemon, on a current-thread
    /// runtime (inside a network namespace, async code must stay on its thread).
    pub fn with_client<T>(&self, body: impl AsyncFnOnce(Client) -> T) -> T {
        current_thread().block_on(async { body(client_at(self.socket()).await.unwrap()).await })
    }

    /// Runs `body` with an api client that reaches this daemon through
    /// `fulmar proxy`'s stdin and stdout, as a client on another host does
    /// over ssh: its end of the connection is a pair of pipes.
    pub fn with_proxy_client<T>(&self, body: impl AsyncFnOnce(Client) -> T) -> T {
        let mut command = tokio::process::Command::from(self.command(&["--no-start", "proxy"]));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        current_thread().block_on(async {
            let mut proxy = command.spawn().unwrap();
            let (to, from) = (proxy.stdin.take().unwrap(), proxy.stdout.take().unwrap());
            let out = body(Client::over(from, to).await.unwrap()).await;
            proxy.kill().await.unwrap();
            out
        })
    }

    /// `fulmar --no-start ARGS` against this daemon's socket as uid `uid`,
    /// gid 65534 and no groups (through util-linux's setpriv; root only).
    pub fn command_as(&self, uid: u32, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .args(["--regid=65534", "--clear-groups", "--"])
            .arg(fulmar())
            .args(["--no-start", "--socket"])
            .arg(self.socket())
            .args(args)
            .env("FULMAR_DIR", "/nonexistent")
            .env("FULMAR_RUNTIME_DIR", "/nonexistent");
        c
    }

    pub fn daemon_pid(&self) -> i32 {
        self.daemon.as_ref().unwrap().id() as i32
    }

    /// Sends `signal` to the daemon and waits for it to exit; returns its stderr.
    pub fn signal_daemon(&mut self, signal: nix::sys::signal::Signal) -> String {
        let mut child = self.daemon.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        wait_output(&mut child)
    }
}

fn wait_output(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).unwrap();
    }
    err
}

impl Drop for Host {
    /// Unikernels outlive their daemon by design, so a test's own are killed
    /// here, or they would outlive the test.
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let listed = self.run(&["list", "--json"]);
            let unikernels: Vec<serde_json::Value> =
                serde_json::from_slice(&listed.stdout).unwrap_or_default();
            for pid in unikernels.iter().filter_map(|u| u["pid"].as_i64()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The CLI's environment for one [`Host`].
#[derive(Clone)]
pub struct Cli {
    data: PathBuf,
    runtime: PathBuf,
    socket: PathBuf,
    path: std::ffi::OsString,
}

impl Cli {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(fulmar());
        c.args(args)
            .env("FULMAR_DIR", &self.data)
            .env("FULMAR_RUNTIME_DIR", &self.runtime)
            .env("FULMAR_SOCKET", &self.socket)
            .env("PATH", &self.path)
            .env_remove("FULMAR_LOG")
            .stdin(Stdio::null());
        // As root (CI) no fulmar-tender user need exist: tenders stay root
        // unless a test passes --tender-user, which wins over this.
        if nix::unistd::geteuid().is_root() {
            c.env("FULMAR_TENDER_USER", "root");
        }
        c
    }

    /// Runs `fulmar --no-start ARGS`, whatever comes of it.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--no-start"];
        all.extend_from_slice(args);
        self.command(&all).output().unwrap()
    }
}

/// An api client on the daemon socket at `socket`, as the CLI and TUI connect.
pub async fn client_at(socket: PathBuf) -> Result<Client, String> {
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| e.to_string())?;
    let (read, write) = stream.into_split();
    Client::over(read, write).await.map_err(|e| e.to_string())
}

/// Waits until `check` holds, failing the test after a while.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
