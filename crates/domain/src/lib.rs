//! Herald's domain: the event model, its validation and the topic layout, shared by every service.
//!
//! This crate does no I/O and knows nothing of tokio, Kafka clients or MongoDB drivers: what is here can be
//! unit- and property-tested in isolation, and every service agrees on it because there is only one copy.

pub mod error;
pub mod event;
pub mod message;
pub mod messages;
pub mod outcome;
pub mod provider;
pub mod request;
pub mod retry;
pub mod template;
pub mod topics;

pub use error::{ErrorBody, FieldError};
pub use event::{
    Attempt, AttemptOutcome, Channel, ErrorClass, Event, EventId, ParseError, Priority, Status,
    StatusOutcome,
};
pub use message::{Message, MessageError};
pub use messages::{DelayedRetry, LaneMessage, RetryRequest, StatusMessage};
pub use outcome::{classify, Observation, Outcome};
pub use topics::{Lane, TopicSpec, Topics, DEFAULT_DELAY_TIERS_SECS};
