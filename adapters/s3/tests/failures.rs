//! What moto cannot show, against a scripted S3 on 127.0.0.1: a part upload that keeps failing
//! (the multipart upload must be aborted before the error is returned), the Object Lock headers
//! of `CreateMultipartUpload` (moto ignores them) and a store nobody listens on.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use cairn_store::{
    ArtifactStore, ObjectKey, PutOptions, Retention, RetentionMode, StoreError, StoreLocation,
};
use cairn_store_s3::{S3Store, PARTS_IN_FLIGHT, PART_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Heads (request line and headers) of the requests the scripted server has seen.
type Seen = Arc<Mutex<Vec<String>>>;

/// Serves `CreateMultipartUpload` and `AbortMultipartUpload`, and fails every `UploadPart` with 500.
async fn scripted_s3() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            tokio::spawn(serve(connection, Arc::clone(&log)));
        }
    });
    (endpoint, seen)
}

async fn serve(mut connection: TcpStream, seen: Seen) {
    let mut buffer = Vec::new();
    loop {
        let Some(head_end) = read_until_blank_line(&mut connection, &mut buffer).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let length = content_length(&head);
        while buffer.len() < head_end + length {
            let mut chunk = vec![0; 64 * 1024];
            match connection.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        let request = head.lines().next().unwrap_or_default().to_string();
        seen.lock().expect("log").push(head);
        if connection
            .write_all(answer(&request).as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads until the end of a request's head; returns where its body starts.
async fn read_until_blank_line(connection: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = vec![0; 64 * 1024];
        match connection.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn answer(request: &str) -> String {
    let (status, body) = if request.starts_with("POST") && request.contains("uploads") {
        (
            "200 OK",
            "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>\
             <UploadId>upload-1</UploadId></InitiateMultipartUploadResult>",
        )
    } else if request.starts_with("DELETE") {
        ("204 No Content", "")
    } else {
        (
            "500 Internal Server Error",
            "<Error><Code>InternalError</Code><Message>scripted failure</Message></Error>",
        )
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn store(endpoint: &str) -> S3Store {
    support::hermetic_environment();
    let url = format!("s3://b/p?region=us-east-1&endpoint={endpoint}&path_style=true");
    S3Store::from_location(&StoreLocation::parse(&url).expect("URL"))
        .await
        .expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_part_aborts_the_multipart_upload_before_the_error_is_returned() {
    let (endpoint, seen) = scripted_s3().await;
    let store = store(&endpoint).await;
    let key = ObjectKey::parse("k").expect("key");
    let mut upload = store.put(&key, &PutOptions::default()).await.expect("put");
    // Parts upload in the background: part 1's failure shows up when a write needs its slot,
    // at the latest at part 5 (4 in flight).
    let mut failure = None;
    for _ in 0..=PARTS_IN_FLIGHT {
        if let Err(error) = upload.write(Bytes::from(vec![7_u8; PART_SIZE])).await {
            failure = Some(error);
            break;
        }
    }
    let error = failure.expect("a write reports the failed part");
    assert!(matches!(error, StoreError::Transient { .. }), "{error:?}");
    assert!(error.to_string().contains("UploadPart "), "{error}");
    assert!(error.to_string().contains(" of `k`"), "{error}");
    let again = upload.write(Bytes::from_static(b"more")).await;
    assert!(
        again.is_err_and(|e| e.to_string().contains("failed and was aborted")),
        "a failed upload does not start over"
    );
    let seen: Vec<String> = seen
        .lock()
        .expect("log")
        .iter()
        .map(|head| head.lines().next().unwrap_or_default().to_string())
        .collect();
    assert!(
        seen.iter()
            .any(|request| request.starts_with("DELETE /b/p/k?")
                && request.contains("uploadId=upload-1")),
        "the upload was aborted before the error was returned: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_requested_when_the_multipart_upload_is_created() {
    let (endpoint, seen) = scripted_s3().await;
    let store = store(&endpoint).await;
    let key = ObjectKey::parse("locked").expect("key");
    let until = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let options = PutOptions {
        retention: Some(Retention {
            mode: RetentionMode::Compliance,
            until,
        }),
    };
    let mut upload = store.put(&key, &options).await.expect("put");
    upload
        .write(Bytes::from(vec![7_u8; PART_SIZE]))
        .await
        .expect("the part is only sent");
    let _ = upload.abort().await;
    let seen = seen.lock().expect("log").clone();
    let create = seen
        .iter()
        .find(|head| head.starts_with("POST /b/p/locked?uploads"))
        .expect("a CreateMultipartUpload request")
        .to_ascii_lowercase();
    assert!(
        create.contains("x-amz-object-lock-mode: compliance"),
        "{create}"
    );
    assert!(
        create.contains("x-amz-object-lock-retain-until-date: 2033-05-18t03:33:20"),
        "{create}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_a_transient_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let error = store(&endpoint)
        .await
        .capabilities()
        .await
        .expect_err("nobody listens");
    assert!(error.is_retryable(), "{error:?}");
}
