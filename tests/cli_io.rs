//! The binary against files and pipes that misbehave (issue 23): a FIFO or a device as the flight log
//! or as `record --out`, a reader that stops reading, stdout and stderr closed early. Nothing here
//! needs a database: an unreachable one is enough for `record`, and recordings replay offline.
//!
//! A regression in this file is a hang or a panic, so every child runs under a deadline and is killed
//! (and the test failed) when it passes it.

mod common;

use common::assert_exit;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a command that must not hang gets (each takes well under a second when it works).
const PROMPTLY: Duration = Duration::from_secs(10);

/// The binary with a clean environment: no PG* or PGSWARM_* from the caller, and a state directory
/// of its own so that no test touches the real flight log.
fn pgswarm(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgswarm"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") && k != "PGSWARM_PG_BINDIR" {
            c.env_remove(k);
        }
    }
    c.env("HOME", state).env("XDG_STATE_HOME", state);
    c
}

/// A database that cannot be reached (a socket directory that does not exist): `record` still writes
/// a snapshot per tick, with the database unreachable.
fn unreachable_db(dir: &Path) -> String {
    format!(
        "x_test=host={} dbname=x_test",
        dir.join("no-such-socket-dir").display()
    )
}

/// Waits for `child` at most `limit`; kills it and fails the test when it takes longer.
fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return collect(child, status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let out = collect(child, status);
            panic!(
                "{what}: still running after {limit:?} (killed). stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn collect(mut child: Child, status: ExitStatus) -> Output {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut stderr);
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `cmd` to the end within [`PROMPTLY`], capturing its output.
fn run_promptly(cmd: &mut Command, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_within(child, PROMPTLY, what)
}

/// Waits until process `pid` catches SIGTERM (its handler is installed: before that, SIGTERM would
/// kill it outright, and a test that sends it too early would test nothing), read from
/// `/proc/PID/status`.
fn wait_for_sigterm_handler(pid: u32) {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (libc::SIGTERM - 1)) != 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} installed no SIGTERM handler"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to a child once it catches it.
fn terminate(child: &Child) {
    wait_for_sigterm_handler(child.id());
    // SAFETY: signalling a child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 23: `incidents` given a FIFO or `/dev/zero` as its flight log says what it is and what to
/// do, exits 2, and never waits for a writer or reads for ever.
#[test]
fn incidents_refuses_a_fifo_or_a_device_as_the_flight_log() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("incidents.jsonl");
    make_fifo(&fifo);
    for (log, kind) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/zero"), "character device"),
    ] {
        let out = run_promptly(
            pgswarm(dir.path()).args(["incidents", "--log"]).arg(log),
            &format!("incidents --log {}", log.display()),
        );
        assert_exit(&out, 2);
        let err = stderr_of(&out);
        assert!(err.contains(&log.display().to_string()), "{err}");
        assert!(err.contains(kind), "{err}");
        assert!(err.contains("give --log"), "says what to do: {err}");
        assert!(out.stdout.is_empty());
        // The same through the environment variable.
        let out = run_promptly(
            pgswarm(dir.path())
                .arg("incidents")
                .env("PGSWARM_INCIDENTS_LOG", log),
            "incidents with PGSWARM_INCIDENTS_LOG",
        );
        assert_exit(&out, 2);
    }
}

/// Issue 23: `record` and `incidents --follow` with a FIFO as the flight log (nobody at its other
/// end) say at once that the flight log is off and why, keep working, and stop on `--duration` and
/// on SIGTERM as usual.
#[test]
fn a_fifo_as_the_flight_log_turns_it_off_with_a_warning_for_writers() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("incidents.jsonl");
    make_fifo(&fifo);
    let rec = dir.path().join("rec.jsonl");
    let db = unreachable_db(dir.path());
    let out = run_promptly(
        pgswarm(dir.path())
            .args(["record", "--interval", "250ms", "--duration", "1s", "--out"])
            .arg(&rec)
            .args(["--db", &db])
            .env("PGSWARM_INCIDENTS_LOG", &fifo),
        "record with a FIFO as the flight log",
    );
    assert_exit(&out, 0);
    let err = stderr_of(&out);
    assert!(err.contains("warning: flight log off"), "{err}");
    assert!(err.contains(&fifo.display().to_string()), "{err}");
    assert!(err.contains("--no-flight-log"), "says what to do: {err}");
    assert!(
        std::fs::metadata(&rec).unwrap().len() > 0,
        "the recording itself was written"
    );

    let follow = pgswarm(dir.path())
        .args(["incidents", "--follow", "--interval", "250ms", "--db", &db])
        .env("PGSWARM_INCIDENTS_LOG", &fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    terminate(&follow);
    let out = wait_within(follow, PROMPTLY, "incidents --follow after SIGTERM");
    assert_exit(&out, 0);
    assert!(stderr_of(&out).contains("warning: flight log off"));
}

/// A FIFO whose only reader is this test, which never reads, with the pipe's buffer already full:
/// the first write of whoever opens it for writing blocks.
fn full_fifo(path: &Path) -> OwnedFd {
    use std::os::unix::fs::OpenOptionsExt;
    make_fifo(path);
    // Read and write: a FIFO opened so never waits for the other end (Linux).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    // SAFETY: fcntl on a descriptor this function owns; the smallest pipe buffer fills quickest.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    let chunk = [b'x'; 4096];
    loop {
        use std::io::Write;
        match (&f).write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the FIFO: {e}"),
        }
    }
    f.into()
}

/// Issue 23: `record --out` to a pipe whose reader stopped reading still stops on SIGTERM and on
/// `--duration` (the write waits off the loop that watches them), and a FIFO that nobody reads is
/// an error at once instead of a hang before the recording starts.
#[test]
fn record_stops_on_time_and_on_sigterm_when_its_output_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let db = unreachable_db(dir.path());
    let fifo = dir.path().join("out.fifo");
    let _reader = full_fifo(&fifo);
    let record = |extra: &[&str]| {
        pgswarm(dir.path())
            .args(["record", "--no-flight-log", "--interval", "250ms"])
            .args(extra)
            .arg("--out")
            .arg(&fifo)
            .args(["--db", &db])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = record(&[]);
    wait_for_sigterm_handler(child.id());
    // Long enough for the first snapshots to reach the full pipe (they come every 250 ms).
    std::thread::sleep(Duration::from_millis(1500));
    terminate(&child);
    let out = wait_within(child, PROMPTLY, "record after SIGTERM, its output blocked");
    assert_exit(&out, 0);

    let started = Instant::now();
    let out = wait_within(
        record(&["--duration", "1s"]),
        PROMPTLY,
        "record --duration 1s, its output blocked",
    );
    assert_exit(&out, 0);
    assert!(started.elapsed() < Duration::from_secs(5));

    let lonely = dir.path().join("nobody-reads.fifo");
    make_fifo(&lonely);
    let out = run_promptly(
        pgswarm(dir.path())
            .args(["record", "--no-flight-log", "--duration", "1s", "--out"])
            .arg(&lonely)
            .args(["--db", &db]),
        "record to a FIFO that nobody reads",
    );
    assert_exit(&out, 2);
    let err = stderr_of(&out);
    assert!(err.contains(&lonely.display().to_string()), "{err}");
    assert!(err.contains("nobody reads"), "{err}");
}

/// The bundled recording (replays need no database).
fn demo_recording() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-recording.jsonl")
}

/// The write end of a pipe whose read end is already closed: every write to it fails with EPIPE,
/// the way `| head -1` ends up once `head` has exited, without the race.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors, which are owned right below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

/// Issue 23: a closed stdout or stderr is never a panic (exit 101). A closed stdout is success, as
/// with ripgrep; a closed stderr swallows the message and the exit code still says what happened.
#[test]
fn a_closed_stdout_or_stderr_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_recording();
    let demo = demo.to_str().unwrap();
    let with_bad_lines = dir.path().join("flight.jsonl");
    std::fs::write(&with_bad_lines, "not an episode\n").unwrap();
    let bad_log = with_bad_lines.to_str().unwrap();
    // (arguments, exit code, close stdout, close stderr)
    let cases: &[(&[&str], i32, bool, bool)] = &[
        (&["--help"], 0, true, false),
        (&["--version"], 0, true, false),
        (&["snapshot", "--help"], 0, true, true),
        (&["snapshot", "--replay", demo, "--json"], 0, true, false),
        (&["snapshot", "--replay", demo], 0, true, true),
        (&["incidents", "--from", demo], 0, true, false),
        (&["incidents", "--from", demo, "--json"], 0, true, true),
        // A warning on stderr (a line that is not an episode) and the report on stdout.
        (&["incidents", "--log", bad_log], 0, false, true),
        (&["incidents", "--log", bad_log], 0, true, true),
        // Errors on a closed stderr: still exit 2.
        (
            &["snapshot", "--replay", "/nonexistent.jsonl"],
            2,
            false,
            true,
        ),
        (&["incidents", "--log", "/dev/zero"], 2, true, true),
        (&["snapshot", "--no-such-flag"], 2, false, true),
        (&["no-such-command"], 2, true, true),
    ];
    for &(args, code, close_out, close_err) in cases {
        let mut cmd = pgswarm(dir.path());
        cmd.args(args).stdin(Stdio::null());
        cmd.stdout(if close_out {
            closed_pipe()
        } else {
            Stdio::null()
        });
        cmd.stderr(if close_err {
            closed_pipe()
        } else {
            Stdio::piped()
        });
        let child = cmd.spawn().unwrap();
        let out = wait_within(child, PROMPTLY, &format!("{args:?}"));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?} (stdout closed: {close_out}, stderr closed: {close_err}): {}",
            stderr_of(&out)
        );
    }
}

/// `2>&-`: no stderr at all. The message has nowhere to go; the exit code is unchanged.
#[test]
fn no_stderr_at_all_is_not_a_panic() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    for (args, code) in [
        (vec!["snapshot", "--replay", "/nonexistent.jsonl"], 2),
        (vec!["incidents", "--log", "/dev/zero"], 2),
    ] {
        let mut cmd = pgswarm(dir.path());
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: close(2) is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::close(2);
                Ok(())
            })
        };
        let out = wait_within(cmd.spawn().unwrap(), PROMPTLY, &format!("{args:?} 2>&-"));
        assert_eq!(out.status.code(), Some(code), "{args:?} 2>&-");
    }
}

/// Issue 23: `snapshot --replay --at` after the recording's last snapshot is an error, as before its
/// first one: exit 2, nothing on stdout, and the message names the value, the recording's span (in a
/// form `--at` takes back) and what to do. Both bounds of the span are valid `--at` values.
#[test]
fn at_outside_the_recording_is_an_error_naming_its_span() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_recording();
    let text = std::fs::read_to_string(&demo).unwrap();
    let times: Vec<chrono::DateTime<chrono::Utc>> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["taken_at"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let rfc =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let (start, end) = (
        rfc(times.iter().min().unwrap()),
        rfc(times.iter().max().unwrap()),
    );
    let replay = |at: &str| {
        run_promptly(
            pgswarm(dir.path())
                .args(["snapshot", "--json", "--replay"])
                .arg(&demo)
                .args(["--at", at]),
            &format!("--at {at}"),
        )
    };
    for (at, side, advice) in [
        ("+1h", "after the recording ends", "leave --at out"),
        ("23:59:59", "after the recording ends", "leave --at out"),
        (
            "2030-01-01T00:00:00Z",
            "after the recording ends",
            "leave --at out",
        ),
        ("00:00:00", "before the recording starts", "+0s"),
    ] {
        let out = replay(at);
        assert_exit(&out, 2);
        assert!(out.stdout.is_empty(), "--at {at} printed a snapshot");
        let err = stderr_of(&out);
        assert!(err.contains(&format!("--at {at:?}")), "{err}");
        assert!(err.contains(side), "{err}");
        assert!(err.contains(&format!("spans {start} to {end}")), "{err}");
        assert!(err.contains(advice), "{err}");
    }
    for at in [&start, &end] {
        assert_exit(&replay(at), 0);
    }
}
