//! What a failed etcd request means: try again, report unavailability, or pass an error on.

use crate::StoreError;

/// Whether an attempt whose request may have reached etcd can be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Repeating changes nothing (reads, watches, compaction).
    Always,
    /// Only when the request (almost) surely never reached a member that could act on it.
    IfNotSent,
}

/// Why a call to etcd failed, after retries.
#[derive(Debug)]
pub(super) enum Failure {
    /// etcd could not be reached, or did not answer in time.
    Unavailable(String),
    /// The requested revision has been compacted.
    Compacted,
    /// The requested revision is newer than etcd's.
    FutureRevision,
    /// etcd answered with an error that retrying will not fix.
    Refused(StoreError),
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> StoreError {
        match f {
            Failure::Unavailable(m) => StoreError::Unavailable(m),
            Failure::Compacted => StoreError::Internal("etcd reported a compacted revision unexpectedly".into()),
            Failure::FutureRevision => StoreError::Internal("etcd reported a future revision unexpectedly".into()),
            Failure::Refused(e) => e,
        }
    }
}

/// What one failed attempt means for the next.
pub(super) enum Attempt {
    /// The request (almost surely) never reached a member that could act on it.
    NotSent(String),
    /// Connectivity failed while the request was out; a write may or may not have happened.
    Broken(String),
    /// Trying again will not help.
    Final(Failure),
}

pub(super) fn classify(error: etcd_client::Error) -> Attempt {
    match error {
        etcd_client::Error::GRpcStatus(status) => classify_status(&status),
        etcd_client::Error::TransportError(e) => Attempt::Broken(e.to_string()),
        etcd_client::Error::IoError(e) => Attempt::Broken(e.to_string()),
        etcd_client::Error::WatchError(e) => Attempt::Broken(e),
        other => Attempt::Final(Failure::Refused(StoreError::Internal(format!("etcd client: {other}")))),
    }
}

fn classify_status(status: &tonic::Status) -> Attempt {
    use tonic::Code;
    let message = status.message();
    let detail = || format!("{:?}: {message}", status.code());
    if never_sent(status) {
        return Attempt::NotSent(detail());
    }
    // etcd's messages are its API: these strings are etcd's rpctypes errors.
    if message.contains("etcdserver: no leader") {
        // Refused before it was proposed (we send `hasleader`).
        return Attempt::NotSent(detail());
    }
    if message.contains("required revision has been compacted") {
        return Attempt::Final(Failure::Compacted);
    }
    if message.contains("required revision is a future revision") {
        return Attempt::Final(Failure::FutureRevision);
    }
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal
        | Code::Aborted => Attempt::Broken(detail()),
        // Out of space (etcd's NOSPACE alarm) or too many requests: etcd is there but cannot
        // take writes, which is still "unavailable" to the API's clients.
        Code::ResourceExhausted => Attempt::Final(Failure::Unavailable(format!("etcd refused the request: {message}"))),
        _ => Attempt::Final(Failure::Refused(StoreError::Internal(format!("etcd refused the request: {message}")))),
    }
}

/// Whether the request surely or almost surely never reached a member: connecting failed, or
/// writing it failed because the member had already closed the connection (a member that
/// dies leaves idle connections behind). Should the second guess be wrong, repeating is still
/// harmless: every write is guarded by a revision, so one that did land fails its guard
/// instead of applying twice.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: tonic::Status) -> &'static str {
        match classify(etcd_client::Error::GRpcStatus(status)) {
            Attempt::NotSent(_) => "not sent",
            Attempt::Broken(_) => "broken",
            Attempt::Final(Failure::Compacted) => "compacted",
            Attempt::Final(Failure::FutureRevision) => "future",
            Attempt::Final(Failure::Unavailable(_)) => "unavailable",
            Attempt::Final(Failure::Refused(_)) => "refused",
        }
    }

    #[test]
    fn etcd_errors_are_classified() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(kind(tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))))), "not sent");
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(kind(tonic::Status::from_error(Box::new(pipe))), "not sent");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(kind(tonic::Status::from_error(Box::new(reset))), "broken");
        assert_eq!(kind(tonic::Status::unavailable("etcdserver: no leader")), "not sent");
        assert_eq!(kind(tonic::Status::unavailable("etcdserver: request timed out")), "broken");
        let compacted = "etcdserver: mvcc: required revision has been compacted";
        assert_eq!(kind(tonic::Status::out_of_range(compacted)), "compacted");
        assert_eq!(
            kind(tonic::Status::out_of_range("etcdserver: mvcc: required revision is a future revision")),
            "future"
        );
        assert_eq!(kind(tonic::Status::resource_exhausted("etcdserver: mvcc: database space exceeded")), "unavailable");
        assert_eq!(kind(tonic::Status::invalid_argument("etcdserver: request is too large")), "refused");
    }
}
