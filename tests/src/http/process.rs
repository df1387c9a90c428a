//! The real `rookery` binary as a child process, for tests that need a process boundary:
//! graceful shutdown on SIGTERM, restart from a data directory, a kill in the middle of writes.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the binary may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of the `rookery` binary, built (once per test process) if needed.
///
/// `ROOKERY_BIN` names a binary to use as it is; otherwise the binary next to this test's own
/// executable is brought up to date with `cargo build -p rookery-entrypoints --bin rookery`, since cargo
/// does not build a dependency's binaries for another package's tests.
///
/// # Panics
/// When the binary cannot be found or built.
pub fn rookery_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("ROOKERY_BIN") {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("the test's own path");
            // target/<profile>/deps/<test> → target/<profile>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("a target directory")
                .to_owned();
            let target_dir = profile_dir.parent().expect("a target root").to_owned();
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the workspace")
                .to_owned();
            let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            build
                .current_dir(&workspace)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "rookery-entrypoints",
                    "--bin",
                    "rookery",
                    "--target-dir",
                ])
                .arg(&target_dir);
            if profile_dir.file_name().is_some_and(|name| name == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building the rookery binary failed");
            let binary = profile_dir.join(format!("rookery{}", std::env::consts::EXE_SUFFIX));
            assert!(binary.exists(), "no binary at {}", binary.display());
            binary
        })
        .clone()
}

/// A running `rookery` process; killed when dropped.
#[derive(Debug)]
pub struct RookeryProcess {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<String>>,
    /// The threads reading its stdout and stderr; they end when it exits and the pipes close.
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Collects everything `source` writes into `sink`, line by line, sending the address line to `found`.
fn collect(
    source: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    found: Option<mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            // Into the sink first, so that whoever is told of the address also finds its line there.
            if let Ok(mut sink) = sink.lock() {
                sink.push_str(&line);
                sink.push('\n');
            }
            if let Some(found) = &found
                && let Some(rest) = line.split("rookery listening on http://").nth(1)
            {
                let _ = found.send(rest.trim().to_owned());
            }
        }
    })
}

impl RookeryProcess {
    /// Runs `rookery <args>` with `envs` and waits until it prints its listening address.
    ///
    /// # Errors
    /// The process's output when it exits or stays silent instead.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Result<Self, String> {
        let mut command = Command::new(rookery_binary());
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().map_err(|e| format!("cannot run rookery: {e}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let (found, address) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(collect(stdout, output.clone(), Some(found)));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(collect(stderr, output.clone(), None));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = address.recv_timeout(Duration::from_millis(50)) {
                let addr = text.parse().map_err(|e| format!("bad address {text:?}: {e}"))?;
                return Ok(Self {
                    child,
                    addr,
                    output,
                    readers,
                });
            }
            let exited = child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                // The pipes close with the process, so the readers finish with everything it printed.
                for reader in readers {
                    let _ = reader.join();
                }
                let log = output.lock().map(|s| s.clone()).unwrap_or_default();
                return Err(format!("rookery did not start ({exited:?}):\n{log}"));
            }
        }
    }

    /// `rookery serve --addr 127.0.0.1:0 --data-dir <dir> --rate-limit 0`.
    ///
    /// # Errors
    /// As [`RookeryProcess::start`].
    pub fn serve(data_dir: &Path) -> Result<Self, String> {
        let dir = data_dir.to_str().ok_or("the data directory is not UTF-8")?;
        Self::start(
            &["serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--rate-limit", "0"],
            &[],
        )
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of it.
    pub fn api(&self) -> super::ApiClient {
        super::ApiClient::new(self.base())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Its output once it contains `text`, which it may print after its address: logs reach stderr
    /// through a background writer, and each pipe is read by its own thread.
    ///
    /// # Errors
    /// The output so far when `text` has not appeared within `timeout`.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if output.contains(text) {
                return Ok(output);
            }
            if Instant::now() >= deadline {
                return Err(format!("no {text:?} within {timeout:?} in:\n{output}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) and waits up to `timeout` for the process to exit.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process outlives the timeout (it is then killed).
    pub fn signal(&mut self, signal: &str, timeout: Duration) -> Result<ExitStatus, String> {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| e.to_string())?;
        if !sent.success() {
            return Err(format!("kill -{signal} failed"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                self.read_to_end();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "rookery did not exit within {timeout:?} of SIG{signal}:\n{}",
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    ///
    /// # Errors
    /// When it cannot be killed.
    pub fn kill(&mut self) -> Result<(), String> {
        self.child.kill().map_err(|e| e.to_string())?;
        self.child.wait().map_err(|e| e.to_string())?;
        self.read_to_end();
        Ok(())
    }

    /// Waits for the readers of an exited process, so that [`output`](Self::output) holds everything
    /// it printed, its last lines included.
    fn read_to_end(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for RookeryProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
