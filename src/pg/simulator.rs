//! A swarm of simulated test runs, for the demo and benchmarks: real sessions, real locks.
//!
//! Several invocations with several workers each connect with labeled `application_name`s, create
//! their namespaced schemas (with a realistic number of tables) in the platform and a tenant database,
//! and run ordinary test traffic. On a repeating schedule the incidents from the seed write-up happen
//! for real: a cross-invocation lock collision on a shared table in `public`, a chain of three, an
//! `idle in transaction` blocker, queued DDL that makes readers wait, an invocation that crashes and
//! leaves orphaned schemas everywhere; there is also a legacy `test_gwN` schema and a forced debug
//! namespace. Everything stops when the stop signal flips; dropped connections roll back on the server.

use crate::domain::snapshot::Convention;
use crate::pg::connect::{connect, describe_error, SessionSettings};
use crate::pg::conninfo::Environment;
use crate::pg::probe::DbTarget;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_postgres::Client;

/// How long a simulated worker pauses between its small statements.
const WORKER_PAUSE: Duration = Duration::from_millis(400);
/// How long an incident waits for one session to queue before the next joins (so the lock queue has
/// the intended order).
const QUEUE_SETTLE: Duration = Duration::from_millis(300);

/// How big the simulated swarm is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub invocations: usize,
    pub workers: usize,
    pub tables_per_schema: usize,
    /// Time between incidents.
    pub incident_every: Duration,
    /// How long an incident holds its locks.
    pub incident_hold: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            invocations: 3,
            workers: 3,
            tables_per_schema: 16,
            incident_every: Duration::from_secs(4),
            incident_hold: Duration::from_secs(12),
        }
    }
}

/// The simulator: databases\[0\] is the platform database, the rest are tenants.
pub struct Simulator {
    pub databases: Vec<DbTarget>,
    pub convention: Convention,
    pub config: SimConfig,
    pub env: Arc<dyn Environment + Send + Sync>,
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// A generated namespace token for a run that started `age` ago.
pub fn make_namespace(age: Duration) -> String {
    let pid = 10_000 + random_u32() % 90_000;
    let epoch = chrono::Utc::now().timestamp() - age.as_secs() as i64;
    format!("p{pid}t{epoch}r{:08x}", random_u32())
}

impl Simulator {
    async fn session(&self, db: usize, app: &str) -> Result<Client, String> {
        let settings = SessionSettings {
            application_name: app.to_string(),
            // Test sessions wait for locks as long as it takes; no monitor timeouts here.
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::ZERO,
            read_only: false,
            ..SessionSettings::default()
        };
        connect(&self.databases[db].target, &settings, self.env.as_ref())
            .await
            .map_err(|e| format!("{}: {}", self.databases[db].name, e.message))
    }

    fn app(&self, worker: &str, ns: &str, suffix: Option<&str>) -> String {
        let mut a = format!("{}_{worker}_{ns}", self.convention.app_prefix);
        if let Some(s) = suffix {
            a.push('_');
            a.push_str(s);
        }
        a
    }

    fn schema(&self, ns: &str, worker: &str) -> String {
        format!("{}_{ns}_{worker}", self.convention.schema_prefix)
    }

    /// Shared tables every database has, and the legacy schema.
    pub async fn setup(&self) -> Result<(), String> {
        for db in 0..self.databases.len() {
            let c = self.session(db, "pgswarm_demo_setup").await?;
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS public.shared_counters (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
                 INSERT INTO public.shared_counters SELECT g, 0 FROM pg_catalog.generate_series(1, 10) g ON CONFLICT DO NOTHING;
                 CREATE TABLE IF NOT EXISTS public.chain_a (id int);
                 CREATE TABLE IF NOT EXISTS public.chain_b (id int);
                 CREATE TABLE IF NOT EXISTS public.catalog (id int);",
            )
            .await
            .map_err(|e| describe_error(&e))?;
        }
        let legacy = format!("{}_gw7", self.convention.schema_prefix);
        let c = self.session(0, "pgswarm_demo_setup").await?;
        c.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {legacy}; CREATE TABLE IF NOT EXISTS {legacy}.leftover (id int)"
        ))
        .await
        .map_err(|e| describe_error(&e))?;
        Ok(())
    }

    async fn create_schema(&self, c: &Client, schema: &str) -> Result<(), String> {
        c.batch_execute(&format!(
            "DO $$ BEGIN EXECUTE pg_catalog.format('CREATE SCHEMA IF NOT EXISTS %I', '{schema}'); \
             FOR i IN 0..{} LOOP \
               EXECUTE pg_catalog.format('CREATE TABLE IF NOT EXISTS %I.%I (id serial PRIMARY KEY, name text, created int)', '{schema}', 't' || i); \
             END LOOP; END $$",
            self.config.tables_per_schema as i64 - 1
        ))
        .await
        .map_err(|e| describe_error(&e))
    }

    /// Starts a live invocation: each worker connects to the platform and one tenant database,
    /// creates its schemas and runs traffic until `stop`.
    async fn start_invocation(
        self: &Arc<Self>,
        ns: &str,
        workers: &[&str],
        tasks: &mut JoinSet<()>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), String> {
        for (i, w) in workers.iter().enumerate() {
            let tenant = 1 + (i % (self.databases.len() - 1).max(1));
            let schema = self.schema(ns, w);
            for db in [0, tenant.min(self.databases.len() - 1)] {
                let c = self.session(db, &self.app(w, ns, None)).await?;
                self.create_schema(&c, &schema).await?;
                let mut stop = stop.clone();
                let table = format!("{schema}.t0");
                tasks.spawn(async move {
                    loop {
                        let _ = c
                            .batch_execute(&format!(
                                "INSERT INTO {table} (name, created) VALUES ('x', 1); \
                                 SELECT pg_catalog.count(*) FROM {table}"
                            ))
                            .await;
                        tokio::select! {
                            _ = tokio::time::sleep(WORKER_PAUSE) => {}
                            _ = stop.changed() => return,
                        }
                    }
                });
            }
        }
        Ok(())
    }

    /// Creates an invocation's schemas in every database and "crashes" (closes its connections).
    async fn crash_invocation(&self) -> Result<String, String> {
        let ns = make_namespace(Duration::from_secs(20 * 60));
        for w in ["gw0", "gw1"] {
            for db in 0..self.databases.len() {
                let c = self.session(db, &self.app(w, &ns, None)).await?;
                self.create_schema(&c, &self.schema(&ns, w)).await?;
                drop(c);
            }
        }
        Ok(ns)
    }

    /// Runs one incident: sessions take their locks, hold them for `incident_hold`, release.
    async fn incident(&self, kind: usize, ns: &[String]) -> Result<(), String> {
        let (a, b, c) = (&ns[0], &ns[1 % ns.len()], &ns[2 % ns.len()]);
        match kind {
            0 => self.collision(a, b).await,
            1 => self.chain_of_three(a, b, c).await,
            2 => self.idle_row_holder(b, c).await,
            _ => self.queued_ddl(a, b, c).await,
        }
    }

    /// A cross-invocation collision on a shared table in public.
    async fn collision(&self, a: &str, b: &str) -> Result<(), String> {
        let hold = self.config.incident_hold;
        let holder = self
            .session(0, &self.app("gw0", a, Some("fixture")))
            .await?;
        holder
            .batch_execute("BEGIN; LOCK TABLE public.shared_counters IN SHARE ROW EXCLUSIVE MODE")
            .await
            .map_err(|e| describe_error(&e))?;
        let waiter = self.session(0, &self.app("gw1", b, None)).await?;
        let w = tokio::spawn(async move {
            waiter
                .batch_execute("UPDATE public.shared_counters SET n = n + 1 WHERE id = 1")
                .await
        });
        tokio::time::sleep(hold).await;
        let _ = holder.batch_execute("ROLLBACK").await;
        let _ = w.await;
        Ok(())
    }

    /// A chain of three across invocations.
    async fn chain_of_three(&self, a: &str, b: &str, c: &str) -> Result<(), String> {
        let hold = self.config.incident_hold;
        let x = self.session(0, &self.app("gw0", c, None)).await?;
        x.batch_execute("BEGIN; LOCK TABLE public.chain_a IN ACCESS EXCLUSIVE MODE")
            .await
            .map_err(|e| describe_error(&e))?;
        let y = self.session(0, &self.app("gw1", a, None)).await?;
        y.batch_execute("BEGIN; LOCK TABLE public.chain_b IN ACCESS EXCLUSIVE MODE")
            .await
            .map_err(|e| describe_error(&e))?;
        let yt = tokio::spawn(async move {
            let r = y
                .batch_execute("LOCK TABLE public.chain_a IN ACCESS EXCLUSIVE MODE")
                .await;
            let _ = y.batch_execute("ROLLBACK").await;
            r
        });
        tokio::time::sleep(QUEUE_SETTLE).await;
        let z = self.session(0, &self.app("gw2", b, None)).await?;
        let zt = tokio::spawn(async move {
            z.batch_execute("SELECT pg_catalog.count(*) FROM public.chain_b")
                .await
        });
        tokio::time::sleep(hold).await;
        let _ = x.batch_execute("ROLLBACK").await;
        let _ = yt.await;
        let _ = zt.await;
        Ok(())
    }

    /// An idle-in-transaction blocker holding a row.
    async fn idle_row_holder(&self, b: &str, c: &str) -> Result<(), String> {
        let hold = self.config.incident_hold;
        let idle = self.session(0, &self.app("gw0", b, Some("setup"))).await?;
        idle.batch_execute("BEGIN; SELECT * FROM public.shared_counters WHERE id = 2 FOR UPDATE")
            .await
            .map_err(|e| describe_error(&e))?;
        let waiter = self.session(0, &self.app("gw1", c, None)).await?;
        let w = tokio::spawn(async move {
            waiter
                .batch_execute("UPDATE public.shared_counters SET n = n + 1 WHERE id = 2")
                .await
        });
        tokio::time::sleep(hold).await;
        let _ = idle.batch_execute("ROLLBACK").await;
        let _ = w.await;
        Ok(())
    }

    /// Queued DDL: a reader holds the table, a migration waits, later readers queue behind it.
    async fn queued_ddl(&self, a: &str, b: &str, c: &str) -> Result<(), String> {
        let hold = self.config.incident_hold;
        let reader = self.session(1, &self.app("gw2", a, None)).await?;
        reader
            .batch_execute("BEGIN; SELECT pg_catalog.count(*) FROM public.catalog")
            .await
            .map_err(|e| describe_error(&e))?;
        let ddl = self
            .session(1, &self.app("gw1", b, Some("migrate")))
            .await?;
        let d = tokio::spawn(async move {
            let r = ddl
                .batch_execute("ALTER TABLE public.catalog ADD COLUMN IF NOT EXISTS note text")
                .await;
            let _ = ddl
                .batch_execute("ALTER TABLE public.catalog DROP COLUMN IF EXISTS note")
                .await;
            r
        });
        tokio::time::sleep(QUEUE_SETTLE).await;
        let late = self.session(1, &self.app("gw0", c, None)).await?;
        let l = tokio::spawn(async move {
            late.batch_execute("SELECT pg_catalog.count(*) FROM public.catalog")
                .await
        });
        tokio::time::sleep(hold).await;
        let _ = reader.batch_execute("COMMIT").await;
        let _ = d.await;
        let _ = l.await;
        Ok(())
    }

    /// Runs the swarm until `stop` flips to true. Errors are logged and the schedule goes on.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> Result<(), String> {
        self.setup().await?;
        let mut tasks = JoinSet::new();
        let mut live = Vec::new();
        for i in 0..self.config.invocations.max(3) {
            let ns = make_namespace(Duration::from_secs(60 * (i as u64 + 1)));
            let workers: Vec<String> = (0..self.config.workers).map(|w| format!("gw{w}")).collect();
            let refs: Vec<&str> = workers.iter().map(String::as_str).collect();
            self.start_invocation(&ns, &refs, &mut tasks, &stop).await?;
            live.push(ns);
        }
        // A forced debug namespace, run by hand without xdist.
        self.start_invocation("mydebug", &["master"], &mut tasks, &stop)
            .await?;
        self.crash_invocation().await?;
        let mut stop_rx = stop.clone();
        let mut n = 0usize;
        loop {
            // Incidents overlap: each runs in its own task, a new one starts every `incident_every`.
            let me = Arc::clone(&self);
            let live2 = live.clone();
            let kind = n % 4;
            tasks.spawn(async move {
                if let Err(e) = me.incident(kind, &live2).await {
                    tracing::warn!(error = %e, kind, "demo incident failed");
                }
            });
            if n % 6 == 5 {
                if let Err(e) = self.crash_invocation().await {
                    tracing::warn!(error = %e, "demo crash failed");
                }
            }
            n += 1;
            tokio::select! {
                _ = tokio::time::sleep(self.config.incident_every) => {}
                _ = stop_rx.changed() => break,
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}
