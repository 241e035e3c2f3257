//! The audit trail, written off the request path: handlers hand events to a bounded queue and a single
//! writer task stores them in order. A full queue makes handlers wait (events are never dropped), and a
//! graceful shutdown flushes the queue before the process exits.

use std::sync::Arc;

use bluegate_store::{AuditEvent, Store};
use tokio::sync::{mpsc, oneshot};

const QUEUE: usize = 10_000;

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
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Event(event) => {
                        // Retried once, then logged (without the detail, which may name a user) so that an
                        // operator sees the trail is incomplete.
                        if store.append_audit(&event).await.is_err() {
                            if let Err(e) = store.append_audit(&event).await {
                                tracing::error!(error = %e, event = %event.event, "audit event could not be stored");
                            }
                        }
                    }
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
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
