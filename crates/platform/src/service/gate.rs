//! The index gate: a service's MongoDB indexes are created in the background, tried again with the retry
//! helper while MongoDB is away, and `/api/ready` answers 503 until they exist; what must not run without them
//! (a consumer, ingest's accepting of events) waits for [`IndexGate::opened`] or asks [`IndexGate::is_open`].

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::Database;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::MongoConfig;
use crate::retry::{self, Backoff};

/// How long the ping before each try may take: creating indexes against a server that is away takes several
/// server selection timeouts (the listing, the creation, the listing again), a ping one bounded wait.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The waits between two tries while MongoDB is away.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));

type Create = dyn Fn(Database) -> BoxFuture<'static, mongodb::error::Result<()>> + Send + Sync;

/// Whether a service's indexes exist yet, and how to create them; cheap to clone, every clone is the same gate.
#[derive(Clone)]
pub struct IndexGate {
    db: Database,
    create: Arc<Create>,
    open: Arc<watch::Sender<bool>>,
}

impl fmt::Debug for IndexGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexGate")
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl IndexGate {
    /// A closed gate whose indexes `create` makes in `db` (it must be idempotent: it runs again after a failure).
    pub fn new<F, Fut>(db: &Database, create: F) -> Self
    where
        F: Fn(Database) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = mongodb::error::Result<()>> + Send + 'static,
    {
        Self {
            db: db.clone(),
            create: Arc::new(move |db| create(db).boxed()),
            open: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Whether the indexes exist.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Waits until the indexes exist.
    pub async fn opened(&self) {
        let mut open = self.open.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it dropped.
        let _ = open.wait_for(|open| *open).await;
    }

    /// One try, while the service is built: when MongoDB is up, the indexes exist before it runs and
    /// `/api/ready` is 200 at once. True once the gate is open.
    pub async fn try_once(&self) -> bool {
        if self.is_open() {
            return true;
        }
        match self.ping_and_create().await {
            Ok(()) => {
                self.open_now();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the mongodb indexes yet; trying again in the background");
                false
            }
        }
    }

    /// Tries until the indexes exist, then opens the gate, or until `stop` fires. A task of the service's
    /// [`super::Supervisor`]: it ends once the gate is open.
    pub async fn run(self, stop: CancellationToken) -> Result<(), Infallible> {
        if !self.is_open()
            && retry::until_done("creating the mongodb indexes", BACKOFF, &stop, || {
                self.ping_and_create()
            })
            .await
            .is_some()
        {
            self.open_now();
        }
        Ok(())
    }

    async fn ping_and_create(&self) -> mongodb::error::Result<()> {
        crate::mongo::ping(&self.db, PING_TIMEOUT).await?;
        (self.create)(self.db.clone()).await
    }

    fn open_now(&self) {
        if !self.open.send_replace(true) {
            tracing::info!("mongodb indexes are in place");
        }
    }
}

/// Connects to MongoDB (lazily: it need not be up) as `app_name`, and tries its indexes once
/// ([`IndexGate::try_once`]): how every service starts on MongoDB.
pub async fn connect_with_indexes<F, Fut>(
    config: &MongoConfig,
    app_name: &str,
    create: F,
) -> mongodb::error::Result<(Database, IndexGate)>
where
    F: Fn(Database) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = mongodb::error::Result<()>> + Send + 'static,
{
    let db = crate::mongo::connect(config, app_name).await?;
    let indexes = IndexGate::new(&db, create);
    indexes.try_once().await;
    Ok((db, indexes))
}
