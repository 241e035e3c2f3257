//! Group commit for UDAP registrations on SQLite.
//!
//! Each registration must be durable before its `client_id` is returned, and on SQLite a durable commit is
//! an fsync of the WAL (a few hundred microseconds) taken on the one writer connection. Committed one by
//! one, registrations arriving together queue for that fsync and throughput stops at one registration per
//! fsync. Here they are handed to one task that stores whatever has arrived in a single transaction, each
//! registration in its own savepoint (one that fails is undone alone), and answers each caller only after
//! the commit. A lone registration pays the same one commit as before.

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{begin_write, json_arg, register_udap_tx};
use crate::backend::ts;
use crate::model::{JtiRecord, RegistrationChange, RegistrationOutcome, UdapRegistration};
use crate::StoreError;
use sqlx::SqlitePool;

/// Most registrations stored by one commit.
const MAX_GROUP: usize = 64;
/// Registrations waiting for the writer task (callers wait for room beyond this).
const QUEUE: usize = 1024;

/// A registration handed to the writer task: owned, since the task outlives the caller's borrows.
pub(super) struct Job {
    jti: JtiRecord,
    community: String,
    iss: String,
    change: Change,
    now: OffsetDateTime,
    reply: oneshot::Sender<Result<RegistrationOutcome, StoreError>>,
}

enum Change {
    Upsert {
        new_client_id: String,
        secret_hash: Option<String>,
        metadata: serde_json::Value,
    },
    Cancel,
}

impl Job {
    fn new(
        r: &UdapRegistration<'_>,
        now: OffsetDateTime,
    ) -> (
        Job,
        oneshot::Receiver<Result<RegistrationOutcome, StoreError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let change = match r.change {
            RegistrationChange::Upsert {
                new_client_id,
                secret_hash,
                metadata,
            } => Change::Upsert {
                new_client_id: new_client_id.to_owned(),
                secret_hash: secret_hash.map(str::to_owned),
                metadata: metadata.clone(),
            },
            RegistrationChange::Cancel => Change::Cancel,
        };
        let job = Job {
            jti: r.statement_jti.clone(),
            community: r.community.to_owned(),
            iss: r.iss.to_owned(),
            change,
            now,
            reply,
        };
        (job, answer)
    }

    fn registration(&self) -> UdapRegistration<'_> {
        UdapRegistration {
            statement_jti: &self.jti,
            community: &self.community,
            iss: &self.iss,
            change: match &self.change {
                Change::Upsert {
                    new_client_id,
                    secret_hash,
                    metadata,
                } => RegistrationChange::Upsert {
                    new_client_id,
                    secret_hash: secret_hash.as_deref(),
                    metadata,
                },
                Change::Cancel => RegistrationChange::Cancel,
            },
        }
    }
}

/// The sending side, kept by the store.
#[derive(Clone, Debug)]
pub(super) struct Registrations {
    tx: mpsc::Sender<Job>,
}

impl Registrations {
    /// Starts the writer task on the current runtime; it ends when the last store clone is dropped.
    pub(super) fn start(writer: SqlitePool) -> Registrations {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, rx));
        Registrations { tx }
    }

    pub(super) async fn register(
        &self,
        r: &UdapRegistration<'_>,
        now: OffsetDateTime,
    ) -> Result<RegistrationOutcome, StoreError> {
        let (job, answer) = Job::new(r, now);
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::Database("the registration writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Database("the registration writer has stopped".into()))?
    }
}

async fn run(writer: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    // Whatever queued while the previous group was committing forms the next group: no waiting for
    // more, so a lone registration is not delayed.
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let results = commit_group(&writer, &jobs).await;
        for (job, result) in jobs.drain(..).zip(results) {
            // A caller that went away still had its registration stored, as a dropped request
            // whose commit had started always could.
            let _ = job.reply.send(result);
        }
    }
}

/// Stores `jobs` in one transaction; one result per job, in order. A registration that fails is rolled
/// back to its savepoint and the others still commit; a failed begin or commit fails them all.
async fn commit_group(
    writer: &SqlitePool,
    jobs: &[Job],
) -> Vec<Result<RegistrationOutcome, StoreError>> {
    let all_fail = |e: StoreError| jobs.iter().map(|_| Err(e.clone())).collect::<Vec<_>>();
    let mut tx = match begin_write(writer).await {
        Ok(tx) => tx,
        Err(e) => return all_fail(e),
    };
    let mut results = Vec::with_capacity(jobs.len());
    if let [job] = jobs {
        results.push(match register_one(&mut tx, job, Savepoint::None).await {
            Ok(result) => result,
            Err(e) => Err(e),
        });
        if results[0].is_err() {
            return results;
        }
    } else {
        // Each registration releases the previous one's savepoint in the same round trip; the commit
        // releases the last.
        for (i, job) in jobs.iter().enumerate() {
            let sp = if i == 0 {
                Savepoint::First
            } else {
                Savepoint::Next
            };
            // A failed savepoint statement leaves no savepoint of this registration to roll back to:
            // the whole group fails rather than roll back another registration's writes.
            let result = match register_one(&mut tx, job, sp).await {
                Ok(result) => result,
                Err(e) => return all_fail(e),
            };
            if result.is_err() {
                if let Err(e) = savepoint(&mut tx, "ROLLBACK TO registration").await {
                    return all_fail(e);
                }
            }
            results.push(result);
        }
    }
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => all_fail(e.into()),
    }
}

/// Which savepoint statements go before a registration's own.
#[derive(Clone, Copy)]
enum Savepoint {
    /// A lone registration: the transaction is its own.
    None,
    /// The group's first: opens its savepoint.
    First,
    /// A later one: releases the previous registration's savepoint and opens its own.
    Next,
}

/// One registration inside the group's transaction, in one round trip to the connection's worker
/// thread where it can be: a create or update is sent as one batch of statements (the savepoint, the
/// statement's `jti`, then the client upsert, which runs only if the `jti` was fresh). A cancellation,
/// rare, takes the shared path.
/// The outer error is a failed savepoint statement; the inner result is the registration's.
async fn register_one(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    job: &Job,
    sp: Savepoint,
) -> Result<Result<RegistrationOutcome, StoreError>, StoreError> {
    use futures_util::TryStreamExt;
    let Change::Upsert {
        new_client_id,
        secret_hash,
        metadata,
    } = &job.change
    else {
        match sp {
            Savepoint::None => {}
            Savepoint::First => savepoint(tx, "SAVEPOINT registration").await?,
            Savepoint::Next => {
                savepoint(tx, "RELEASE registration; SAVEPOINT registration").await?
            }
        }
        return Ok(register_udap_tx(tx, &job.registration(), job.now).await);
    };
    // The jti statement numbers its binds as `remember_jti_sql!` does ($2 now, $3 issuer, $4 jti,
    // $5 expiry). `changes()` is its count: 1 when the jti was new (or its old record expired).
    macro_rules! upsert_sql {
        () => {
            concat!(
                remember_jti_sql!(),
                "; INSERT INTO clients (",
                client_cols!(),
                ") SELECT $1, 'active', $6, $7, $8, $9, $10, $2, $2 WHERE changes() = 1",
                client_upsert_tail_sql!()
            )
        };
    }
    const UPSERT: &str = upsert_sql!();
    const FIRST: &str = concat!("SAVEPOINT registration; ", upsert_sql!());
    const NEXT: &str = concat!(
        "RELEASE registration; SAVEPOINT registration; ",
        upsert_sql!()
    );
    let (sql, first) = match sp {
        Savepoint::None => (UPSERT, 0),
        Savepoint::First => (FIRST, 1),
        Savepoint::Next => (NEXT, 2),
    };
    let metadata = match json_arg(metadata) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    // Several statements in one query: sqlx's SQLite driver runs them in turn on its worker (as
    // `claim_code` does; sqlx marks this deprecated for the other drivers' sake).
    #[allow(deprecated)]
    let mut results = sqlx::query(sql)
        .bind(new_client_id)
        .bind(ts(job.now))
        .bind(&job.jti.issuer)
        .bind(&job.jti.jti)
        .bind(ts(job.jti.expires_at))
        .bind(&job.community)
        .bind(&job.iss)
        .bind(secret_hash.as_deref())
        .bind(metadata)
        .bind(false)
        .fetch_many(&mut **tx);
    // Each statement's rows come before its summary: counting summaries tells whose a row is.
    let (mut statement, mut jti_fresh, mut client_id) = (0, false, None);
    loop {
        let item = match results.try_next().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) if statement < first => return Err(e.into()),
            Err(e) => return Ok(Err(e.into())),
        };
        match item {
            sqlx::Either::Left(done) => {
                if statement == first {
                    jti_fresh = done.rows_affected() == 1;
                }
                statement += 1;
            }
            sqlx::Either::Right(row) if statement == first + 1 => {
                match sqlx::Row::try_get::<String, _>(&row, "client_id") {
                    Ok(id) => client_id = Some(id),
                    Err(e) => return Ok(Err(e.into())),
                }
            }
            sqlx::Either::Right(_) => {
                return Ok(Err(StoreError::Corrupt(
                    "unexpected row from a registration".into(),
                )))
            }
        }
    }
    if statement < first {
        return Err(StoreError::Corrupt(
            "a registration's savepoint statements ran only in part".into(),
        ));
    }
    let corrupt = |what: &str| Ok(Err(StoreError::Corrupt(what.into())));
    if statement != first + 2 {
        return corrupt("a registration's statements ran only in part");
    }
    Ok(Ok(match (jti_fresh, client_id) {
        (false, _) => RegistrationOutcome::StatementReplayed,
        (true, Some(id)) if id == *new_client_id => RegistrationOutcome::Created { client_id: id },
        (true, Some(id)) => RegistrationOutcome::Updated { client_id: id },
        (true, None) => return corrupt("a registration's upsert returned no client"),
    }))
}

async fn savepoint(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    sql: &str,
) -> Result<(), StoreError> {
    sqlx::query(sql).execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::ClientStatus, SqliteStore, Store};
    use serde_json::json;

    fn job(jti: &str, iss: &str, client_id: &str, now: OffsetDateTime) -> Job {
        let jti = JtiRecord {
            issuer: iss.into(),
            jti: jti.into(),
            expires_at: now + time::Duration::minutes(5),
        };
        let metadata = json!({"client_name": iss});
        let r = UdapRegistration {
            statement_jti: &jti,
            community: "urn:test",
            iss,
            change: RegistrationChange::Upsert {
                new_client_id: client_id,
                secret_hash: None,
                metadata: &metadata,
            },
        };
        Job::new(&r, now).0
    }

    /// One group holding a failing registration, a replay and a second registration of one `iss`: each
    /// gets the outcome it would have had alone and in order, and the failed one leaves nothing behind.
    #[tokio::test]
    async fn a_group_commits_each_registration_as_if_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("g.db")).await.unwrap();
        let now = OffsetDateTime::now_utc();
        // A client whose id the failing registration reuses (a primary key conflict, not an upsert).
        let first = commit_group(
            &store.writer,
            &[job("j0", "https://a.example/", "taken", now)],
        )
        .await
        .remove(0)
        .unwrap();
        assert_eq!(
            first,
            RegistrationOutcome::Created {
                client_id: "taken".into()
            }
        );

        let group = [
            job("j1", "https://b.example/", "b-id", now),
            job("j2", "https://c.example/", "taken", now),
            job("j1", "https://b.example/", "b-other", now),
            job("j3", "https://b.example/", "b-third", now),
        ];
        let results = commit_group(&store.writer, &group).await;
        assert_eq!(
            results[0].as_ref().unwrap(),
            &RegistrationOutcome::Created {
                client_id: "b-id".into()
            }
        );
        assert!(
            matches!(results[1], Err(StoreError::Conflict(_))),
            "{:?}",
            results[1]
        );
        assert_eq!(
            results[2].as_ref().unwrap(),
            &RegistrationOutcome::StatementReplayed
        );
        assert_eq!(
            results[3].as_ref().unwrap(),
            &RegistrationOutcome::Updated {
                client_id: "b-id".into()
            }
        );

        // The failed registration was undone with its savepoint: its jti is free and no client exists.
        assert!(store
            .find_client_by_iss("urn:test", "https://c.example/")
            .await
            .unwrap()
            .is_none());
        let again = commit_group(
            &store.writer,
            &[job("j2", "https://c.example/", "c-id", now)],
        )
        .await
        .remove(0)
        .unwrap();
        assert_eq!(
            again,
            RegistrationOutcome::Created {
                client_id: "c-id".into()
            }
        );
        let b = store
            .find_client_by_iss("urn:test", "https://b.example/")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.client_id, "b-id");
        assert_eq!(b.status, ClientStatus::Active);
    }

    /// A cancellation in a group (it takes the shared path, with its own savepoint statements) between
    /// two batched registrations: each gets its outcome and the cancelled client stays cancelled.
    #[tokio::test]
    async fn a_cancellation_in_a_group_keeps_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("x.db")).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let jti = JtiRecord {
            issuer: "https://d.example/".into(),
            jti: "k2".into(),
            expires_at: now + time::Duration::minutes(5),
        };
        let cancel = Job::new(
            &UdapRegistration {
                statement_jti: &jti,
                community: "urn:test",
                iss: "https://d.example/",
                change: RegistrationChange::Cancel,
            },
            now,
        )
        .0;
        let group = [
            job("k1", "https://d.example/", "d-id", now),
            cancel,
            job("k3", "https://e.example/", "e-id", now),
        ];
        let results: Vec<_> = commit_group(&store.writer, &group)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            results,
            [
                RegistrationOutcome::Created {
                    client_id: "d-id".into()
                },
                RegistrationOutcome::Cancelled {
                    client_id: "d-id".into()
                },
                RegistrationOutcome::Created {
                    client_id: "e-id".into()
                },
            ]
        );
        let d = store
            .find_client_by_iss("urn:test", "https://d.example/")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.status, ClientStatus::Cancelled);
    }

    /// Concurrent callers through the store: every registration answered, one client per `iss`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_registrations_end_with_one_client_per_iss() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("c.db")).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let iss = format!("https://app{}.example/", i % 10);
                let jti = JtiRecord {
                    issuer: iss.clone(),
                    jti: format!("jti-{i}"),
                    expires_at: now + time::Duration::minutes(5),
                };
                let metadata = json!({"n": i});
                let id = format!("id-{i}");
                store
                    .register_udap_client(
                        &UdapRegistration {
                            statement_jti: &jti,
                            community: "urn:test",
                            iss: &iss,
                            change: RegistrationChange::Upsert {
                                new_client_id: &id,
                                secret_hash: None,
                                metadata: &metadata,
                            },
                        },
                        now,
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                RegistrationOutcome::Created { .. } => created += 1,
                RegistrationOutcome::Updated { .. } => {}
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(created, 10, "one client per iss");
        assert_eq!(store.list_clients().await.unwrap().len(), 10);
    }
}
