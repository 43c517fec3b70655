//! What a restore reads back from a backup: `manifest.json` (`Manifest::parse`, serde_json) and
//! bbr's `metadata` YAML (`BackupMetadata::parse`, yaml_serde). The same bytes go to both
//! parsers (JSON is nearly a subset of YAML, so each parser's seeds help the other), and the
//! `metadata` bytes also to the reader of a directory's `metadata` in pieces, which must agree.
//!
//! Whatever parses must survive a round trip through Cairn's own writer: a backup whose
//! `manifest.json` or `metadata` Cairn cannot read back could not be restored.
#![no_main]

use cairn::format::bbr_directory::metadata::BackupMetadata;
use cairn::format::bbr_directory::metadata_read::read_in_pieces;
use cairn::format::bbr_directory::BackupDirectory;
use cairn::format::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::parse(data) {
        let json = manifest.to_json();
        let again = Manifest::parse(json.as_bytes()).unwrap_or_else(|e| {
            panic!("manifest.json written by Cairn does not parse: {e}\n{json}")
        });
        assert_eq!(
            again, manifest,
            "manifest.json round trip changed it:\n{json}"
        );
        let _ = manifest.stored_bytes();
        for artifact in &manifest.artifacts {
            let _ = artifact.is_shared();
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A directory's `metadata` is read a `checksums` block at a time: whatever that read
    // gives, the whole read gives too.
    if let Ok(Some(read)) = read_in_pieces(text.as_bytes()) {
        assert_eq!(
            BackupMetadata::parse(text).as_ref(),
            Ok(&read),
            "metadata read in pieces differs from the whole read"
        );
    }
    if let Ok(metadata) = BackupMetadata::parse(text) {
        let yaml = metadata.to_yaml();
        let again = BackupMetadata::parse(&yaml)
            .unwrap_or_else(|e| panic!("metadata written by Cairn does not parse: {e}\n{yaml}"));
        assert_eq!(again, metadata, "metadata round trip changed it:\n{yaml}");
        let listed = BackupDirectory::listed_artifacts(&metadata);
        let per_job: usize = metadata.instances.iter().map(|i| i.artifacts.len()).sum();
        assert_eq!(listed.len(), per_job + metadata.custom_artifacts.len());
        if let Some(instance) = metadata.instances.first() {
            if let Some(artifact) = instance.artifacts.first() {
                assert!(metadata
                    .checksums_for(&instance.name, &instance.index, &artifact.name)
                    .is_some());
            }
        }
    }
});
