//! The audit trail, written off the request path: handlers hand events to a bounded queue and a single
//! writer task stores them in order. A full queue makes handlers wait (events are never dropped), and a
//! graceful shutdown flushes the queue before the process exits.

use std::sync::Arc;

use bluegate_store::{AuditEvent, Store};
use tokio::sync::{mpsc, oneshot};

const QUEUE: usize = 10_000;
/// Most events stored in one transaction.
const BATCH: usize = 512;
/// How long the writer waits for more events before storing a batch. Each batch is a durable commit that,
/// on SQLite, holds the one writer connection the requests' own writes need (an fsync: 0.2 ms or more):
/// gathering 50 ms of events makes that a few percent of the writer's time under steady traffic rather
/// than a commit every few requests. A crash loses what is still queued, as it always could.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

enum Msg {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
}

impl AuditSink {
    pub fn start(store: Arc<dyn Store>) -> AuditSink {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        tokio::spawn(async move {
            let mut buf: Vec<Msg> = Vec::with_capacity(BATCH);
            // Events that arrive together are stored in one transaction: under load the audit trail costs
            // one durable commit per batch, not per request.
            while rx.recv_many(&mut buf, BATCH).await > 0 {
                // Requests that come one after another share a commit too: gather what arrives within
                // LINGER (events are off the request path already; a flush is not kept waiting).
                if buf.len() < BATCH && !buf.iter().any(|m| matches!(m, Msg::Flush(_))) {
                    tokio::time::sleep(LINGER).await;
                    while buf.len() < BATCH {
                        match rx.try_recv() {
                            Ok(m) => buf.push(m),
                            Err(_) => break,
                        }
                    }
                }
                let mut events = Vec::with_capacity(buf.len());
                let mut waiters = Vec::new();
                for msg in buf.drain(..) {
                    match msg {
                        Msg::Event(e) => events.push(*e),
                        Msg::Flush(done) => waiters.push(done),
                    }
                }
                store_events(store.as_ref(), &events).await;
                for w in waiters {
                    let _ = w.send(());
                }
            }
        });
        AuditSink { tx }
    }

    pub async fn record(&self, event: AuditEvent) {
        if self.tx.send(Msg::Event(Box::new(event))).await.is_err() {
            tracing::error!("audit writer stopped; event lost");
        }
    }

    /// Wait until every event recorded before this call is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Stores a batch, retried once; if the batch still fails, each event is tried on its own so one bad event
/// cannot lose the others. Failures are logged (without details, which may name a user) so an operator
/// sees the trail is incomplete.
async fn store_events(store: &dyn Store, events: &[AuditEvent]) {
    if events.is_empty() {
        return;
    }
    if store.append_audit_batch(events).await.is_ok()
        || store.append_audit_batch(events).await.is_ok()
    {
        return;
    }
    for event in events {
        if let Err(e) = store.append_audit(event).await {
            tracing::error!(error = %e, event = %event.event, "audit event could not be stored");
        }
    }
}
