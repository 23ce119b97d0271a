//! The job supervisor: the hidden `execrelay supervise` subcommand, one process per job.
//!
//! It outlives the relay (the relay starts it in a process group of its own), runs the command
//! in a new process group with stdout and stderr appended to the job's log file, enforces the
//! timeout and `/kill` (SIGTERM to the supervisor), and writes the exit status to
//! `status.json` durably (write, fsync, rename, fsync the directory) before it exits. A relay
//! that restarts reads that file and so learns the real outcome. Files in the job directory:
//! `supervisor.pid`, `output.log`, `status.json`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const PID_FILE: &str = "supervisor.pid";
pub const LOG_FILE: &str = "output.log";
pub const STATUS_FILE: &str = "status.json";
/// The command line, written by the relay before it starts the supervisor.
pub const COMMAND_FILE: &str = "command";

/// What the supervisor learned, as written to `status.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub killed: bool,
    pub spawn_error: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
    /// The limit this job ran with (the config may have changed by the time it is read).
    #[serde(default)]
    pub timeout_ms: u64,
    /// Processes the job left behind (in the background, in a session of their own) that the
    /// supervisor stopped when the job ended.
    #[serde(default)]
    pub stopped_background: u32,
    /// Bytes of output the job wrote, and how many of the oldest were dropped to keep its
    /// log within `max_output`.
    #[serde(default)]
    pub output_bytes: u64,
    #[serde(default)]
    pub dropped_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct SuperviseArgs {
    pub job_dir: PathBuf,
    pub shell: PathBuf,
    pub workdir: PathBuf,
    pub command: String,
    pub timeout: Duration,
    pub grace: Duration,
    pub job_id: String,
    /// Leave what the job started in the background running when it ends.
    pub keep_background: bool,
    /// Output kept on disk at most; past it the oldest is dropped.
    pub max_output: u64,
    /// The account and group the job runs as (`[exec] run_as`); `None`: the supervisor's.
    pub run_as: Option<(u32, u32)>,
}

impl SuperviseArgs {
    /// The arguments after `execrelay` that start a supervisor with these settings (the
    /// relay's for a job, `doctor`'s for its trial job). Not `command`: it is read from the
    /// job directory, never passed in argv, which every local user can read.
    pub fn to_argv(&self) -> Vec<std::ffi::OsString> {
        let mut argv: Vec<std::ffi::OsString> = vec![
            "supervise".into(),
            "--job-dir".into(),
            self.job_dir.clone().into(),
            "--job-id".into(),
            self.job_id.clone().into(),
            "--shell".into(),
            self.shell.clone().into(),
            "--workdir".into(),
            self.workdir.clone().into(),
            "--timeout-ms".into(),
            self.timeout.as_millis().to_string().into(),
            "--grace-ms".into(),
            self.grace.as_millis().to_string().into(),
            "--max-output".into(),
            self.max_output.to_string().into(),
        ];
        if self.keep_background {
            argv.push("--keep-background".into());
        }
        if let Some((uid, gid)) = self.run_as {
            argv.extend(["--uid".into(), uid.to_string().into()]);
            argv.extend(["--gid".into(), gid.to_string().into()]);
        }
        argv
    }
}

static TERM_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERM_REQUESTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGHUP are caught and dropped rather than ignored: a caught signal is reset to
/// its default by exec, so the command gets the usual dispositions without a pre_exec hook
/// (which would force a fork instead of a posix_spawn).
extern "C" fn on_ignored_signal(_: libc::c_int) {}

fn now_ms() -> i64 {
    crate::store::now_ms()
}

/// A relay started from a terminal hands it down; a job must not have it: opening `/dev/tty`
/// (a password prompt) would stop the job in the background until its timeout, instead of
/// failing at once as it does under a service manager. The supervisor leads only its process
/// group, not a session, so this lets go of the terminal without signalling anyone.
fn leave_controlling_terminal() {
    // SAFETY: plain syscalls on a descriptor this function owns.
    unsafe {
        if libc::getsid(0) == libc::getpid() {
            return;
        }
        let fd = libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::ioctl(fd, libc::TIOCNOTTY);
            libc::close(fd);
        }
    }
}

/// Neither the relay nor a supervisor may be read through /proc or traced by job code running
/// as the same user: /proc/<pid>/environ holds the environment the relay was given (its
/// tokens), and /proc/<pid>/mem everything else.
pub fn not_dumpable() {
    // SAFETY: prctl(2) with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Descriptors this process was started with (beyond stdin, stdout, stderr) are closed at the
/// next exec: whatever a service manager or a shell left open must not reach job code.
pub fn no_inherited_descriptors() {
    // SAFETY: close_range(2) only marks descriptors close-on-exec; none is closed here.
    unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
}

/// Runs the job to its end and records the outcome; returns the process exit code.
pub fn run(args: &SuperviseArgs) -> i32 {
    crate::util::failpoint::pause(
        crate::util::failpoint::SUPERVISOR_SLOW_START,
        Duration::from_millis(500),
    );
    leave_controlling_terminal();
    not_dumpable();
    no_inherited_descriptors();
    // SAFETY: installing a handler that only stores to an atomic is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
        libc::signal(
            libc::SIGINT,
            on_ignored_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGHUP,
            on_ignored_signal as *const () as libc::sighandler_t,
        );
    }
    let started_at = now_ms();
    let start_time = own_start_time().map(|t| t.to_string()).unwrap_or_default();
    if let Err(error) = write_pid_file(&args.job_dir, &start_time) {
        eprintln!("supervisor: cannot write pid file: {error}");
    }
    let record = match supervise(args, started_at) {
        Ok(record) => record,
        Err(spawn_error) => ExitRecord {
            spawn_error: Some(spawn_error),
            started_at,
            finished_at: now_ms(),
            ..ExitRecord::default()
        },
    };
    let record = ExitRecord {
        timeout_ms: args.timeout.as_millis() as u64,
        ..record
    };
    match write_status(&args.job_dir, &record) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("supervisor: cannot record the exit status: {error}");
            1
        }
    }
}

fn supervise(args: &SuperviseArgs, started_at: i64) -> Result<ExitRecord, String> {
    // 0600: a job under run_as (or any other local user) must not reopen another job's log
    // through /proc/<pid>/fd.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(args.job_dir.join(LOG_FILE))
        .map_err(|e| format!("cannot open the job log: {e}"))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot open the job log: {e}"))?;
    let mut cap = OutputCap {
        log: log
            .try_clone()
            .map_err(|e| format!("cannot open the job log: {e}"))?,
        max: args.max_output,
        emptied: 0,
        punched: 0,
    };
    // Handed over in a file, not on the command line: a supervisor's argv is visible in `ps`
    // to every local user (an older relay still passes it as arguments).
    let line = if args.command.is_empty() {
        std::fs::read_to_string(args.job_dir.join(COMMAND_FILE))
            .map_err(|e| format!("cannot read the job's command: {e}"))?
    } else {
        args.command.clone()
    };
    let mut command = Command::new(&args.shell);
    command
        .arg("-c")
        .arg(&line)
        .current_dir(&args.workdir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    // Whatever reached the supervisor of the relay's own (a test point), the job never sees.
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .starts_with(crate::config::exec_env::RELAY_PREFIX)
        {
            command.env_remove(name);
        }
    }
    command.env("EXECRELAY_JOB_ID", &args.job_id);
    if let Some((uid, gid)) = args.run_as {
        // Dropped in the child before it runs anything (supplementary groups cleared too);
        // the job directory and its log stay the relay's.
        command.uid(uid).gid(gid);
    }
    if !args.keep_background {
        // Whatever the job leaves behind (`cmd &`, `setsid ...`, a double fork) becomes this
        // process's child when its parent dies, so that it can be found and stopped.
        // SAFETY: prctl(2) with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.shell.display()))?;
    let group = child.id() as libc::pid_t;

    // A thread blocks in wait() so that the exit is seen at once, not at the next poll.
    let (exited, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });

    let deadline = Instant::now() + args.timeout;
    let mut timed_out = false;
    let mut killed = false;
    let status = loop {
        cap.enforce();
        match exit.recv_timeout(Duration::from_millis(50)) {
            Ok(status) => break status,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("lost track of the command".into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let term = TERM_REQUESTED.load(Ordering::SeqCst);
        if term || Instant::now() >= deadline {
            killed = term;
            timed_out = !term;
            break stop_group(group, args.grace, &exit)?;
        }
    };
    let status = status.map_err(|e| format!("waiting for the command failed: {e}"))?;
    // A job ends when it ends: what it left running goes with it.
    let stopped_background = if args.keep_background {
        0
    } else {
        stop_descendants(group, args.grace)
    };
    cap.enforce();
    let (output_bytes, dropped_bytes) = cap.totals();
    Ok(ExitRecord {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        killed,
        spawn_error: None,
        started_at,
        finished_at: now_ms(),
        timeout_ms: args.timeout.as_millis() as u64,
        stopped_background,
        output_bytes,
        dropped_bytes,
    })
}

/// Blocks a filesystem may hold past a file's data by itself (delayed allocation, extent
/// rounding), at the least: no sign that the job allocated any.
const PAST_END_SLACK: u64 = 1 << 20;

/// Keeps a job's log within `max` bytes on disk: past it, the oldest part is freed, keeping
/// the most recent half. The job writes to the log directly (no copy through this process),
/// so this looks at it every tick of the supervisor's loop and once at the end.
struct OutputCap {
    log: File,
    max: u64,
    /// Bytes written before the log was last emptied (where holes cannot be punched).
    emptied: u64,
    /// The log's first bytes, freed as a hole: offsets stay, so its end reads as before.
    punched: u64,
}

impl OutputCap {
    fn enforce(&mut self) {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = self.log.metadata() else {
            return;
        };
        let size = meta.len();
        // What the disk holds is what counts (the job holds the log too: it may truncate it,
        // or allocate blocks past its end).
        if meta.blocks().saturating_mul(512) <= self.max {
            return;
        }
        let fd = self.log.as_raw_fd();
        let punch = |from: u64, to: u64| {
            // SAFETY: fallocate(2) on a descriptor this struct owns.
            to <= from
                || unsafe {
                    libc::fallocate(
                        fd,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        from as libc::off_t,
                        (to - from) as libc::off_t,
                    )
                } == 0
        };
        // Everything but the most recent half, and anything allocated past the end. A hole
        // punched past the end frees nothing (ext4 cuts the range at the end) but what the job
        // wrote since `size` was read; a truncation at the end as it is then frees what was
        // allocated past it, and only runs when there is some (the job allocated it).
        let upto = size.saturating_sub(self.max / 2) & !4095;
        let held = size.saturating_sub(self.punched.min(size));
        // What filesystems allocate ahead by themselves (XFS's speculative preallocation grows
        // with the file) is left to them: only more than that is the job's doing.
        let slack = PAST_END_SLACK.max(self.max / 4);
        let allocated_past_end = meta.blocks().saturating_mul(512) > held + slack;
        let freed_past_end = || {
            let end = self.log.metadata().map_or(size, |m| m.len());
            self.log.set_len(end).is_ok()
        };
        if punch(0, upto) && (!allocated_past_end || freed_past_end()) {
            self.punched = self.punched.max(upto).min(size);
        } else if self.log.set_len(0).is_ok() {
            // No holes here: start the log again (the job appends, so it follows).
            self.emptied += size;
            self.punched = 0;
        }
    }

    /// (bytes written, bytes dropped).
    fn totals(&self) -> (u64, u64) {
        let size = self.log.metadata().map(|m| m.len()).unwrap_or(0);
        (self.emptied + size, self.emptied + self.punched)
    }
}

/// Stops every process the job left behind (in its process group, or a child of this
/// subreaper once its own parent is gone): SIGTERM to each as it shows up, SIGKILL to
/// whatever is still there after `grace`. Reaps them all; returns how many there were.
///
/// Done only when this process has no child left at all, zombies included: a process that
/// forks and exits in a loop hands each new child to this one, so a scan that finds only
/// zombies is no proof. A chain that outruns the signals past `give_up` is a limit of process
/// trees (a cgroup would hold it).
fn stop_descendants(group: libc::pid_t, grace: Duration) -> u32 {
    let me = std::process::id();
    let deadline = Instant::now() + grace;
    let give_up = deadline + Duration::from_secs(10);
    let mut seen = std::collections::HashSet::new();
    // Once the group is empty its id may be given to someone else's: never match it again.
    let mut group = Some(group);
    loop {
        let reaped = reap_children();
        // SAFETY: signal 0 sends nothing; it asks whether the group has a member.
        if let Some(id) = group
            && unsafe { libc::kill(-id, 0) } != 0
        {
            group = None;
        }
        if group.is_none() && reaped == 0 && has_no_children() {
            break;
        }
        if Instant::now() >= give_up {
            break;
        }
        let signal = if Instant::now() >= deadline {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        for pid in scan_for_leftovers(me, group) {
            // A second TERM is no news to a process: each gets one, then KILL.
            if seen.insert(pid) || signal == libc::SIGKILL {
                // SAFETY: kill(2) on a process of the job's (still populated) group or a
                // child of this one (unreaped, so its pid cannot have been reused).
                unsafe { libc::kill(pid, signal) };
            }
        }
        if reaped == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    seen.len() as u32
}

/// Waits for every child that has exited, without blocking; how many there were.
fn reap_children() -> usize {
    let mut reaped = 0;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) for any child, non-blocking, into a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        reaped += 1;
    }
}

/// From the kernel's own list of this process's children (every thread's), where it has one.
fn has_no_children() -> bool {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    threads.flatten().all(|thread| {
        std::fs::read_to_string(thread.path().join("children"))
            .is_ok_and(|children| children.trim().is_empty())
    })
}

/// The live (not zombie) children of `parent`, and members of `group` while it has any.
fn scan_for_leftovers(parent: u32, group: Option<libc::pid_t>) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let pid = name.to_str()?;
            let stat = proc_stat(pid)?;
            let ours = stat.parent == parent || Some(stat.group) == group;
            (ours && stat.state != 'Z').then(|| pid.parse().ok())?
        })
        .collect()
}

/// SIGTERM to the whole group, SIGKILL after `grace`, then wait for the exit.
fn stop_group(
    group: libc::pid_t,
    grace: Duration,
    exit: &mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
) -> Result<std::io::Result<std::process::ExitStatus>, String> {
    // SAFETY: plain syscalls on a process group we created.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    if let Ok(status) = exit.recv_timeout(grace) {
        return Ok(status);
    }
    unsafe { libc::kill(-group, libc::SIGKILL) };
    exit.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the command did not die after SIGKILL".to_string())
}

/// The command line, private (0600) to the relay's user, for the supervisor to read.
pub fn write_command(job_dir: &Path, command: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(job_dir.join(COMMAND_FILE))?
        .write_all(command.as_bytes())
}

/// Whole or absent, never half-written: a relay that finds the file and no live process behind
/// it concludes that the supervisor is gone. (No fsync: after a power cut no process is left.)
fn write_pid_file(job_dir: &Path, start_time: &str) -> std::io::Result<()> {
    let tmp = job_dir.join("supervisor.pid.tmp");
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(format!("{} {start_time}\n", std::process::id()).as_bytes())?;
    std::fs::rename(&tmp, job_dir.join(PID_FILE))
}

/// Whether process `pid`, started at `start_time` (so not a later process given the same
/// pid), is alive (not a zombie) and catches SIGTERM: a supervisor that does has its handler
/// in place, so a TERM makes it stop its job and record that, not just die.
pub fn handles_sigterm(pid: u32, start_time: u64) -> bool {
    proc_stat(&pid.to_string()).is_some_and(|stat| {
        stat.state != 'Z'
            && stat.start_time == start_time
            && stat.caught & (1 << (libc::SIGTERM - 1)) != 0
    })
}

/// When process `pid` started, as [`live_supervisor`] and [`handles_sigterm`] check it.
pub fn start_time_of(pid: u32) -> Option<u64> {
    proc_stat(&pid.to_string()).map(|stat| stat.start_time)
}

fn write_status(job_dir: &Path, record: &ExitRecord) -> std::io::Result<()> {
    let tmp = job_dir.join("status.json.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, job_dir.join(STATUS_FILE))?;
    File::open(job_dir)?.sync_all()
}

/// Reads a job's recorded exit, if the supervisor got that far.
pub fn read_status(job_dir: &Path) -> Option<Result<ExitRecord, String>> {
    match std::fs::read(job_dir.join(STATUS_FILE)) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// The pid of a job's supervisor if it is still alive and really is that job's supervisor.
/// Pids are reused, so the pid file also holds the process's start time (clock ticks since
/// boot, from `/proc/<pid>/stat`), which no later process with that pid can share. (A pid file
/// without it, from an older relay, is checked by the command line naming the job directory.)
pub fn live_supervisor(job_dir: &Path) -> Option<u32> {
    let recorded = std::fs::read_to_string(job_dir.join(PID_FILE)).ok()?;
    let mut fields = recorded.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let started: Option<u64> = fields.next().and_then(|t| t.parse().ok());
    let stat = proc_stat(&pid.to_string())?;
    // A zombie has exited; its status file tells the rest.
    if stat.state == 'Z' {
        return None;
    }
    let is_ours = match started {
        Some(started) => started == stat.start_time,
        None => {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let needle = job_dir.as_os_str().as_encoded_bytes();
            cmdline.windows(needle.len().max(1)).any(|w| w == needle)
        }
    };
    is_ours.then_some(pid)
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    state: char,
    /// Its parent's pid (field 4).
    parent: u32,
    /// Its process group (field 5).
    group: i32,
    /// Clock ticks since boot (field 22): no later process with the same pid shares it.
    start_time: u64,
    /// The signals it catches (field 34, a decimal bitmap).
    caught: u64,
}

/// `pid`: a number, or `self`.
fn proc_stat(pid: &str) -> Option<ProcStat> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_proc_stat(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(4 - 3)?.parse().ok()?,
        group: fields.get(5 - 3)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
        caught: fields.get(34 - 3).and_then(|f| f.parse().ok()).unwrap_or(0),
    })
}

/// This process's start time, as [`live_supervisor`] checks it.
fn own_start_time() -> Option<u64> {
    proc_stat("self").map(|stat| stat.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_yield_state_and_start_time_even_with_odd_names() {
        let stat =
            "4242 (sh) x (y)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 123 45";
        let parsed = parse_proc_stat(stat).unwrap();
        assert_eq!((parsed.state, parsed.start_time), ('S', 987654));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn a_pid_file_names_its_process_only_while_the_start_time_matches() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let started = own_start_time().unwrap();
        std::fs::write(dir.path().join(PID_FILE), format!("{me} {started}\n")).unwrap();
        assert_eq!(live_supervisor(dir.path()), Some(me));
        // The same pid with another start time is another process (a reused pid).
        std::fs::write(dir.path().join(PID_FILE), format!("{me} {}\n", started + 1)).unwrap();
        assert_eq!(live_supervisor(dir.path()), None);
        // An old pid file: the command line must name the job directory, and ours does not.
        std::fs::write(dir.path().join(PID_FILE), format!("{me}\n")).unwrap();
        assert_eq!(live_supervisor(dir.path()), None);
    }

    #[test]
    fn sigterm_counts_as_handled_only_once_a_handler_is_in_place() {
        let mut plain = Command::new("sleep").arg("5").spawn().unwrap();
        let started = |pid| start_time_of(pid).unwrap();
        assert!(
            !handles_sigterm(plain.id(), started(plain.id())),
            "sleep has no TERM handler"
        );
        let mut trapping = Command::new("sh")
            .args(["-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let trap_start = started(trapping.id());
        assert!(
            !handles_sigterm(trapping.id(), trap_start + 1),
            "another process with the same pid is not it"
        );
        while !handles_sigterm(trapping.id(), trap_start) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            handles_sigterm(trapping.id(), trap_start),
            "the shell's trap is a handler"
        );
        for child in [&mut plain, &mut trapping] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
