//! Which credentials a store uses: the rule an operator can predict from the environment.
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS` set: that key file, whatever the endpoint (an explicit
//!    endpoint may be a private Google endpoint that needs it).
//! 2. Google's own endpoint (no `?endpoint=`): gcloud's application-default credentials file
//!    (`~/.config/gcloud/application_default_credentials.json`) when it exists, else the
//!    metadata server of the machine (GCE, GKE, Cloud Run): `GCE_METADATA_HOST`, by default
//!    `metadata.google.internal`.
//! 3. An explicit endpoint and no key file: the metadata server only when `GCE_METADATA_HOST`
//!    names one (on Google Cloud behind a private endpoint, set it to
//!    `metadata.google.internal`); otherwise no credentials at all, because that is an emulator
//!    (fake-gcs-server), and a test must never reach for a metadata server or a Google host.
//!
//! The metadata server is probed once, when the store is opened, with a short timeout
//! ([`METADATA_PROBE_TIMEOUT`]): off Google Cloud it does not answer, and the operator gets one
//! line naming every source tried instead of a failure at the first upload. The token the probe
//! fetched is cached by google-cloud-auth and used by the requests that follow; its background
//! task renews it 4 minutes before it expires (every 10 s once less is left), and a request
//! never gets an expired token. When no token can be had (at the start, or when a renewal
//! failed and the old token expired), the request fails with [`token_error`], which names the
//! source.

use std::path::PathBuf;
use std::time::Duration;

use google_cloud_auth::credentials::{mds, Builder as AdcBuilder, Credentials};

use cairn_store::StoreError;

use crate::error::credentials_error;

/// The variable naming a service-account key file.
pub(crate) const KEY_FILE_VARIABLE: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// The variable naming the metadata server (`HOST[:PORT]`), read by google-cloud-auth too.
pub(crate) const METADATA_HOST_VARIABLE: &str = "GCE_METADATA_HOST";
/// How long the metadata server has to give a token when the store is opened.
pub const METADATA_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the credentials come from, by the rule above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's file, through application default
    /// credentials.
    KeyFile(PathBuf),
    /// The metadata server at this host.
    MetadataServer(String),
    /// None: an emulator.
    Anonymous,
}

impl Source {
    /// The source in an operator's words, for errors.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::KeyFile(path) => format!("the key file {}", path.display()),
            Source::MetadataServer(host) => format!("the metadata server at {host}"),
            Source::Anonymous => "no credentials".to_string(),
        }
    }
}

/// What to do when a token could not be had during a run: tokens live about an hour and are
/// renewed while the run lasts.
pub(crate) const RENEWAL_HINT: &str = "access tokens expire and are fetched again while a run \
    lasts (4 minutes before they expire), so their source must keep answering: check that the \
    metadata server is reachable and the service account still attached (or that the key file \
    is still valid), then run again";

/// The error for a request that got no access token from `source` (`describe`d), at the
/// start or on a renewal during the run. Of google-cloud-auth's chain of errors ("Fetching the
/// token resulted in transient errors ...: ... : the HTTP transport reports a [500] error: ...")
/// only the last, what the source answered, on one line.
pub(crate) fn token_error(
    store: &str,
    source: &str,
    error: &(dyn std::error::Error + 'static),
) -> StoreError {
    let mut deepest = error;
    while let Some(cause) = deepest.source() {
        deepest = cause;
    }
    StoreError::Credentials {
        store: store.to_string(),
        detail: format!(
            "no access token from {source}: {}",
            one_line(&deepest.to_string())
        ),
        hint: RENEWAL_HINT.to_string(),
    }
}

/// Applies the rule to an environment (`env`) and the gcloud file's existence (`exists`).
pub(crate) fn source(
    explicit_endpoint: bool,
    env: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&std::path::Path) -> bool,
) -> Source {
    let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    if let Some(path) = var(KEY_FILE_VARIABLE) {
        return Source::KeyFile(path.into());
    }
    let metadata_host = var(METADATA_HOST_VARIABLE);
    if !explicit_endpoint {
        if let Some(gcloud) = var("HOME")
            .map(|home| {
                PathBuf::from(home).join(".config/gcloud/application_default_credentials.json")
            })
            .filter(|path| exists(path))
        {
            return Source::KeyFile(gcloud);
        }
        return Source::MetadataServer(
            metadata_host.unwrap_or_else(|| "metadata.google.internal".into()),
        );
    }
    match metadata_host {
        Some(host) => Source::MetadataServer(host),
        None => Source::Anonymous,
    }
}

/// The credentials of `source`; for the metadata server, after a token was fetched within
/// [`METADATA_PROBE_TIMEOUT`].
pub(crate) async fn load(store: &str, source: &Source) -> Result<Option<Credentials>, StoreError> {
    match source {
        Source::Anonymous => Ok(None),
        Source::KeyFile(path) => AdcBuilder::default().build().map(Some).map_err(|e| {
            credentials_error(
                store,
                &format!("cannot load the credentials in {}: {e}", path.display()),
            )
        }),
        Source::MetadataServer(host) => {
            let credentials = mds::Builder::default().build().map_err(|e| {
                credentials_error(store, &format!("cannot use the metadata server: {e}"))
            })?;
            probe(store, host, &credentials).await?;
            Ok(Some(credentials))
        }
    }
}

/// One token from the metadata server, or the error that names every source tried.
async fn probe(store: &str, host: &str, credentials: &Credentials) -> Result<(), StoreError> {
    let why = match tokio::time::timeout(
        METADATA_PROBE_TIMEOUT,
        credentials.headers(http::Extensions::new()),
    )
    .await
    {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(error)) => format!("gave no token ({})", short(&error.to_string())),
        Err(_) => format!(
            "did not answer within {} s",
            METADATA_PROBE_TIMEOUT.as_secs()
        ),
    };
    Err(StoreError::Credentials {
        store: store.to_string(),
        detail: format!(
            "no key file ({KEY_FILE_VARIABLE} unset, no gcloud application-default credentials), \
             and the metadata server at {host} {why}"
        ),
        hint: TRIED_HINT.to_string(),
    })
}

/// What to do when every source failed.
pub(crate) const TRIED_HINT: &str = "set GOOGLE_APPLICATION_CREDENTIALS to a service-account \
    key file, run `gcloud auth application-default login`, or run on Google Cloud with a \
    service account attached (GCE_METADATA_HOST names the metadata server)";

/// The first line of `text`, at most 200 characters (google-cloud-auth's messages run long).
/// `text` on one line, at most 300 characters.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_of(explicit: bool, pairs: &[(&str, &str)], gcloud_file: bool) -> Source {
        let env = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_string())
        };
        source(explicit, &env, &|_| gcloud_file)
    }

    #[derive(Debug)]
    struct Failed(&'static str, Option<Box<Failed>>);

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_token_error_names_the_source_and_what_it_answered() {
        let chain = Failed(
            "Fetching the token resulted in transient errors.",
            Some(Box::new(Failed(
                "the HTTP transport reports a [500] error:\nthe stand-in was told to fail",
                None,
            ))),
        );
        let source = Source::MetadataServer("127.0.0.1:9".into()).describe();
        let error = token_error("gs://b", &source, &chain);
        let StoreError::Credentials { detail, hint, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!(
            detail,
            "no access token from the metadata server at 127.0.0.1:9: the HTTP transport reports \
             a [500] error: the stand-in was told to fail"
        );
        assert!(hint.contains("fetched again while a run lasts"), "{hint}");
    }

    #[test]
    fn a_key_file_wins_everywhere() {
        let key = [
            ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"),
            ("GCE_METADATA_HOST", "127.0.0.1:1"),
        ];
        assert_eq!(
            source_of(true, &key, true),
            Source::KeyFile("/k.json".into())
        );
        assert_eq!(
            source_of(false, &key, true),
            Source::KeyFile("/k.json".into())
        );
    }

    #[test]
    fn google_endpoint_uses_gcloud_then_the_metadata_server() {
        let home = [("HOME", "/home/op")];
        assert_eq!(
            source_of(false, &home, true),
            Source::KeyFile("/home/op/.config/gcloud/application_default_credentials.json".into())
        );
        assert_eq!(
            source_of(false, &home, false),
            Source::MetadataServer("metadata.google.internal".into())
        );
        assert_eq!(
            source_of(false, &[("GCE_METADATA_HOST", "127.0.0.1:9")], false),
            Source::MetadataServer("127.0.0.1:9".into())
        );
    }

    #[test]
    fn an_explicit_endpoint_is_anonymous_unless_a_metadata_host_is_named() {
        assert_eq!(
            source_of(true, &[("HOME", "/home/op")], true),
            Source::Anonymous
        );
        assert_eq!(
            source_of(true, &[("GCE_METADATA_HOST", "127.0.0.1:9")], false),
            Source::MetadataServer("127.0.0.1:9".into())
        );
        assert_eq!(
            source_of(true, &[("GCE_METADATA_HOST", " ")], false),
            Source::Anonymous
        );
    }
}
