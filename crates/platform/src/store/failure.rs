//! Which event-store errors come back however often a step is tried (permanent), and which pass (transient).
//!
//! A consumer retries a transient error (the server away, a timeout, an election) with backoff, for as long as it
//! lasts; a permanent one (a record that does not decode, a document over the 16 MB limit, a write the server
//! rejects for what it contains) is the event's own fault, so after a bounded number of tries the event is
//! dead-lettered with the reason and the partition moves on.

use mongodb::error::{
    Error, ErrorKind, WriteFailure, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR,
};

/// Server error codes that say nothing about the document: the server, the network or the deployment's state.
/// (The driver's retryable read and write codes, the state-change codes, and the ones an operator fixes:
/// authentication and authorisation.)
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    13,    // Unauthorized
    18,    // AuthenticationFailed
    24,    // LockTimeout
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11601, // Interrupted
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Whether `error` will happen again on the same record however often the step is tried.
///
/// Permanent: the record does not decode or cannot be encoded, the driver rejects the operation's arguments
/// (a document over 16 MB among them), or the server rejects the write or command with a code that is not a
/// transient one (17419 or 10334 for a document that would grow over 16 MB, 2 BadValue, 14 TypeMismatch, 121
/// validation, ...). Everything else (network, timeouts, pool cleared, server selection, not-primary, write
/// concern, anything labelled retryable) is transient.
pub fn is_permanent(error: &Error) -> bool {
    if error.contains_label(RETRYABLE_WRITE_ERROR)
        || error.contains_label(TRANSIENT_TRANSACTION_ERROR)
    {
        return false;
    }
    let rejected = |code: i32| !TRANSIENT_CODES.contains(&code);
    match error.kind.as_ref() {
        ErrorKind::BsonDeserialization(_)
        | ErrorKind::BsonSerialization(_)
        | ErrorKind::InvalidArgument { .. }
        // The store's own encoding failures (`Error::custom`).
        | ErrorKind::Custom(_) => true,
        ErrorKind::Write(WriteFailure::WriteError(e)) => rejected(e.code),
        ErrorKind::Command(e) => rejected(e.code),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_encoding_failures_are_permanent_and_outages_are_not() {
        let undecodable = mongodb::bson::from_document::<u32>(mongodb::bson::doc! { "a": 1 })
            .map_err(Error::from)
            .expect_err("a document is not a number");
        assert!(is_permanent(&undecodable));
        assert!(is_permanent(&Error::custom("cannot encode")));
        let io = Error::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(!is_permanent(&io));
    }
}
