//! One moto server per test binary, started on a free loopback port on first use and stopped when the binary exits.
//!
//! The server runs under a small shell guard that reads its standard input: when the test binary exits,
//! that pipe closes, the guard's `read` returns and it kills the server, so no emulator outlives the tests.
//! Tests isolate their state by unique table, bucket and application names, never by resetting the server.
//! Moto comes from the tests' own Python environment ([`crate::pytools`]), whatever is on `PATH`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rookery_adapters_aws::{AwsClients, AwsConfig};

use crate::fixtures::{BoxError, unique};

/// How long the emulator may take to start (it usually takes under a second).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The guard process; kept so its standard input stays open while the tests run.
    _guard: Mutex<Child>,
}

static MOTO: OnceLock<Result<Moto, String>> = OnceLock::new();

fn start() -> Result<Moto, String> {
    // moto's server handles requests on threads, and its `TransactWriteItems` snapshots each table and
    // restores the snapshot when a condition fails, which undoes a concurrent winner's commit. The guard
    // runs the same server with threads off, so transactions are atomic as in DynamoDB. It stops the server
    // with SIGKILL: the emulator keeps no state worth a slow interpreter shutdown.
    // It imports moto into the interpreter of the environment that holds `moto_server`, passed as `$1`.
    crate::pytools::tool("moto_server")?;
    let python = crate::pytools::tool("python")?;
    let script = r#""$1" -c '
import moto.server as server
import werkzeug.serving as serving
server.run_simple = lambda *args, **kwargs: serving.run_simple(*args, **{**kwargs, "threaded": False})
server.main(["-H", "127.0.0.1", "-p", "0"])
' &
server=$!
read -r _ignored
kill -KILL "$server" 2>/dev/null"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("moto-guard")
        .arg(&python)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start sh for moto_server: {e}"))?;
    let stderr = child.stderr.take().ok_or("moto_server's stderr was not captured")?;
    let (found, port) = mpsc::channel::<Result<u16, String>>();
    // Moto logs every request on stderr: this thread reads it for the port, then drains it for good
    // so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut found = Some(found);
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(sender) = &found {
                if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = sender.send(digits.parse().map_err(|_| format!("unreadable port in {line:?}")));
                    found = None;
                } else {
                    seen.push(line);
                }
            }
        }
        if let Some(sender) = found {
            let _ = sender.send(Err(format!(
                "moto_server exited before listening: {}",
                seen.join(" | ")
            )));
        }
    });
    match port.recv_timeout(START_TIMEOUT) {
        Ok(Ok(port)) => Ok(Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _guard: Mutex::new(child),
        }),
        Ok(Err(why)) => {
            let _ = child.kill();
            Err(why)
        }
        Err(_) => {
            let _ = child.kill();
            Err(format!("moto_server did not report its port within {START_TIMEOUT:?}"))
        }
    }
}

/// The test binary's moto server, started on first use.
///
/// # Errors
/// When the tests' Python environment cannot be made (the message says why) or moto does not start.
pub fn moto() -> Result<&'static Moto, BoxError> {
    MOTO.get_or_init(start).as_ref().map_err(|why| why.clone().into())
}

/// A name no other test uses, valid for DynamoDB tables, S3 buckets and SNS applications.
pub fn unique_name(prefix: &str) -> String {
    unique(prefix)
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Clients for the emulator, with a fresh table and bucket name (nothing created yet).
///
/// # Errors
/// When moto cannot be started.
pub async fn clients() -> Result<AwsClients, BoxError> {
    let moto = moto()?;
    let config = AwsConfig::new(unique_name("events-"), unique_name("media-")).with_emulator(&moto.endpoint);
    Ok(AwsClients::load(config).await)
}

/// Clients for the emulator after `bootstrap` made their table, bucket and SNS applications.
///
/// # Errors
/// When moto cannot be started or bootstrap fails.
pub async fn bootstrapped() -> Result<(AwsClients, rookery_adapters_aws::BootstrapReport), BoxError> {
    let plain = clients().await?;
    let report = rookery_adapters_aws::bootstrap(&plain).await?;
    let mut config = plain.config().clone();
    for (platform, arn) in &report.platform_applications {
        let slot = match platform {
            rookery_domain::Platform::Apns => &mut config.sns_apns_arn,
            rookery_domain::Platform::ApnsSandbox => &mut config.sns_apns_sandbox_arn,
            rookery_domain::Platform::Fcm => &mut config.sns_fcm_arn,
        };
        *slot = Some(arn.clone());
    }
    Ok((AwsClients::load(config).await, report))
}

/// Moto's state dump (`GET /moto-api/data.json`).
///
/// # Errors
/// When the emulator cannot be reached or answers something else than JSON.
pub async fn state() -> Result<serde_json::Value, BoxError> {
    let url = format!("{}/moto-api/data.json", moto()?.endpoint);
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}

/// The messages `state` (moto's dump) records as published to `endpoint`, in no particular order
/// (each the raw `Message` sent).
pub fn published_in(state: &serde_json::Value, endpoint: &str) -> Vec<String> {
    let endpoints = state["sns"]["PlatformEndpoint"].as_array().cloned().unwrap_or_default();
    let Some(found) = endpoints.iter().find(|e| e["arn"] == endpoint) else {
        return Vec::new();
    };
    let messages = found["messages"].as_object().cloned().unwrap_or_default();
    messages
        .values()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}
