//! `roster serve` as a child process of a test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::Env;

pub struct Serve {
    pub child: Child,
    pub metrics: String,
    /// Kept open: the server's last line must not meet a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Serve {
    pub fn start(env: &Env) -> Serve {
        Serve::start_with(env, &[], &[])
    }

    /// `roster serve --listen 127.0.0.1:0 ARGS` with `vars` set.
    pub fn start_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Serve {
        let mut child = env
            .cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start roster serve");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("first line");
        let metrics = line
            .split("metrics on ")
            .nth(1)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| panic!("unexpected: {line}"));
        Serve { child, metrics, _stdout: stdout }
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> i32 {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            assert!(started.elapsed() < Duration::from_secs(20), "roster serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if f() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {timeout:?}");
}
