//! The Azure adapter on a storage account with blob versioning, which Azurite does not have:
//! against `integration/stores/azure_versioned.py`, a scripted server that answers Put Blob,
//! Put Block List, Get Blob, List Blobs and Delete Blob as Azure does with versioning on
//! (`x-ms-version-id`, `?versionid=`). It checks no signature; the adapter signs as for Azure.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreLocation};
use cairn_store_azure::AzureStore;
use cairn_testbed::stores::{AZURITE_ACCOUNT, AZURITE_KEY};

/// The scripted server, killed when dropped.
struct Scripted {
    child: Child,
    _dir: tempfile::TempDir,
    endpoint: String,
}

impl Scripted {
    fn start(container: &str) -> Scripted {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let script: PathBuf = cairn_testbed::stores::dir().join("azure_versioned.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--account", AZURITE_ACCOUNT, "--container", container])
            .arg("--ready")
            .arg(&ready)
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the scripted server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(&ready).unwrap();
        let port = port.trim().trim_start_matches("port=").to_string();
        Scripted {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        }
    }

    fn store(&self, container: &str, prefix: &str) -> AzureStore {
        let location = StoreLocation::parse(&format!(
            "az://{AZURITE_ACCOUNT}/{container}/{prefix}?endpoint={}",
            self.endpoint
        ))
        .unwrap();
        AzureStore::from_location_with_env(&location, &|name| {
            (name == "AZURE_STORAGE_KEY").then(|| AZURITE_KEY.to_string())
        })
        .unwrap()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versioned_account_is_found_by_the_probe_and_keeps_old_versions() {
    let server = Scripted::start("versioned");
    let store = server.store("versioned", "cairn");
    // Read-only, an empty container cannot show versioning; the write probe does.
    assert!(!store.capabilities().await.unwrap().versioning);
    assert!(store.capabilities_for_writing().await.unwrap().versioning);
    let bare = server.store("versioned", "");
    assert_eq!(
        bare.list("").await.unwrap(),
        [],
        "the probe blob is deleted"
    );
    let probe = ObjectKey::parse(cairn_store_azure::PROBE_PREFIX).unwrap();
    assert!(bare.list(probe.as_str()).await.unwrap().is_empty());

    // Put returns a version id, not an ETag, and that version stays readable.
    let object = ObjectKey::parse("cf/manifest.json").unwrap();
    let first = store
        .put_bytes(
            &object,
            Bytes::from_static(b"first"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let id = first.version.clone().expect("a version id");
    assert!(id.ends_with('Z') && !id.starts_with('"'), "{id}");
    store
        .put_bytes(
            &object,
            Bytes::from_static(b"second"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(store.get_bytes(&object, Some(&id)).await.unwrap(), b"first");
    assert_eq!(
        store.head(&object, Some(&id)).await.unwrap().version,
        Some(id)
    );

    // The whole suite, with its versioning checks (they run only when versioning is reported).
    cairn_store::conformance::check_store(&store, "suite").await;
}

#[tokio::test]
async fn a_missing_container_is_refused_before_any_probe() {
    let server = Scripted::start("versioned");
    let error = server
        .store("never-created", "p")
        .capabilities_for_writing()
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("container `never-created` does not exist"),
        "{error}"
    );
}
