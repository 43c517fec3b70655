//! Turning SDK errors into [`StoreError`]s.
//!
//! The SDK has already retried what it considers retryable (standard mode, `RETRY_ATTEMPTS` attempts with backoff) by the
//! time an error reaches us, so [`StoreError::Transient`] here means "still failing after the
//! SDK's retries; a later attempt may succeed". Classification looks at the S3 error code
//! first and falls back to the HTTP status, because HEAD responses carry no error body.

use std::error::Error;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use cairn_store::StoreError;

use crate::credentials::RenewalFailed;

/// What to set when credentials are missing or refused.
pub(crate) const CREDENTIALS_HINT: &str =
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / AWS_WEB_IDENTITY_TOKEN_FILE)";

/// What to do when the credential chain found nothing (or its last source failed): the
/// sources the SDK's default chain tries, in its order.
pub(crate) const NO_CREDENTIALS_HINT: &str = "the AWS chain tried AWS_ACCESS_KEY_ID/\
    AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared config files, AWS_WEB_IDENTITY_TOKEN_FILE, \
    the ECS container endpoint and the EC2 instance metadata service \
    (AWS_EC2_METADATA_SERVICE_ENDPOINT overrides its address); set one of them, or give the \
    instance a role (instance profile) allowed to use the bucket";

/// What to do when credentials that worked earlier in the run could not be renewed.
pub(crate) const RENEWAL_HINT: &str = "the credentials this run started with came from that \
    source and expire; it must keep answering for as long as the run lasts: check that it is \
    reachable from this machine and that the role is still attached, then run again";

/// The kind of failure, before it is dressed with the store's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NotFound,
    NoSuchBucket,
    Credentials,
    /// The credential chain produced no credentials.
    NoCredentials,
    /// The source of the credentials in use gave no new ones when they were due for renewal.
    RenewalFailed,
    Transient,
    Other,
}

/// Classifies an SDK error.
pub(crate) fn kind<E>(error: &SdkError<E>) -> Kind
where
    E: ProvideErrorMetadata + Error + 'static,
{
    if let SdkError::ServiceError(service) = error {
        return kind_of_response(service.raw().status().as_u16(), service.err().code());
    }
    if caused_by::<RenewalFailed>(error) {
        return Kind::RenewalFailed;
    }
    if caused_by::<CredentialsError>(error) {
        return Kind::NoCredentials;
    }
    match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Kind::Transient,
        SdkError::DispatchFailure(failure)
            if failure.is_io() || failure.is_timeout() || failure.as_other().is_some() =>
        {
            Kind::Transient
        }
        _ => Kind::Other,
    }
}

/// Classifies an error response by its S3 error code, else by its status.
pub(crate) fn kind_of_response(status: u16, code: Option<&str>) -> Kind {
    match code {
        Some("NoSuchBucket") => Kind::NoSuchBucket,
        Some("NoSuchKey" | "NoSuchVersion" | "NotFound") => Kind::NotFound,
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "AccessDenied",
        ) => Kind::Credentials,
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable",
        ) => Kind::Transient,
        _ => match status {
            404 => Kind::NotFound,
            401 | 403 => Kind::Credentials,
            429 | 500..=599 => Kind::Transient,
            _ => Kind::Other,
        },
    }
}

/// True when `error` or one of its causes is an `E`: a [`CredentialsError`] when the credential
/// chain failed (nothing found, a provider errored or timed out), a [`RenewalFailed`] when it
/// failed after it had given credentials.
fn caused_by<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.downcast_ref::<E>().is_some() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// One line saying what the store answered: `HTTP 503 SlowDown: Please reduce...` for error
/// responses, the chain of causes otherwise. Signed requests are never part of either.
pub(crate) fn describe<E>(error: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let text = match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("no error code");
            match service.err().message().filter(|m| !m.trim().is_empty()) {
                Some(message) => format!("HTTP {status} {code}: {message}"),
                None => format!("HTTP {status} {code}"),
            }
        }
        other => chain(other),
    };
    one_line(&text)
}

/// An error and its causes, joined with `: ` (skipping causes already in the text).
fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let part = current.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = current.source();
    }
    text
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds the [`StoreError`] for `kind`; `store` is the store's URL, `bucket` its bucket, `key`
/// the caller's key (relative to the prefix) and `detail` what failed, e.g. "`GetObject` `k`: ...".
pub(crate) fn store_error(
    kind: Kind,
    store: &str,
    bucket: &str,
    key: &str,
    detail: String,
) -> StoreError {
    let store = store.to_string();
    match kind {
        Kind::NotFound => StoreError::NotFound {
            store,
            key: key.to_string(),
        },
        Kind::NoSuchBucket => StoreError::Configuration {
            store,
            detail: format!(
                "Bucket `{bucket}` does not exist (or is in another account); create it or fix the URL: {detail}"
            ),
        },
        Kind::Credentials => StoreError::Credentials {
            store,
            detail,
            hint: CREDENTIALS_HINT.to_string(),
        },
        Kind::NoCredentials => StoreError::Credentials {
            store,
            detail,
            hint: NO_CREDENTIALS_HINT.to_string(),
        },
        Kind::RenewalFailed => StoreError::Credentials {
            store,
            detail,
            hint: RENEWAL_HINT.to_string(),
        },
        Kind::Transient => StoreError::Transient { store, detail },
        Kind::Other => StoreError::Other { store, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_win_over_statuses() {
        assert_eq!(
            kind_of_response(404, Some("NoSuchBucket")),
            Kind::NoSuchBucket
        );
        assert_eq!(kind_of_response(404, Some("NoSuchVersion")), Kind::NotFound);
        assert_eq!(
            kind_of_response(400, Some("ExpiredToken")),
            Kind::Credentials
        );
        assert_eq!(kind_of_response(503, Some("SlowDown")), Kind::Transient);
        assert_eq!(
            kind_of_response(400, Some("RequestTimeout")),
            Kind::Transient
        );
        assert_eq!(kind_of_response(400, Some("InvalidArgument")), Kind::Other);
    }

    #[test]
    fn statuses_classify_bodiless_answers() {
        assert_eq!(kind_of_response(404, None), Kind::NotFound);
        assert_eq!(kind_of_response(403, None), Kind::Credentials);
        assert_eq!(kind_of_response(500, None), Kind::Transient);
        assert_eq!(kind_of_response(429, None), Kind::Transient);
        assert_eq!(kind_of_response(409, None), Kind::Other);
    }

    #[test]
    fn descriptions_are_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
