//! Cairn's artifact store on AWS S3 and S3-compatible stores:
//! `s3://bucket/prefix?region=R&endpoint=URL&path_style=true`.
//!
//! [`S3Store`] is a thin layer over `aws-sdk-s3`. Keys are relative to the URL's prefix; every
//! request goes to the one bucket of the URL.
//!
//! ```no_run
//! # async fn tour() -> Result<(), cairn_store::StoreError> {
//! use bytes::Bytes;
//! use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreLocation};
//! use cairn_store_s3::S3Store;
//!
//! let location = StoreLocation::parse("s3://backups/cf/nightly?region=eu-west-1").unwrap();
//! let store = S3Store::from_location(&location).await?;
//! let capabilities = store.capabilities().await?; // versioning, retention; checks access
//! let key = ObjectKey::parse("demo/20240102T030405Z/manifest.json").unwrap();
//! let put = store.put_bytes(&key, Bytes::from_static(b"{}"), &PutOptions::default()).await?;
//! assert_eq!(capabilities.versioning, put.version.is_some());
//! let again = store.get_bytes(&key, put.version.as_deref()).await?; // exactly that version
//! # Ok(())
//! # }
//! ```
//!
//! # Credentials and region
//! Credentials never appear in a store URL. They come from the standard AWS chain that
//! `aws-config` implements: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`),
//! `AWS_PROFILE` and the shared config files, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, as on
//! EKS), ECS container credentials and the EC2 instance metadata service (IMDSv2, the instance
//! profile: no secret at all on EC2; `AWS_EC2_METADATA_SERVICE_ENDPOINT` overrides its address,
//! and it is asked at most [`IMDS_ATTEMPTS`] times per lookup). The region is the
//! URL's `region`, else the chain's (`AWS_REGION`, profile, IMDS), else `us-east-1` when the URL
//! names an `endpoint` (S3-compatible stores rarely care).
//!
//! Credentials that expire (instance profile, container role, web identity, SSO, assumed roles)
//! are renewed during a long run: the client holds the chain as a provider, and its identity
//! cache asks it again 10 s (less up to 5 s of jitter) before they expire. A renewal that fails
//! is a [`StoreError::Credentials`] naming the source that gave the credentials before (the
//! `credentials` module). Only IMDS is different: when it does not answer, the SDK goes on with
//! the last credentials it got, and S3 answers `ExpiredToken` once they really expired.
//!
//! Cairn needs these permissions on the bucket: `s3:GetBucketVersioning`,
//! `s3:GetBucketObjectLockConfiguration` (probed once before a backup), `s3:ListBucket`,
//! `s3:ListBucketVersions`, `s3:ListBucketMultipartUploads`, and on its objects
//! `s3:PutObject`, `s3:GetObject`, `s3:GetObjectVersion`, `s3:DeleteObject`,
//! `s3:DeleteObjectVersion`, `s3:AbortMultipartUpload`, plus `s3:PutObjectRetention` when
//! backups carry retention. A refused request (HTTP 403) is reported as a credentials problem.
//!
//! # Streaming uploads
//! Artifacts are streamed (tar → zstd → sha256 → here) and their size is not known in advance,
//! so [`S3Upload`] buffers one part at a time and sends it with `UploadPart` as soon as it is
//! full. An object that ends before its first part is full is sent with one `PutObject` instead:
//! one request, and no multipart upload that could be left behind.
//!
//! - **Parts of 8 MiB** ([`PART_SIZE`]). S3 refuses parts under 5 MiB (except the last), and a
//!   retried part is resent whole, so small parts keep retries cheap. 8 MiB is also what the AWS
//!   CLI uses. The price is S3's limit of 10,000 parts: one object can hold at most
//!   10,000 × 8 MiB ≈ 78 GiB, and a larger stream fails with a clear error when it gets there.
//! - **At most 4 parts in flight** ([`PARTS_IN_FLIGHT`]). One request at a time leaves the link
//!   idle during every round trip; 4 overlapping requests fill a fast link even with some
//!   latency, while memory stays bounded: an upload holds at most the part it is filling plus
//!   4 parts in flight, 5 × 8 MiB = 40 MiB, whatever the object's size. When 4 parts are in
//!   flight and the next one is full, `write` waits, which slows the producer down
//!   (backpressure) instead of buffering more. [`S3Upload::stats`] reports what was held.
//! - **At most 8 parts held by the whole process**, filling or in flight (64 MiB): parallel
//!   uploads (one per artifact stream) share that budget, so 8 streams need no more part memory
//!   than 2. A stream that finds the budget spent waits for a part of another to finish. Part
//!   buffers are reused through a pool of the same size, so the allocator does not keep freed
//!   8 MiB parts of several threads (at 8 streams: 217 MiB peak instead of 284).
//! - Parts upload in spawned Tokio tasks, so they progress while the caller is busy producing
//!   the next bytes.
//! - Integrity: the SDK adds a CRC32 checksum to every `PutObject` and `UploadPart` by default
//!   (which also satisfies Object Lock's demand for a checksum). A store that rejects these
//!   headers can be told `AWS_REQUEST_CHECKSUM_CALCULATION=when_required`.
//! - No SigV4 payload hash: `PutObject` and `UploadPart` are sent with `UNSIGNED-PAYLOAD`
//!   (`disable_payload_signing`), so the SDK does not run SHA-256 over every body a second time
//!   (the coordinator already hashes the stored bytes for the manifest). The body stays protected
//!   by the CRC32 above, by TLS on `https` endpoints, and end to end by the manifest's sha256,
//!   which `backups verify` and every restore check.
//!
//! # Abandoned uploads
//! The parts of a multipart upload that is neither completed nor aborted stay in the bucket,
//! invisible to listings, and are billed until someone aborts the upload. This adapter aborts
//! on every failure it sees (a failed part aborts the whole upload before the error is
//! returned) and, when an [`S3Upload`] is dropped unfinished, in the background. A process
//! that is killed cannot, so give every backup bucket a lifecycle rule that removes incomplete
//! uploads, e.g.
//! `{"Rules":[{"ID":"abort-incomplete-uploads","Status":"Enabled","Filter":{},"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":1}}]}`
//! with `aws s3api put-bucket-lifecycle-configuration --bucket B --lifecycle-configuration
//! file://rule.json`. [`S3Store::open_multipart_uploads`] shows what is left.
//!
//! # Versions and retention
//! `put` and `head` return the S3 version id on a versioned bucket, and `get`/`head`/`delete`
//! accept one. The version id `null` (objects written while versioning was off or suspended)
//! is reported as no version: the next write of the key replaces such an object.
//! [`S3Store::list_versions`] lists every version and delete marker, so that a backup can be
//! deleted completely. Retention becomes Object Lock's mode and retain-until date on the
//! `PutObject` or `CreateMultipartUpload` request; the bucket must have been created with
//! Object Lock enabled, which `capabilities` reports.
//!
//! # Errors
//! A missing key or version is [`StoreError::NotFound`], a missing bucket
//! [`StoreError::Configuration`], missing or refused credentials (HTTP 403 included)
//! [`StoreError::Credentials`], 5xx, throttling, timeouts and connection failures (after the
//! SDK's own retries) [`StoreError::Transient`]. Messages are one line and name the bucket and
//! key; credentials and signed requests never appear in them.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod credentials;
mod error;
mod listing;
mod upload;

use std::fmt;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{BucketVersioningStatus, ObjectLockEnabled};
use aws_sdk_s3::Client;
use bytes::Bytes;
use cairn_store::{
    ArtifactStore, ByteStream, Capabilities, ObjectKey, ObjectMeta, PutOptions, StoreError,
    StoreLocation, Upload,
};
use futures::StreamExt;

pub use upload::{
    parts_held_by_process, S3Upload, UploadStats, PARTS_IN_FLIGHT, PARTS_IN_FLIGHT_PER_PROCESS,
    PART_SIZE,
};

/// Region used with a custom endpoint when neither the URL nor the chain names one.
const ENDPOINT_DEFAULT_REGION: &str = "us-east-1";

/// A bucket (and key prefix) on S3 or an S3-compatible store.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// Connects to the store of an `s3://` URL, with credentials and (unless the URL names one)
    /// the region from the standard AWS chain. Makes no request: problems with the bucket or
    /// the credentials show up at the first call, typically [`ArtifactStore::capabilities`].
    ///
    /// # Errors
    /// [`StoreError::Configuration`] when `location` is not an S3 one, or no region is known.
    pub async fn from_location(location: &StoreLocation) -> Result<S3Store, StoreError> {
        let StoreLocation::S3 {
            bucket,
            prefix,
            region,
            endpoint,
            path_style,
        } = location
        else {
            return Err(StoreError::Configuration {
                store: format!("{location:?}"),
                detail: "The S3 adapter needs an s3:// store URL".into(),
            });
        };
        let config = sdk_config(region.as_deref(), endpoint.as_deref(), *path_style)
            .await
            .ok_or_else(|| StoreError::Configuration {
                store: format!("s3://{bucket}/{prefix}"),
                detail: "No region: add `?region=REGION` to the store URL or set AWS_REGION".into(),
            })?;
        Ok(S3Store {
            client: Client::from_conf(config),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
        })
    }

    /// Starts an upload (no request is made until the first part is full or it completes).
    #[must_use]
    pub fn upload(&self, key: &ObjectKey, options: &PutOptions) -> S3Upload {
        S3Upload::new(self.clone(), key.clone(), options)
    }

    /// The S3 key of a store key (or key prefix).
    fn object(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The store key of an S3 key, when it is under the prefix.
    fn relative<'a>(&self, object: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(object)
        } else {
            object.strip_prefix(&self.prefix)?.strip_prefix('/')
        }
    }

    /// The [`StoreError`] for a failed request; `operation` is the S3 operation's name.
    fn error<E>(&self, operation: &str, key: Option<&str>, error: &SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let detail = match key {
            Some(key) => format!("{operation} `{key}`: {}", error::describe(error)),
            None => format!("{operation}: {}", error::describe(error)),
        };
        error::store_error(
            error::kind(error),
            &self.to_string(),
            &self.bucket,
            key.unwrap_or(""),
            detail,
        )
    }

    async fn object_lock_enabled(&self) -> Result<bool, StoreError> {
        let answer = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        match answer {
            Ok(output) => Ok(output
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                == Some(&ObjectLockEnabled::Enabled)),
            Err(error) if error.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(false),
            Err(error) => Err(self.error("GetObjectLockConfiguration", None, &error)),
        }
    }
}

impl fmt::Display for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl fmt::Debug for S3Store {
    /// Without the client, whose configuration holds the credentials provider.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Attempts per credential lookup at the EC2 instance metadata service (each with the SDK's
/// 1 s connect and read timeouts).
pub const IMDS_ATTEMPTS: u32 = 2;

/// Attempts per request (the first and the retries) for transient store errors;
/// `CAIRN_S3_MAX_ATTEMPTS` overrides it.
pub const RETRY_ATTEMPTS: u32 = 8;

/// The SDK configuration: the AWS chain's, with the URL's region, endpoint and addressing.
/// `None` when no region is known and there is no endpoint to default one for.
async fn sdk_config(
    region: Option<&str>,
    endpoint: Option<&str>,
    path_style: bool,
) -> Option<aws_sdk_s3::Config> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    // The SDK's default credential chain, with one change: the instance metadata service is
    // asked at most IMDS_ATTEMPTS times per lookup (the SDK's default is 4, with backoff), so
    // a machine without an instance profile fails in about a second, naming the sources tried.
    let imds = aws_config::imds::Client::builder()
        .max_attempts(IMDS_ATTEMPTS)
        .build();
    let mut chain = DefaultCredentialsChain::builder().imds_client(imds);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
        chain = chain.region(Region::new(region.to_string()));
    }
    // A provider, not credentials: the client's identity cache asks it again before they
    // expire (the `credentials` module).
    let shared = loader
        .credentials_provider(credentials::RenewingChain::new(chain.build().await))
        .load()
        .await;
    // A nightly backup rides out a store's bad minute: transient errors (500, 503 SlowDown,
    // reset connections, timeouts) are retried up to 8 times with exponential backoff and
    // jitter (0.2 s, 0.4 s, ... capped at 20 s) before the run fails.
    let attempts = std::env::var("CAIRN_S3_MAX_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(RETRY_ATTEMPTS);
    let retries = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(std::time::Duration::from_millis(200))
        .with_max_backoff(std::time::Duration::from_secs(20));
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(path_style)
        .retry_config(retries);
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    if shared.region().is_none() {
        // Only S3-compatible stores get a default region; AWS needs the bucket's own.
        endpoint?;
        config = config.region(Region::from_static(ENDPOINT_DEFAULT_REGION));
    }
    Some(config.build())
}

/// A version id worth recording: S3 says `null` for objects written while versioning was off
/// or suspended, and such a "version" is replaced by the next write of the key.
fn pinned_version(version: Option<&str>) -> Option<String> {
    version.filter(|v| *v != "null").map(str::to_string)
}

/// A size as S3 reports it (a signed number that is never negative).
fn size(length: Option<i64>) -> u64 {
    length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

fn system_time(time: Option<&DateTime>) -> Option<SystemTime> {
    time.and_then(|t| SystemTime::try_from(*t).ok())
}

/// An object's body as a stream of chunks, read from the connection as the caller polls.
fn body_stream(body: aws_sdk_s3::primitives::ByteStream, store: String, key: String) -> ByteStream {
    futures::stream::unfold(body, |mut body| async move {
        body.next().await.map(|chunk| (chunk, body))
    })
    .map(move |chunk| {
        chunk.map_err(|e| StoreError::Transient {
            store: store.clone(),
            detail: format!("reading `{key}`: {}", e.to_string().replace('\n', " ")),
        })
    })
    .boxed()
}

#[async_trait]
impl ArtifactStore for S3Store {
    async fn put(
        &self,
        key: &ObjectKey,
        options: &PutOptions,
    ) -> Result<Box<dyn Upload>, StoreError> {
        Ok(Box::new(self.upload(key, options)))
    }

    async fn get(&self, key: &ObjectKey, version: Option<&str>) -> Result<ByteStream, StoreError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("GetObject", Some(key.as_str()), &e))?;
        Ok(body_stream(output.body, self.to_string(), key.to_string()))
    }

    /// A GET with `Range: bytes=s-(e-1)`. S3 answers a range starting past the end with 416
    /// `InvalidRange` (an `Other` error) and one ending past it with fewer bytes, which is
    /// refused here: a caller gets exactly the bytes asked for or an error.
    async fn get_range(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .set_version_id(version.map(str::to_string))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| self.error("GetObject", Some(key.as_str()), &e))?;
        let mut body = body_stream(output.body, self.to_string(), key.to_string());
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk?);
        }
        if data.len() as u64 != range.end - range.start {
            let size = range.start + data.len() as u64;
            return Err(cairn_store::range_error(
                &self.to_string(),
                key,
                &range,
                size,
            ));
        }
        Ok(Bytes::from(data))
    }

    async fn head(&self, key: &ObjectKey, version: Option<&str>) -> Result<ObjectMeta, StoreError> {
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("HeadObject", Some(key.as_str()), &e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: size(output.content_length()),
            version: pinned_version(output.version_id()),
            last_modified: system_time(output.last_modified()),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.list_current(prefix).await
    }

    async fn delete(&self, key: &ObjectKey, version: Option<&str>) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", Some(key.as_str()), &e))?;
        Ok(())
    }

    async fn abort_unfinished_uploads(&self, prefix: &str) -> Result<usize, StoreError> {
        let uploads = self.open_uploads(prefix).await?;
        for (object, upload_id) in &uploads {
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(upload_id)
                .send()
                .await
                .map_err(|e| self.error("AbortMultipartUpload", Some(object), &e))?;
        }
        Ok(uploads.len())
    }

    /// 10,000 parts of [`PART_SIZE`] (about 78 GiB).
    fn max_object_size(&self) -> Option<u64> {
        Some(upload::MAX_OBJECT_SIZE)
    }

    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        let versioning = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.error("GetBucketVersioning", None, &e))?;
        Ok(Capabilities {
            versioning: versioning.status() == Some(&BucketVersioningStatus::Enabled),
            retention: self.object_lock_enabled().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that is never called (the URL names a region, so nothing is looked up).
    async fn store(prefix: &str) -> S3Store {
        let location = StoreLocation::parse(&format!(
            "s3://bucket/{prefix}?region=eu-west-1&endpoint=http://127.0.0.1:9&path_style=true"
        ))
        .expect("valid URL");
        S3Store::from_location(&location).await.expect("store")
    }

    #[tokio::test]
    async fn keys_are_relative_to_the_prefix() {
        let nightly = store("backups/nightly").await;
        assert_eq!(nightly.to_string(), "s3://bucket/backups/nightly");
        assert_eq!(nightly.object("a/b"), "backups/nightly/a/b");
        assert_eq!(nightly.relative("backups/nightly/a/b"), Some("a/b"));
        assert_eq!(nightly.relative("backups/nightly2/a"), None);
        let bare = store("").await;
        assert_eq!(bare.to_string(), "s3://bucket/");
        assert_eq!(bare.object("a/b"), "a/b");
        assert_eq!(bare.relative("a/b"), Some("a/b"));
    }
}
