//! The Python tools the tests run (`moto_server`, `cfn-lint`, Schemathesis's `st`), installed on first use
//! into a virtual environment under the target directory, so that the test command needs nothing but `python3`.
//!
//! The versions are pinned in `tests/requirements.txt`, the one list.
//! The first test binary that asks for a tool creates `<target dir>/py-tools/` with `python3 -m venv` and
//! installs the list into it with the environment's own pip; nothing is installed into the system's Python,
//! which Debian refuses anyway.
//! Cargo runs test binaries one after another, but a developer may run several `cargo test` at once, so the
//! check and the install happen under an exclusive lock on `<target dir>/py-tools.lock`: whoever comes second
//! waits for the first install and then finds it done.
//! A stamp in the environment records a hash of the list and of the interpreter it was made with; when
//! either changes, the environment is made again from scratch, so it never holds a stale mix of versions.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The interpreter the environment is made with: the first `python3` on `PATH`.
const BASE_PYTHON: &str = "python3";

/// What a machine without a usable `venv` module needs, on Debian and Ubuntu.
const APT_HINT: &str = "install Python's venv module with `apt install python3-venv`";

/// The environment's folder name, under the target directory.
const VENV_DIR: &str = "py-tools";

/// The stamp file, inside the environment.
const STAMP_FILE: &str = "rookery-requirements.stamp";

/// The pinned requirements, relative to this crate.
pub fn requirements_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("requirements.txt")
}

/// The path of `name` (`moto_server`, `cfn-lint`, `st`, `python`) in the tests' Python environment,
/// which is made and filled on first use (under a minute on a fresh machine, once per target directory).
///
/// # Errors
/// When `python3` is missing or cannot make an environment (the message says what to install), when pip
/// fails (the message holds its output), or when the environment has no such tool.
pub fn tool(name: &str) -> Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let venv = VENV.get_or_init(provision).clone()?;
    let path = bin(&venv, name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{name} is not in the tests' Python environment {}: is its package listed in {}?",
            venv.display(),
            requirements_path().display()
        ))
    }
}

/// The target directory: `CARGO_TARGET_DIR` when it is an absolute path, otherwise the directory cargo
/// marked with `CACHEDIR.TAG` above this test's executable (`<target>/[<triple>/]<profile>/deps/<test>`).
///
/// # Errors
/// When neither names a directory.
pub fn target_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && dir.is_absolute()
    {
        return Ok(dir);
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test's own path: {e}"))?;
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.ancestors().nth(3))
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no target directory above {}", exe.display()))
}

/// `name` in the environment's scripts folder.
fn bin(venv: &Path, name: &str) -> PathBuf {
    let folder = if cfg!(windows) { "Scripts" } else { "bin" };
    venv.join(folder)
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Makes the environment unless its stamp matches, under the lock, and returns its path.
fn provision() -> Result<PathBuf, String> {
    let target = target_dir()?;
    fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let lock_path = target.join(format!("{VENV_DIR}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    // Held until `lock` drops at the end of this function; the operating system releases it if the
    // process dies, so an interrupted install leaves no stale lock, only an environment without a stamp.
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;

    let requirements_path = requirements_path();
    let requirements =
        fs::read(&requirements_path).map_err(|e| format!("cannot read {}: {e}", requirements_path.display()))?;
    let stamp = stamp(&requirements, &interpreter()?);
    let venv = target.join(VENV_DIR);
    let stamp_path = venv.join(STAMP_FILE);
    if fs::read_to_string(&stamp_path).is_ok_and(|found| found == stamp) {
        return Ok(venv);
    }

    eprintln!(
        "rookery-tests: installing the Python test tools from {} into {} (once per target directory)",
        requirements_path.display(),
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv).map_err(|e| format!("cannot remove the stale {}: {e}", venv.display()))?;
    }
    create_venv(&venv)?;
    let install = run(Command::new(bin(&venv, "python"))
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
        ])
        .arg(&requirements_path))?;
    if !install.status.success() {
        return Err(format!(
            "pip could not install {} into {}:\n{}",
            requirements_path.display(),
            venv.display(),
            text(&install)
        ));
    }
    // The stamp is written last, so an install that fails or is interrupted is redone from scratch.
    fs::write(&stamp_path, &stamp).map_err(|e| format!("cannot write {}: {e}", stamp_path.display()))?;
    Ok(venv)
}

/// Makes an empty environment at `venv` with pip in it.
fn create_venv(venv: &Path) -> Result<(), String> {
    let made = run(Command::new(BASE_PYTHON).args(["-m", "venv"]).arg(venv))?;
    if made.status.success() {
        return Ok(());
    }
    let why = text(&made);
    if !why.contains("ensurepip") {
        return Err(format!("`{BASE_PYTHON} -m venv {}` failed:\n{why}", venv.display()));
    }
    // Debian ships ensurepip apart from Python (in python3-venv). Without it, an environment without pip
    // can still get one from the system's pip, when that is installed, which runs inside the environment.
    let _ = fs::remove_dir_all(venv);
    let bare = run(Command::new(BASE_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(venv))?;
    if !bare.status.success() {
        return Err(format!(
            "`{BASE_PYTHON} -m venv` cannot make the tests' environment: {APT_HINT}.\n{why}\n{}",
            text(&bare)
        ));
    }
    let pip = run(Command::new(BASE_PYTHON)
        .args(["-m", "pip", "--python"])
        .arg(bin(venv, "python"))
        .args(["install", "--disable-pip-version-check", "--no-input", "pip"]))?;
    if pip.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{BASE_PYTHON} -m venv` has no ensurepip and the system's pip cannot install one: {APT_HINT}.\n{why}\n{}",
            text(&pip)
        ))
    }
}

/// The base interpreter's version and location, part of the stamp: an environment made with another
/// Python (an upgrade, another `python3` first on `PATH`) may not run, so it is made again.
fn interpreter() -> Result<String, String> {
    let probe =
        run(Command::new(BASE_PYTHON).args(["-c", "import sys; print(sys.version.split()[0], sys.base_prefix)"]))?;
    if probe.status.success() {
        Ok(String::from_utf8_lossy(&probe.stdout).trim().to_owned())
    } else {
        Err(format!("`{BASE_PYTHON}` does not run:\n{}", text(&probe)))
    }
}

/// The stamp of an environment made from `requirements` with `interpreter`.
fn stamp(requirements: &[u8], interpreter: &str) -> String {
    let digest = Sha256::digest(requirements);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("requirements sha256 {hex}\npython {interpreter}\n")
}

/// Runs `command` to completion, capturing its output.
fn run(command: &mut Command) -> Result<Output, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().map_err(|e| {
        if program == BASE_PYTHON {
            format!(
                "cannot run {BASE_PYTHON} ({e}): the tests need Python 3 on PATH (`apt install python3 python3-venv`)"
            )
        } else {
            format!("cannot run {program}: {e}")
        }
    })
}

/// A finished command's standard output and error, for messages.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
