//! bbr's `metadata` file: which artifacts a backup holds and the sha256 of every file in them
//! (bbr-facts §4.3). Cairn writes exactly this schema so bbr can restore a Cairn backup, and
//! reads older variants (no `backup_activity`) so Cairn can restore any bbr backup.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::{BTreeSet, HashSet};

use crate::format::digest::SharedMap;
pub use crate::format::digest::{Checksums, FileName, Sha256Sum};

/// The whole `metadata` document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMetadata {
    /// One entry per instance with artifacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceArtifacts>,
    /// Named artifacts (backup one, restore all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_artifacts: Vec<NamedChecksums>,
    /// Start and finish times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_activity: Option<BackupActivity>,
}

impl BackupMetadata {
    /// bbr's `metadata` at the start of a backup: its start time only.
    #[must_use]
    pub fn started(at: DateTime<Utc>) -> BackupMetadata {
        BackupMetadata {
            backup_activity: Some(BackupActivity {
                start_time: format_activity_time(at),
                finish_time: None,
            }),
            ..BackupMetadata::default()
        }
    }
}

/// The artifacts of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceArtifacts {
    /// Instance group.
    pub name: String,
    /// BOSH index, a string in bbr's YAML.
    pub index: String,
    /// One entry per job.
    #[serde(default)]
    pub artifacts: Vec<NamedChecksums>,
}

/// A job's (or named artifact's) checksums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedChecksums {
    /// Job or artifact name.
    pub name: String,
    /// Per-file sha256.
    #[serde(default)]
    pub checksums: Checksums,
}

/// When the backup ran, formatted like Go's `2006/01/02 15:04:05 MST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupActivity {
    /// Start of the backup.
    pub start_time: String,
    /// End of the backup (also written after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
}

/// Formats a time the way bbr writes `backup_activity`: Go's `2006/01/02 15:04:05 MST` in the
/// jumpbox's local zone (bbr formats `time.Now()`), with the zone's abbreviation (`UTC`, `CET`,
/// `EST`, or tzdata's numeric one such as `+03`). The local zone is the system's (`TZ`, else
/// `/etc/localtime`), UTC when it cannot be found. Nothing parses these times back: they are
/// for people, so a bbr backup's and a Cairn backup's read the same whatever the zone.
#[must_use]
pub fn format_activity_time(time: DateTime<Utc>) -> String {
    format_in_zone(time, &jiff::tz::TimeZone::system())
}

fn format_in_zone(time: DateTime<Utc>, zone: &jiff::tz::TimeZone) -> String {
    let nanos = i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0);
    match jiff::Timestamp::new(time.timestamp(), nanos) {
        Ok(instant) => instant
            .to_zoned(zone.clone())
            .strftime("%Y/%m/%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => time.format("%Y/%m/%d %H:%M:%S UTC").to_string(),
    }
}

/// Parses a backup id (bbr's artifact directory timestamp, `YYYYMMDDTHHMMSSZ`) into a time.
#[must_use]
pub fn parse_backup_timestamp(id: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Formats a time as bbr's artifact directory timestamp, `YYYYMMDDTHHMMSSZ`.
#[must_use]
pub fn format_backup_timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

impl BackupMetadata {
    /// Parses a `metadata` file.
    ///
    /// # Errors
    /// The YAML error as text.
    pub fn parse(text: &str) -> Result<BackupMetadata, String> {
        yaml_serde::from_str(text).map_err(|e| e.to_string())
    }

    /// Serializes to bbr's YAML. A file name that is not UTF-8 is written as Go's yaml.v2
    /// writes it, `!!binary <base64>` ([`crate::format::file_name`]), so bbr reads the bytes.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        let plain = || yaml_serde::to_string(self).expect("metadata serializes");
        let tagged = crate::format::file_name::with_yaml_binary_tags(plain);
        // The tag is for bbr; Cairn reads a name the same with or without it. Should the tagged
        // document ever not read back the same, the plain one is written.
        if !tagged.contains("!!binary") || Self::parse(&tagged).as_ref() == Ok(self) {
            tagged
        } else {
            plain()
        }
    }

    /// Writes [`BackupMetadata::to_yaml`]'s bytes to `writer`: as the YAML writer makes them
    /// when every name is UTF-8 (no tag to replace), so a million files' document is never
    /// held whole; through [`BackupMetadata::to_yaml`] otherwise.
    ///
    /// # Errors
    /// Errors of `writer`.
    pub fn write_yaml(&self, mut writer: impl std::io::Write) -> std::io::Result<()> {
        let all_utf8 = self
            .instances
            .iter()
            .flat_map(|instance| &instance.artifacts)
            .chain(&self.custom_artifacts)
            .all(|artifact| {
                artifact
                    .checksums
                    .keys()
                    .all(|name| name.as_str().is_some())
            });
        if !all_utf8 {
            return writer.write_all(self.to_yaml().as_bytes());
        }
        yaml_serde::to_writer(&mut writer, self)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        writer.flush()
    }

    /// The checksums recorded for a job of an instance.
    #[must_use]
    pub fn checksums_for(&self, group: &str, index: &str, job: &str) -> Option<&Checksums> {
        self.instances
            .iter()
            .find(|i| i.name == group && i.index == index)?
            .artifacts
            .iter()
            .find(|a| a.name == job)
            .map(|a| &a.checksums)
    }

    /// Records one artifact from its files' digests: a shared artifact (`shared_name`, backup
    /// one restore all) under `custom_artifacts`, any other under its instance.
    pub fn add_files(
        &mut self,
        shared_name: Option<&str>,
        (group, index, job): (&str, &str, &str),
        files: &crate::format::digest::FileDigests,
    ) {
        let checksums = files
            .iter()
            .map(|(name, file)| (name.clone(), file.sha256.clone()))
            .collect();
        match shared_name {
            Some(name) => self.custom_artifacts.push(NamedChecksums {
                name: name.to_string(),
                checksums,
            }),
            None => self.add_artifact(group, index, job, checksums),
        }
    }

    /// Records a job's checksums, keeping instances sorted by group and index so the file is
    /// the same whatever order transfers finished in.
    pub fn add_artifact(&mut self, group: &str, index: &str, job: &str, checksums: Checksums) {
        let position = self
            .instances
            .iter()
            .position(|i| i.name == group && i.index == index);
        let instance = if let Some(position) = position {
            &mut self.instances[position]
        } else {
            self.instances.push(InstanceArtifacts {
                name: group.to_string(),
                index: index.to_string(),
                artifacts: Vec::new(),
            });
            self.instances.sort_by(|a, b| {
                (a.name.as_str(), index_number(&a.index))
                    .cmp(&(b.name.as_str(), index_number(&b.index)))
            });
            self.instances
                .iter_mut()
                .find(|i| i.name == group && i.index == index)
                .expect("just inserted")
        };
        instance.artifacts.push(NamedChecksums {
            name: job.to_string(),
            checksums,
        });
        instance.artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

fn index_number(index: &str) -> u64 {
    index.parse().unwrap_or(u64::MAX)
}

/// The first ten of `names`, joined with `, ` (what a checksum error lists, as bbr).
#[must_use]
pub fn first_names(names: &[String]) -> String {
    names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares two checksum maps the way bbr does; returns the names that differ (missing on
/// either side or with another digest), sorted, as shown to people ([`FileName`]'s display).
/// Either map may be a tar's [`crate::format::digest::FileDigests`] (sizes are not compared).
#[must_use]
pub fn mismatched_files<A, B>(expected: &SharedMap<A>, actual: &SharedMap<B>) -> Vec<String>
where
    A: AsRef<Sha256Sum>,
    B: AsRef<Sha256Sum>,
{
    let mut names: Vec<&FileName> = expected
        .iter()
        .filter(|(name, digest)| actual.get(*name).map(AsRef::as_ref) != Some((*digest).as_ref()))
        .map(|(name, _)| name)
        .chain(actual.keys().filter(|name| !expected.contains_key(*name)))
        .collect();
    names.sort();
    names.iter().map(ToString::to_string).collect()
}

/// [`mismatched_files`] of `expected` and a listing read record by record (the instance's
/// checksums after a restore), holding one reference per name seen instead of a second map
/// of a million names.
#[derive(Debug)]
pub struct ListingCheck<'a> {
    expected: &'a Checksums,
    seen: HashSet<&'a FileName>,
    /// Names listed with another digest, twice, or not expected.
    mismatched: BTreeSet<FileName>,
}

impl<'a> ListingCheck<'a> {
    /// A check against `expected`, nothing listed yet.
    #[must_use]
    pub fn new(expected: &'a Checksums) -> ListingCheck<'a> {
        ListingCheck {
            expected,
            seen: HashSet::with_capacity(expected.len()),
            mismatched: BTreeSet::new(),
        }
    }

    /// One listed file.
    pub fn record(&mut self, name: FileName, digest: &Sha256Sum) {
        match self.expected.get_key_value(&name) {
            Some((key, wanted)) if wanted == digest && self.seen.insert(key) => {}
            _ => {
                self.mismatched.insert(name);
            }
        }
    }

    /// The names that differ, as [`mismatched_files`] gives them.
    #[must_use]
    pub fn finish(mut self) -> Vec<String> {
        if self.seen.len() < self.expected.len() {
            let missing = self
                .expected
                .keys()
                .filter(|name| !self.seen.contains(name));
            self.mismatched.extend(missing.cloned());
        }
        self.mismatched.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BBR_FIXTURE: &str = r#"instances:
- name: redis
  index: "0"
  artifacts:
  - name: redis-server
    checksums:
      ./redis/dump.rdb: 3f1b0f0ec3d58a3a2d1b2f6d7a59ae35e1b2b9a68b8b5b8c1c8b1a2a3a4a5a6a
custom_artifacts:
- name: foo-backup-one-restore-all
  checksums: {}
backup_activity:
  start_time: 2024/01/02 03:04:05 UTC
  finish_time: 2024/01/02 03:10:00 UTC
"#;

    #[test]
    fn reads_bbr_metadata_and_older_files_without_activity() {
        let metadata = BackupMetadata::parse(BBR_FIXTURE).unwrap();
        assert_eq!(metadata.instances[0].index, "0");
        assert!(metadata
            .checksums_for("redis", "0", "redis-server")
            .is_some());
        assert!(metadata.custom_artifacts[0].checksums.is_empty());
        let old = BackupMetadata::parse("instances:\n- name: r\n  index: \"1\"\n  artifacts: []\n")
            .unwrap();
        assert!(old.backup_activity.is_none());
    }

    #[test]
    fn writes_what_it_reads_with_string_indices() {
        let mut metadata = BackupMetadata::default();
        metadata.add_artifact("web", "10", "nginx", Checksums::new());
        metadata.add_artifact(
            "web",
            "2",
            "nginx",
            [(FileName::from("./a b"), Sha256Sum::from("00"))].into(),
        );
        metadata.add_artifact("db", "0", "pg", Checksums::new());
        let yaml = metadata.to_yaml();
        assert!(!yaml.contains("custom_artifacts"), "{yaml}");
        let mut written = Vec::new();
        metadata.write_yaml(&mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), yaml);
        let back = BackupMetadata::parse(&yaml).unwrap();
        assert_eq!(back, metadata);
        let order: Vec<_> = back
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i.index.as_str()))
            .collect();
        assert_eq!(order, vec![("db", "0"), ("web", "2"), ("web", "10")]);
        // the index must stay a YAML string
        let raw: yaml_serde::Value = yaml_serde::from_str(&yaml).unwrap();
        assert!(raw["instances"][0]["index"].is_string());
    }

    #[test]
    fn names_that_are_not_utf8_are_written_as_bbr_writes_them_and_read_back() {
        let mut metadata = BackupMetadata::default();
        let checksums: Checksums = [
            (
                FileName::new(b"./a\xff".to_vec()),
                Sha256Sum::from("1".repeat(64)),
            ),
            (
                FileName::new(b"./a\xfe".to_vec()),
                Sha256Sum::from("2".repeat(64)),
            ),
            (FileName::from("./a"), Sha256Sum::from("3".repeat(64))),
        ]
        .into();
        metadata.add_artifact("web", "0", "nginx", checksums.clone());
        let yaml = metadata.to_yaml();
        let mut written = Vec::new();
        metadata.write_yaml(&mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), yaml);
        // What Go's yaml.v2 writes for these names (bbr-facts §4.3: checksums is a map of
        // Go strings): a `!!binary` base64 key.
        assert!(yaml.contains("      ./a: "), "{yaml}");
        assert!(yaml.contains("      !!binary Li9h/g==: "), "{yaml}");
        assert!(yaml.contains("      !!binary Li9h/w==: "), "{yaml}");
        let back = BackupMetadata::parse(&yaml).unwrap();
        assert_eq!(back.checksums_for("web", "0", "nginx"), Some(&checksums));
        // Tampering with one of the two is seen, and the name is shown with its bytes.
        let mut actual = checksums.clone();
        actual.insert(
            FileName::new(b"./a\xff".to_vec()),
            Sha256Sum::from("9".repeat(64)),
        );
        assert_eq!(mismatched_files(&checksums, &actual), vec!["./a\\xff"]);
    }

    #[test]
    fn mismatches_name_missing_extra_and_changed_files() {
        let expected: Checksums = [("./a", "1"), ("./b", "2"), ("./c", "3")]
            .map(|(k, v)| (FileName::from(k), Sha256Sum::from(v)))
            .into();
        let actual: Checksums = [("./a", "1"), ("./b", "X"), ("./d", "4")]
            .map(|(k, v)| (FileName::from(k), Sha256Sum::from(v)))
            .into();
        assert_eq!(
            mismatched_files(&expected, &actual),
            vec!["./b", "./c", "./d"]
        );
        assert!(mismatched_files(&expected, &expected).is_empty());
        // The same, read as a listing; a name listed twice counts as differing too.
        let mut check = ListingCheck::new(&expected);
        for (name, digest) in actual.clone() {
            check.record(name, &digest);
        }
        assert_eq!(check.finish(), vec!["./b", "./c", "./d"]);
        let mut check = ListingCheck::new(&expected);
        for (name, digest) in [("./a", "1"), ("./a", "1"), ("./b", "2"), ("./c", "3")] {
            check.record(FileName::from(name), &Sha256Sum::from(digest));
        }
        assert_eq!(check.finish(), vec!["./a"]);
        let mut check = ListingCheck::new(&expected);
        for (name, digest) in expected.clone() {
            check.record(name, &digest);
        }
        assert!(check.finish().is_empty());
    }

    #[test]
    fn timestamps_use_bbr_formats() {
        let time = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_backup_timestamp(time), "20240102T030405Z");
        assert_eq!(
            format_in_zone(time, &jiff::tz::TimeZone::UTC),
            "2024/01/02 03:04:05 UTC"
        );
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(format_in_zone(time, &berlin), "2024/01/02 04:04:05 CET");
        let posix = jiff::tz::TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(format_in_zone(time, &posix), "2024/01/01 22:04:05 EST");
    }

    #[test]
    fn reads_activity_times_in_any_zone() {
        for zone in ["UTC", "CEST", "+03"] {
            let text = format!(
                "backup_activity:\n  start_time: 2024/01/02 03:04:05 {zone}\n  finish_time: 2024/01/02 03:10:00 {zone}\n"
            );
            let metadata = BackupMetadata::parse(&text).unwrap();
            let activity = metadata.backup_activity.unwrap();
            assert_eq!(activity.start_time, format!("2024/01/02 03:04:05 {zone}"));
        }
    }
}
