//! libpq connection rules against real servers: sslmode semantics and password files.
//!
//! The servers' pg_hba.conf decides: a `hostssl`-only server refuses plaintext, so a successful
//! connection proves TLS was used; a `scram-sha-256` server proves the password came from the file.

mod common;

use common::pki::{make_pki, Pki};
use common::*;
use pgswarm::domain::snapshot::Snapshot;
use pgswarm::pg::cluster::ClusterOptions;
use pgswarm::pg::conninfo::ProcessEnv;

/// A server that accepts TCP clients only over TLS (hostssl), with `pki`'s certificate: a successful
/// connection proves TLS was used.
fn start_tls_only_server(pki: &Pki) -> pgswarm::pg::cluster::TempCluster {
    start_cluster(
        &["app"],
        ClusterOptions {
            tcp: true,
            tcp_hba: vec!["hostssl all all 127.0.0.1/32 trust".into()],
            settings: vec![
                ("ssl".into(), "on".into()),
                ("ssl_cert_file".into(), "'server.crt'".into()),
                ("ssl_key_file".into(), "'server.key'".into()),
            ],
            files: vec![
                ("server.crt".into(), pki.cert_pem.clone().into_bytes()),
                ("server.key".into(), pki.key_pem.clone().into_bytes()),
            ],
            ..Default::default()
        },
    )
}

async fn reach(conninfo: &str) -> (bool, Option<String>) {
    let s: Snapshot =
        pgswarm::cmd::snapshot::take_snapshot(&settings(&[entry("db", conninfo)]), &ProcessEnv)
            .await;
    (s.databases[0].reachable, s.databases[0].error.clone())
}

#[tokio::test]
async fn sslmodes_have_libpq_meaning() {
    // The certificate names only "db.internal": right CA, wrong host name for 127.0.0.1.
    let pki = make_pki(&["db.internal"]);
    let srv = start_tls_only_server(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, make_pki(&["x"]).ca_pem).unwrap();
    let base = format!(
        "host=127.0.0.1 port={} user=postgres dbname=app",
        srv.port()
    );

    // The server only accepts TLS: plaintext is refused by pg_hba.conf.
    let (ok, e) = reach(&format!("{base} sslmode=disable")).await;
    assert!(!ok, "plaintext must be refused");
    assert!(e.unwrap().contains("no encryption"));
    // prefer and require encrypt without checking the (self-signed-CA) certificate, like libpq.
    assert!(reach(&format!("{base} sslmode=prefer")).await.0);
    assert!(reach(&format!("{base} sslmode=require")).await.0);
    assert!(
        reach(&format!("{base} sslmode=allow")).await.0,
        "allow falls back to TLS"
    );
    // verify-ca checks the chain only.
    let ca_s = ca.display();
    assert!(
        reach(&format!("{base} sslmode=verify-ca sslrootcert={ca_s}"))
            .await
            .0
    );
    let (ok, e) = reach(&format!(
        "{base} sslmode=verify-ca sslrootcert={}",
        other_ca.display()
    ))
    .await;
    assert!(!ok, "an unknown CA must fail verify-ca");
    assert!(e.unwrap().to_lowercase().contains("certificate"));
    // verify-full also checks the host name: 127.0.0.1 is not db.internal.
    let (ok, e) = reach(&format!("{base} sslmode=verify-full sslrootcert={ca_s}")).await;
    assert!(!ok, "host name mismatch must fail verify-full");
    assert!(e.unwrap().to_lowercase().contains("certificate"));
    // A missing root file is a clear error.
    let (ok, e) = reach(&format!(
        "{base} sslmode=verify-ca sslrootcert=/nonexistent/root.crt"
    ))
    .await;
    assert!(!ok);
    assert!(e.unwrap().contains("/nonexistent/root.crt"));
}

#[tokio::test]
async fn verify_full_accepts_a_matching_host_name() {
    let pki = make_pki(&["localhost", "127.0.0.1"]);
    let srv = start_tls_only_server(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (ok, e) = reach(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=app sslmode=verify-full sslrootcert={}",
        srv.port(),
        ca.display()
    ))
    .await;
    assert!(ok, "{e:?}");
}

#[tokio::test]
async fn prefer_falls_back_to_plaintext_and_require_does_not() {
    let srv = start_cluster(
        &["app"],
        ClusterOptions {
            tcp: true,
            ..Default::default()
        },
    );
    let base = format!(
        "host=127.0.0.1 port={} user=postgres dbname=app",
        srv.port()
    );
    assert!(reach(&format!("{base} sslmode=prefer")).await.0);
    let (ok, e) = reach(&format!("{base} sslmode=require")).await;
    assert!(!ok);
    assert!(e.is_some());
}

#[tokio::test]
async fn password_file_is_used_and_its_permissions_are_enforced() {
    use std::os::unix::fs::PermissionsExt;
    let srv = start_cluster(
        &["app"],
        ClusterOptions {
            tcp: true,
            tcp_hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
            ..Default::default()
        },
    );
    srv.psql(
        "postgres",
        "CREATE ROLE alice LOGIN PASSWORD 'pw:with\\colon'",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    let port = srv.port();
    std::fs::write(
        &pgpass,
        format!("# test\n127.0.0.1:{port}:app:alice:pw\\:with\\\\colon\n"),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = format!(
        "host=127.0.0.1 port={port} user=alice dbname=app sslmode=disable passfile={}",
        pgpass.display()
    );
    let (ok, e) = reach(&base).await;
    assert!(ok, "password from the file: {e:?}");

    // Group-readable: ignored, as libpq does, and the error says why.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, e) = reach(&base).await;
    assert!(!ok);
    let e = e.unwrap();
    assert!(e.contains("group or world access"), "{e}");
    assert!(!e.contains("with"), "no password in messages: {e}");

    // A wrong explicit password: authentication failure, password not echoed.
    let (ok, e) = reach(&format!("{base} password=WrongPassword9")).await;
    assert!(!ok);
    let e = e.unwrap();
    assert!(e.contains("28P01"), "{e}");
    assert!(!e.contains("WrongPassword9"));
}
