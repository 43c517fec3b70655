//! Store URLs: `file:///dir`, `s3://bucket/prefix?region=R&endpoint=URL&path_style=true`,
//! `az://account/container/prefix?endpoint=URL`, `gs://bucket/prefix?endpoint=URL`, and the
//! same with `repo+` in front for a deduplicating repository kept there ([`StoreUrl`]).
//! Credentials never appear in a URL; they come from each cloud's standard chain.

use std::path::PathBuf;

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory.
    File {
        /// The directory.
        root: PathBuf,
    },
    /// AWS S3 or an S3-compatible store.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key prefix, without leading or trailing `/` (may be empty).
        prefix: String,
        /// Region, when given.
        region: Option<String>,
        /// Endpoint URL, for S3-compatible stores.
        endpoint: Option<String>,
        /// Path-style addressing.
        path_style: bool,
    },
    /// Azure Blob Storage.
    Azure {
        /// Storage account.
        account: String,
        /// Container.
        container: String,
        /// Blob name prefix.
        prefix: String,
        /// Endpoint URL (Azurite, sovereign clouds).
        endpoint: Option<String>,
    },
    /// Google Cloud Storage.
    Gcs {
        /// Bucket.
        bucket: String,
        /// Object name prefix.
        prefix: String,
        /// Endpoint URL (emulators).
        endpoint: Option<String>,
    },
}

impl StoreLocation {
    /// Parses a store URL.
    ///
    /// # Errors
    /// A one-line description naming the URL and what to write instead.
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        let url = url::Url::parse(text).map_err(|e| {
            format!("store URL `{text}` is not a URL ({e}); use s3://, az://, gs:// or file://")
        })?;
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let host = url.host_str().unwrap_or("").to_string();
        let path = url.path().trim_matches('/').to_string();
        for (name, _) in url.query_pairs() {
            if !["region", "endpoint", "path_style"].contains(&name.as_ref()) {
                return Err(format!("store URL `{text}` has unknown parameter `{name}`; known: region, endpoint, path_style"));
            }
        }
        let need_host = |what: &str| {
            if host.is_empty() {
                Err(format!("store URL `{text}` names no {what}"))
            } else {
                Ok(host.clone())
            }
        };
        match url.scheme() {
            "file" => Ok(StoreLocation::File { root: PathBuf::from(url.path()) }),
            "s3" => Ok(StoreLocation::S3 {
                bucket: need_host("bucket")?,
                prefix: path,
                region: query("region"),
                endpoint: query("endpoint"),
                path_style: query("path_style").is_some_and(|v| v == "true"),
            }),
            "az" => {
                let account = need_host("storage account")?;
                let (container, prefix) = path.split_once('/').unwrap_or((&path, ""));
                if container.is_empty() {
                    return Err(format!("store URL `{text}` names no container: use az://ACCOUNT/CONTAINER/PREFIX"));
                }
                Ok(StoreLocation::Azure {
                    account,
                    container: container.to_string(),
                    prefix: prefix.to_string(),
                    endpoint: query("endpoint"),
                })
            }
            "gs" => Ok(StoreLocation::Gcs {
                bucket: need_host("bucket")?,
                prefix: path,
                endpoint: query("endpoint"),
            }),
            other => Err(format!("store URL `{text}` has unsupported scheme `{other}`; use s3://, az://, gs:// or file://")),
        }
    }
}

/// What a `--store` URL names: a store of plain objects (Cairn's own format), or a
/// deduplicating repository (restic's format) kept in a store, written `repo+` and the store's
/// URL (same query parameters, same credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `s3://…`, `az://…`, `gs://…`, `file:///…`.
    Objects(StoreLocation),
    /// `repo+s3://…`, `repo+az://…`, `repo+gs://…`, `repo+file:///…`: the repository's root is
    /// the store's prefix.
    Repository(StoreLocation),
}

/// The repository forms, for messages.
const REPOSITORY_FORMS: &str = "use repo+s3://BUCKET/PREFIX, repo+az://ACCOUNT/CONTAINER/PREFIX, repo+gs://BUCKET/PREFIX or repo+file:///DIR";

impl StoreUrl {
    /// Parses a store URL, plain or `repo+`.
    ///
    /// # Errors
    /// A one-line description naming the URL and what to write instead.
    pub fn parse(text: &str) -> Result<StoreUrl, String> {
        let Some(rest) = text.strip_prefix("repo+") else {
            return StoreLocation::parse(text).map(StoreUrl::Objects);
        };
        if rest.is_empty() {
            return Err(format!(
                "store URL `{text}` names no store after `repo+`; {REPOSITORY_FORMS}"
            ));
        }
        let scheme = rest.split_once("://").map_or("", |(scheme, _)| scheme);
        if !["s3", "az", "gs", "file"].contains(&scheme) {
            return Err(format!(
                "store URL `{text}` does not name a store after `repo+`; {REPOSITORY_FORMS}"
            ));
        }
        StoreLocation::parse(rest).map(StoreUrl::Repository)
    }

    /// The store the objects are kept in.
    #[must_use]
    pub fn location(&self) -> &StoreLocation {
        match self {
            StoreUrl::Objects(location) | StoreUrl::Repository(location) => location,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            StoreLocation::parse("s3://backups/cf/nightly?region=eu-west-1&endpoint=http://127.0.0.1:5000&path_style=true").unwrap(),
            StoreLocation::S3 {
                bucket: "backups".into(),
                prefix: "cf/nightly".into(),
                region: Some("eu-west-1".into()),
                endpoint: Some("http://127.0.0.1:5000".into()),
                path_style: true,
            }
        );
        assert_eq!(
            StoreLocation::parse("az://acct/container/p").unwrap(),
            StoreLocation::Azure {
                account: "acct".into(),
                container: "container".into(),
                prefix: "p".into(),
                endpoint: None
            }
        );
        assert_eq!(
            StoreLocation::parse("gs://b").unwrap(),
            StoreLocation::Gcs {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None
            }
        );
        assert_eq!(
            StoreLocation::parse("file:///srv/backups").unwrap(),
            StoreLocation::File {
                root: "/srv/backups".into()
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(StoreLocation::parse("ftp://x/y")
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!(StoreLocation::parse("az://acct")
            .unwrap_err()
            .contains("no container"));
        assert!(StoreLocation::parse("s3://b/p?secret=1")
            .unwrap_err()
            .contains("unknown parameter"));
        assert!(StoreLocation::parse("not a url").is_err());
    }

    #[test]
    fn repository_urls_are_a_store_url_behind_repo_plus() {
        assert_eq!(
            StoreUrl::parse(
                "repo+s3://backups/repo?endpoint=http://127.0.0.1:5000&path_style=true"
            )
            .unwrap(),
            StoreUrl::Repository(StoreLocation::S3 {
                bucket: "backups".into(),
                prefix: "repo".into(),
                region: None,
                endpoint: Some("http://127.0.0.1:5000".into()),
                path_style: true,
            })
        );
        assert_eq!(
            StoreUrl::parse("repo+file:///srv/repo").unwrap(),
            StoreUrl::Repository(StoreLocation::File {
                root: "/srv/repo".into()
            })
        );
        assert!(matches!(
            StoreUrl::parse("repo+az://acct/c/p").unwrap(),
            StoreUrl::Repository(StoreLocation::Azure { .. })
        ));
        assert!(matches!(
            StoreUrl::parse("repo+gs://b/p").unwrap(),
            StoreUrl::Repository(StoreLocation::Gcs { .. })
        ));
        assert_eq!(
            StoreUrl::parse("gs://b").unwrap(),
            StoreUrl::Objects(StoreLocation::Gcs {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None
            })
        );
    }

    #[test]
    fn repository_urls_without_a_store_are_refused_naming_the_forms() {
        assert_eq!(
            StoreUrl::parse("repo+").unwrap_err(),
            "store URL `repo+` names no store after `repo+`; use repo+s3://BUCKET/PREFIX, repo+az://ACCOUNT/CONTAINER/PREFIX, repo+gs://BUCKET/PREFIX or repo+file:///DIR"
        );
        for text in ["repo+repo+s3://b/p", "repo+ftp://x/y", "repo+/srv/repo"] {
            let error = StoreUrl::parse(text).unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "store URL `{text}` does not name a store after `repo+`; use repo+s3://"
                )),
                "{error}"
            );
        }
        assert!(StoreUrl::parse("repo+s3://b/p?secret=1")
            .unwrap_err()
            .contains("unknown parameter"));
    }
}
