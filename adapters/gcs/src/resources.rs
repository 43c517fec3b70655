//! The few fields of the GCS JSON API resources the adapter reads or writes.
//!
//! GCS sends 64-bit numbers (`size`, `generation`) as JSON strings; they are parsed here, once.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use cairn_store::{Capabilities, Retention, RetentionMode};

/// An object resource (`storage#object`), as returned by get, list and a finished upload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectResource {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) size: Option<String>,
    #[serde(default)]
    pub(crate) generation: Option<String>,
    #[serde(default)]
    pub(crate) updated: Option<String>,
}

impl ObjectResource {
    /// The size in bytes.
    ///
    /// # Errors
    /// A description of the malformed field.
    pub(crate) fn size(&self) -> Result<u64, String> {
        let text = self.size.as_deref().unwrap_or("0");
        text.parse()
            .map_err(|_| format!("object `{}` has a malformed size `{text}`", self.name))
    }

    /// The generation, as a number for ordering.
    pub(crate) fn generation_number(&self) -> u64 {
        self.generation
            .as_deref()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0)
    }

    /// The last modification time, when given and well formed.
    pub(crate) fn last_modified(&self) -> Option<SystemTime> {
        let timestamp: jiff::Timestamp = self.updated.as_deref()?.parse().ok()?;
        Some(SystemTime::from(timestamp))
    }
}

/// One page of `objects.list`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectList {
    #[serde(default)]
    pub(crate) items: Vec<ObjectResource>,
    #[serde(default)]
    pub(crate) next_page_token: Option<String>,
}

/// The parts of a bucket resource that decide [`Capabilities`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BucketResource {
    #[serde(default)]
    versioning: Option<Versioning>,
    #[serde(default)]
    retention_policy: Option<serde_json::Value>,
    #[serde(default)]
    object_retention: Option<ObjectRetentionConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct Versioning {
    #[serde(default)]
    enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectRetentionConfig {
    #[serde(default)]
    mode: String,
}

impl BucketResource {
    /// Versioning as the bucket reports it; retention when the bucket has a retention policy
    /// or object retention enabled.
    pub(crate) fn capabilities(&self) -> Capabilities {
        let object_retention = self
            .object_retention
            .as_ref()
            .is_some_and(|config| config.mode == "Enabled");
        Capabilities {
            versioning: self.versioning.as_ref().is_some_and(|v| v.enabled),
            retention: object_retention || self.retention_policy.is_some(),
        }
    }
}

/// The metadata sent when a resumable upload starts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UploadMetadata {
    content_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention: Option<ObjectRetention>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRetention {
    mode: &'static str,
    retain_until_time: String,
}

impl UploadMetadata {
    /// Metadata for an opaque backup object, with retention when asked.
    ///
    /// GCS calls governance-like retention `Unlocked` (an authorised user may shorten or
    /// remove it) and compliance-like retention `Locked`.
    ///
    /// # Errors
    /// When the retention time cannot be written as an RFC 3339 timestamp.
    pub(crate) fn new(retention: Option<&Retention>) -> Result<UploadMetadata, String> {
        let retention = retention
            .map(|retention| {
                let until = jiff::Timestamp::try_from(retention.until)
                    .map_err(|e| format!("retention time out of range: {e}"))?;
                Ok::<_, String>(ObjectRetention {
                    mode: match retention.mode {
                        RetentionMode::Governance => "Unlocked",
                        RetentionMode::Compliance => "Locked",
                    },
                    retain_until_time: until.to_string(),
                })
            })
            .transpose()?;
        Ok(UploadMetadata {
            content_type: "application/octet-stream",
            retention,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn objects_parse_string_numbers_and_times() {
        let object: ObjectResource = serde_json::from_str(
            r#"{"name":"p/k","size":"262148","generation":"1795319356520583",
                "updated":"2026-11-22T03:49:16.517031Z"}"#,
        )
        .unwrap();
        assert_eq!(object.size().unwrap(), 262_148);
        assert_eq!(object.generation_number(), 1_795_319_356_520_583);
        let modified = object.last_modified().unwrap();
        assert_eq!(
            modified.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_319_356
        );
        let broken: ObjectResource = serde_json::from_str(r#"{"name":"k","size":"x"}"#).unwrap();
        assert!(broken.size().unwrap_err().contains("malformed size"));
    }

    #[test]
    fn capabilities_follow_the_bucket() {
        let parse = |json: &str| {
            serde_json::from_str::<BucketResource>(json)
                .unwrap()
                .capabilities()
        };
        assert_eq!(parse(r#"{"name":"b"}"#), Capabilities::default());
        assert!(parse(r#"{"versioning":{"enabled":true}}"#).versioning);
        assert!(!parse(r#"{"versioning":{"enabled":false}}"#).versioning);
        assert!(parse(r#"{"retentionPolicy":{"retentionPeriod":"3600"}}"#).retention);
        assert!(parse(r#"{"objectRetention":{"mode":"Enabled"}}"#).retention);
    }

    #[test]
    fn retention_is_written_in_gcs_terms() {
        let retention = Retention {
            mode: RetentionMode::Compliance,
            until: UNIX_EPOCH + Duration::from_secs(1_893_456_000),
        };
        let body = serde_json::to_string(&UploadMetadata::new(Some(&retention)).unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"contentType":"application/octet-stream","retention":{"mode":"Locked","retainUntilTime":"2030-01-01T00:00:00Z"}}"#
        );
        let plain = serde_json::to_string(&UploadMetadata::new(None).unwrap()).unwrap();
        assert_eq!(plain, r#"{"contentType":"application/octet-stream"}"#);
    }
}
