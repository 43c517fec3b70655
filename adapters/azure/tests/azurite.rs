//! The Azure adapter against a real blob service: Azurite, started by
//! `integration/stores/azurite.sh` (installed on first use) on a fresh loopback port, through
//! the emulator helper of the integration crate (`cairn_testbed::stores`).
//!
//! Every test uses the well-known development account with an explicit endpoint and key, so
//! nothing can reach a real cloud or a metadata address, and its own container, so the tests
//! may run in parallel. Azurite has no blob versioning: the ETag paths are tested here, the
//! version-id paths against a scripted server that answers as a versioned account does
//! (`tests/versioned.rs`).

use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{
    ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, Retention, RetentionMode, StoreError,
    StoreLocation,
};
use cairn_store_azure::AzureStore;
use cairn_testbed::stores::{Emulator, Server, AZURITE_ACCOUNT, AZURITE_KEY};
use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;

const ACCOUNT: &str = AZURITE_ACCOUNT;
/// Azurite's published development key (not a secret).
const KEY: &str = AZURITE_KEY;

/// A running Azurite, stopped when the last test holding it drops it; its `endpoint`
/// (`http://127.0.0.1:PORT/devstoreaccount1`) is the emulator's.
struct Azurite(Arc<Emulator>);

impl std::ops::Deref for Azurite {
    type Target = Emulator;

    fn deref(&self) -> &Emulator {
        &self.0
    }
}

impl Azurite {
    /// The Azurite of this test binary, started (and installed) when no test holds one.
    fn shared() -> Azurite {
        Azurite(Emulator::shared(Server::Azurite))
    }

    /// Creates `container` with a Create Container request signed by object_store's
    /// authorizer (object_store itself has no call for it).
    async fn create_container(&self, container: &str) {
        let credential = AzureCredential::AccessKey(AzureAccessKey::try_new(KEY).unwrap());
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(format!("{}/{container}?restype=container", self.endpoint))
            .body(HttpRequestBody::empty())
            .unwrap();
        AzureAuthorizer::new(&credential, ACCOUNT)
            .try_authorize(&mut request)
            .unwrap();
        let client = ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(true))
            .unwrap();
        let response = client.execute(request).await.expect("create container");
        assert!(
            response.status() == 201 || response.status() == 409,
            "create container `{container}`: HTTP {}",
            response.status()
        );
    }

    fn location(&self, container: &str, prefix: &str) -> StoreLocation {
        StoreLocation::parse(&format!(
            "az://{ACCOUNT}/{container}/{prefix}?endpoint={}",
            self.endpoint
        ))
        .unwrap()
    }

    /// A store on a new container, authenticated with `AZURE_STORAGE_KEY`.
    async fn store(&self, container: &str, prefix: &str) -> AzureStore {
        self.create_container(container).await;
        AzureStore::from_location_with_env(&self.location(container, prefix), &key_env(KEY))
            .unwrap()
    }
}

fn key_env(key: &'static str) -> impl Fn(&str) -> Option<String> {
    move |name| (name == "AZURE_STORAGE_KEY").then(|| key.to_string())
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_under_a_prefix() {
    let azurite = Azurite::shared();
    let store = azurite.store("conformance", "cairn/nightly").await;
    assert_eq!(
        store.to_string(),
        "az://devstoreaccount1/conformance/cairn/nightly"
    );
    cairn_store::conformance::check_store(&store, "suite").await;
    // Keys are relative to the prefix: a store on the bare container sees the full names.
    let bare =
        AzureStore::from_location_with_env(&azurite.location("conformance", ""), &key_env(KEY))
            .unwrap();
    let names: Vec<String> = bare
        .list("cairn/nightly/suite/list/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "cairn/nightly/suite/list/b",
            "cairn/nightly/suite/list/empty",
            "cairn/nightly/suite/list/sub/c"
        ]
    );
}

#[tokio::test]
async fn a_connection_string_is_a_credential_too() {
    let azurite = Azurite::shared();
    azurite.create_container("connection-string").await;
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={};",
        azurite.endpoint
    );
    let env =
        move |name: &str| (name == "AZURE_STORAGE_CONNECTION_STRING").then(|| connection.clone());
    // The endpoint comes from the connection string, not the URL.
    let location = StoreLocation::parse(&format!("az://{ACCOUNT}/connection-string/p")).unwrap();
    let store = AzureStore::from_location_with_env(&location, &env).unwrap();
    store.capabilities().await.expect("reachable");
    let object = key("hello.txt");
    let put = store
        .put_bytes(
            &object,
            Bytes::from_static(b"hello"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(store.get_bytes(&object, None).await.unwrap(), b"hello");
    assert_eq!(
        store.head(&object, None).await.unwrap().version,
        put.version
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_credentials_error() {
    let azurite = Azurite::shared();
    azurite.create_container("wrong-key").await;
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let store =
        AzureStore::from_location_with_env(&azurite.location("wrong-key", ""), &key_env(wrong))
            .unwrap();
    for error in [
        store.capabilities().await.unwrap_err(),
        store
            .put_bytes(&key("x"), Bytes::from_static(b"x"), &PutOptions::default())
            .await
            .unwrap_err(),
        store.head(&key("x"), None).await.unwrap_err(),
    ] {
        let message = error.to_string();
        eprintln!("{message}");
        assert!(
            matches!(error, StoreError::Credentials { .. }),
            "expected Credentials, got {message}"
        );
        assert!(message.contains("AZURE_STORAGE_KEY"), "{message}");
        assert!(
            !message.contains(wrong) && !message.contains('\n'),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_missing_container_is_a_configuration_error() {
    let azurite = Azurite::shared();
    let store =
        AzureStore::from_location_with_env(&azurite.location("never-created", "p"), &key_env(KEY))
            .unwrap();
    for error in [
        store.capabilities().await.unwrap_err(),
        store
            .put_bytes(&key("x"), Bytes::from_static(b"x"), &PutOptions::default())
            .await
            .unwrap_err(),
    ] {
        let message = error.to_string();
        eprintln!("{message}");
        assert!(
            matches!(error, StoreError::Configuration { .. }),
            "expected Configuration, got {message}"
        );
        assert!(message.contains("`never-created`"), "{message}");
        assert!(message.contains("create it"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_leaves_no_blob() {
    let azurite = Azurite::shared();
    let store = azurite.store("aborted", "p").await;
    // 20 MiB in 1 MiB writes: blocks are staged before the abort.
    let fresh = key("fresh/object");
    let mut upload = store.put(&fresh, &PutOptions::default()).await.unwrap();
    for _ in 0..20 {
        upload
            .write(Bytes::from(vec![7_u8; 1 << 20]))
            .await
            .unwrap();
    }
    upload.abort().await.unwrap();
    assert!(matches!(
        store.head(&fresh, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.list("fresh/").await.unwrap().is_empty());

    // Aborting an overwrite leaves the blob that was there.
    let kept = key("kept/object");
    store
        .put_bytes(&kept, Bytes::from_static(b"before"), &PutOptions::default())
        .await
        .unwrap();
    let mut upload = store.put(&kept, &PutOptions::default()).await.unwrap();
    upload
        .write(Bytes::from(vec![1_u8; 17 << 20]))
        .await
        .unwrap();
    upload.abort().await.unwrap();
    assert_eq!(store.get_bytes(&kept, None).await.unwrap(), b"before");
}

#[tokio::test]
async fn etags_pin_what_was_written() {
    let azurite = Azurite::shared();
    let store = azurite.store("etags", "").await;
    let capabilities = store.capabilities().await.unwrap();
    assert!(!capabilities.versioning && !capabilities.retention);
    let object = key("manifest.json");
    let first = store
        .put_bytes(
            &object,
            Bytes::from_static(b"first"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let second = store
        .put_bytes(
            &object,
            Bytes::from_static(b"second"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let (first, second) = (first.version.unwrap(), second.version.unwrap());
    assert!(
        first.starts_with('"') && first != second,
        "{first} {second}"
    );
    // The overwritten version reads as gone, never as the new bytes.
    assert!(matches!(
        store.get(&object, Some(&first)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.head(&object, Some(&first)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.get_bytes(&object, Some(&second)).await.unwrap(),
        b"second"
    );
    // Deleting a version deletes the blob only while it is that version.
    assert!(matches!(
        store.delete(&object, Some(&first)).await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete(&object, Some(&second)).await.unwrap();
    assert!(matches!(
        store.head(&object, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(&object, None).await,
        Err(StoreError::NotFound { .. })
    ));
    // Retention is refused, not silently skipped.
    let retention = PutOptions {
        retention: Some(Retention {
            mode: RetentionMode::Compliance,
            until: std::time::SystemTime::now(),
        }),
    };
    assert!(matches!(
        store.put(&object, &retention).await.err(),
        Some(StoreError::Configuration { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let location = StoreLocation::parse(&format!(
        "az://{ACCOUNT}/c?endpoint=http://127.0.0.1:1/{ACCOUNT}"
    ))
    .unwrap();
    let store = AzureStore::from_location_with_env(&location, &key_env(KEY)).unwrap();
    let started = std::time::Instant::now();
    let error = store.capabilities().await.unwrap_err();
    eprintln!("{error} (after {:?})", started.elapsed());
    assert!(error.is_retryable(), "expected Transient, got {error}");
}

/// No secret, and a managed identity endpoint that does not answer (a closed loopback port,
/// never the real 169.254.169.254): a credentials error at the first request.
#[tokio::test]
async fn no_credentials_is_a_credentials_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    let location = StoreLocation::parse("az://acct/c").unwrap();
    let env = |name: &str| (name == "AZURE_MSI_ENDPOINT").then(|| endpoint.clone());
    let store = AzureStore::from_location_with_env(&location, &env).unwrap();
    let error = store.head(&key("x"), None).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Credentials { .. }), "{message}");
    assert!(message.contains("az://acct/c") && message.contains("AZURE_STORAGE_SAS_TOKEN"));
    assert!(message.contains("AZURE_MSI_ENDPOINT"), "{message}");
}

#[tokio::test]
async fn the_write_probe_finds_no_versioning_and_leaves_nothing() {
    let azurite = Azurite::shared();
    let store = azurite.store("probe", "cairn/nightly").await;
    let capabilities = store.capabilities_for_writing().await.unwrap();
    assert!(!capabilities.versioning, "Azurite has no blob versioning");
    assert!(!store.probe_versioning().await.unwrap());
    let bare =
        AzureStore::from_location_with_env(&azurite.location("probe", ""), &key_env(KEY)).unwrap();
    assert_eq!(
        bare.list("").await.unwrap(),
        [],
        "the probe blob is deleted"
    );
}
