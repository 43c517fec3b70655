//! The GCS adapter against fake-gcs-server (installed and started by the tests themselves).

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cairn_store::{
    conformance, ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, Retention, RetentionMode,
    StoreError, StoreLocation,
};
use cairn_store_gcs::GcsStore;
use common::FakeGcs;

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).unwrap()
}

/// Bytes that differ from one position to the next, so misplaced chunks show.
fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn conformance_on_a_versioned_bucket() {
    let server = FakeGcs::shared();
    server.create_bucket("conformance-versioned", true).await;
    let store = server.store("conformance-versioned", "cairn/nightly").await;
    assert!(store.capabilities().await.unwrap().versioning);
    conformance::check_store(&store, "suite").await;
}

#[tokio::test]
async fn conformance_on_an_unversioned_bucket() {
    let server = FakeGcs::shared();
    server.create_bucket("conformance-plain", false).await;
    let store = server.store("conformance-plain", "cairn").await;
    conformance::check_store(&store, "suite").await;
}

#[tokio::test]
async fn capabilities_report_the_bucket_versioning() {
    let server = FakeGcs::shared();
    server.create_bucket("capabilities-on", true).await;
    server.create_bucket("capabilities-off", false).await;
    let on = server
        .store("capabilities-on", "")
        .await
        .capabilities()
        .await;
    let off = server
        .store("capabilities-off", "")
        .await
        .capabilities()
        .await;
    assert!(on.unwrap().versioning);
    assert!(!off.unwrap().versioning);
}

#[tokio::test]
async fn an_old_generation_stays_readable_after_an_overwrite() {
    let server = FakeGcs::shared();
    server.create_bucket("generations", true).await;
    let store = server.store("generations", "p").await;
    let object = key("backup/manifest.json");
    let none = PutOptions::default();
    let first = store
        .put_bytes(&object, Bytes::from_static(b"old"), &none)
        .await
        .unwrap();
    let second = store
        .put_bytes(&object, Bytes::from_static(b"newer"), &none)
        .await
        .unwrap();
    assert_ne!(first.version, second.version);
    let old = store
        .get_bytes(&object, first.version.as_deref())
        .await
        .unwrap();
    assert_eq!(old, b"old");
    assert_eq!(store.get_bytes(&object, None).await.unwrap(), b"newer");
    let versions = store.list_versions("backup/").await.unwrap();
    let listed: Vec<_> = versions.iter().map(|meta| meta.version.clone()).collect();
    assert_eq!(listed, vec![first.version, second.version], "oldest first");
    assert_eq!(store.list("backup/").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_overwritten_generation_of_an_unversioned_bucket_is_not_found() {
    let server = FakeGcs::shared();
    server.create_bucket("overwritten", false).await;
    let store = server.store("overwritten", "").await;
    let object = key("k");
    let none = PutOptions::default();
    let first = store
        .put_bytes(&object, Bytes::from_static(b"1"), &none)
        .await
        .unwrap();
    store
        .put_bytes(&object, Bytes::from_static(b"2"), &none)
        .await
        .unwrap();
    let result = store.get(&object, first.version.as_deref()).await;
    assert!(matches!(result, Err(StoreError::NotFound { .. })));
}

/// fake-gcs-server 1.54 ignores `generation` on delete (it removes the live object whatever
/// generation is named), so only deleting the current generation is checked here; the request
/// itself is checked in `failures.rs`.
#[tokio::test]
async fn deleting_the_current_generation_removes_the_object() {
    let server = FakeGcs::shared();
    server.create_bucket("delete-generation", true).await;
    let store = server.store("delete-generation", "").await;
    let object = key("k");
    let none = PutOptions::default();
    store
        .put_bytes(&object, Bytes::from_static(b"1"), &none)
        .await
        .unwrap();
    let current = store
        .put_bytes(&object, Bytes::from_static(b"2"), &none)
        .await
        .unwrap();
    store
        .delete(&object, current.version.as_deref())
        .await
        .unwrap();
    let head = store.head(&object, None).await;
    assert!(matches!(head, Err(StoreError::NotFound { .. })), "{head:?}");
}

#[tokio::test]
async fn an_aborted_upload_leaves_no_object() {
    let server = FakeGcs::shared();
    server.create_bucket("aborted", true).await;
    let store = server.store("aborted", "p").await;
    let object = key("big");
    let mut upload = store.put(&object, &PutOptions::default()).await.unwrap();
    // More than a chunk, so one chunk was sent before the abort.
    upload.write(Bytes::from(pattern(9 << 20))).await.unwrap();
    upload.abort().await.unwrap();
    let head = store.head(&object, None).await;
    assert!(matches!(head, Err(StoreError::NotFound { .. })), "{head:?}");
    assert!(store.list_versions("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_bucket_is_a_configuration_error() {
    let server = FakeGcs::shared();
    let store = server.store("no-such-bucket", "p").await;
    let is_configuration = |error: StoreError| {
        let text = error.to_string();
        assert!(text.contains("no-such-bucket"), "{text}");
        matches!(error, StoreError::Configuration { .. })
    };
    assert!(is_configuration(store.capabilities().await.unwrap_err()));
    assert!(is_configuration(store.list("").await.unwrap_err()));
    let put = store.put(&key("k"), &PutOptions::default()).await;
    assert!(is_configuration(put.err().unwrap()));
}

#[tokio::test]
async fn names_with_reserved_characters_round_trip() {
    let server = FakeGcs::shared();
    server.create_bucket("names", false).await;
    let store = server.store("names", "a b/ü").await;
    let object = key("dir with space/x+y%z#?&=é.bin");
    let none = PutOptions::default();
    store
        .put_bytes(&object, Bytes::from_static(b"odd"), &none)
        .await
        .unwrap();
    assert_eq!(store.get_bytes(&object, None).await.unwrap(), b"odd");
    assert_eq!(store.head(&object, None).await.unwrap().size, 3);
    let listed = store.list("dir with space/").await.unwrap();
    assert_eq!(listed[0].key, object);
    store.delete(&object, None).await.unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn session_urls_on_another_port_are_sent_to_the_endpoint() {
    // Nothing listens on port 1: chunks only arrive when the adapter rebases the session URL.
    let server = FakeGcs::start(Some("http://127.0.0.1:1"));
    server.create_bucket("elsewhere", false).await;
    let store = server.store("elsewhere", "").await;
    let data = pattern((9 << 20) + 3);
    let object = key("moved");
    let none = PutOptions::default();
    let result = store
        .put_bytes(&object, Bytes::from(data.clone()), &none)
        .await
        .unwrap();
    assert_eq!(result.size, data.len() as u64);
    assert!(store.get_bytes(&object, None).await.unwrap() == data);
}

#[tokio::test]
async fn retention_is_written_with_the_object() {
    let server = FakeGcs::shared();
    server.create_bucket("retention", false).await;
    let store = server.store("retention", "p").await;
    let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    let options = PutOptions {
        retention: Some(Retention {
            mode: RetentionMode::Governance,
            until,
        }),
    };
    store
        .put_bytes(&key("kept"), Bytes::from_static(b"x"), &options)
        .await
        .unwrap();
    let resource = server.object_resource("retention", "p/kept").await;
    assert_eq!(resource["retention"]["mode"], "Unlocked");
    assert_eq!(
        resource["retention"]["retainUntilTime"],
        "2030-01-01T00:00:00Z"
    );
    assert_eq!(resource["contentType"], "application/octet-stream");
}

#[tokio::test]
async fn other_locations_are_refused() {
    let location = StoreLocation::parse("s3://bucket/p").unwrap();
    let error = GcsStore::from_location(&location).await.unwrap_err();
    assert!(matches!(error, StoreError::Configuration { .. }));
}
