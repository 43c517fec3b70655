//! `JobMetadata::parse`: the YAML a job's `metadata` script prints.
#![no_main]

use cairn::model::job::JobMetadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match JobMetadata::parse(text) {
        Ok(metadata) => {
            // parse promises every lock specifier names both a job and a release.
            for specifier in metadata
                .backup_should_be_locked_before
                .iter()
                .chain(&metadata.restore_should_be_locked_before)
            {
                assert!(!specifier.job_name.is_empty(), "{metadata:?}");
                assert!(!specifier.release.is_empty(), "{metadata:?}");
            }
            if text.trim().is_empty() {
                assert_eq!(metadata, JobMetadata::default());
            }
            let _ = metadata.has_discontinued_names();
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
