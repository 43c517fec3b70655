//! The repository on the file store: init, open, a wrong password, a missing repository, a
//! second init, and real data through rustic_core's backup, dump and check.

mod common;

use std::sync::Arc;

use cairn_repository::RepositoryError;
use cairn_store::local::LocalStore;
use cairn_store::ArtifactStore;

fn store(dir: &std::path::Path) -> Arc<dyn ArtifactStore> {
    std::fs::create_dir_all(dir).unwrap();
    Arc::new(LocalStore::new(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_makes_a_repository_that_opens_only_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir.path().join("repo"));
    let password = common::password(dir.path(), "correct horse");
    let created = cairn_repository::init(Arc::clone(&store), &password)
        .await
        .unwrap();
    assert_eq!(created.version, 2);
    assert_eq!(created.id.len(), 64);
    assert!(dir.path().join("repo/config").is_file());
    assert_eq!(
        std::fs::read_dir(dir.path().join("repo/keys"))
            .unwrap()
            .count(),
        1
    );

    let opened = cairn_repository::open(Arc::clone(&store), &password)
        .await
        .unwrap();
    assert_eq!(opened.info(), created);
    assert_eq!(opened.snapshot_count().await.unwrap(), 0);
    assert!(opened.check(false).await.unwrap().is_empty());

    let wrong = common::password(dir.path(), "wrong horse battery");
    let error = cairn_repository::open(Arc::clone(&store), &wrong)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RepositoryError::WrongPassword { .. }),
        "{error:?}"
    );
    let root = dir.path().join("repo");
    assert_eq!(
        error.to_string(),
        format!("The repository password does not open the repository at repo+file://{}: no key of the repository accepts it; check --repository-password-file (or CAIRN_REPOSITORY_PASSWORD_FILE)", root.display())
    );

    let again = cairn_repository::init(Arc::clone(&store), &password)
        .await
        .unwrap_err();
    assert!(matches!(again, RepositoryError::Exists { .. }), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_a_repository_is_named_with_the_command_that_makes_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("empty");
    let store = store(&root);
    let password = common::password(dir.path(), "pw");
    let error = cairn_repository::open(store, &password).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "There is no repository at repo+file://{0} (it has no `config` object); create one with `cairn repo init --store repo+file://{0}`, or fix the store URL",
            root.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_round_trips_and_deduplicates_through_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir.path().join("repo"));
    let password = common::password(dir.path(), "pw");
    cairn_repository::init(Arc::clone(&store), &password)
        .await
        .unwrap();
    let seen = common::round_trip(Arc::clone(&store), "pw").await;
    assert!(seen.identical, "the dumped file differs");
    assert!(seen.check_ok, "check --read-data found errors");
    assert!(seen.packs_after_first > 0, "{seen:?}");
    assert_eq!(
        seen.packs_after_first, seen.packs_after_second,
        "an unchanged second backup adds no data"
    );

    // A pack removed behind the repository's back is found by the check.
    let packs = store.list("data/").await.unwrap();
    store.delete(&packs[0].key, None).await.unwrap();
    let opened = cairn_repository::open(Arc::clone(&store), &password)
        .await
        .unwrap();
    let findings = opened.check(false).await.unwrap();
    assert!(findings.iter().any(|f| f.error), "{findings:?}");
}
