//! Cairn's artifact store on Google Cloud Storage: `gs://bucket/prefix[?endpoint=URL]`.
//!
//! # Why a thin JSON API client
//! The adapter speaks the GCS JSON API over `reqwest` (rustls, no OpenSSL) and gets tokens from
//! `google-cloud-auth`. The obvious crates do not fit: `object_store`'s GCS backend uses the XML
//! API, which the fake-gcs-server emulator the tests run against rejects, and the official
//! `google-cloud-storage` crate lists over gRPC and loses the port of an emulator's upload URL.
//! The JSON API needed here is small: a resumable upload, a media download, the object and
//! bucket resources, a paginated list and a delete.
//!
//! # Generations are versions
//! Every GCS object write creates a new *generation* (a number). `put` returns it as the
//! version, `get` and `head` with a version read exactly that generation, and `delete` with a
//! version removes exactly it. Generations exist in every bucket, so versions are returned even
//! when versioning is off; but only a bucket with versioning keeps an overwritten generation,
//! which is what [`Capabilities::versioning`] reports. Reading an overwritten generation of an
//! unversioned bucket fails with `NotFound` rather than returning other bytes.
//!
//! # Uploads
//! Puts are resumable uploads in 8 MiB chunks (see the `upload` module): memory stays bounded
//! and nothing is visible until the last chunk lands. An aborted upload cancels its session;
//! sessions left behind by a crash expire after a week and are not billed as objects.
//!
//! # Retries
//! The policy is set here, explicitly (the `retry` module): 6 attempts per request within 2
//! minutes, backoff with jitter; uploads resume from what their session holds and downloads
//! from where they were cut, pinned to one generation (`upload`, `download`).
//!
//! # Credentials
//! `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key file), else gcloud's
//! application-default credentials, else the machine's metadata server (GCE, GKE, Cloud Run;
//! `GCE_METADATA_HOST` overrides its address), probed once with a short timeout when the store
//! is opened. With an explicit endpoint and neither a key file nor `GCE_METADATA_HOST`,
//! requests go unauthenticated: that is an emulator, and a test must never reach for a
//! metadata server or a Google host. The `credentials` module states the rule.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod client;
mod credentials;
mod download;
mod error;
mod resources;
mod retry;
mod upload;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_store::{
    ArtifactStore, ByteStream, Capabilities, ObjectKey, ObjectMeta, PutOptions, StoreError,
    StoreLocation, Upload,
};

use crate::client::Client;
use crate::error::{protocol_error, Missing};
use crate::resources::{BucketResource, ObjectList, ObjectResource, UploadMetadata};
use crate::upload::GcsUpload;

pub use crate::credentials::METADATA_PROBE_TIMEOUT;

/// A GCS bucket, or a prefix of one, used as an [`ArtifactStore`].
#[derive(Debug, Clone)]
pub struct GcsStore {
    client: Arc<Client>,
    /// Object name prefix, without leading or trailing `/` (may be empty).
    prefix: String,
}

impl GcsStore {
    /// The store a `gs://` location names.
    ///
    /// # Errors
    /// [`StoreError::Configuration`] for a location that is not `gs://` or a malformed
    /// endpoint, [`StoreError::Credentials`] when credentials are needed and cannot be loaded
    /// (a key file that does not load, a metadata server that gives no token within
    /// [`METADATA_PROBE_TIMEOUT`]).
    pub async fn from_location(location: &StoreLocation) -> Result<GcsStore, StoreError> {
        let StoreLocation::Gcs {
            bucket,
            prefix,
            endpoint,
        } = location
        else {
            return Err(StoreError::Configuration {
                store: format!("{location:?}"),
                detail: "Not a gs:// location".to_string(),
            });
        };
        let prefix = prefix.trim_matches('/').to_string();
        let store = display_name(bucket, &prefix);
        let source = credentials::source(
            endpoint.is_some(),
            &|name| std::env::var(name).ok(),
            &std::path::Path::is_file,
        );
        let credentials = credentials::load(&store, &source).await?;
        let client = Client::new(bucket, endpoint.as_deref(), credentials, store)?
            .with_credential_source(source.describe());
        Ok(GcsStore {
            client: Arc::new(client),
            prefix,
        })
    }

    /// Every generation of the objects under `prefix`, current and noncurrent, in key order
    /// and oldest generation first. Only a bucket with versioning keeps noncurrent ones.
    ///
    /// # Errors
    /// As [`ArtifactStore::list`].
    pub async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut objects = self.list_objects(prefix, true).await?;
        objects.sort_by(|a, b| {
            (a.0.key.as_str(), a.1.generation_number())
                .cmp(&(b.0.key.as_str(), b.1.generation_number()))
        });
        Ok(objects.into_iter().map(|(meta, _)| meta).collect())
    }

    /// The object name of `key`.
    fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The key of the object `name`, when it lies under the prefix and is a valid key.
    fn key(&self, name: &str) -> Option<ObjectKey> {
        let relative = if self.prefix.is_empty() {
            name
        } else {
            name.strip_prefix(&self.prefix)?.strip_prefix('/')?
        };
        ObjectKey::parse(relative).ok()
    }

    fn meta(&self, key: ObjectKey, object: &ObjectResource) -> Result<ObjectMeta, StoreError> {
        Ok(ObjectMeta {
            key,
            size: object
                .size()
                .map_err(|e| protocol_error(self.client.store(), &e))?,
            version: object.generation.clone(),
            last_modified: object.last_modified(),
        })
    }

    /// The objects under `prefix`, with their resources, following every page.
    async fn list_objects(
        &self,
        prefix: &str,
        versions: bool,
    ) -> Result<Vec<(ObjectMeta, ObjectResource)>, StoreError> {
        let name_prefix = self.name(prefix);
        let mut objects = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let page = self
                .list_page(&name_prefix, versions, page_token.as_deref())
                .await?;
            for object in page.items {
                if let Some(key) = self.key(&object.name) {
                    objects.push((self.meta(key, &object)?, object));
                }
            }
            page_token = page.next_page_token.filter(|token| !token.is_empty());
            if page_token.is_none() {
                return Ok(objects);
            }
        }
    }

    async fn list_page(
        &self,
        name_prefix: &str,
        versions: bool,
        page_token: Option<&str>,
    ) -> Result<ObjectList, StoreError> {
        let mut query = vec![("prefix", name_prefix)];
        if versions {
            query.push(("versions", "true"));
        }
        if let Some(token) = page_token {
            query.push(("pageToken", token));
        }
        let request = self
            .client
            .http()
            .get(self.client.objects_url())
            .query(&query);
        self.client
            .json(request, Missing::Bucket(self.client.bucket()))
            .await
    }

    /// A request on the object of `key`, of one generation when `version` is given.
    fn object_request(
        &self,
        method: reqwest::Method,
        key: &ObjectKey,
        version: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, StoreError> {
        let request = self
            .client
            .http()
            .request(method, self.client.object_url(&self.name(key.as_str())));
        match version {
            None => Ok(request),
            Some(generation) if is_generation(generation) => {
                Ok(request.query(&[("generation", generation)]))
            }
            Some(other) => Err(protocol_error(
                self.client.store(),
                &format!("Version `{other}` of `{key}` is not a GCS generation"),
            )),
        }
    }
}

impl fmt::Display for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.client.store())
    }
}

#[async_trait]
impl ArtifactStore for GcsStore {
    async fn put(
        &self,
        key: &ObjectKey,
        options: &PutOptions,
    ) -> Result<Box<dyn Upload>, StoreError> {
        let metadata = UploadMetadata::new(options.retention.as_ref())
            .map_err(|e| protocol_error(self.client.store(), &e))?;
        let name = self.name(key.as_str());
        let upload =
            GcsUpload::start(Arc::clone(&self.client), &name, key.as_str(), &metadata).await?;
        Ok(Box::new(upload))
    }

    async fn get(&self, key: &ObjectKey, version: Option<&str>) -> Result<ByteStream, StoreError> {
        // The version goes into the query once, by the resumed request if it was not given.
        let media = self
            .client
            .http()
            .get(self.client.object_url(&self.name(key.as_str())))
            .query(&[("alt", "media")]);
        let request = self
            .object_request(reqwest::Method::GET, key, version)?
            .query(&[("alt", "media")]);
        let response = self
            .client
            .send(request, Missing::Object(key.as_str()))
            .await?;
        Ok(download::resuming(
            Arc::clone(&self.client),
            media,
            version,
            key.as_str(),
            response,
        ))
    }

    /// A media download with `Range: bytes=s-(e-1)`, expecting 206 and exactly the bytes
    /// asked for (GCS answers a range ending past the object with fewer, one starting past it
    /// with 416).
    async fn get_range(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let request = self
            .object_request(reqwest::Method::GET, key, version)?
            .query(&[("alt", "media")])
            .header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", range.start, range.end - 1),
            );
        let (status, data) = self
            .client
            .bytes(request, Missing::Object(key.as_str()))
            .await?;
        if status != reqwest::StatusCode::PARTIAL_CONTENT
            && !(status.is_success() && range.start == 0)
        {
            return Err(protocol_error(
                self.client.store(),
                &format!("a ranged read of `{key}` answered {status}, not 206"),
            ));
        }
        if data.len() as u64 != range.end - range.start {
            let size = range.start + data.len() as u64;
            return Err(cairn_store::range_error(
                self.client.store(),
                key,
                &range,
                size,
            ));
        }
        Ok(data)
    }

    async fn head(&self, key: &ObjectKey, version: Option<&str>) -> Result<ObjectMeta, StoreError> {
        let request = self.object_request(reqwest::Method::GET, key, version)?;
        let object: ObjectResource = self
            .client
            .json(request, Missing::Object(key.as_str()))
            .await?;
        self.meta(key.clone(), &object)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut objects: Vec<ObjectMeta> = self
            .list_objects(prefix, false)
            .await?
            .into_iter()
            .map(|(meta, _)| meta)
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &ObjectKey, version: Option<&str>) -> Result<(), StoreError> {
        let request = self.object_request(reqwest::Method::DELETE, key, version)?;
        self.client
            .send(request, Missing::Object(key.as_str()))
            .await?;
        Ok(())
    }

    /// Resumable upload sessions cannot be listed; GCS expires them after a week.
    async fn abort_unfinished_uploads(&self, _prefix: &str) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Cloud Storage's limit of one object: 5 TiB.
    fn max_object_size(&self) -> Option<u64> {
        Some(5 << 40)
    }

    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        let request = self.client.http().get(self.client.bucket_url());
        let bucket: BucketResource = self
            .client
            .json(request, Missing::Bucket(self.client.bucket()))
            .await?;
        Ok(bucket.capabilities())
    }
}

/// `gs://bucket/prefix`, or `gs://bucket` without a prefix.
fn display_name(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("gs://{bucket}")
    } else {
        format!("gs://{bucket}/{prefix}")
    }
}

/// True for a GCS generation: a decimal number.
fn is_generation(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(prefix: &str) -> GcsStore {
        let location = StoreLocation::Gcs {
            bucket: "bucket".into(),
            prefix: prefix.into(),
            endpoint: Some("http://127.0.0.1:1".into()),
        };
        futures::executor::block_on(GcsStore::from_location(&location)).unwrap()
    }

    #[test]
    fn keys_are_relative_to_the_prefix() {
        let store = store("backups/nightly");
        assert_eq!(store.to_string(), "gs://bucket/backups/nightly");
        assert_eq!(store.name("a/b"), "backups/nightly/a/b");
        assert_eq!(store.key("backups/nightly/a/b").unwrap().as_str(), "a/b");
        assert!(store.key("backups/nightly-other/a").is_none());
        assert!(store.key("backups/nightly//x").is_none());
    }

    #[test]
    fn without_a_prefix_names_are_keys() {
        let store = store("");
        assert_eq!(store.to_string(), "gs://bucket");
        assert_eq!(store.name("a/b"), "a/b");
        assert_eq!(store.key("a/b").unwrap().as_str(), "a/b");
    }

    #[test]
    fn versions_must_be_generations() {
        assert!(is_generation("1795319356520583"));
        assert!(!is_generation(""));
        assert!(!is_generation("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"));
    }
}
