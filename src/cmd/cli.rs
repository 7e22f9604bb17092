//! The command line: what each subcommand takes, with durations parsed into `Duration`s by the
//! argument parser itself (a bad value is a usage error naming it, before anything connects).
//!
//! Options that say where the databases are and how their names read (`--db`, `--config`, the
//! prefixes, `--connect-timeout`, `--read-only`) apply to every subcommand; the others belong to the
//! subcommands that use them. Help text wraps at the terminal width (or 80 columns in a pipe), so the
//! examples are kept short enough to survive it.

use crate::pg::config::parse_duration;
use crate::tui::app::{INTERVAL_MAX, INTERVAL_MIN};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  pgswarm demo
  pgswarm --db platform=postgres://db1/platform_test \\
          --db tenant=postgres://db2/tenant_test
  pgswarm snapshot --json --config pgswarm.toml | jq .blocking
  PGSWARM_DB='postgres://db1/a_test postgres://db2/b_test' \\
    pgswarm snapshot --fail-on-blocked
  pgswarm sweep --dry-run --config pgswarm.toml

Databases: --db [NAME=]CONNINFO (repeatable), else PGSWARM_DB (entries
separated by spaces; quote an entry, or a NAME=value's value, that has
spaces in '...' or \"...\": PGSWARM_DB=\"a='host=/tmp dbname=a' b=dbname=b\"),
else `databases` in --config, else one database from the libpq
environment (PGHOST, PGDATABASE, ...). CONNINFO is a postgres:// URL or a
libpq key=value string; NAME defaults to the database name.

Exit codes: 0 ok; 1 blocked sessions with --fail-on-blocked; 2 usage or
configuration error; 3 some database could not be read (the rest is still
reported); 4 (sweep, cancel, terminate) some action failed.";

const WATCH_HELP: &str = "\
Examples:
  pgswarm --config pgswarm.toml
  pgswarm watch --interval 500ms --bell --db platform=postgres://db1/p_test
  pgswarm watch --replay incident.jsonl
  pgswarm --server http://monitor:9187 --token-file ~/.pgswarm-token

Keys: ? in the dashboard lists them all. Exit codes: 0 done; 2 usage error
or no terminal (use `pgswarm snapshot`); 3 no database could ever be read.";

const DEMO_HELP: &str = "\
Examples:
  pgswarm demo
  pgswarm demo --no-tui
  pgswarm demo --db platform=postgres://localhost/demo_test \\
               --db tenant=postgres://localhost/tenant_demo_test

Starts a private PostgreSQL from the installed server binaries in a
temporary directory and removes it on exit; without server binaries it
replays the bundled recording.";

const RECORD_HELP: &str = "\
Examples:
  pgswarm record --out incident.jsonl --config pgswarm.toml
  pgswarm record --out ci.jsonl --duration 10m --max-bytes 50000000
  pgswarm watch --replay incident.jsonl

One `snapshot --json` document per line (and every snapshot in which a
lock wait starts or ends). Ended waits also go to the flight log (see
`pgswarm incidents --help`).";

const SNAPSHOT_HELP: &str = "\
Examples:
  pgswarm snapshot --config pgswarm.toml
  pgswarm snapshot --json | jq '.lock_trees[] | .root_pid'
  pgswarm snapshot --fail-on-blocked --db platform=postgres://db1/p_test
  pgswarm snapshot --replay incident.jsonl --at 12:04:31
  pgswarm snapshot --summary --json
  pgswarm snapshot --fail-on-public-write --shared-schema public

Exit codes: 0 ok; 1 blocked sessions with --fail-on-blocked, or a test session
writing into a shared schema with --fail-on-public-write; 2 usage error;
3 some database could not be read (the rest is still reported). JSON fields:
docs/json.md.";

/// Lock triage and fail-closed schema sweeping for parallel test runs on shared PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "pgswarm", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// For the dashboard when no subcommand is given.
    #[command(flatten)]
    pub interval: IntervalArg,
    /// For the dashboard when no subcommand is given (and for `watch`, `record`, `incidents` and
    /// `demo` when given before their name).
    #[command(flatten)]
    pub flight_log: FlightLogArg,
    /// For the dashboard when no subcommand is given.
    #[command(flatten)]
    pub server: DashboardServerArg,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the databases are and how test names read: every subcommand takes these.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// A database: [NAME=]CONNINFO (repeatable) [env: PGSWARM_DB, entries separated by spaces,
    /// an entry with spaces in '...' or "..."]
    #[arg(
        long = "db",
        value_name = "[NAME=]CONNINFO",
        global = true,
        help_heading = "Databases"
    )]
    pub db: Vec<String>,
    /// A SQLite test database to watch: a path or a glob such as 'tmp/prefect_gw*.db'
    /// (repeatable; Linux, from /proc/locks); works with no PostgreSQL database configured
    #[arg(
        long = "sqlite",
        value_name = "PATH",
        global = true,
        help_heading = "Databases"
    )]
    pub sqlite: Vec<String>,
    /// TOML file with `databases = [{ name, url }]` and the options below [default:
    /// $XDG_CONFIG_HOME/pgswarm/config.toml, else ~/.config/pgswarm/config.toml, when it exists]
    #[arg(
        long,
        value_name = "FILE",
        env = "PGSWARM_CONFIG",
        global = true,
        help_heading = "Databases"
    )]
    pub config: Option<PathBuf>,
    /// Bound on every connection attempt, TCP and startup together [default: 5s]
    #[arg(
        long,
        value_name = "DURATION",
        env = "PGSWARM_CONNECT_TIMEOUT",
        global = true,
        help_heading = "Databases"
    )]
    pub connect_timeout: Option<String>,
    /// Prefix of test application_names: PREFIX_WORKER_NAMESPACE[_SUFFIX] [default: pytest]
    #[arg(
        long,
        value_name = "PREFIX",
        env = "PGSWARM_APP_PREFIX",
        global = true,
        help_heading = "Naming convention"
    )]
    pub app_prefix: Option<String>,
    /// Prefix of test schemas: PREFIX_NAMESPACE_WORKER [default: test]
    #[arg(
        long,
        value_name = "PREFIX",
        env = "PGSWARM_SCHEMA_PREFIX",
        global = true,
        help_heading = "Naming convention"
    )]
    pub schema_prefix: Option<String>,
    /// A schema every run shares, where a test session's writes are public writes; repeatable
    /// (e.g. --shared-schema public --shared-schema reference) [default: public]
    #[arg(
        long = "shared-schema",
        value_name = "SCHEMA",
        global = true,
        help_heading = "Naming convention"
    )]
    pub shared_schema: Vec<String>,
    /// Never change anything: sweep, cancel and terminate refuse; the dashboard hides their keys
    #[arg(long, global = true, help_heading = "Safety")]
    pub read_only: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The live dashboard (the default without a command): invocations, lock trees, schemas
    #[command(after_help = WATCH_HELP)]
    Watch(WatchArgs),
    /// Poll every configured database once: lock trees, invocations, schemas (text or --json)
    #[command(after_help = SNAPSHOT_HELP)]
    Snapshot(SnapshotArgs),
    /// Drop stale test schemas, fail-closed: plan, confirm, drop one schema per transaction
    #[command(after_help = SWEEP_HELP)]
    Sweep(SweepArgs),
    /// A private PostgreSQL with a simulated agent swarm and real incidents, in the dashboard
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
    /// One watcher for the swarm: an HTTP API, live events and OpenMetrics for Prometheus
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Write one snapshot per tick as JSON Lines (for replay and incident review)
    #[command(after_help = RECORD_HELP)]
    Record(RecordArgs),
    /// Lock waits after the fact: who blocked which run, on what, and how it ended
    #[command(after_help = INCIDENTS_HELP)]
    Incidents(IncidentsArgs),
    /// Cancel the running statement of a session, or of a run's sessions (identity re-checked)
    #[command(after_help = CANCEL_HELP)]
    Cancel(SignalArgs),
    /// Terminate a session, or every session of a run on every server (identity re-checked)
    #[command(after_help = TERMINATE_HELP)]
    Terminate(SignalArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) of pgswarm, or of one of its commands
    #[command(after_help = MAN_HELP)]
    Man(ManArgs),
}

const COMPLETIONS_HELP: &str = "\
Examples:
  pgswarm completions bash > ~/.local/share/bash-completion/completions/pgswarm
  pgswarm completions zsh > ~/.zfunc/_pgswarm    # with fpath+=(~/.zfunc)
  pgswarm completions fish > ~/.config/fish/completions/pgswarm.fish

Generated from pgswarm's own flags: regenerate after an upgrade.";

const MAN_HELP: &str = "\
Examples:
  pgswarm man | man -l -
  pgswarm man > ~/.local/share/man/man1/pgswarm.1
  pgswarm man sweep > ~/.local/share/man/man1/pgswarm-sweep.1

Printed by the binary itself (nothing to build or install beside it).";

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// A command's own page (pgswarm-COMMAND(1)) instead of pgswarm(1)
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// The rules both signal commands follow, for their `--help`.
macro_rules! signal_rules {
    () => {
        "Planned like the sweep: pgswarm reads every configured server, lists exactly
the sessions it will signal (server, database, pid, label, state, whom each
blocks), asks on a terminal (or takes --yes), then sends each signal in one
statement that re-checks pid, backend_start and application_name, so a
reused pid or a relabeled session is skipped, never hit. Only client
backends; never pgswarm's own sessions; a session outside the naming
convention only by --pid. If any configured database cannot be read,
nothing is signalled (exit 3). Disabled by --read-only.

Exit codes: 0 done (signalled, gone or skipped); 2 usage error or read-only;
3 could not read every server, nothing signalled; 4 some signal failed.
JSON: docs/actions.md."
    };
}

const CANCEL_HELP: &str = concat!(
    "\
Examples:
  pgswarm cancel --pid 48213
  pgswarm cancel --pid 48213 --database platform --yes
  pgswarm cancel --namespace p4242t1795510800r0a1b2c3d --worker gw3

A cancel ends a running statement only: a session idle in transaction (the
usual root blocker) keeps its locks. The plan says so per session, and the
report lists it under released_nothing, never as cancelled: terminate it.

",
    signal_rules!()
);

const TERMINATE_HELP: &str = concat!(
    "\
Examples:
  pgswarm terminate --namespace p4242t1795510800r0a1b2c3d
  pgswarm terminate --namespace p4242t1795510800r0a1b2c3d --only-blocking --yes
  pgswarm terminate --pid 48213 --json --yes

A terminate waits up to 5 s for each backend to exit and reports whether it
did; its transaction rolls back and its locks are released.

",
    signal_rules!()
);

/// Whom `cancel` / `terminate` signal.
#[derive(Args, Debug)]
pub struct SignalArgs {
    /// One session by pid (any client session, in the naming convention or not)
    #[arg(
        long,
        value_name = "PID",
        required_unless_present = "namespace",
        // Declared as conflicts, not as `requires` on the narrowing flags: clap does not enforce
        // those here, and an ignored --worker would signal a session it was meant to exclude.
        conflicts_with_all = ["namespace", "worker", "only_blocking"]
    )]
    pub pid: Option<i32>,
    /// With --pid: the configured database whose server the pid is on (when several servers are
    /// configured)
    #[arg(long, value_name = "NAME", conflicts_with = "namespace")]
    pub database: Option<String>,
    /// Every session of this run (its namespace token), on every configured server
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// With --namespace: only this worker's sessions (gw0, master, ...)
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<String>,
    /// With --namespace: only the sessions that block someone
    #[arg(long)]
    pub only_blocking: bool,
    /// Plan only: show whom it would signal
    #[arg(long)]
    pub dry_run: bool,
    /// Signal without asking (required when stdin is not a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Print one JSON document (fields in docs/actions.md)
    #[arg(long)]
    pub json: bool,
}

/// `--interval`: 0.25 s to 60 s.
#[derive(Args, Debug, Clone)]
pub struct IntervalArg {
    /// Refresh interval, 0.25s to 60s
    #[arg(
        long,
        value_name = "DURATION",
        env = "PGSWARM_INTERVAL",
        default_value = "1s",
        value_parser = interval
    )]
    pub interval: Duration,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Replay a recording instead of polling (space play/pause, . , step, + - speed, [ ] seek)
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Ring the terminal bell when a wait between two invocations begins
    #[arg(long)]
    pub bell: bool,
    #[command(flatten)]
    pub flight_log: FlightLogArg,
    #[command(flatten)]
    pub interval: IntervalArg,
    #[command(flatten)]
    pub server: DashboardServerArg,
}

/// The dashboard reading a running `pgswarm serve` instead of the databases.
#[derive(Args, Debug, Clone, Default)]
pub struct DashboardServerArg {
    /// Show what a running `pgswarm serve` at URL sees (http://HOST:PORT): no database
    /// credentials needed; read-only (actions run where the databases are configured)
    #[arg(
        long = "server",
        id = "dashboard_server",
        value_name = "URL",
        env = "PGSWARM_SERVER"
    )]
    pub url: Option<String>,
    /// With --server: the file holding the bearer token the server wants
    #[arg(
        long = "token-file",
        id = "dashboard_token_file",
        value_name = "FILE",
        env = "PGSWARM_TOKEN_FILE",
        requires = "dashboard_server"
    )]
    pub token_file: Option<PathBuf>,
    /// With an https:// --server: trust this PEM CA certificate (e.g. serve's own self-signed
    /// --tls-cert) instead of the public roots
    #[arg(
        long = "server-ca",
        id = "dashboard_server_ca",
        value_name = "FILE",
        env = "PGSWARM_SERVER_CA",
        requires = "dashboard_server"
    )]
    pub server_ca: Option<PathBuf>,
}

/// Whether ended lock waits are appended to the flight log.
#[derive(Args, Debug, Clone, Default)]
pub struct FlightLogArg {
    /// Do not append ended lock waits to the flight log (see `pgswarm incidents --help`)
    #[arg(long)]
    pub no_flight_log: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Run only the simulator (no dashboard) until interrupted
    #[arg(long)]
    pub no_tui: bool,
    /// With --db: simulate against databases whose names do not look like test databases
    #[arg(long)]
    pub force: bool,
    /// Keep no log of the demo's lock waits (by default: demo-incidents.jsonl in the state
    /// directory, started afresh by each demo, never the real flight log)
    #[command(flatten)]
    pub flight_log: FlightLogArg,
    #[command(flatten)]
    pub interval: IntervalArg,
}

const SERVE_HELP: &str = "\
Polls every configured database for all its readers at once (like the
dashboard: incremental refresh, fast polls while anything waits), keeps the
flight log, and answers from memory: N agents cost the database one probe.
Clients: pgswarm snapshot --server URL, pgswarm incidents --server URL.

Endpoints: /api/v1/snapshot, /api/v1/summary, /api/v1/incidents
(?since=1h&namespace=&worker=), /api/v1/events (server-sent events, resume
with Last-Event-ID), /metrics (OpenMetrics), /healthz. Read-only.

Listens on 127.0.0.1:9187 by default. Any other address needs
--token-file (clients send Authorization: Bearer TOKEN); without one it
refuses to start (exit 2).

Examples:
  pgswarm serve --config pgswarm.toml
  pgswarm serve --listen 0.0.0.0:9187 --token-file /etc/pgswarm/token --log-format json
  curl -s localhost:9187/api/v1/summary
  curl -s localhost:9187/metrics

Exit codes: 0 stopped by SIGTERM or Ctrl-C; 2 usage error (address, token
file). Reference: docs/serve.md.";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (non-loopback needs --token-file)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9187")]
    pub listen: String,
    /// File holding the bearer token clients must send (required off loopback)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept cancel, terminate and sweep over the API (POST /api/v1/actions/plan, then
    /// /api/v1/actions/ID/confirm); needs --token-file, also on loopback
    #[arg(long)]
    pub allow_actions: bool,
    /// Format of the service log on stderr
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(flatten)]
    pub flight_log: FlightLogArg,
    #[command(flatten)]
    pub interval: IntervalArg,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The JSON Lines file to append to
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Stop after this long (default: until Ctrl-C or SIGTERM)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub duration: Option<Duration>,
    /// Stop once the file reaches this many bytes
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    #[command(flatten)]
    pub flight_log: FlightLogArg,
    #[command(flatten)]
    pub interval: IntervalArg,
}

const INCIDENTS_HELP: &str = "\
Every lock wait the dashboard, `record` or `incidents --follow` saw is kept
after it ends, with whom it waited behind and how it ended (acquired, gave
up, blocker gone, waiter gone, unknown). They are read from the flight log
($XDG_STATE_HOME/pgswarm/incidents.jsonl, or PGSWARM_INCIDENTS_LOG), or
built from a recording with --from.

Examples:
  pgswarm incidents --since 1h
  pgswarm incidents --namespace p4242t1795510800r0a1b2c3d
  pgswarm incidents --from run.jsonl --json | jq '.episodes[0]'
  pgswarm incidents --follow --json --config pgswarm.toml
  pgswarm incidents --follow --server http://monitor:9187
  pgswarm incidents --kind public-write --json

Writes of test sessions into shared schemas (public) are kept too: --kind
lock-wait or --kind public-write picks one kind (default both).

--follow polls like the dashboard (faster while anything waits) and says on
stderr when a database cannot be read: waits there are not seen meanwhile.
With --server it reads the server's event stream instead, and resumes where
it left off after the server comes back.

Exit codes: 0 done; 2 usage error or unreadable input; 3 (--server) the
server does not answer. JSON fields: docs/incidents.md.";

/// What `incidents --kind` picks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentKind {
    /// Lock-wait episodes
    LockWait,
    /// Writes of test sessions into shared schemas
    PublicWrite,
}

#[derive(Args, Debug)]
pub struct IncidentsArgs {
    /// Only episodes that ended (or were last seen) within this long
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub since: Option<Duration>,
    /// Only episodes of this run: its sessions waiting, or blocking others
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Only this kind of incident: lock-wait or public-write [default: both]
    #[arg(long, value_name = "KIND", value_enum)]
    pub kind: Option<IncidentKind>,
    /// Only episodes in which this worker (gw0, master, ...) waited or blocked
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<String>,
    /// Build the episodes from a recording instead of the flight log
    #[arg(long, value_name = "RECORDING", conflicts_with = "follow")]
    pub from: Option<PathBuf>,
    /// Poll the configured databases and print each episode as it ends, until interrupted
    #[arg(long)]
    pub follow: bool,
    /// JSON: one document ({"schema_version":1,"episodes":[...]}); with --follow one episode per line
    #[arg(long)]
    pub json: bool,
    /// The flight log to read (default: PGSWARM_INCIDENTS_LOG, else the state directory)
    #[arg(long, value_name = "FILE", conflicts_with = "from")]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub flight_log: FlightLogArg,
    #[command(flatten)]
    pub interval: IntervalArg,
    /// Read the lock waits a running `pgswarm serve` at URL remembers instead of the flight log
    #[arg(long = "server", value_name = "URL", env = "PGSWARM_SERVER", conflicts_with_all = ["from", "log"])]
    pub server: Option<String>,
    /// With --server: the file holding the bearer token the server wants
    #[arg(
        long = "token-file",
        value_name = "FILE",
        env = "PGSWARM_TOKEN_FILE",
        requires = "server"
    )]
    pub token_file: Option<PathBuf>,
    /// With an https:// --server: trust this PEM CA certificate (e.g. serve's own self-signed
    /// --tls-cert) instead of the public roots
    #[arg(
        long = "server-ca",
        id = "incidents_server_ca",
        value_name = "FILE",
        env = "PGSWARM_SERVER_CA",
        requires = "server"
    )]
    pub server_ca: Option<PathBuf>,
}

const SWEEP_HELP: &str = "\
A schema is dropped only if the live set of namespaces was read from EVERY
configured database, no session of its namespace is connected anywhere, its
namespace token is older than --min-age, and nothing outside it would be
removed with it. Everything else is kept, with the reason in the output.

Examples:
  pgswarm sweep --dry-run --config pgswarm.toml
  pgswarm sweep --yes --json --config pgswarm.toml > sweep.json

Exit codes: 0 done, no failure (also when nothing was stale); 2 usage error;
3 the live set could not be established, nothing dropped; 4 some drops
failed or could not run. Guarantees and JSON: docs/sweep.md.";

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Plan only: show what would be dropped and why the rest is kept
    #[arg(long)]
    pub dry_run: bool,
    /// Drop without asking (required when stdin is not a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Print one JSON document (fields in docs/sweep.md)
    #[arg(long)]
    pub json: bool,
    /// Keep namespaces whose token is younger than this
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
    pub min_age: Duration,
    /// Also drop forced (debug) namespaces, whose age is unknown
    #[arg(long)]
    pub include_forced: bool,
    /// Also drop legacy {prefix}_gwN schemas, whose owner is unknown
    #[arg(long)]
    pub include_legacy: bool,
    /// Sweep even when a session carries the prefix but no attributable namespace
    #[arg(long)]
    pub allow_unattributed: bool,
    /// lock_timeout of each drop transaction
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = server_timeout)]
    pub lock_timeout: Duration,
    /// statement_timeout of each drop transaction
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = server_timeout)]
    pub statement_timeout: Duration,
    /// Servers swept in parallel (one drop at a time per server)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Print the state recorded in FILE (with --at) instead of polling
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// With --replay: RFC 3339 time, HH:MM:SS (UTC) or +90s from the start, within the recording
    /// [default: the end]
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub at: Option<String>,
    /// Print one JSON document (fields in docs/json.md)
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when any session is blocked
    #[arg(long)]
    pub fail_on_blocked: bool,
    /// Exit 1 when a test session writes into a shared schema (`public`, or --shared-schema):
    /// the search_path fall-through, caught from the locks its open transaction holds
    #[arg(long)]
    pub fail_on_public_write: bool,
    /// Exact schema sizes (pg_total_relation_size, a brief lock per table) instead of the
    /// planner's estimates; costs most of a snapshot's server time when many test tables exist
    #[arg(long, conflicts_with = "replay")]
    pub exact_sizes: bool,
    /// One line (with --json: one small JSON object): blocked sessions, collisions, the longest
    /// wait and each lock table's fill; reads only the waiting sessions and their blockers
    #[arg(long, conflicts_with_all = ["replay", "exact_sizes"])]
    pub summary: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

/// Reading a running `pgswarm serve` instead of the databases.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArg {
    /// Read a running `pgswarm serve` at URL (http://HOST:PORT) instead of the databases: no
    /// database credentials needed, same output and exit codes
    #[arg(long = "server", value_name = "URL", env = "PGSWARM_SERVER", conflicts_with_all = ["replay", "exact_sizes"])]
    pub url: Option<String>,
    /// With --server: the file holding the bearer token the server wants
    #[arg(
        long = "token-file",
        value_name = "FILE",
        env = "PGSWARM_TOKEN_FILE",
        requires = "url"
    )]
    pub token_file: Option<PathBuf>,
    /// With an https:// --server: trust this PEM CA certificate (e.g. serve's own self-signed
    /// --tls-cert) instead of the public roots
    #[arg(
        long = "server-ca",
        id = "server_ca",
        value_name = "FILE",
        env = "PGSWARM_SERVER_CA",
        requires = "url"
    )]
    pub server_ca: Option<PathBuf>,
}

/// A duration: `5s`, `500ms`, `2m`, `1h 30m`, or a bare number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    parse_duration("duration", s).map_err(|e| e.to_string())
}

/// A refresh interval, 0.25 s to 60 s.
fn interval(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if (INTERVAL_MIN..=INTERVAL_MAX).contains(&d) => Ok(d),
        _ => Err(format!("use 0.25s to 60s, not {s:?}")),
    }
}

/// A timeout PostgreSQL accepts: positive (a drop must never wait forever) and at most
/// INT_MAX milliseconds (about 24.8 days).
fn server_timeout(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        Err("must be positive: a drop must never wait forever".into())
    } else if d > Duration::from_millis(i32::MAX as u64) {
        Err("must be at most 24 days: PostgreSQL refuses longer timeouts".into())
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_parsed_and_bounded() {
        assert_eq!(interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(interval("0.1s").is_err());
        assert!(interval("2m").is_err());
        assert_eq!(server_timeout("30s"), Ok(Duration::from_secs(30)));
        assert!(server_timeout("0s").unwrap_err().contains("positive"));
        assert!(server_timeout("100000h").unwrap_err().contains("24 days"));
        assert!(duration("soon").unwrap_err().contains("\"soon\""));
    }
}
