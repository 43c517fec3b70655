//! Credentials from `GOOGLE_APPLICATION_CREDENTIALS`. One test in its own binary, because it
//! changes the process environment.

mod scripted;

use std::process::Command;

use cairn_store::{ArtifactStore, StoreError, StoreLocation};
use cairn_store_gcs::GcsStore;
use scripted::{Reply, Script};

fn location(endpoint: &str) -> StoreLocation {
    StoreLocation::Gcs {
        bucket: "bucket".into(),
        prefix: String::new(),
        endpoint: Some(endpoint.into()),
    }
}

/// A service-account key file with a fresh RSA key (no network: GCS service-account tokens
/// are JWTs signed locally).
fn service_account_file(dir: &std::path::Path) -> std::path::PathBuf {
    let output = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl genpkey");
    assert!(output.status.success());
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "cairn-test",
        "private_key_id": "test-key",
        "private_key": String::from_utf8(output.stdout).unwrap(),
        "client_email": "cairn@cairn-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:1/token",
    });
    let path = dir.join("key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

#[tokio::test]
async fn key_files_are_used_and_their_failures_are_credential_errors() {
    let dir = std::env::temp_dir().join(format!("cairn-gcs-credentials-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = Script::serve(vec![Reply::new(
        401,
        r#"{"error":{"code":401,"message":"Invalid Credentials"}}"#,
    )])
    .await;

    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", dir.join("missing.json"));
    let error = GcsStore::from_location(&location(&script.endpoint))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Credentials { .. }), "{error}");
    assert!(error.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"));

    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", service_account_file(&dir));
    let store = GcsStore::from_location(&location(&script.endpoint))
        .await
        .unwrap();
    let error = store.capabilities().await.unwrap_err();
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
    let _ = std::fs::remove_dir_all(&dir);

    assert!(matches!(error, StoreError::Credentials { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.starts_with("gs://bucket refused the credentials: HTTP 401: Invalid Credentials"),
        "{text}"
    );
    let authorization = script.requests()[0]
        .header("authorization")
        .expect("a bearer token was sent")
        .to_string();
    let token = authorization.strip_prefix("Bearer ").unwrap();
    assert!(token.len() > 100);
    assert!(!text.contains(token) && !format!("{store:?}").contains(token));
}
