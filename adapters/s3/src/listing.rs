//! Listings: current objects (the trait's `list`), every version, open multipart uploads.
//!
//! Each one pages through S3's answers (1,000 entries per page) until the last. Keys that are
//! not valid [`ObjectKey`]s (written by something else than Cairn, e.g. with `//`) are skipped
//! with a warning: Cairn could not address them anyway.

use aws_sdk_s3::primitives::DateTime;
use cairn_store::{ObjectKey, ObjectMeta, StoreError};

use crate::{size, system_time, S3Store};

impl S3Store {
    /// Current objects under `prefix` (`ListObjectsV2`), in key order, without version ids.
    pub(crate) async fn list_current(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object(prefix))
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", Some(prefix), &e))?;
            objects.extend(page.contents().iter().filter_map(|object| {
                self.meta(object.key(), object.size(), None, object.last_modified())
            }));
        }
        Ok(objects)
    }

    /// Every version and delete marker under `prefix` (`ListObjectVersions`), grouped by key in
    /// key order, newest first within a key's versions. Delete markers have size 0. On an
    /// unversioned bucket each object has the version id `null`.
    ///
    /// Deleting each entry with [`cairn_store::ArtifactStore::delete`] and its version removes
    /// a backup completely, old versions and delete markers included.
    ///
    /// # Errors
    /// As for `list`.
    pub async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut entries = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(self.object(prefix))
                .set_key_marker(key_marker)
                .set_version_id_marker(version_marker)
                .send()
                .await
                .map_err(|e| self.error("ListObjectVersions", Some(prefix), &e))?;
            entries.extend(page.versions().iter().filter_map(|version| {
                self.meta(
                    version.key(),
                    version.size(),
                    version.version_id(),
                    version.last_modified(),
                )
            }));
            entries.extend(page.delete_markers().iter().filter_map(|marker| {
                self.meta(
                    marker.key(),
                    Some(0),
                    marker.version_id(),
                    marker.last_modified(),
                )
            }));
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                break;
            }
        }
        entries.sort_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then(b.last_modified.cmp(&a.last_modified))
        });
        Ok(entries)
    }

    /// Keys (relative to the store's prefix) of the multipart uploads under `prefix` that were
    /// started and neither completed nor aborted; a key appears once per open upload.
    ///
    /// # Errors
    /// As for `list`.
    pub async fn open_multipart_uploads(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let uploads = self.open_uploads(prefix).await?;
        Ok(uploads
            .iter()
            .filter_map(|(object, _)| self.relative(object))
            .map(str::to_string)
            .collect())
    }

    /// Every unfinished multipart upload under `prefix`: `(full object key, upload id)`.
    pub(crate) async fn open_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut uploads = Vec::new();
        let (mut key_marker, mut upload_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.object(prefix))
                .set_key_marker(key_marker)
                .set_upload_id_marker(upload_marker)
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", Some(prefix), &e))?;
            uploads.extend(page.uploads().iter().filter_map(|upload| {
                Some((upload.key()?.to_string(), upload.upload_id()?.to_string()))
            }));
            key_marker = page.next_key_marker().map(str::to_string);
            upload_marker = page.next_upload_id_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                break;
            }
        }
        Ok(uploads)
    }

    /// An [`ObjectMeta`] from a listing entry, or `None` (with a warning) for a key Cairn
    /// cannot address.
    fn meta(
        &self,
        object: Option<&str>,
        length: Option<i64>,
        version: Option<&str>,
        modified: Option<&DateTime>,
    ) -> Option<ObjectMeta> {
        let object = object?;
        let key = self
            .relative(object)
            .and_then(|relative| ObjectKey::parse(relative).ok());
        let Some(key) = key else {
            tracing::warn!(store = %self, key = object, "skipping an object whose key Cairn cannot use");
            return None;
        };
        Some(ObjectMeta {
            key,
            size: size(length),
            version: version.map(str::to_string),
            last_modified: system_time(modified),
        })
    }
}
