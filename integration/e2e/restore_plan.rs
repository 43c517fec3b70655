//! End-to-end: the deployment manifest saved with a store backup (`backup --with-manifest
//! --store`, `backups show --manifest`) through S3 (moto) and Azure (Azurite), and
//! `restore --plan`: the same refusals a restore makes before any lock — a missing instance
//! group, an instance whose `/var/vcap/store` is too small (a tmpfs) — named in one run,
//! changing nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use crate::common::*;
use cairn_testbed::director::{DeploymentSpec, Director, DirectorOptions};
use cairn_testbed::TestBed;

/// `cairn deployment -t URL -u admin -p SECRET --ca-cert CA -d cf <args>` in `work`.
fn bosh(director: &Director, work: &Path, args: &[&str]) -> Output {
    bosh_deployment(director, work, "cf", args)
}

/// `cairn deployment -t URL -u admin -p SECRET --ca-cert CA -d DEPLOYMENT <args>` in `work`.
fn bosh_deployment(director: &Director, work: &Path, deployment: &str, args: &[&str]) -> Output {
    let login = director_login(director);
    let mut all = with_director_login(&login, &["--deployment", deployment]);
    all.extend_from_slice(args);
    run(work, &all)
}

/// The only backup in the store, `DEPLOYMENT/ID`.
fn only_backup(work: &Path, store: &str) -> String {
    let output = run(work, &["backups", "--store", store, "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    rows[0].split('\t').next().unwrap().to_string()
}

/// An age identity file and its recipient.
fn age_key(dir: &Path) -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let file = dir.join("backup.key");
    fs::write(&file, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    (
        file.to_str().unwrap().to_string(),
        identity.to_public().to_string(),
    )
}

/// Backs up `cf` through the Director into `store` with its manifest (encrypted to
/// `recipient` if any), then reads the manifest back, verifies the backup and plans a restore.
fn manifest_round_trip(director: &Director, store: &str, key: Option<(&str, &str)>) {
    let work = workdir();
    let mut args = vec!["backup", "--store", store, "--with-manifest"];
    if store.starts_with("az://") {
        // Azurite has no blob versioning (store_versioning:: tests the refusal).
        args.push("--allow-unversioned");
    }
    if let Some((_, recipient)) = key {
        args.extend(["--encrypt-to", recipient]);
    }
    let output = bosh(director, work.path(), &args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = only_backup(work.path(), store);

    let show = run(
        work.path(),
        &["backups", "--store", store, "show", &id, "--json"],
    );
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).expect("manifest JSON");
    let object = &manifest["deployment_manifest"];
    let suffix = if key.is_some() {
        "/manifest.yml.age"
    } else {
        "/manifest.yml"
    };
    assert!(
        object["key"].as_str().unwrap().ends_with(suffix),
        "{manifest}"
    );
    assert_eq!(object["sha256"].as_str().unwrap().len(), 64, "{manifest}");
    assert_eq!(
        object["encryption"].is_object(),
        key.is_some(),
        "{manifest}"
    );
    assert_eq!(
        manifest["layout"]["releases"]["database-release"], "1.0.0",
        "{manifest}"
    );

    let mut show_manifest = vec!["backups", "--store", store, "show", &id, "--manifest"];
    if let Some((identity, _)) = key {
        let refused = run(work.path(), &show_manifest);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(
            text(&refused).contains("--identity FILE"),
            "{}",
            text(&refused)
        );
        show_manifest.extend(["--identity", identity]);
    }
    let shown = run(work.path(), &show_manifest);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown));
    let yaml = String::from_utf8_lossy(&shown.stdout);
    assert!(
        yaml.contains("name: cf") && yaml.contains("instance_groups"),
        "{yaml}"
    );

    let verify = run(work.path(), &["backups", "--store", store, "verify", &id]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));

    // The plan compares the saved manifest with the Director's: the same deployment.
    let mut plan = vec!["restore", "--store", store, "--backup", &id, "--plan"];
    if let Some((identity, _)) = key {
        plan.extend(["--identity", identity]);
    }
    let output = bosh(director, work.path(), &plan);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("Comparing the deployment with the deployment manifest saved with the backup"),
        "{all}"
    );
    assert!(all.contains("Deployment 'cf' can be restored."), "{all}");
    assert!(!all.contains("Warning: "), "{all}");
}

#[test]
fn the_deployment_manifest_round_trips_through_s3_and_azurite() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_key(keys.path());

    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let s3 = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    manifest_round_trip(&director, &s3, Some((&identity, &recipient)));

    let azurite = Emulator::start(Server::Azurite);
    azurite.fixture(&["create-container", "cairn-backups"]);
    let azure = format!(
        "az://devstoreaccount1/cairn-backups/nightly?endpoint={}",
        azurite.endpoint
    );
    manifest_round_trip(&director, &azure, None);

    // The manifest object is hashed: changed behind Cairn's back, verify names it.
    let work = workdir();
    let id = only_backup(work.path(), &azure);
    azurite.fixture(&[
        "put",
        "cairn-backups",
        &format!("nightly/{id}/manifest.yml"),
    ]);
    let verify = run(work.path(), &["backups", "--store", &azure, "verify", &id]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(
        text(&verify).contains("manifest.yml` is damaged or missing"),
        "{}",
        text(&verify)
    );
}

#[test]
fn release_version_differences_are_warnings_and_the_restore_goes_on() {
    cairn_testbed::require_root!();
    let (prod, drill) = std::thread::scope(|s| {
        let a = s.spawn(|| TestBed::start(&[("app", 0, &["files"])]).expect("test bed"));
        let b = s.spawn(|| TestBed::start(&[("app", 0, &["files"])]).expect("test bed"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut options = DirectorOptions::new(&prod);
    options.deployments.push(DeploymentSpec::new("prod", &prod));
    options
        .deployments
        .push(DeploymentSpec::new("drill", &drill).release_version("files-release", "2.0.0"));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let output = bosh_deployment(
        &director,
        work.path(),
        "prod",
        &[
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
            "--with-manifest",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    let warning =
        "Release files-release is version 1.0.0 in the backup's deployment, 2.0.0 in the deployment";
    let restore = ["restore", "--artifact-path", backup.to_str().unwrap()];
    let mut plan = restore.to_vec();
    plan.push("--plan");
    let output = bosh_deployment(&director, work.path(), "drill", &plan);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(stdout.contains(&format!("Warning: {warning}")), "{stdout}");
    assert!(
        stdout.contains("Deployment 'drill' can be restored."),
        "{stdout}"
    );
    assert!(drill.events(drill.host("app", 0), "files").is_empty());

    let output = bosh_deployment(&director, work.path(), "drill", &restore);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("WARN - {warning}")),
        "{}",
        text(&output)
    );
    assert_eq!(
        tree_digest(&drill.host("app", 0).vcap_dir.join("store/files")),
        tree_digest(&prod.host("app", 0).vcap_dir.join("store/files"))
    );
}

/// The reasons `restore --plan` and `restore` give against the small target.
fn assert_refusals(all: &str) {
    assert!(
        all.contains(
            "Deployment 'testbed' does not match the structure of the provided backup: \
             instance group database is not in the deployment (the backup has artifacts of database/0)"
        ),
        "{all}"
    );
    assert!(
        all.contains("free under /var/vcap/store (file system /var/vcap/store), but the artifacts to restore there need"),
        "{all}"
    );
}

#[test]
fn restore_plan_names_a_missing_instance_group_and_a_too_small_disk() {
    cairn_testbed::require_root!();
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(|| TestBed::start(&[]).expect("test bed"));
        let b = s.spawn(|| {
            TestBed::start(&[("app", 0, &["app", "files"]), ("app", 1, &["app", "files"])])
                .expect("test bed")
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let files = source.host("app", 0).vcap_dir.join("store/files");
    write_pseudo_random(&files.join("big.bin"), 3 * 1024 * 1024);
    let small = target.host("app", 0);
    let mounted = target
        .exec(small, "mount -t tmpfs -o size=1m tmpfs /var/vcap/store")
        .unwrap();
    assert!(mounted.status.success(), "{mounted:?}");

    let work = workdir();
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let output = backup_into(&source, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let directory = backup_dir(work.path());
    let output = cairn(&source, work.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    for from in [
        vec!["--artifact-path", directory.to_str().unwrap()],
        vec!["--store", &store, "--latest"],
    ] {
        let mut plan = vec!["restore"];
        plan.extend(&from);
        plan.push("--plan");
        let output = cairn(&target, work.path(), &plan);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(1), "{all}");
        assert_refusals(&all);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("app-0-files -> app/0 job files (3."),
            "{stdout}"
        );
        assert!(stdout.contains("— does not fit"), "{stdout}");
        assert!(
            stdout.contains("Deployment 'testbed' cannot be restored."),
            "{stdout}"
        );
        assert_no_script_ran(&target);
        assert_nothing_left(&target);

        // The real restore refuses for the same reasons, before any lock or copy.
        let mut restore = vec!["restore"];
        restore.extend(&from);
        let output = cairn(&target, work.path(), &restore);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert_refusals(&text(&output));
        assert_no_script_ran(&target);
        assert_nothing_left(&target);
    }

    // As JSON: one restore_plan event, valid against the schema, with both refusals.
    let inventory = target.inventory();
    let output = run(
        work.path(),
        &[
            "deployment",
            "--inventory",
            inventory.to_str().unwrap(),
            "--json",
            "restore",
            "--artifact-path",
            directory.to_str().unwrap(),
            "--plan",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let schema: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    for event in &events {
        cairn_testbed::schema::validate(&schema, event).unwrap();
    }
    let plan = &events
        .iter()
        .find(|e| e["event"] == "restore_plan")
        .expect("a restore_plan event")["plan"];
    assert_eq!(plan["restorable"], false);
    assert_eq!(plan["refusals"].as_array().unwrap().len(), 2, "{plan}");
    let space = plan["free_space"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance"].as_str().unwrap().starts_with("app/0"))
        .unwrap();
    assert_eq!(space["fits"], false, "{plan}");
    assert!(space["available_bytes"].as_u64().unwrap() <= 1024 * 1024);

    // --dot: the restore lock order.
    let output = cairn(
        &target,
        work.path(),
        &[
            "restore",
            "--artifact-path",
            directory.to_str().unwrap(),
            "--plan",
            "--dot",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("digraph \"testbed\""),
        "{}",
        text(&output)
    );
}
