//! Failure paths and protocol details, against a scripted server.

mod scripted;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ObjectKey, PutOptions, StoreError, StoreLocation};
use cairn_store_gcs::GcsStore;
use scripted::{Reply, Script};

const MIB: usize = 1024 * 1024;
const SESSION: &str = "/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=s1";

async fn store(endpoint: &str, prefix: &str) -> GcsStore {
    let location = StoreLocation::Gcs {
        bucket: "bucket".into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
    };
    GcsStore::from_location(&location).await.unwrap()
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).unwrap()
}

fn error_body(message: &str) -> String {
    format!(r#"{{"error":{{"code":0,"message":"{message}"}}}}"#)
}

fn started(location: &str) -> Reply {
    Reply::new(200, "{}").header("Location", location)
}

fn incomplete(held: usize) -> Reply {
    Reply::new(308, "").header("Range", &format!("bytes=0-{}", held - 1))
}

fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 13 % 251) as u8).collect()
}

#[tokio::test]
async fn statuses_become_store_errors() {
    // The transient ones (408, 429, 5xx) are retried first: see the next test.
    let statuses = [401, 403, 400, 409, 404];
    let replies = statuses
        .iter()
        .map(|status| Reply::new(*status, &error_body("scripted refusal")))
        .collect();
    let script = Script::serve(replies).await;
    let store = store(&script.endpoint, "p").await;
    let mut errors = Vec::new();
    for _ in statuses {
        errors.push(store.capabilities().await.unwrap_err());
    }
    let kinds: Vec<&str> = errors.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "credentials",
            "credentials",
            "other",
            "other",
            "configuration"
        ]
    );
    assert_eq!(script.requests().len(), statuses.len(), "none is retried");
    assert_eq!(
        errors[2].to_string(),
        "gs://bucket/p: HTTP 400: scripted refusal"
    );
    assert!(errors[0]
        .to_string()
        .contains("GOOGLE_APPLICATION_CREDENTIALS"));
}

#[tokio::test]
async fn transient_statuses_are_retried_until_the_attempts_are_used_up() {
    // 503, 429, 500, 408 then the bucket: one request succeeds after four retries.
    let mut replies: Vec<Reply> = [503, 429, 500, 408]
        .iter()
        .map(|status| Reply::new(*status, &error_body("scripted hiccup")))
        .collect();
    replies.push(Reply::new(
        200,
        r#"{"name":"bucket","versioning":{"enabled":true}}"#,
    ));
    // Then six 502s: the attempts (6) are used up and the error is transient.
    replies.extend((0..6).map(|_| Reply::new(502, &error_body("scripted outage"))));
    let script = Script::serve(replies).await;
    let store = store(&script.endpoint, "p").await;
    assert!(store.capabilities().await.unwrap().versioning);
    assert_eq!(script.requests().len(), 5);
    let error = store.capabilities().await.unwrap_err();
    assert_eq!(kind(&error), "transient", "{error}");
    assert!(error.to_string().contains("scripted outage"), "{error}");
    assert_eq!(script.requests().len(), 11);
}

fn kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::NotFound { .. } => "not found",
        StoreError::Credentials { .. } => "credentials",
        StoreError::Configuration { .. } => "configuration",
        StoreError::Transient { .. } => "transient",
        StoreError::Protected { .. } => "protected",
        StoreError::Other { .. } => "other",
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = store(&endpoint, "").await.capabilities().await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(!error.to_string().contains('\n'));
}

#[tokio::test]
async fn missing_objects_are_not_found() {
    let not_found = || Reply::new(404, &error_body("No such object: bucket/p/k"));
    let script = Script::serve(vec![not_found(), not_found(), not_found()]).await;
    let store = store(&script.endpoint, "p").await;
    let object = key("k");
    assert!(matches!(
        store.head(&object, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get(&object, Some("7")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(&object, Some("7")).await,
        Err(StoreError::NotFound { .. })
    ));
    let requests = script.requests();
    assert_eq!(requests[0].target, "/storage/v1/b/bucket/o/p%2Fk");
    assert_eq!(
        requests[1].target,
        "/storage/v1/b/bucket/o/p%2Fk?generation=7&alt=media"
    );
    assert_eq!(requests[2].method, "DELETE");
    assert_eq!(
        requests[2].target,
        "/storage/v1/b/bucket/o/p%2Fk?generation=7"
    );
}

#[tokio::test]
async fn versions_that_are_not_generations_are_refused_without_a_request() {
    let script = Script::serve(vec![]).await;
    let store = store(&script.endpoint, "").await;
    let error = store.head(&key("k"), Some("abc")).await.unwrap_err();
    assert!(
        error.to_string().contains("not a GCS generation"),
        "{error}"
    );
    assert!(script.requests().is_empty());
}

#[tokio::test]
async fn listing_follows_every_page_and_keeps_to_the_prefix() {
    let first = r#"{"items":[{"name":"p/b","size":"1","generation":"2"},
        {"name":"p//odd","size":"1","generation":"3"}],"nextPageToken":"t1"}"#;
    let second = r#"{"items":[{"name":"p/a","size":"22","generation":"4",
        "updated":"2026-11-22T03:49:16.517031Z"}]}"#;
    let script = Script::serve(vec![Reply::new(200, first), Reply::new(200, second)]).await;
    let listed = store(&script.endpoint, "p").await.list("").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|meta| meta.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(listed[0].size, 22);
    assert_eq!(listed[0].version.as_deref(), Some("4"));
    assert!(listed[0].last_modified.is_some());
    let requests = script.requests();
    assert_eq!(requests[0].target, "/storage/v1/b/bucket/o?prefix=p%2F");
    assert_eq!(
        requests[1].target,
        "/storage/v1/b/bucket/o?prefix=p%2F&pageToken=t1"
    );
}

/// The session keeps half of the first chunk, then the last chunk fails once: the adapter
/// sends the missing half again, asks where the session stands, and finishes. The session URI
/// names another port, so every chunk arriving here also shows it was rebased.
#[tokio::test]
async fn uploads_resend_what_the_session_did_not_keep() {
    let total = 8 * MIB + 10;
    let finished = format!(r#"{{"name":"p/k","size":"{total}","generation":"42"}}"#);
    let script = Script::serve(vec![
        started(&format!("http://127.0.0.1:1{SESSION}")),
        incomplete(4 * MIB),
        incomplete(8 * MIB),
        Reply::new(503, &error_body("backend busy")),
        incomplete(8 * MIB),
        Reply::new(200, &finished),
    ])
    .await;
    let store = store(&script.endpoint, "p").await;
    let data = pattern(total);
    let mut upload = store.put(&key("k"), &PutOptions::default()).await.unwrap();
    for piece in data.chunks(3 * MIB) {
        upload.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let result = upload.complete().await.unwrap();
    assert_eq!(result.size, total as u64);
    assert_eq!(result.version.as_deref(), Some("42"));

    let requests = script.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].target,
        "/upload/storage/v1/b/bucket/o?uploadType=resumable&name=p%2Fk"
    );
    let ranges: Vec<&str> = requests[1..]
        .iter()
        .map(|request| request.header("content-range").unwrap())
        .collect();
    let last = format!("bytes 8388608-8388617/{total}");
    assert_eq!(
        ranges,
        [
            "bytes 0-8388607/*",
            "bytes 4194304-8388607/*",
            &last,
            "bytes */*",
            &last
        ]
    );
    assert!(requests[1..]
        .iter()
        .all(|r| r.method == "PUT" && r.target == SESSION));
    assert!(requests[1].body == data[..8 * MIB]);
    assert!(requests[2].body == data[4 * MIB..8 * MIB]);
    assert!(requests[5].body == data[8 * MIB..]);
}

/// The chunk in flight is dropped (it may or may not reach the server) and the session deleted.
#[tokio::test]
async fn abort_cancels_the_session() {
    let script = Script::serve(vec![
        started(SESSION),
        incomplete(8 * MIB).only_for("PUT"),
        Reply::new(499, "").only_for("DELETE"),
    ])
    .await;
    let store = store(&script.endpoint, "").await;
    let mut upload = store.put(&key("k"), &PutOptions::default()).await.unwrap();
    upload
        .write(Bytes::from(pattern(8 * MIB + 1)))
        .await
        .unwrap();
    upload.abort().await.unwrap();
    let requests = script.requests();
    let last = requests.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.target.as_str()),
        ("DELETE", SESSION)
    );
}

#[tokio::test]
async fn a_failed_completion_cancels_the_session() {
    let script = Script::serve(vec![
        started(SESSION),
        Reply::new(400, &error_body("invalid retention")),
        Reply::new(499, ""),
    ])
    .await;
    let store = store(&script.endpoint, "").await;
    let mut upload = store.put(&key("k"), &PutOptions::default()).await.unwrap();
    upload.write(Bytes::from_static(b"small")).await.unwrap();
    let error = upload.complete().await.unwrap_err();
    assert!(error.to_string().contains("invalid retention"), "{error}");
    let requests = script.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].method, "DELETE");
}

#[tokio::test]
async fn an_expired_session_is_reported_as_such() {
    let script = Script::serve(vec![started(SESSION), Reply::new(410, "")]).await;
    let store = store(&script.endpoint, "").await;
    let mut upload = store.put(&key("k"), &PutOptions::default()).await.unwrap();
    upload.write(Bytes::from_static(b"x")).await.unwrap();
    let error = upload.complete().await.unwrap_err();
    assert!(
        error.to_string().contains("expired or was cancelled"),
        "{error}"
    );
    assert!(!error.to_string().contains("upload_id"));
}
