//! Refused and missing credentials, against a moto that checks signatures. One test, alone in
//! its binary, because it changes the process environment that the credential chain reads.

mod support;

use cairn_store::{ArtifactStore, StoreError};
use support::Moto;

const SECRET: &str = "wrong-secret-that-must-never-be-printed";

fn assert_credentials_error(error: &StoreError) {
    match error {
        StoreError::Credentials { hint, .. } => {
            assert!(hint.contains("AWS_ACCESS_KEY_ID"), "{hint}");
        }
        other => panic!("expected a credentials error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(!message.contains(SECRET), "the secret leaked: {message}");
    assert!(!message.contains('\n'), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_or_missing_credentials_are_credentials_errors() {
    // From the first request on, moto checks every signature against the keys it knows (none).
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);

    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7WRONG00");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
    let refused = moto
        .store("any-bucket", "p")
        .await
        .capabilities()
        .await
        .expect_err("unknown keys are refused");
    eprintln!("refused: {refused}");
    assert_credentials_error(&refused);

    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let missing = moto
        .store("any-bucket", "p")
        .await
        .capabilities()
        .await
        .expect_err("no keys at all");
    eprintln!("missing: {missing}");
    assert_credentials_error(&missing);
}
