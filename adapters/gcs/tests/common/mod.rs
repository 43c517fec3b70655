//! fake-gcs-server for the tests: installed once (integration/stores/fake-gcs.sh, through the
//! emulator helper of the integration crate, `cairn_testbed::stores`), started on a fresh port,
//! shared by the tests of a binary that run at the same time, stopped when the last of them
//! drops it.

#![allow(dead_code, unreachable_pub)]

use std::ops::Deref;
use std::sync::Arc;

use cairn_store::StoreLocation;
use cairn_store_gcs::GcsStore;
use cairn_testbed::stores::{Emulator, Server, StartOptions};

/// A running fake-gcs-server; its `endpoint` (`http://127.0.0.1:PORT`) through `Deref`.
#[derive(Debug)]
pub struct FakeGcs(Arc<Emulator>);

impl Deref for FakeGcs {
    type Target = Emulator;

    fn deref(&self) -> &Emulator {
        &self.0
    }
}

impl FakeGcs {
    /// The server the tests of this binary share, started when none is running.
    pub fn shared() -> FakeGcs {
        FakeGcs(Emulator::shared(Server::FakeGcs))
    }

    /// A server of its own, whose upload session URLs point at `external_url` when given.
    pub fn start(external_url: Option<&str>) -> FakeGcs {
        let options = StartOptions {
            external_url: external_url.map(str::to_owned),
            ..StartOptions::default()
        };
        FakeGcs(Arc::new(Emulator::start_with(Server::FakeGcs, &options)))
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
