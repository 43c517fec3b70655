//! End-to-end: client-side encryption (`backup --encrypt-to`, `restore`/`backups verify`/
//! `drill --identity`) against the real test bed, the local `file://` store and real S3 (moto).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use age::secrecy::ExposeSecret;
use cairn_testbed::TestBed;

/// A line of text that must never appear in a stored object.
const MARKER: &str = "plaintext marker: if you can read this, the object is not encrypted\n";
const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// An age key pair, its identity written to a file.
struct Key {
    secret: String,
    public: String,
    file: PathBuf,
}

impl Key {
    fn new(dir: &Path, name: &str) -> Key {
        let identity = age::x25519::Identity::generate();
        let secret = identity.to_string().expose_secret().to_string();
        let public = identity.to_public().to_string();
        let file = dir.join(format!("{name}.key"));
        fs::write(
            &file,
            format!("# created: by the test\n# public key: {public}\n{secret}\n"),
        )
        .unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        Key {
            secret,
            public,
            file,
        }
    }

    fn path(&self) -> &str {
        self.file.to_str().unwrap()
    }
}

fn file_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

fn moto_with_bucket() -> (Emulator, String) {
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let url = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    (moto, url)
}

/// The only backup in the store, `DEPLOYMENT/ID`.
fn only_backup(work: &Path, store: &str) -> String {
    let output = run(work, &["backups", "--store", store, "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "a header and one backup: {lines:?}");
    assert_eq!(lines[0], "BACKUP\tTIME\tSIZE\tSTATE\tSIGNED");
    assert!(lines[1].ends_with("\tcomplete\tunsigned"), "{lines:?}");
    lines[1].split('\t').next().unwrap().to_string()
}

fn manifest(work: &Path, store: &str, id: &str) -> (serde_json::Value, String) {
    let show = run(work, &["backups", "--store", store, "show", id, "--json"]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let raw = String::from_utf8_lossy(&show.stdout).into_owned();
    (serde_json::from_str(&raw).expect("manifest JSON"), raw)
}

/// The manifest records the encryption of every artifact, and no key or recipient.
fn assert_manifest_encrypted(work: &Path, store: &str, id: &str, recipients: u64, keys: &[&Key]) {
    let (manifest, raw) = manifest(work, store, id);
    let artifacts = manifest["artifacts"].as_array().unwrap();
    assert!(!artifacts.is_empty());
    for artifact in artifacts {
        assert_eq!(
            artifact["encryption"],
            serde_json::json!({"scheme": "age-x25519", "recipients": recipients}),
            "{artifact}"
        );
        assert!(
            artifact["key"].as_str().unwrap().ends_with(".tar.zst.age"),
            "{artifact}"
        );
    }
    assert!(!raw.contains("AGE-SECRET-KEY"), "{raw}");
    for key in keys {
        assert!(!raw.contains(&key.public), "a recipient is in the manifest");
        assert!(!raw.contains(&key.secret[15..]), "a key is in the manifest");
    }
}

/// Stored bytes of an encrypted artifact: an age file, not a tar or zstd frame.
fn assert_not_plaintext(name: &str, bytes: &[u8]) {
    assert!(bytes.starts_with(AGE_HEADER), "{name} has no age header");
    assert!(!bytes.starts_with(ZSTD_MAGIC), "{name} is a zstd frame");
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"ustar"), "{name} holds a tar header");
    assert!(!has(&MARKER.as_bytes()[..40]), "{name} holds plaintext");
}

/// Every artifact object of a backup in a `file://` store.
fn stored_artifacts(store_dir: &Path, id: &str) -> Vec<(String, Vec<u8>)> {
    let mut objects: Vec<(String, Vec<u8>)> = fs::read_dir(store_dir.join(id))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tar"))
        .map(|name| {
            let bytes = fs::read(store_dir.join(id).join(&name)).unwrap();
            (name, bytes)
        })
        .collect();
    objects.sort();
    objects
}

/// Seeds `app/0`'s files with random and text data; returns the directory and its digest.
fn seed(bed: &TestBed) -> (PathBuf, std::collections::BTreeMap<String, String>) {
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    write_pseudo_random(&files.join("random.bin"), 6 * 1024 * 1024 + 7);
    fs::write(files.join("text.log"), MARKER.repeat(50_000)).unwrap();
    let before = tree_digest(&files);
    (files, before)
}

fn damage(files: &Path) {
    fs::write(files.join("random.bin"), b"overwritten").unwrap();
    fs::remove_file(files.join("text.log")).unwrap();
}

fn restore(bed: &TestBed, work: &Path, store: &str, id: &str, identities: &[&Key]) -> String {
    let mut args = vec!["restore", "--store", store, "--backup", id];
    for key in identities {
        args.extend(["--identity", key.path()]);
    }
    let output = cairn(bed, work, &args);
    let all = text(&output);
    if output.status.code() != Some(0) {
        return format!("exit {:?}: {all}", output.status.code());
    }
    all
}

#[test]
fn local_store_encrypted_backup_restores_only_with_a_matching_identity() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let (files, before) = seed(&bed);
    let work = workdir();
    let (store_dir, url) = file_store();
    let first = Key::new(work.path(), "first");
    let second = Key::new(work.path(), "second");
    let stranger = Key::new(work.path(), "stranger");

    let output = cairn(
        &bed,
        work.path(),
        &[
            "backup",
            "--store",
            &url,
            "--encrypt-to",
            &first.public,
            "--encrypt-to",
            &second.public,
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);
    let id = only_backup(work.path(), &url);
    let objects = stored_artifacts(store_dir.path(), &id);
    assert_eq!(
        objects.len(),
        5,
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for (name, bytes) in &objects {
        assert!(name.ends_with(".tar.zst.age.000000"), "{name}");
        assert_not_plaintext(name, bytes);
    }
    assert_manifest_encrypted(work.path(), &url, &id, 2, &[&first, &second]);
    let stored_manifest =
        fs::read_to_string(store_dir.path().join(&id).join("manifest.json")).unwrap();
    assert!(
        !stored_manifest.contains("AGE-SECRET-KEY") && !stored_manifest.contains(&first.public)
    );

    damage(&files);
    forget_script_events(&bed);
    // Without an identity: refused, naming the backup and the flag, before any script.
    let refused = restore(&bed, work.path(), &url, &id, &[]);
    assert!(refused.starts_with("exit Some(1)"), "{refused}");
    assert!(
        refused.contains(&format!("Backup {id} in "))
            && refused.contains("is encrypted (age-x25519, 2 recipients): give its age identity file with --identity FILE"),
        "{refused}"
    );
    assert_no_script_ran(&bed);
    assert_nothing_left(&bed);
    // With an identity that is not a recipient: refused the same way.
    let refused = restore(&bed, work.path(), &url, &id, &[&stranger]);
    assert!(refused.starts_with("exit Some(1)"), "{refused}");
    assert!(
        refused.contains(&id)
            && refused.contains("no identity given with --identity matches its recipients"),
        "{refused}"
    );
    assert_no_script_ran(&bed);

    // Either recipient's identity restores byte for byte (the stranger's beside it is skipped).
    let restored = restore(&bed, work.path(), &url, &id, &[&stranger, &second]);
    assert!(!restored.starts_with("exit"), "{restored}");
    assert_eq!(tree_digest(&files), before);
    assert_nothing_left(&bed);
    damage(&files);
    let restored = restore(&bed, work.path(), &url, &id, &[&first]);
    assert!(!restored.starts_with("exit"), "{restored}");
    assert_eq!(tree_digest(&files), before);
    assert_nothing_left(&bed);
}

#[test]
fn backups_verify_checks_stored_bytes_without_identity_and_everything_with_one() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[
        ("database", 0, &["database"]),
        ("app", 0, &["app", "files"]),
    ])
    .expect("test bed");
    seed(&bed);
    let work = workdir();
    let (store_dir, url) = file_store();
    let owner = Key::new(work.path(), "owner");
    let stranger = Key::new(work.path(), "stranger");
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--encrypt-to", &owner.public],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = only_backup(work.path(), &url);
    assert_manifest_encrypted(work.path(), &url, &id, 1, &[&owner]);
    let verify = |identity: Option<&str>| {
        let mut args = vec!["backups", "--store", url.as_str(), "verify", id.as_str()];
        if let Some(identity) = identity {
            args.extend(["--identity", identity]);
        }
        run(work.path(), &args)
    };

    let output = verify(None);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("3 encrypted artifacts: only their stored bytes (size, sha256) were checked, not the files inside; give --identity FILE"),
        "{}",
        text(&output)
    );
    let output = verify(Some(owner.path()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output)
            .contains("(encrypted, age-x25519, 1 recipient: decrypted, every file checked)"),
        "{}",
        text(&output)
    );
    assert!(
        !text(&output).contains("can be read by group"),
        "{}",
        text(&output)
    );
    // An identity file others may read still works, with a warning.
    fs::set_permissions(&owner.file, fs::Permissions::from_mode(0o644)).unwrap();
    let output = verify(Some(owner.path()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("can be read by group or others (mode 644)"),
        "{}",
        text(&output)
    );
    let output = verify(Some(stranger.path()));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("no identity given with --identity matches its recipients"),
        "{}",
        text(&output)
    );

    // One flipped byte in the middle of an object: found with and without the identity.
    let object = store_dir
        .path()
        .join(&id)
        .join("app-0-files.tar.zst.age.000000");
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&object, &bytes).unwrap();
    for identity in [Some(owner.path()), None] {
        let output = verify(identity);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            text(&output).contains("app-0-files.tar.zst.age.000000` is damaged or missing"),
            "{}",
            text(&output)
        );
    }
    forget_script_events(&bed);
    let refused = restore(&bed, work.path(), &url, &id, &[&owner]);
    assert!(refused.starts_with("exit Some(1)"), "{refused}");
    assert!(refused.contains("app-0-files.tar.zst.age"), "{refused}");
    assert_no_script_ran(&bed);
    assert_nothing_left(&bed);
}

#[test]
fn s3_encrypted_backup_with_two_recipients_restores_with_either_identity() {
    cairn_testbed::require_root!();
    let (moto, url) = moto_with_bucket();
    let bed = TestBed::start(&[]).expect("test bed");
    let (files, before) = seed(&bed);
    let work = workdir();
    let first = Key::new(work.path(), "first");
    let second = Key::new(work.path(), "second");
    let output = cairn(
        &bed,
        work.path(),
        &[
            "backup",
            "--store",
            &url,
            "--encrypt-to",
            &first.public,
            "--encrypt-to",
            &second.public,
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = only_backup(work.path(), &url);
    assert_manifest_encrypted(work.path(), &url, &id, 2, &[&first, &second]);
    let (manifest, _) = manifest(work.path(), &url, &id);
    let tools = std::env::var("CAIRN_TOOLS").unwrap_or_else(|_| "/opt/cairn-test-tools".into());
    let segments = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["segments"].as_array().unwrap().clone());
    for artifact in segments {
        let key = format!("nightly/{}", artifact["key"].as_str().unwrap());
        let out = work.path().join("object");
        let status = std::process::Command::new(format!("{tools}/moto-venv/bin/python"))
            .args([
                "-c",
                "import boto3, sys\n\
                 c = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
                 open(sys.argv[4], 'wb').write(c.get_object(Bucket=sys.argv[2], Key=sys.argv[3])['Body'].read())",
                &moto.endpoint,
                "cairn-backups",
                &key,
                out.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "cannot read {key} from moto");
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, artifact["size"].as_u64().unwrap());
        assert_not_plaintext(&key, &bytes);
    }

    damage(&files);
    forget_script_events(&bed);
    let refused = restore(&bed, work.path(), &url, &id, &[]);
    assert!(refused.starts_with("exit Some(1)"), "{refused}");
    assert!(refused.contains("--identity FILE"), "{refused}");
    assert_no_script_ran(&bed);
    for key in [&first, &second] {
        let restored = restore(&bed, work.path(), &url, &id, &[key]);
        assert!(!restored.starts_with("exit"), "{restored}");
        assert_eq!(tree_digest(&files), before);
        assert_nothing_left(&bed);
        damage(&files);
    }
}

#[test]
fn encryption_mistakes_are_refused_in_one_line_before_anything_runs() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let (_store_dir, url) = file_store();
    let key = Key::new(work.path(), "key");
    let one_line = |output: &std::process::Output| {
        assert_eq!(output.status.code(), Some(1), "{}", text(output));
        let all = text(output);
        assert_eq!(all.trim().lines().count(), 1, "{all}");
        all
    };

    let artifacts = work.path().join("artifacts");
    fs::create_dir(&artifacts).unwrap();
    let output = backup_into(&bed, &artifacts, &["--encrypt-to", &key.public]);
    let all = one_line(&output);
    assert!(all.starts_with("--encrypt-to needs --store: a bbr directory backup (--artifact-path) is never encrypted"), "{all}");
    assert!(fs::read_dir(&artifacts).unwrap().next().is_none());

    let output = cairn(
        &bed,
        work.path(),
        &[
            "backup",
            "--store",
            &url,
            "--encrypt-to",
            &key.public,
            "--encrypt-to",
            "age1notakey",
        ],
    );
    let all = one_line(&output);
    assert!(
        all.starts_with("--encrypt-to `age1notakey` is not an age X25519 recipient (age1...)"),
        "{all}"
    );
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--encrypt-to", &key.secret],
    );
    let all = one_line(&output);
    assert!(
        all.contains("an age identity (a secret key), not a recipient"),
        "{all}"
    );
    assert!(!all.contains(&key.secret[15..]), "{all}");

    let inventory = bed.inventory();
    let output = run(
        work.path(),
        &[
            "drill",
            "--source-inventory",
            inventory.to_str().unwrap(),
            "--target-inventory",
            inventory.to_str().unwrap(),
            "--artifact-path",
            artifacts.to_str().unwrap(),
            "--encrypt-to",
            &key.public,
        ],
    );
    let all = one_line(&output);
    assert!(all.starts_with("--encrypt-to needs --store"), "{all}");

    let missing = work.path().join("missing.key");
    let output = cairn(
        &bed,
        work.path(),
        &[
            "restore",
            "--store",
            &url,
            "--latest",
            "--identity",
            missing.to_str().unwrap(),
        ],
    );
    let all = one_line(&output);
    assert!(all.contains("missing.key`: cannot read it"), "{all}");
    let broken = work.path().join("broken.key");
    let last = if key.secret.ends_with('Q') { 'P' } else { 'Q' };
    let damaged_secret = format!("{}{last}", &key.secret[..key.secret.len() - 1]);
    fs::write(&broken, format!("# comment\n{damaged_secret}\n")).unwrap();
    fs::set_permissions(&broken, fs::Permissions::from_mode(0o600)).unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &[
            "restore",
            "--store",
            &url,
            "--latest",
            "--identity",
            broken.to_str().unwrap(),
        ],
    );
    let all = one_line(&output);
    assert!(
        all.contains("broken.key` line 2: is not an age X25519 identity"),
        "{all}"
    );
    assert!(!all.contains(&damaged_secret[15..]), "{all}");
    assert_no_script_ran(&bed);
    assert_nothing_left(&bed);
}

#[test]
fn debug_output_never_contains_an_identity_secret() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"]), ("app", 0, &["files"])])
        .expect("test bed");
    let work = workdir();
    let (_store_dir, url) = file_store();
    let key = Key::new(work.path(), "key");
    let stranger = Key::new(work.path(), "stranger");
    let broken = work.path().join("broken.key");
    fs::write(&broken, format!("{}x\n", key.secret)).unwrap();
    let inventory = bed.inventory();
    let inventory = inventory.to_str().unwrap();
    let base = ["deployment", "--debug", "--inventory", inventory];
    let runs: Vec<Vec<&str>> = vec![
        [
            &base[..],
            &["backup", "--store", &url, "--encrypt-to", &key.public],
        ]
        .concat(),
        [
            &base[..],
            &[
                "restore",
                "--store",
                &url,
                "--latest",
                "--identity",
                key.path(),
            ],
        ]
        .concat(),
        [
            &base[..],
            &[
                "--json",
                "restore",
                "--store",
                &url,
                "--latest",
                "--identity",
                key.path(),
            ],
        ]
        .concat(),
        [
            &base[..],
            &[
                "restore",
                "--store",
                &url,
                "--latest",
                "--identity",
                stranger.path(),
            ],
        ]
        .concat(),
        [&base[..], &["restore", "--store", &url, "--latest"]].concat(),
        [
            &base[..],
            &[
                "restore",
                "--store",
                &url,
                "--latest",
                "--identity",
                broken.to_str().unwrap(),
            ],
        ]
        .concat(),
        vec!["backups", "--debug", "--store", &url, "list"],
    ];
    let mut codes = Vec::new();
    for args in &runs {
        let output = run(work.path(), args);
        codes.push(output.status.code());
        let all = text(&output);
        for secret in [&key.secret, &stranger.secret] {
            assert!(
                !all.contains(secret.as_str()) && !all.contains(&secret[15..]),
                "`cairn {}` printed a secret key",
                args.join(" ")
            );
        }
    }
    assert_eq!(
        codes,
        [
            Some(0),
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(0)
        ]
    );
    let id = only_backup(work.path(), &url);
    for args in [
        vec![
            "backups",
            "--debug",
            "--store",
            &url,
            "verify",
            &id,
            "--identity",
            key.path(),
        ],
        vec![
            "backups",
            "--debug",
            "--store",
            &url,
            "verify",
            &id,
            "--identity",
            stranger.path(),
        ],
        vec!["backups", "--debug", "--store", &url, "show", &id],
    ] {
        let all = text(&run(work.path(), &args));
        assert!(!all.contains(&key.secret[15..]) && !all.contains(&stranger.secret[15..]));
    }
    // Nor in the error logs (bbr-<time>.err.log) the failed runs wrote.
    for entry in fs::read_dir(work.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".err.log") {
            let log = fs::read_to_string(entry.path()).unwrap();
            assert!(
                !log.contains(&key.secret[15..]) && !log.contains(&stranger.secret[15..]),
                "{name}"
            );
        }
    }
}

#[test]
fn an_encrypted_drill_restores_with_the_identity_and_is_refused_without() {
    cairn_testbed::require_root!();
    let (source, target) = std::thread::scope(|scope| {
        let source = scope.spawn(|| TestBed::start(&[]).expect("source"));
        let target = scope.spawn(|| TestBed::start(&[]).expect("target"));
        (source.join().unwrap(), target.join().unwrap())
    });
    let work = workdir();
    let (store_dir, url) = file_store();
    let key = Key::new(work.path(), "key");
    let (source_inventory, target_inventory) = (source.inventory(), target.inventory());
    let drill = |extra: &[&str]| {
        let mut args = vec![
            "drill",
            "--source-inventory",
            source_inventory.to_str().unwrap(),
            "--target-inventory",
            target_inventory.to_str().unwrap(),
            "--store",
            &url,
            "--encrypt-to",
            &key.public,
            "--report-dir",
            work.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = run(work.path(), &args);
        (output.status.code(), text(&output))
    };
    let file = "store/files/nested/blob.bin"; // random bytes, different on every test bed
    let read = |bed: &TestBed| fs::read(bed.host("app", 1).vcap_dir.join(file)).unwrap();
    assert_ne!(read(&source), read(&target));

    let (code, summary) = drill(&["--identity", key.path()]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("PASSED"), "{summary}");
    assert_eq!(
        read(&source),
        read(&target),
        "the target holds the source's data"
    );
    let id = only_backup(work.path(), &url);
    for (name, bytes) in stored_artifacts(store_dir.path(), &id) {
        assert_not_plaintext(&name, &bytes);
    }

    forget_script_events(&target);
    let (code, summary) = drill(&[]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(summary.contains("FAILED"), "{summary}");
    assert!(
        summary.contains("give its age identity file with --identity FILE"),
        "{summary}"
    );
    assert_no_script_ran(&target);
    assert_nothing_left(&target);
}
