//! The behaviour every [`ArtifactStore`] must have, as one async function that panics on the
//! first deviation. Each adapter's tests call [`check_store`] against a real server (moto,
//! Azurite, fake-gcs-server) and the local store runs it on every build.

use bytes::Bytes;
use futures::StreamExt;

use crate::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).expect("valid key")
}

/// Runs every check under `base/` in `store` (which should be empty there).
///
/// # Panics
/// On the first behaviour that breaks the [`ArtifactStore`] contract.
pub async fn check_store(store: &dyn ArtifactStore, base: &str) {
    store.capabilities().await.expect("capabilities");
    let capabilities = store
        .capabilities_for_writing()
        .await
        .expect("capabilities for writing");
    let big = streamed_upload_round_trips(store, base).await;
    ranged_reads(store, base, &big).await;
    small_objects_and_listing(store, base).await;
    aborted_uploads_leave_nothing(store, base).await;
    missing_objects_are_not_found(store, base).await;
    if capabilities.versioning {
        old_versions_stay_readable(store, base).await;
    }
    deletes_remove_objects(store, base).await;
}

/// The big object's bytes: 13 MiB + 5 of a pattern that repeats nowhere nearby.
fn big_object() -> Vec<u8> {
    (0..13 * 1024 * 1024 + 5)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// 13 MiB + 5 bytes written in uneven chunks (so multipart stores use several parts); returns
/// the key.
async fn streamed_upload_round_trips(store: &dyn ArtifactStore, base: &str) -> ObjectKey {
    let big = key(&format!("{base}/big/object.bin"));
    let data = big_object();
    let mut upload = store.put(&big, &PutOptions::default()).await.expect("put");
    for chunk in data.chunks(700_001) {
        upload
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write");
    }
    let result = upload.complete().await.expect("complete");
    assert_eq!(result.size, data.len() as u64);
    let mut stream = store
        .get(&big, result.version.as_deref())
        .await
        .expect("get");
    let mut read = Vec::with_capacity(data.len());
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(
        read == data,
        "object read back differs from what was written"
    );
    let meta = store.head(&big, None).await.expect("head");
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(
        meta.version, result.version,
        "head reports the version put returned"
    );
    big
}

/// Ranges of the big object (the first byte, across the 8 MiB part boundary, the last byte,
/// all of it), an empty range, a range past the end, and a missing key.
async fn ranged_reads(store: &dyn ArtifactStore, base: &str, big: &ObjectKey) {
    let data = big_object();
    let size = data.len() as u64;
    let eight = 8 * 1024 * 1024;
    for range in [
        0..1,
        eight - 5..eight + 5,
        size - 1..size,
        0..size,
        12_345..12_345,
    ] {
        let read = store
            .get_range(big, None, range.clone())
            .await
            .unwrap_or_else(|e| panic!("get_range {range:?}: {e}"));
        let expected =
            &data[usize::try_from(range.start).unwrap()..usize::try_from(range.end).unwrap()];
        assert!(
            read.as_ref() == expected,
            "get_range {range:?} returned {} bytes that differ from the object's",
            read.len()
        );
    }
    for range in [size - 1..size + 1, size + 10..size + 20] {
        match store.get_range(big, None, range.clone()).await {
            Err(StoreError::Other { .. }) => {}
            other => panic!("get_range {range:?} past the end: expected Other, got {other:?}"),
        }
    }
    let missing = key(&format!("{base}/does/not/exist/range"));
    match store.get_range(&missing, None, 0..1).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("get_range of a missing object: expected NotFound, got {other:?}"),
    }
}

async fn small_objects_and_listing(store: &dyn ArtifactStore, base: &str) {
    for name in ["list/b", "list/a", "list/sub/c", "listing-not/x"] {
        let data = Bytes::from(name.as_bytes().to_vec());
        store
            .put_bytes(
                &key(&format!("{base}/{name}")),
                data,
                &PutOptions::default(),
            )
            .await
            .expect("put_bytes");
    }
    let empty = key(&format!("{base}/list/empty"));
    store
        .put_bytes(&empty, Bytes::new(), &PutOptions::default())
        .await
        .expect("empty object");
    assert!(store
        .get_bytes(&empty, None)
        .await
        .expect("get empty")
        .is_empty());
    let listed: Vec<String> = store
        .list(&format!("{base}/list/"))
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    let expected: Vec<String> = ["list/a", "list/b", "list/empty", "list/sub/c"]
        .iter()
        .map(|n| format!("{base}/{n}"))
        .collect();
    assert_eq!(
        listed, expected,
        "list returns current objects under the prefix, in key order"
    );
    assert_eq!(
        store
            .get_bytes(&key(&format!("{base}/list/a")), None)
            .await
            .expect("get"),
        b"list/a"
    );
}

async fn aborted_uploads_leave_nothing(store: &dyn ArtifactStore, base: &str) {
    let aborted = key(&format!("{base}/aborted/object"));
    let mut upload = store
        .put(&aborted, &PutOptions::default())
        .await
        .expect("put");
    upload
        .write(Bytes::from(vec![1_u8; 6 * 1024 * 1024]))
        .await
        .expect("write");
    upload.abort().await.expect("abort");
    assert!(
        matches!(
            store.head(&aborted, None).await,
            Err(StoreError::NotFound { .. })
        ),
        "an aborted upload must not appear"
    );
    assert!(store
        .list(&format!("{base}/aborted/"))
        .await
        .expect("list")
        .is_empty());
}

async fn missing_objects_are_not_found(store: &dyn ArtifactStore, base: &str) {
    let missing = key(&format!("{base}/does/not/exist"));
    assert!(matches!(
        store.head(&missing, None).await,
        Err(StoreError::NotFound { .. })
    ));
    match store.get(&missing, None).await {
        Err(StoreError::NotFound { .. }) => {}
        Err(other) => panic!("get of a missing object: expected NotFound, got {other}"),
        Ok(mut stream) => {
            let first = stream.next().await;
            assert!(
                matches!(first, Some(Err(StoreError::NotFound { .. }))),
                "get of a missing object must fail with NotFound"
            );
        }
    }
}

async fn old_versions_stay_readable(store: &dyn ArtifactStore, base: &str) {
    let versioned = key(&format!("{base}/versioned/object"));
    let first = store
        .put_bytes(
            &versioned,
            Bytes::from_static(b"first"),
            &PutOptions::default(),
        )
        .await
        .expect("put 1");
    let second = store
        .put_bytes(
            &versioned,
            Bytes::from_static(b"second"),
            &PutOptions::default(),
        )
        .await
        .expect("put 2");
    assert!(
        first.version.is_some() && first.version != second.version,
        "a versioned store returns a new version per put"
    );
    assert_eq!(
        store
            .get_bytes(&versioned, first.version.as_deref())
            .await
            .expect("get v1"),
        b"first"
    );
    assert_eq!(
        store
            .get_bytes(&versioned, None)
            .await
            .expect("get current"),
        b"second"
    );
    assert_eq!(
        store
            .head(&versioned, first.version.as_deref())
            .await
            .expect("head v1")
            .size,
        5
    );
    assert_eq!(
        store
            .get_range(&versioned, first.version.as_deref(), 1..4)
            .await
            .expect("get_range of v1")
            .as_ref(),
        b"irs",
        "get_range reads the version asked for"
    );
    assert_eq!(
        store
            .get_range(&versioned, second.version.as_deref(), 3..6)
            .await
            .expect("get_range of v2")
            .as_ref(),
        b"ond"
    );
}

async fn deletes_remove_objects(store: &dyn ArtifactStore, base: &str) {
    let doomed = key(&format!("{base}/list/a"));
    store.delete(&doomed, None).await.expect("delete");
    assert!(matches!(
        store.head(&doomed, None).await,
        Err(StoreError::NotFound { .. })
    ));
    let remaining = store.list(&format!("{base}/list/")).await.expect("list");
    assert_eq!(remaining.len(), 3);
}
