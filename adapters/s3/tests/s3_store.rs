//! `S3Store` against a real S3 server (moto): the conformance suite, capabilities, retention,
//! multipart aborts, version listings and configuration errors.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::types::ObjectLockMode;
use bytes::Bytes;
use cairn_store::conformance::check_store;
use cairn_store::{
    ArtifactStore, ArtifactStoreExt, Capabilities, ObjectKey, PutOptions, Retention, RetentionMode,
    StoreError, StoreLocation, Upload,
};
use cairn_store_s3::{
    parts_held_by_process, S3Store, PARTS_IN_FLIGHT, PARTS_IN_FLIGHT_PER_PROCESS, PART_SIZE,
};
use support::{BucketKind, Moto};

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).expect("valid key")
}

/// `len` bytes that differ from part to part.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24).to_le_bytes()[0])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versioned_bucket_with_a_prefix_passes_the_conformance_suite() {
    let moto = Moto::shared();
    moto.create_bucket("conformance-versioned", BucketKind::Versioned)
        .await;
    let store = moto.store("conformance-versioned", "backups/nightly").await;
    assert_eq!(
        store.to_string(),
        "s3://conformance-versioned/backups/nightly"
    );
    let capabilities = store.capabilities().await.expect("capabilities");
    assert_eq!(
        capabilities,
        Capabilities {
            versioning: true,
            retention: false
        }
    );
    check_store(&store, "conformance").await;

    let listed = moto
        .client()
        .list_objects_v2()
        .bucket("conformance-versioned")
        .send()
        .await
        .expect("ListObjectsV2");
    assert!(!listed.contents().is_empty());
    for object in listed.contents() {
        let name = object.key().unwrap_or_default();
        assert!(
            name.starts_with("backups/nightly/conformance/"),
            "`{name}` is outside the store's prefix"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unversioned_bucket_passes_the_conformance_suite() {
    let moto = Moto::shared();
    moto.create_bucket("conformance-plain", BucketKind::Unversioned)
        .await;
    let store = moto.store("conformance-plain", "").await;
    assert_eq!(
        store.capabilities().await.expect("capabilities"),
        Capabilities::default()
    );
    check_store(&store, "conformance").await;
}

/// The bound the crate docs promise, measured on the conformance suite's upload (13 MiB + 5
/// bytes in 700,001-byte writes) and on one large enough to fill every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_hold_at_most_the_filling_part_and_the_parts_in_flight() {
    let moto = Moto::shared();
    moto.create_bucket("memory", BucketKind::Unversioned).await;
    let store = moto.store("memory", "").await;
    for (name, len) in [
        ("conformance-size", 13 * 1024 * 1024 + 5),
        ("large", 10 * PART_SIZE + 3),
    ] {
        let data = pattern(len);
        let mut upload = store.upload(&key(name), &PutOptions::default());
        for chunk in data.chunks(700_001) {
            upload
                .write(Bytes::copy_from_slice(chunk))
                .await
                .expect("write");
        }
        let stats = upload.stats();
        eprintln!("{name}: {len} bytes: {stats:?}");
        assert!(stats.max_parts_in_flight <= PARTS_IN_FLIGHT);
        assert!(stats.peak_buffered_bytes <= (PARTS_IN_FLIGHT + 1) * PART_SIZE);
        let result = Box::new(upload).complete().await.expect("complete");
        assert_eq!(result.size, len as u64);
        assert!(store.get_bytes(&key(name), None).await.expect("get") == data);
    }
}

/// More parallel uploads than the process-wide budget has parts: all of them complete, intact,
/// and the process never holds more than the budget (sampled while they run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uploads_share_the_process_part_budget() {
    let moto = Moto::shared();
    moto.create_bucket("budget", BucketKind::Unversioned).await;
    let store = moto.store("budget", "").await;
    let streams = PARTS_IN_FLIGHT_PER_PROCESS + 4;
    let len = 2 * PART_SIZE + 1000;
    let sampler = tokio::spawn(async {
        let mut most = 0;
        for _ in 0..2000 {
            most = most.max(parts_held_by_process());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        most
    });
    let uploads = (0..streams).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let data = pattern(len + n);
            let mut upload = store.upload(&key(&format!("s{n}")), &PutOptions::default());
            for chunk in data.chunks(1 << 20) {
                upload
                    .write(Bytes::copy_from_slice(chunk))
                    .await
                    .expect("write");
            }
            Box::new(upload).complete().await.expect("complete");
            assert!(
                store
                    .get_bytes(&key(&format!("s{n}")), None)
                    .await
                    .expect("get")
                    == data
            );
        })
    });
    for upload in futures::future::join_all(uploads).await {
        upload.expect("upload task");
    }
    let most = sampler.await.expect("sampler");
    eprintln!("most parts held by the process: {most}");
    assert!(most <= PARTS_IN_FLIGHT_PER_PROCESS);
    assert!(most > 0, "the sampler saw the uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_becomes_an_object_lock_on_a_lock_bucket() {
    let moto = Moto::shared();
    moto.create_bucket("locked", BucketKind::ObjectLock).await;
    let store = moto.store("locked", "p").await;
    assert_eq!(
        store.capabilities().await.expect("capabilities"),
        Capabilities {
            versioning: true,
            retention: true
        }
    );
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let until = UNIX_EPOCH + Duration::from_secs(seconds + 86_400);
    // Single PutObjects only: moto 5.1 ignores the lock headers of CreateMultipartUpload (real
    // S3 honours them); tests/failures.rs checks that multipart uploads send them.
    let cases = [
        ("governed", RetentionMode::Governance, "GOVERNANCE"),
        ("complied", RetentionMode::Compliance, "COMPLIANCE"),
    ];
    for (name, mode, expected_mode) in cases {
        let options = PutOptions {
            retention: Some(Retention { mode, until }),
        };
        let put = store
            .put_bytes(&key(name), Bytes::from(pattern(10)), &options)
            .await
            .expect("put with retention");
        let head = moto
            .client()
            .head_object()
            .bucket("locked")
            .key(format!("p/{name}"))
            .send()
            .await
            .expect("HeadObject");
        assert_eq!(head.version_id(), put.version.as_deref());
        assert_eq!(
            head.object_lock_mode().map(ObjectLockMode::as_str),
            Some(expected_mode)
        );
        let locked_until = head
            .object_lock_retain_until_date()
            .expect("a retain-until date")
            .secs();
        assert_eq!(u64::try_from(locked_until).ok(), Some(seconds + 86_400));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_leaves_no_open_multipart_upload() {
    let moto = Moto::shared();
    moto.create_bucket("aborts", BucketKind::Versioned).await;
    let store = moto.store("aborts", "p").await;
    let mut upload = store
        .put(&key("aborted/object"), &PutOptions::default())
        .await
        .expect("put");
    upload
        .write(Bytes::from(pattern(2 * PART_SIZE + 100)))
        .await
        .expect("write");
    assert_eq!(
        store
            .open_multipart_uploads("aborted/")
            .await
            .expect("open uploads"),
        vec!["aborted/object".to_string()]
    );
    upload.abort().await.expect("abort");
    assert!(store
        .open_multipart_uploads("")
        .await
        .expect("open uploads")
        .is_empty());
    assert!(matches!(
        store.head(&key("aborted/object"), None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store
        .list_versions("aborted/")
        .await
        .expect("versions")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_upload_is_aborted_in_the_background() {
    let moto = Moto::shared();
    moto.create_bucket("drops", BucketKind::Unversioned).await;
    let store = moto.store("drops", "").await;
    let mut upload = store.upload(&key("dropped"), &PutOptions::default());
    upload
        .write(Bytes::from(pattern(PART_SIZE)))
        .await
        .expect("write");
    assert_eq!(
        store.open_multipart_uploads("").await.expect("open"),
        vec!["dropped"]
    );
    drop(upload);
    for _ in 0..100 {
        if store
            .open_multipart_uploads("")
            .await
            .expect("open")
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the dropped upload is still open after 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_versions_finds_every_version_and_delete_marker() {
    let moto = Moto::shared();
    moto.create_bucket("versions", BucketKind::Versioned).await;
    let store = moto.store("versions", "p").await;
    let x = key("b/x");
    let options = PutOptions::default();
    let first = store
        .put_bytes(&x, Bytes::from_static(b"1"), &options)
        .await
        .expect("put");
    let second = store
        .put_bytes(&x, Bytes::from_static(b"22"), &options)
        .await
        .expect("put");
    store.delete(&x, None).await.expect("delete");
    store
        .put_bytes(&key("b/y"), Bytes::from_static(b"y"), &options)
        .await
        .expect("put");

    let current: Vec<String> = store
        .list("b/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(current, ["b/y"]);
    let versions = store.list_versions("b/").await.expect("versions");
    let keys: Vec<&str> = versions.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["b/x", "b/x", "b/x", "b/y"]);
    let x_versions: Vec<Option<&str>> =
        versions[..3].iter().map(|m| m.version.as_deref()).collect();
    assert!(x_versions.contains(&first.version.as_deref()));
    assert!(x_versions.contains(&second.version.as_deref()));

    for version in &versions {
        store
            .delete(&version.key, version.version.as_deref())
            .await
            .expect("delete version");
    }
    assert!(store.list_versions("").await.expect("versions").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_configuration_error_naming_it() {
    let moto = Moto::shared();
    let store = moto.store("no-such-bucket", "p").await;
    match store.capabilities().await {
        Err(error @ StoreError::Configuration { .. }) => {
            let message = error.to_string();
            assert!(message.contains("`no-such-bucket`"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// With an endpoint and no region anywhere (the tests clear `AWS_REGION` and the profile files),
/// the store signs for us-east-1 and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_a_region_signs_for_us_east_1() {
    let moto = Moto::shared();
    moto.create_bucket("no-region", BucketKind::Unversioned)
        .await;
    let url = format!(
        "s3://no-region/p?endpoint={}&path_style=true",
        moto.endpoint
    );
    let location = StoreLocation::parse(&url).expect("URL");
    let store = S3Store::from_location(&location).await.expect("store");
    store.capabilities().await.expect("capabilities");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_or_region_the_store_is_refused() {
    support::hermetic_environment();
    let location = StoreLocation::parse("s3://somewhere/p").expect("URL");
    match S3Store::from_location(&location).await {
        Err(StoreError::Configuration { detail, .. }) => {
            assert!(detail.contains("region"), "{detail}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
