//! The CLI as tests run it: a process with its input piped and its output collected as it
//! comes, bounded waits, and none of the test environment's `EXECRELAY_*` settings.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{CLI_TIMEOUT, bin, wait_for};

/// `command` without the `EXECRELAY_*` variables of the environment the tests run in (a
/// token, a config path, a crash point): each test says what its relay gets.
pub fn without_relay_settings(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EXECRELAY_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs the binary with `args` (bounded), capturing its output.
pub fn run_cli(args: &[&std::ffi::OsStr], cwd: &Path) -> Output {
    CliProcess::spawn(args, cwd, Stdio::null(), Stdio::piped()).wait(CLI_TIMEOUT)
}

/// A CLI run a test talks to while it runs: stdin as given (piped: [`CliProcess::write`],
/// [`CliProcess::close_stdin`]), stdout and stderr collected as they come.
pub struct CliProcess {
    child: Child,
    what: String,
    stdin: Option<std::process::ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl CliProcess {
    pub fn spawn(args: &[&std::ffi::OsStr], cwd: &Path, stdin: Stdio, stdout: Stdio) -> Self {
        let mut child = without_relay_settings(Command::new(bin()))
            .args(args)
            .current_dir(cwd)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn execrelay CLI");
        let (out, err) = (Arc::default(), Arc::default());
        let mut readers = Vec::new();
        let mut collect = |mut from: Box<dyn Read + Send>, into: &Arc<Mutex<Vec<u8>>>| {
            let into = Arc::clone(into);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    into.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        };
        if let Some(so) = child.stdout.take() {
            collect(Box::new(so), &out);
        }
        collect(Box::new(child.stderr.take().unwrap()), &err);
        CliProcess {
            stdin: child.stdin.take(),
            child,
            what: format!("`execrelay {args:?}`"),
            stdout: out,
            stderr: err,
            readers,
        }
    }

    /// What it printed so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Types `line` and a newline.
    #[track_caller]
    pub fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped and open");
        writeln!(stdin, "{line}").expect("write to the CLI's stdin");
    }

    /// Ends its input (Ctrl-D).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends it `signal` (`libc::SIGSTOP`, `libc::SIGCONT`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which `Drop` reaps only after this.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for it to exit.
    pub fn wait(mut self, within: Duration) -> Output {
        self.stdin = None;
        let status = wait_for(&format!("{} to exit", self.what), within, || {
            self.child.try_wait().expect("try_wait on CLI")
        });
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Output {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
