//! Throwaway PostgreSQL servers from the installed binaries, for the tests and the demo.
//!
//! Behaviour the database decides (locks, blocking, catalogs, timeouts) is only tested for real, so
//! the test suite starts its own servers. They must start fast, never collide with anything else on
//! the machine, and never outlive the process that started them:
//!
//! - binaries: `PGSWARM_PG_BINDIR`, else `pg_config --bindir`, else the newest
//!   `/usr/lib/postgresql/*/bin`, else `PATH`; missing binaries give an error that says what to install;
//! - `initdb` and `postgres` refuse to run as root, so as root the data directory is owned by the
//!   `postgres` OS user and both run through `runuser -u postgres --`;
//! - one `initdb` per machine and version is cached as a template and copied (a copy costs a fraction
//!   of an `initdb`);
//! - the server listens on a Unix socket in its own temporary directory (TCP on a free loopback port
//!   only when asked), with durability off: these servers hold nothing worth keeping;
//! - a watchdog child holds a pipe from this process: when the pipe closes, on drop, on panic, or when
//!   the process is killed outright, the watchdog stops the server (`pg_ctl stop -m immediate`) and
//!   removes the directory. Server and watchdog run in their own process group, so a Ctrl-C at the
//!   terminal reaches pgswarm, which then cleans up in order.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Options for a throwaway server.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Also listen on 127.0.0.1 on a free port.
    pub tcp: bool,
    /// Extra `postgresql.conf` lines (`key = value`).
    pub settings: Vec<(String, String)>,
    /// Databases to create after start.
    pub databases: Vec<String>,
    /// `pg_hba.conf` lines for TCP clients (default with `tcp`: `host all all 127.0.0.1/32 trust`).
    pub tcp_hba: Vec<String>,
    /// Files to place in the data directory (mode 0600, owned by the server), e.g. TLS keys.
    pub files: Vec<(String, Vec<u8>)>,
    /// Run `initdb` into this server's own directory instead of copying the shared cached template:
    /// nothing is left behind when the server is removed (the demo), at the cost of an `initdb`.
    pub private_initdb: bool,
}

/// The settings that give the lock-wait episodes full recall (docs/incidents.md, "The server's own
/// log"): a structured log pgswarm reads, a line naming the holders of every wait longer than
/// 100 ms, English messages. `csvlog` rather than `jsonlog` so that any server version starts with
/// them (pgswarm reads both).
pub fn lock_log_settings() -> Vec<(String, String)> {
    [
        ("logging_collector", "on"),
        ("log_destination", "'csvlog'"),
        ("log_lock_waits", "on"),
        ("deadlock_timeout", "'100ms'"),
        ("lc_messages", "'C'"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A running throwaway server; stopped and removed on drop.
pub struct TempCluster {
    root: PathBuf,
    bindir: PathBuf,
    port: u16,
    tcp: bool,
    watchdog: Option<(Child, ChildStdin)>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// What went wrong, with the fix in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

fn err(msg: impl Into<String>) -> ClusterError {
    ClusterError(msg.into())
}

/// Finds the PostgreSQL server binaries.
pub fn find_bindir() -> Result<PathBuf, ClusterError> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(d) = std::env::var("PGSWARM_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if has_server(&d) {
            Ok(d)
        } else {
            Err(err(format!(
                "PGSWARM_PG_BINDIR={} has no initdb/pg_ctl",
                d.display()
            )))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&d) {
            return Ok(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Some(d) = p.parent().filter(|d| has_server(d)) {
            return Ok(d.to_path_buf());
        }
    }
    Err(err(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found. Install them, e.g. \
         `apt-get install postgresql` on Debian/Ubuntu, or point PGSWARM_PG_BINDIR at their directory",
    ))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid/gid of the `postgres` OS user, via `getpwnam_r` (re-entrant: `getpwnam` returns a shared
/// static buffer another thread may overwrite).
fn postgres_user() -> Result<(u32, u32), ClusterError> {
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: every pointer is valid for the call: `pw` and `result` are locals, `buf` is
        // `buf.len()` writable bytes that outlive the call, and only `pw`'s plain integer fields
        // are read after it (its string pointers into `buf` are never followed).
        let (rc, found, uid, gid) = unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (rc, !result.is_null(), pw.pw_uid, pw.pw_gid)
        };
        match rc {
            0 if found => return Ok((uid, gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            0 => {
                return Err(err(
                    "running as root, but there is no `postgres` OS user to run the server as \
                     (initdb refuses root). Create it (`useradd --system postgres`) or run as a \
                     normal user",
                ))
            }
            e => {
                return Err(err(format!(
                    "cannot look up the `postgres` OS user: {}",
                    std::io::Error::from_raw_os_error(e)
                )))
            }
        }
    }
}

/// As root the server runs as `postgres`, which must be able to reach the temporary directory: a
/// private `TMPDIR` (mode 0700, as `mktemp -d` makes) fails deep inside initdb with a bare
/// "Permission denied" otherwise.
fn reachable_by(dir: &Path, uid: u32, gid: u32) -> Result<(), ClusterError> {
    use std::os::unix::fs::MetadataExt;
    for d in dir.ancestors() {
        let Ok(m) = std::fs::metadata(d) else {
            continue;
        };
        let mode = m.mode();
        let searchable = mode & 0o001 != 0
            || (m.uid() == uid && mode & 0o100 != 0)
            || (m.gid() == gid && mode & 0o010 != 0);
        if !searchable {
            return Err(err(format!(
                "the temporary directory {} is not reachable by the `postgres` OS user the \
                 throwaway server runs as ({} has mode {:o}). Make it searchable \
                 (`chmod 755 {}`) or point TMPDIR at a directory that is, such as /tmp",
                dir.display(),
                d.display(),
                mode & 0o7777,
                d.display()
            )));
        }
    }
    Ok(())
}

fn chown(path: &Path) -> Result<(), ClusterError> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = postgres_user()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| err(format!("chown {}: {e}", path.display())))
}

/// A command run as the server's OS user (through `runuser` when we are root).
fn server_command(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(cmd: impl std::borrow::BorrowMut<Command>, what: &str) -> Result<String, ClusterError> {
    let mut cmd = cmd;
    let out = cmd
        .borrow_mut()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{what}: cannot run: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> Result<u16, ClusterError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| err(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| err(e.to_string()))?.port())
}

/// `initdb` into `dir` (which the server user can create or write).
fn initdb(bindir: &Path, dir: &Path) -> Result<String, ClusterError> {
    let mut cmd = server_command(&bindir.join("initdb"));
    cmd.args(["-D"]).arg(dir).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "-N",
    ]);
    run(cmd, "initdb")
}

/// The cached `initdb` output for this binary directory (made once, shared by every cluster).
fn template(bindir: &Path) -> Result<PathBuf, ClusterError> {
    let version = run(
        Command::new(bindir.join("pg_ctl")).arg("--version"),
        "pg_ctl --version",
    )?;
    if is_root() {
        let (uid, gid) = postgres_user()?;
        reachable_by(&std::env::temp_dir(), uid, gid)?;
    }
    let tag: String = version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("pgswarm-template-{tag}-u{uid}"));
    if dir.join("PG_VERSION").is_file() {
        return Ok(dir);
    }
    let staging = std::env::temp_dir().join(format!(
        "pgswarm-template-staging-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&staging)
        .map_err(|e| err(format!("create {}: {e}", staging.display())))?;
    chown(&staging)?;
    let result = initdb(bindir, &staging);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // Another process may have won the race; either way a complete template now exists.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(dir)
}

/// Settings for a throwaway server (no fsync, its own port and socket directory), the TCP and HBA
/// rules asked for, and any extra files (certificates) with owner-only permissions.
fn configure(
    data: &Path,
    root: &Path,
    port: u16,
    opts: &ClusterOptions,
) -> Result<(), ClusterError> {
    let mut conf = format!(
        "\n# pgswarm throwaway server\nport = {}\nunix_socket_directories = '{}'\n\
         listen_addresses = '{}'\nfsync = off\nsynchronous_commit = off\n\
         full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 200\n\
         logging_collector = off\n",
        port,
        root.display(),
        if opts.tcp { "127.0.0.1" } else { "" }
    );
    for (k, v) in &opts.settings {
        conf.push_str(&format!("{k} = {v}\n"));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .map_err(|e| err(format!("write postgresql.conf: {e}")))?;
    if opts.tcp {
        let hba = if opts.tcp_hba.is_empty() {
            "host all all 127.0.0.1/32 trust\n".to_string()
        } else {
            opts.tcp_hba.join("\n") + "\n"
        };
        // Local (socket) trust first, then exactly the TCP rules asked for.
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\n{hba}"),
        )
        .map_err(|e| err(format!("write pg_hba.conf: {e}")))?;
    }
    for (name, contents) in &opts.files {
        use std::os::unix::fs::PermissionsExt;
        let path = data.join(name);
        std::fs::write(&path, contents)
            .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| err(format!("write {}: {e}", path.display())))?;
        chown(&path)?;
    }
    Ok(())
}

impl TempCluster {
    /// Starts a server (and creates `opts.databases`).
    pub fn start(opts: &ClusterOptions) -> Result<TempCluster, ClusterError> {
        let bindir = find_bindir()?;
        let template = if opts.private_initdb {
            None
        } else {
            Some(template(&bindir)?)
        };
        let root = std::env::temp_dir().join(format!(
            "pgswarm-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let data = root.join("data");
        std::fs::create_dir_all(&root)
            .map_err(|e| err(format!("create {}: {e}", root.display())))?;
        let mut cluster = TempCluster {
            root: root.clone(),
            bindir: bindir.clone(),
            port: free_port()?,
            tcp: opts.tcp,
            watchdog: None,
        };
        // From here on, dropping `cluster` cleans up whatever was made.
        cluster.arm_watchdog()?;
        match &template {
            Some(t) => {
                run(
                    Command::new("cp").arg("-a").arg(t).arg(&data),
                    "copy template data directory",
                )?;
                chown(&root)?;
            }
            None => {
                if is_root() {
                    let (uid, gid) = postgres_user()?;
                    reachable_by(&std::env::temp_dir(), uid, gid)?;
                }
                chown(&root)?;
                initdb(&bindir, &data)?;
            }
        }
        configure(&data, &root, cluster.port, opts)?;
        cluster.pg_ctl_start()?;
        for db in &opts.databases {
            cluster.psql("postgres", &format!("CREATE DATABASE \"{db}\""))?;
        }
        Ok(cluster)
    }

    /// `pg_ctl start`, waiting until the server accepts connections; on failure the error carries
    /// the server log.
    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let mut cmd = server_command(&self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.root.join("data"))
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        run(cmd, "pg_ctl start").map_err(|e| {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            err(format!("{e}\nserver log:\n{log}"))
        })?;
        Ok(())
    }

    fn arm_watchdog(&mut self) -> Result<(), ClusterError> {
        let pg_ctl = self.bindir.join("pg_ctl");
        let stop = if is_root() {
            format!(
                "runuser -u postgres -- '{}' -D '{}/data' stop -m immediate -w",
                pg_ctl.display(),
                self.root.display()
            )
        } else {
            format!(
                "'{}' -D '{}/data' stop -m immediate -w",
                pg_ctl.display(),
                self.root.display()
            )
        };
        let script = format!(
            "cat >/dev/null; if [ -f '{root}/data/postmaster.pid' ]; then {stop}; fi; rm -rf '{root}'",
            root = self.root.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| err(format!("cannot start the cleanup watchdog: {e}")))?;
        let stdin = child.stdin.take().expect("piped");
        self.watchdog = Some((child, stdin));
        Ok(())
    }

    /// The socket directory (also the libpq `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server binaries (and `pgbench`, `psql`) were found.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The postmaster's pid (for tests that check nothing is left running).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.root.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// A libpq key=value string for `dbname` as the superuser, over the Unix socket.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.root.display(),
            self.port
        )
    }

    /// A `postgres://` URL over TCP (only with `tcp: true`).
    pub fn tcp_url(&self, dbname: &str) -> Option<String> {
        self.tcp
            .then(|| format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port))
    }

    /// Runs SQL through `psql` (setup in tests and the demo); fails on the first error.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, ClusterError> {
        let mut c = Command::new(self.bindir.join("psql"));
        c.args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.root)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-c",
                sql,
            ]);
        run(c, "psql")
    }

    /// Stops the server but keeps its directory, so [`TempCluster::start_server`] can bring it back
    /// (tests of an outage).
    pub fn stop_server(&self) -> Result<(), ClusterError> {
        let mut cmd = server_command(&self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.root.join("data"))
            .args(["-w", "-m", "fast", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        run(cmd, "pg_ctl stop").map(drop)
    }

    /// Starts a server stopped with [`TempCluster::stop_server`] again.
    pub fn start_server(&self) -> Result<(), ClusterError> {
        self.pg_ctl_start()
    }

    /// Stops the server and removes its directory, waiting until both are done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_temp_dir_is_named_with_the_fix() {
        let base = tempfile::tempdir().unwrap();
        let private = base.path().join("private");
        std::fs::create_dir(&private).unwrap();
        // Owned by us but without any search bit: unreachable even for its owner's uid.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let e = reachable_by(&private.join("sub"), uid, gid).unwrap_err().0;
        assert!(e.contains(&private.display().to_string()), "{e}");
        assert!(e.contains("mode 600") && e.contains("chmod 755"), "{e}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(
            reachable_by(&private, uid, gid).is_ok(),
            "the owner may search 0700"
        );
    }
}
