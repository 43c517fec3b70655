//! fake-gcs-server for the tests: installed once (integration/stores/fake-gcs.sh), started on a
//! fresh port, shared by the tests of a binary that run at the same time, stopped when the last
//! of them drops it.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};

use cairn_store::StoreLocation;
use cairn_store_gcs::GcsStore;

/// A running fake-gcs-server.
#[derive(Debug)]
pub struct FakeGcs {
    dir: PathBuf,
    pub endpoint: String,
}

impl FakeGcs {
    /// The server the tests of this binary share, started when none is running.
    pub fn shared() -> Arc<FakeGcs> {
        static SHARED: Mutex<Weak<FakeGcs>> = Mutex::new(Weak::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(FakeGcs::start(None));
        *shared = Arc::downgrade(&server);
        server
    }

    /// A server of its own, whose upload session URLs point at `external_url` when given.
    pub fn start(external_url: Option<&str>) -> FakeGcs {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        install();
        let dir = std::env::temp_dir().join(format!(
            "cairn-fake-gcs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let mut command = Command::new("bash");
        command.arg(script()).arg("start").arg(&dir);
        if let Some(url) = external_url {
            command.arg(url);
        }
        let output = command.output().expect("run fake-gcs.sh start");
        assert!(
            output.status.success(),
            "fake-gcs.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let endpoint = String::from_utf8(output.stdout).unwrap().trim().to_string();
        FakeGcs { dir, endpoint }
    }

    /// Creates `bucket` through the JSON API.
    pub async fn create_bucket(&self, bucket: &str, versioning: bool) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b", self.endpoint))
            .json(&serde_json::json!({ "name": bucket, "versioning": { "enabled": versioning } }))
            .send()
            .await
            .expect("create bucket");
        assert!(
            response.status().is_success(),
            "create bucket {bucket}: {}",
            response.status()
        );
    }

    /// The object resource of `name`, as JSON, straight from the JSON API.
    pub async fn object_resource(&self, bucket: &str, name: &str) -> serde_json::Value {
        let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        reqwest::get(format!("{}/storage/v1/b/{bucket}/o/{name}", self.endpoint))
            .await
            .expect("get object resource")
            .json()
            .await
            .expect("object resource JSON")
    }

    /// The store `gs://bucket/prefix` on this server.
    pub async fn store(&self, bucket: &str, prefix: &str) -> GcsStore {
        let location = StoreLocation::Gcs {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: Some(self.endpoint.clone()),
        };
        GcsStore::from_location(&location).await.expect("store")
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../integration/stores/fake-gcs.sh")
}

fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let output = Command::new("bash")
            .arg(script())
            .arg("install")
            .output()
            .expect("run fake-gcs.sh install");
        assert!(
            output.status.success(),
            "fake-gcs.sh install failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}
