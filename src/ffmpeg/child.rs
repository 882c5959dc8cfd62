//! Child processes with every wait bounded.
//!
//! Every child the crate starts runs in a process group of its own, so that a wrapper script that
//! forks (instead of `exec`-ing) leaves no grandchild behind: on a time limit, an error or drop,
//! the whole group is killed, and a child that exits is reaped only after what it left in its
//! group (a wrapper's background job, holding the pipes it inherited) has been killed. Threads that read a child's pipes are never joined without a bound:
//! a process outside the group (one that called `setsid`) can keep a pipe open after the group is
//! gone, so a reader that has not ended within [`JOIN_LIMIT`] is left to end on its own when the
//! pipe closes, instead of blocking the caller.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a reader thread may take to end once its child's group has been killed or has
/// exited, before it is left to end on its own.
pub(crate) const JOIN_LIMIT: Duration = Duration::from_millis(500);

/// How long to wait for a killed child to be reaped. `SIGKILL` cannot be caught, so only a
/// process stuck in the kernel (uninterruptible sleep) outlives this.
const REAP_LIMIT: Duration = Duration::from_secs(2);

/// A command that starts its child in a new process group (the child's pid is the group id).
/// Start it with [`GroupChild::spawn`].
pub(crate) fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd
}

/// A child that leads its own process group, and knows whether it has been reaped: the group is
/// signalled only while the leader is unreaped, because until then its pid, and so the group id,
/// cannot have been given to another process.
#[derive(Debug)]
pub(crate) struct GroupChild {
    child: Child,
    status: Option<ExitStatus>,
}

impl GroupChild {
    /// Starts `cmd` (made by [`command`]). `ETXTBSY` ("text file busy": the program file is
    /// still open for writing somewhere, e.g. a wrapper script just written while another thread
    /// of this process forked) is retried 10 times, 20 ms apart, then reported.
    pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Ok(child) => {
                    return Ok(GroupChild {
                        child,
                        status: None,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The child's pid (and process group id).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's pipes, to take.
    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the child has exited, without reaping it (on Unix): an exited child stays a
    /// zombie, so its pid, and so its group id, cannot be given to another process, and
    /// [`GroupChild::kill_group`] can still kill what it left in its group.
    fn exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        #[cfg(unix)]
        {
            use rustix::process::{waitid, WaitId, WaitIdOptions};
            let pid = rustix::process::Pid::from_child(&self.child);
            let peek = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
            match waitid(WaitId::Pid(pid), peek) {
                Ok(seen) => seen.is_some(),
                Err(e) => {
                    tracing::warn!(pid = self.id(), error = %e, "waiting for a child failed");
                    false
                }
            }
        }
        #[cfg(not(unix))]
        {
            self.reap_now().is_some()
        }
    }

    /// The exit status, reaping the child if it has exited; `None` while it runs. Before the
    /// child is reaped, whatever it left running in its group is killed: a wrapper script's
    /// background job would otherwise outlive it, holding the pipes it inherited (so no reader
    /// sees their end of file) and escaping every later group kill, which needs the unreaped
    /// leader.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() && self.exited() {
            self.kill_group();
            self.reap_now();
        }
        self.status
    }

    /// Reaps the child if it has exited, without a group kill.
    fn reap_now(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => {}
                Err(e) => tracing::warn!(pid = self.id(), error = %e, "waiting for a child failed"),
            }
        }
        self.status
    }

    /// Kills the whole process group (the child and whatever it forked that stayed in the group),
    /// if the child has not been reaped yet (it may have exited: an unreaped leader keeps the
    /// group id from being reused).
    pub(crate) fn kill_group(&mut self) {
        if self.status.is_some() {
            return;
        }
        #[cfg(unix)]
        {
            let pid = rustix::process::Pid::from_child(&self.child);
            // ESRCH (no such group) means everything in it has already exited.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
    }

    /// Waits up to `limit` for the child to exit; `None` if it has not.
    pub(crate) fn reap(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the group and reaps the child, waiting at most [`REAP_LIMIT`]. A child that could
    /// not be reaped (stuck in the kernel) is logged and left.
    pub(crate) fn kill_and_reap(&mut self) {
        self.kill_group();
        if self.reap(REAP_LIMIT).is_none() {
            tracing::warn!(pid = self.id(), "child process did not exit after SIGKILL");
        }
    }
}

/// Joins a thread if it ends within `limit`; otherwise leaves it running (detached) and returns
/// false. Only for threads that end by themselves once a pipe closes.
pub(crate) fn join_bounded(handle: JoinHandle<()>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            tracing::debug!(
                "a pipe reader is still blocked; leaving it to end when the pipe closes"
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = handle.join();
    true
}

/// Why [`run_capped`] did not return the program's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunError {
    /// The program could not be started.
    Spawn(String),
    /// It did not finish within the limit; it was killed.
    TimedOut(Duration),
    /// It wrote more than the cap to stdout; it was killed.
    TooMuchOutput(usize),
    /// It exited unsuccessfully.
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Spawn(e) => write!(f, "cannot run it: {e}"),
            RunError::TimedOut(limit) => {
                write!(f, "it did not finish within {limit:?} and was killed")
            }
            RunError::TooMuchOutput(cap) => {
                write!(f, "it wrote more than {cap} bytes and was killed")
            }
            RunError::Failed(status) => write!(f, "it exited with {status}"),
        }
    }
}

/// Runs `program args` with no input and returns its standard output, read up to `cap` bytes,
/// within `limit` of wall time; standard error is discarded. A program that runs past the limit
/// or writes more than the cap is killed with its whole process group.
/// How often [`run_capped`] looks whether its program has exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

pub(crate) fn run_capped(
    program: &Path,
    args: &[&str],
    limit: Duration,
    cap: usize,
) -> Result<String, RunError> {
    let mut child = GroupChild::spawn(
        command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .map_err(|e| RunError::Spawn(e.to_string()))?;
    let Some(mut stdout) = child.child_mut().stdout.take() else {
        child.kill_and_reap();
        return Err(RunError::Spawn("its stdout pipe was not created".into()));
    };
    let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<u8>, usize>>(1);
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        // One byte past the cap tells "exactly the cap" from "more".
        let read = (&mut stdout).take(cap as u64 + 1).read_to_end(&mut text);
        let _ = tx.send(match read {
            Ok(_) if text.len() > cap => Err(cap),
            _ => Ok(text),
        });
    });
    let deadline = Instant::now() + limit;
    // Looks every 20 ms whether the program itself has exited: `try_wait` then kills what it
    // left in its group (a wrapper's background job holding stdout), so the pipe ends and the
    // reader answers; without this the query would wait out `limit` and be reported hung.
    let received = loop {
        let now = Instant::now();
        if now >= deadline {
            break Err(crossbeam_channel::RecvTimeoutError::Timeout);
        }
        match rx.recv_timeout(EXIT_POLL.min(deadline - now)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let _ = child.try_wait();
            }
            other => break other,
        }
    };
    let result = match received {
        Ok(Ok(text)) => {
            let left = deadline.saturating_duration_since(Instant::now());
            match child.reap(left) {
                Some(status) if status.success() => Ok(String::from_utf8_lossy(&text).into_owned()),
                Some(status) => Err(RunError::Failed(status.to_string())),
                None => Err(RunError::TimedOut(limit)),
            }
        }
        Ok(Err(cap)) => Err(RunError::TooMuchOutput(cap)),
        Err(_) => Err(RunError::TimedOut(limit)),
    };
    child.kill_and_reap();
    join_bounded(reader, JOIN_LIMIT);
    result
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prog");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write script");
        let mut perms = std::fs::metadata(&path).expect("metadata").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
        (dir, path)
    }

    #[test]
    fn output_of_a_quick_program() {
        let (_dir, prog) = sh("echo hello");
        let out = run_capped(&prog, &[], Duration::from_secs(5), 1024);
        assert_eq!(out, Ok("hello\n".to_owned()));
    }

    #[test]
    fn a_wrapper_whose_background_job_holds_stdout_answers_when_the_program_exits() {
        // The job (not exec'd, in the group) keeps stdout open for 1000 s; the program itself
        // prints and exits at once.
        let (_dir, prog) = sh("sleep 1000 &\necho 'ffmpeg version 6'");
        let started = Instant::now();
        let out = run_capped(&prog, &[], Duration::from_secs(10), 1024);
        assert_eq!(out, Ok("ffmpeg version 6\n".to_owned()));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered after {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_hanging_program_and_its_forked_child_are_killed_at_the_limit() {
        // The script forks `sleep` (no exec), which inherits stdout: the reader would block for
        // 1000 s if the group were not killed.
        let (_dir, prog) = sh("sleep 1000\necho never");
        let started = Instant::now();
        let out = run_capped(&prog, &[], Duration::from_millis(300), 1024);
        assert_eq!(out, Err(RunError::TimedOut(Duration::from_millis(300))));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "returned after {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_flood_is_cut_at_the_cap() {
        let (_dir, prog) = sh("yes flood");
        let out = run_capped(&prog, &[], Duration::from_secs(20), 64 * 1024);
        assert_eq!(out, Err(RunError::TooMuchOutput(64 * 1024)));
    }

    #[test]
    fn a_failing_program_reports_its_status() {
        let (_dir, prog) = sh("exit 3");
        let out = run_capped(&prog, &[], Duration::from_secs(5), 1024);
        assert!(matches!(out, Err(RunError::Failed(s)) if s.contains('3')));
    }
}
