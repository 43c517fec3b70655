//! The repository bridge against each cloud store's emulator (moto, Azurite, fake-gcs-server):
//! init, open, a wrong password, and real data through rustic_core's backup, dump and
//! `check --read-data` (every blob read back with a ranged read).

mod common;

use std::sync::Arc;

use cairn_repository::RepositoryError;
use cairn_store::{ArtifactStore, StoreLocation};
use cairn_testbed::stores::{Emulator, Server, AWS_ENV, AZURITE_KEY};

/// Everything a repository must do, on `store` (an empty prefix of a fresh bucket).
async fn repository_works_on(store: Arc<dyn ArtifactStore>) {
    let dir = tempfile::tempdir().unwrap();
    let password = common::password(dir.path(), "pw");
    let missing = cairn_repository::open(Arc::clone(&store), &password)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, RepositoryError::Missing { .. }),
        "{missing:?}"
    );
    let created = cairn_repository::init(Arc::clone(&store), &password)
        .await
        .unwrap();
    let opened = cairn_repository::open(Arc::clone(&store), &password)
        .await
        .unwrap();
    assert_eq!(opened.info(), created);
    let wrong = common::password(dir.path(), "not the password");
    let refused = cairn_repository::open(Arc::clone(&store), &wrong)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, RepositoryError::WrongPassword { .. }),
        "{refused:?}"
    );

    let seen = common::round_trip(Arc::clone(&store), "pw").await;
    assert!(seen.identical, "the dumped file differs");
    assert!(seen.check_ok, "check --read-data found errors");
    assert!(seen.packs_after_first > 0, "{seen:?}");
    assert_eq!(seen.packs_after_first, seen.packs_after_second, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_in_s3_works_through_the_bridge() {
    for (name, value) in AWS_ENV {
        std::env::set_var(name, value);
    }
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/cairn-tests/aws-config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/cairn-tests/aws-credentials",
    );
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "repository", "versioned"]);
    let location = StoreLocation::parse(&format!(
        "s3://repository/repo?region=us-east-1&endpoint={}&path_style=true",
        moto.endpoint
    ))
    .unwrap();
    let store = cairn_store_s3::S3Store::from_location(&location)
        .await
        .unwrap();
    repository_works_on(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_in_azure_works_through_the_bridge() {
    let azurite = Emulator::start(Server::Azurite);
    azurite.fixture(&["create-container", "repository"]);
    let location = StoreLocation::parse(&format!(
        "az://devstoreaccount1/repository/repo?endpoint={}",
        azurite.endpoint
    ))
    .unwrap();
    let key = |name: &str| (name == "AZURE_STORAGE_KEY").then(|| AZURITE_KEY.to_string());
    let store = cairn_store_azure::AzureStore::from_location_with_env(&location, &key).unwrap();
    repository_works_on(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_in_gcs_works_through_the_bridge() {
    let gcs = Emulator::start(Server::FakeGcs);
    gcs.fixture(&["create-bucket", "repository", "versioned"]);
    let location =
        StoreLocation::parse(&format!("gs://repository/repo?endpoint={}", gcs.endpoint)).unwrap();
    let store = cairn_store_gcs::GcsStore::from_location(&location)
        .await
        .unwrap();
    repository_works_on(Arc::new(store)).await;
}
