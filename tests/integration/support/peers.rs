//! Independent servers the tests talk to, from PyPI, in a virtual environment
//! the harness creates once under the target directory (never the system
//! Python, which Samba's bindings need as it is).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The venv's python, with `packages` installed (created on first use).
pub fn python_with(packages: &[&str]) -> PathBuf {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = LOCK.get_or_init(|| Mutex::new(())).lock().unwrap_or_else(|p| p.into_inner());
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers-venv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        let out = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().expect("python3 -m venv");
        assert!(
            out.status.success(),
            "cannot create a Python venv for the test peers (apt-get install python3-venv): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let missing: Vec<&&str> = packages
        .iter()
        .filter(|p| {
            !Command::new(&python)
                .args(["-c", &format!("import {}", p.replace('-', "_"))])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(missing.iter().map(|s| **s))
            .output()
            .expect("pip");
        assert!(out.status.success(), "pip install {missing:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    python
}

/// aiosmtpd on 127.0.0.1, saving every message to a maildir.
pub struct SmtpServer {
    child: Child,
    pub addr: String,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let python = python_with(&["aiosmtpd"]);
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let maildir = tempfile::tempdir().expect("maildir");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "aiosmtpd did not start on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer { child, addr, maildir }
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail").join("new");
        std::fs::read_dir(new)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
