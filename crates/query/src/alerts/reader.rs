//! Reads of the `alerts` collection; nothing here writes.

use futures::TryStreamExt;
use herald_platform::alerts::{AlertRecord, ALERTS};
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};

use super::params::AlertQuery;

/// Read access to `alerts`, every query bounded by `max_time` on the server.
#[derive(Debug, Clone)]
pub struct AlertReader {
    alerts: Collection<AlertRecord>,
    max_time: std::time::Duration,
}

impl AlertReader {
    pub fn new(db: &Database, max_time: std::time::Duration) -> Self {
        Self {
            alerts: db.collection(ALERTS),
            max_time,
        }
    }

    fn filter(query: &AlertQuery) -> Document {
        let mut filter = Document::new();
        if let Some(rule) = &query.rule {
            filter.insert("rule", rule);
        }
        if let Some(group) = &query.group {
            filter.insert("group", group);
        }
        let mut created = Document::new();
        if let Some(from) = query.range.from {
            created.insert("$gte", bson::DateTime::from_chrono(from));
        }
        if let Some(before) = query.range.before {
            created.insert("$lt", bson::DateTime::from_chrono(before));
        }
        if !created.is_empty() {
            filter.insert("createdAt", created);
        }
        filter
    }

    /// One page, newest first, and the number of alerts matching.
    pub async fn page(
        &self,
        query: &AlertQuery,
    ) -> mongodb::error::Result<(Vec<AlertRecord>, u64)> {
        let filter = Self::filter(query);
        let skip = u64::from(query.page - 1) * u64::from(query.limit);
        let alerts: Vec<AlertRecord> = self
            .alerts
            .find(filter.clone())
            .sort(doc! { "createdAt": -1, "_id": -1 })
            .skip(skip)
            .limit(i64::from(query.limit))
            .max_time(self.max_time)
            .await?
            .try_collect()
            .await?;
        let total = self
            .alerts
            .count_documents(filter)
            .max_time(self.max_time)
            .await?;
        Ok((alerts, total))
    }

    pub async fn find(&self, id: &str) -> mongodb::error::Result<Option<AlertRecord>> {
        self.alerts
            .find_one(doc! { "_id": id })
            .max_time(self.max_time)
            .await
    }
}
