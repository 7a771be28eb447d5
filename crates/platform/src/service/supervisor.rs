//! The tasks of one service under one token: when any of them fails (an error, a panic, or a task that must run
//! until shutdown ending before it), the supervisor logs which one, cancels the rest and reports it, so the
//! process ends instead of running on as half a service.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::IndexGate;

/// A task's error, whatever its type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The task that ended the service, and why.
#[derive(Debug, thiserror::Error)]
#[error("task {task} failed")]
pub struct TaskFailed {
    pub task: String,
    #[source]
    pub source: BoxError,
}

/// Why a task that runs until shutdown ended: it returned before the stop token was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("ended before shutdown")]
pub struct EndedEarly;

/// A set of named tasks sharing one stop token, a child of the service's shutdown token.
#[derive(Debug)]
pub struct Supervisor {
    stop: CancellationToken,
    tasks: JoinSet<Result<(), BoxError>>,
    names: HashMap<Id, String>,
}

impl Supervisor {
    /// A supervisor whose tasks stop when `shutdown` is cancelled, or when one of them fails. The failure cancels
    /// a child token: the caller's `shutdown` is left as it is.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            stop: shutdown.child_token(),
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// The token every task watches: cancelled by the shutdown signal or by the first failure.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task`, which may end early: `Ok` ends it alone (the index gate, once open), an error ends them all.
    pub fn spawn<F, E>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handle = self
            .tasks
            .spawn(async move { task.await.map_err(Into::into) });
        self.names.insert(handle.id(), name.into());
    }

    /// Runs `task`, which serves until the stop token is cancelled (a consumer, a server): ending before that,
    /// even with `Ok`, is a failure that ends them all ([`EndedEarly`]).
    pub fn spawn_until_stopped<F, E>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let stop = self.stop.clone();
        self.spawn(name, async move {
            task.await.map_err(Into::into)?;
            match stop.is_cancelled() {
                true => Ok(()),
                false => Err(BoxError::from(EndedEarly)),
            }
        });
    }

    /// Runs `gate`'s task (the task `mongodb indexes`): it tries the indexes until they exist, then ends.
    pub fn spawn_index_gate(&mut self, gate: &IndexGate) {
        self.spawn("mongodb indexes", gate.clone().run(self.stop.clone()));
    }

    /// Runs `task` once `gate` is open (a consumer that needs the indexes), until the stop token is cancelled, as
    /// [`Self::spawn_until_stopped`] does. Stopped before the gate opens, it ends cleanly without starting.
    pub fn spawn_when_open<F, E>(&mut self, name: impl Into<String>, gate: &IndexGate, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let (gate, stop) = (gate.clone(), self.stop.clone());
        self.spawn_until_stopped(name, async move {
            tokio::select! {
                () = gate.opened() => task.await.map_err(Into::into),
                () = stop.cancelled() => Ok::<(), BoxError>(()),
            }
        });
    }

    /// Runs `task`, a loop that is safe to drop wherever it is (a periodic cleanup): it runs until the stop token
    /// is cancelled and is then dropped, so that a pass waiting on a dependency that is away does not hold up
    /// shutdown. Ending before that is a failure ([`EndedEarly`]).
    pub fn spawn_droppable<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.spawn_until_stopped(name, async move {
            tokio::select! {
                () = task => {}
                () = stop.cancelled() => {}
            }
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Waits until every task has ended. The first to fail cancels the others (each failure is logged, naming
    /// its task) and is what this returns.
    pub async fn wait(mut self) -> Result<(), TaskFailed> {
        let mut first: Option<TaskFailed> = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let (id, failure) = match joined {
                Ok((id, Ok(()))) => {
                    self.names.remove(&id);
                    continue;
                }
                Ok((id, Err(e))) => (id, e),
                Err(join) => (join.id(), BoxError::from(join.to_string())),
            };
            let task = self.names.remove(&id).unwrap_or_else(|| "unnamed".into());
            tracing::error!(task = %task, error = %failure, "a task of the service failed; stopping the service");
            self.stop.cancel();
            if first.is_none() {
                first = Some(TaskFailed {
                    task,
                    source: failure,
                });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_failed_task_stops_the_others_and_is_named() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&shutdown);
        let stop = supervisor.stop_token();
        supervisor.spawn_until_stopped("consumer", async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        supervisor.spawn("subscriber", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(std::io::Error::other("subscribe failed"))
        });
        let failed = tokio::time::timeout(Duration::from_secs(5), supervisor.wait())
            .await
            .expect("the consumer stopped with the failure")
            .expect_err("the failure is reported");
        assert_eq!(failed.task, "subscriber");
        assert_eq!(failed.source.to_string(), "subscribe failed");
        assert!(
            !shutdown.is_cancelled(),
            "a child token: the caller's is untouched"
        );
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_too() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&shutdown);
        let stop = supervisor.stop_token();
        supervisor.spawn_until_stopped("sender", async move {
            stop.cancelled().await;
            Ok::<(), Infallible>(())
        });
        supervisor.spawn("sweeper", async {
            #[allow(clippy::panic)]
            if true {
                panic!("a bug");
            }
            Ok::<(), Infallible>(())
        });
        let failed = tokio::time::timeout(Duration::from_secs(5), supervisor.wait())
            .await
            .expect("the sender stopped with the panic")
            .expect_err("the panic is reported");
        assert_eq!(failed.task, "sweeper");
    }

    #[tokio::test]
    async fn a_task_that_must_run_until_shutdown_and_ends_before_it_is_a_failure() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&shutdown);
        let stop = supervisor.stop_token();
        supervisor.spawn_until_stopped("server", async move {
            stop.cancelled().await;
            Ok::<(), Infallible>(())
        });
        supervisor.spawn_until_stopped("consumer", async { Ok::<(), Infallible>(()) });
        supervisor.spawn("gate", async { Ok::<(), Infallible>(()) });
        let failed = tokio::time::timeout(Duration::from_secs(5), supervisor.wait())
            .await
            .expect("the server stopped")
            .expect_err("the early end is reported");
        assert_eq!(failed.task, "consumer");
        assert!(failed.source.is::<EndedEarly>());
    }

    #[tokio::test]
    async fn a_droppable_task_is_dropped_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&shutdown);
        supervisor.spawn_droppable("pruner", std::future::pending());
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), supervisor.wait())
            .await
            .expect("the pending pruner was dropped");
        assert!(stopped.is_ok());
    }

    #[tokio::test]
    async fn shutdown_stops_them_all_cleanly() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&shutdown);
        for name in ["a", "b"] {
            let stop = supervisor.stop_token();
            supervisor.spawn_until_stopped(name, async move {
                stop.cancelled().await;
                Ok::<(), Infallible>(())
            });
        }
        shutdown.cancel();
        assert!(supervisor.wait().await.is_ok());
    }
}
