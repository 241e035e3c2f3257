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

use super::{begin_write, register_udap_tx};
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
        results.push(register_udap_tx(&mut tx, &job.registration(), job.now).await);
        if results[0].is_err() {
            return results;
        }
    } else {
        for job in jobs {
            if let Err(e) = savepoint(&mut tx, "SAVEPOINT registration").await {
                return all_fail(e);
            }
            let result = register_udap_tx(&mut tx, &job.registration(), job.now).await;
            if result.is_err() {
                if let Err(e) = savepoint(&mut tx, "ROLLBACK TO registration").await {
                    return all_fail(e);
                }
            }
            if let Err(e) = savepoint(&mut tx, "RELEASE registration").await {
                return all_fail(e);
            }
            results.push(result);
        }
    }
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => all_fail(e.into()),
    }
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
