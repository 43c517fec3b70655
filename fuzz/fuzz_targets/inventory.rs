//! The `--inventory` YAML (`Inventory::load`).
//!
//! The library only offers `Inventory::load(path)` (no parse-from-string function), so each
//! input is written to one file in a private temporary directory and loaded from there.
#![no_main]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use cairn::target::inventory::{Inventory, InventoryError};
use libfuzzer_sys::fuzz_target;

fn inventory_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cairn-fuzz-inventory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz directory");
        dir.join("inventory.yml")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = inventory_path();
    std::fs::write(path, data).expect("write the inventory");
    match Inventory::load(path) {
        Ok(inventory) => {
            // What `validate` promises to the rest of Cairn.
            assert!(!inventory.deployment.trim().is_empty());
            assert!(!inventory.deployment.contains('/'));
            assert!(!inventory.instances.is_empty());
            let mut seen = BTreeSet::new();
            for instance in &inventory.instances {
                assert!(!instance.group.is_empty() && !instance.group.contains('/'));
                assert!(!instance.address.is_empty());
                assert!(!instance.username.is_empty());
                assert!(seen.insert((instance.group.clone(), instance.index)));
                // Relative keys are resolved against the (absolute) inventory directory.
                assert!(
                    instance.private_key.is_absolute(),
                    "{:?}",
                    instance.private_key
                );
                let _ = instance.id();
            }
        }
        Err(error @ InventoryError::Invalid { .. }) => {
            assert!(error.to_string().contains("inventory.yml"));
        }
        Err(InventoryError::Read { source, .. }) => {
            // Only non-UTF-8 input fails to read.
            assert!(std::str::from_utf8(data).is_err(), "{source}");
        }
    }
});
