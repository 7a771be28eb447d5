//! Reading back which event an `Idempotency-Key` stands for.

use herald_domain::EventId;
use mongodb::bson::doc;
use mongodb::error::Error;

use super::{EventStore, Result};

impl EventStore {
    /// The id of the event `key` was first used for, if the key was seen before.
    ///
    /// [`EventStore::insert_accepted`] answers [`super::Inserted::New`] also when it creates the event that a key
    /// named before but whose record was never written (a failure between the two writes): that event has the
    /// key's id, not the id of the record passed in. A caller that passed a key reads the id back here to know
    /// which event it created.
    pub async fn event_id_for_key(&self, key: &str) -> Result<Option<EventId>> {
        let Some(entry) = self.keys.find_one(doc! { "_id": key }).await? else {
            return Ok(None);
        };
        let raw = entry
            .get_str("eventId")
            .map_err(|e| Error::custom(format!("stored idempotency key is corrupt: {e}")))?;
        EventId::parse(raw)
            .map(Some)
            .map_err(|e| Error::custom(format!("stored idempotency key is corrupt: {e}")))
    }
}
