//! The AWS credential chain as a *provider* that names its source when a renewal fails.
//!
//! A backup of a large blobstore runs for hours, longer than the credentials of an instance
//! profile, a container role or a web identity live. The SDK renews them itself: every request
//! asks the client's identity cache (aws-smithy-runtime's lazy cache), which keeps a credential
//! until 10 s (less up to 5 s of jitter) before its expiry and then asks this provider again, so
//! nothing here caches or captures a credential. What this wrapper adds is the message: when a
//! renewal fails, the chain's own error says only what its last source answered ("no
//! providers in chain provided credentials", an HTTP status), which reads as if credentials had
//! never been found. So the wrapper remembers which source gave the credentials that worked
//! and, when asking again fails, says that renewing the credentials from that source failed
//! ([`RenewalFailed`], which the `error` module turns into its own hint).

use std::fmt;
use std::sync::Mutex;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;

/// The default chain, remembering the source of the last credentials it gave.
#[derive(Debug)]
pub(crate) struct RenewingChain {
    chain: DefaultCredentialsChain,
    /// Where the last credentials came from; `None` until the chain gave some.
    source: Mutex<Option<&'static str>>,
}

impl RenewingChain {
    pub(crate) fn new(chain: DefaultCredentialsChain) -> RenewingChain {
        RenewingChain {
            chain,
            source: Mutex::new(None),
        }
    }

    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        match self.chain.provide_credentials().await {
            Ok(credentials) => {
                *self
                    .source
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(source_of(&credentials));
                Ok(credentials)
            }
            Err(error) => {
                let source = *self
                    .source
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match source {
                    Some(source) => Err(CredentialsError::provider_error(RenewalFailed {
                        source,
                        cause: error,
                    })),
                    None => Err(error),
                }
            }
        }
    }
}

impl ProvideCredentials for RenewingChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }

    fn fallback_on_interrupt(&self) -> Option<Credentials> {
        self.chain.fallback_on_interrupt()
    }
}

/// Credentials came from `source` earlier in this run, and asking it for new ones (the old ones
/// about to expire) failed.
#[derive(Debug)]
pub(crate) struct RenewalFailed {
    pub(crate) source: &'static str,
    cause: CredentialsError,
}

impl fmt::Display for RenewalFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the credentials from {} were due for renewal and asking it again failed: {}",
            self.source,
            chain(&self.cause)
        )
    }
}

impl std::error::Error for RenewalFailed {}

/// An error and its causes on one line (the cause is part of this error's own message, so it
/// is not offered again as `source()`).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
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

/// Which source of the chain gave `credentials`, in an operator's words (from the features
/// the SDK's providers attach to what they return).
fn source_of(credentials: &Credentials) -> &'static str {
    let features = credentials
        .get_property::<Vec<AwsCredentialFeature>>()
        .map_or(&[][..], Vec::as_slice);
    for feature in features {
        let name = match feature {
            AwsCredentialFeature::CredentialsImds => {
                "the EC2 instance metadata service (the instance profile)"
            }
            AwsCredentialFeature::CredentialsHttp => {
                "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI or \
                 AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)"
            }
            AwsCredentialFeature::CredentialsEnvVarsStsWebIdToken
            | AwsCredentialFeature::CredentialsProfileStsWebIdToken
            | AwsCredentialFeature::CredentialsStsAssumeRoleWebId => {
                "web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN)"
            }
            AwsCredentialFeature::CredentialsEnvVars => {
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN"
            }
            AwsCredentialFeature::CredentialsSso | AwsCredentialFeature::CredentialsProfileSso => {
                "the SSO session of the profile"
            }
            AwsCredentialFeature::CredentialsStsAssumeRole => "the profile's role (role_arn)",
            AwsCredentialFeature::CredentialsProcess
            | AwsCredentialFeature::CredentialsProfileProcess => "the profile's credential_process",
            AwsCredentialFeature::CredentialsProfile => "the profile (AWS_PROFILE, ~/.aws)",
            _ => continue,
        };
        return name;
    }
    "the AWS credential chain"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(features: &[AwsCredentialFeature]) -> Credentials {
        let mut credentials = Credentials::for_tests();
        credentials.set_property(features.to_vec());
        credentials
    }

    #[test]
    fn names_the_source_from_the_features() {
        assert!(source_of(&with(&[AwsCredentialFeature::CredentialsImds])).contains("instance"));
        assert!(source_of(&with(&[AwsCredentialFeature::CredentialsHttp]))
            .contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
        assert!(source_of(&with(&[
            AwsCredentialFeature::CredentialsStsAssumeRole,
            AwsCredentialFeature::CredentialsProfile
        ]))
        .contains("role_arn"));
        assert_eq!(source_of(&with(&[])), "the AWS credential chain");
    }

    #[test]
    fn a_renewal_failure_names_the_source_and_the_cause_on_one_line() {
        let failure = RenewalFailed {
            source: "the container credentials endpoint",
            cause: CredentialsError::provider_error("HTTP 500"),
        };
        let text = failure.to_string();
        assert!(
            text.starts_with(
                "the credentials from the container credentials endpoint were due for renewal \
                 and asking it again failed: "
            ),
            "{text}"
        );
        assert!(text.contains("HTTP 500"), "{text}");
        assert!(!text.contains('\n'));
    }
}
