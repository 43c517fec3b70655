//! End-to-end with real databases: the reference jobs of scripts-contract/adapters against a
//! real PostgreSQL, MariaDB and Redis on test-bed hosts (integration/databases/*.sh start
//! them inside the hosts), backed up and restored by Cairn, checked by `contract check`, and
//! drilled from one deployment into another.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use cairn_testbed::{TestBed, TestHost};

/// The server script of an engine: integration/databases/<engine>.sh.
fn server_script(engine: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("integration/databases/{engine}.sh"))
}

/// Runs `<engine>.sh SUBCOMMAND` inside the host; returns its stdout.
fn server(bed: &TestBed, host: &TestHost, engine: &str, subcommand: &str) -> String {
    let output = bed
        .exec(
            host,
            &format!("{} {subcommand}", server_script(engine).display()),
        )
        .expect("exec");
    assert!(
        output.status.success(),
        "{engine}.sh {subcommand} on {} failed: {}",
        host.name(),
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts the engine's server on the host and writes its job's bbr.conf.
fn start_server(bed: &TestBed, host: &TestHost, engine: &str) {
    server(bed, host, engine, "start");
    server(bed, host, engine, "configure-job");
}

/// A few files of every kind for the `directory` job.
fn seed_directory(host: &TestHost) {
    let root = host.vcap_dir.join("store/directory");
    std::fs::create_dir_all(root.join("uploads/2026")).unwrap();
    std::fs::write(root.join("uploads/2026/report 1.txt"), "quarterly\n").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    write_pseudo_random(&root.join("uploads/blob.bin"), 3 * 1024 * 1024 + 17);
}

/// `contract check` of a job on a host over SSH.
fn contract_check(bed: &TestBed, host: &TestHost, job: &str) -> Output {
    let path = format!("/var/vcap/jobs/{job}/bin/bbr");
    contract_check_over_ssh(bed, host, &path, &bed.known_hosts(), &[])
}

const ENGINES: [(&str, &str); 3] = [("pg", "postgres"), ("my", "mysql"), ("rd", "redis")];

#[test]
fn real_databases_are_restored_exactly_and_their_jobs_keep_the_contract() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[
        ("pg", 0, &["postgres"]),
        ("my", 0, &["mysql"]),
        ("rd", 0, &["redis"]),
        ("dir", 0, &["directory"]),
    ])
    .expect("test bed");
    std::thread::scope(|scope| {
        for (group, engine) in ENGINES {
            let bed = &bed;
            scope.spawn(move || {
                let host = bed.host(group, 0);
                start_server(bed, host, engine);
                server(bed, host, engine, "seed");
            });
        }
    });
    let dir_host = bed.host("dir", 0);
    seed_directory(dir_host);
    let digests = |bed: &TestBed| -> Vec<String> {
        let mut all: Vec<String> = ENGINES
            .iter()
            .map(|(group, engine)| server(bed, bed.host(group, 0), engine, "digest"))
            .collect();
        all.push(format!(
            "{:?}",
            tree_digest(&dir_host.vcap_dir.join("store/directory"))
        ));
        all
    };
    let before = digests(&bed);
    let shop_rows: u64 = before[0]
        .lines()
        .filter(|l| l.starts_with("shop."))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        shop_rows >= 100_000,
        "seeded {shop_rows} rows: {}",
        before[0]
    );

    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());

    // Change and drop data everywhere.
    for (group, engine) in ENGINES {
        server(&bed, bed.host(group, 0), engine, "mutate");
    }
    std::fs::remove_file(dir_host.vcap_dir.join("store/directory/empty")).unwrap();
    std::fs::write(
        dir_host
            .vcap_dir
            .join("store/directory/uploads/2026/report 1.txt"),
        "overwritten\n",
    )
    .unwrap();
    let changed = digests(&bed);
    for (before, changed) in before.iter().zip(&changed) {
        assert_ne!(before, changed, "mutate must change the data");
    }

    let output = cairn(
        &bed,
        work.path(),
        &[
            "restore",
            "--artifact-path",
            backup.to_str().unwrap(),
            "--verify",
        ],
    );
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    for job in ["postgres", "mysql", "redis", "directory"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("verified") && l.contains(&format!("/{job}: "))),
            "no verification line for {job}: {report}"
        );
    }
    assert_eq!(
        digests(&bed),
        before,
        "the restore must bring back exactly the backed-up data"
    );
    assert_nothing_left(&bed);

    // Every reference job keeps the contract, on a host with its real server.
    for (group, job) in [
        ("pg", "postgres"),
        ("my", "mysql"),
        ("rd", "redis"),
        ("dir", "directory"),
    ] {
        let output = contract_check(&bed, bed.host(group, 0), job);
        let report = text(&output);
        assert_eq!(output.status.code(), Some(0), "{job}: {report}");
        assert!(report.contains("CONTRACT KEPT"), "{report}");
        assert!(
            report.contains("backup wrote only inside BBR_ARTIFACT_DIRECTORY"),
            "{report}"
        );
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains("post-restore-verify: ")),
            "{report}"
        );
    }
    // The round trips restored the same data again.
    assert_eq!(digests(&bed), before);
}

#[test]
fn a_broken_reference_script_is_caught_by_the_contract_check() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("pg", 0, &["postgres"])]).expect("test bed");
    let host = bed.host("pg", 0);
    start_server(&bed, host, "postgres");
    server(&bed, host, "postgres", "seed");
    // The reference backup, changed to also leave a copy of the dump next to the data.
    let backup = host.vcap_dir.join("jobs/postgres/bin/bbr/backup");
    let original = std::fs::read_to_string(&backup).unwrap();
    assert!(
        original.contains("\numask 077\n"),
        "the reference backup sets its umask"
    );
    let broken = original.replace(
        "\numask 077\n",
        "\numask 077\ndate > /var/vcap/store/postgres/last-backup-at\n",
    );
    bed.install_script(host, "postgres", "backup", &broken)
        .unwrap();
    let output = contract_check(&bed, host, "postgres");
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("FAIL")
            && l.contains("write-scope")
            && l.contains("/var/vcap/store/postgres/last-backup-at (openat)")),
        "{report}"
    );
    // The unchanged script passes on the same host.
    bed.install_script(host, "postgres", "backup", &original)
        .unwrap();
    let output = contract_check(&bed, host, "postgres");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

/// A copy of the test bed's inventory under another deployment name.
fn renamed_inventory(bed: &TestBed, name: &str) -> PathBuf {
    let inventory = std::fs::read_to_string(bed.inventory()).unwrap();
    let renamed = inventory.replacen("deployment: testbed", &format!("deployment: {name}"), 1);
    let path = bed.dir().join(format!("{name}.yml"));
    std::fs::write(&path, renamed).unwrap();
    path
}

#[test]
fn a_drill_restores_into_another_deployment_and_reports_recovery_point_and_time() {
    cairn_testbed::require_root!();
    let layout: &[cairn_testbed::HostSpec<'_>] = &[("pg", 0, &["postgres"]), ("rd", 0, &["redis"])];
    let (source, target) = std::thread::scope(|scope| {
        let source = scope.spawn(|| TestBed::start(layout).expect("source test bed"));
        let target = scope.spawn(|| TestBed::start(layout).expect("target test bed"));
        (source.join().unwrap(), target.join().unwrap())
    });
    std::thread::scope(|scope| {
        for bed in [&source, &target] {
            for (group, engine) in [("pg", "postgres"), ("rd", "redis")] {
                scope.spawn(move || start_server(bed, bed.host(group, 0), engine));
            }
        }
    });
    server(&source, source.host("pg", 0), "postgres", "seed");
    server(&source, source.host("rd", 0), "redis", "seed");
    let digest = |bed: &TestBed| {
        (
            server(bed, bed.host("pg", 0), "postgres", "digest"),
            server(bed, bed.host("rd", 0), "redis", "digest"),
        )
    };
    let expected = digest(&source);
    assert_ne!(digest(&target), expected);

    let source_inventory = renamed_inventory(&source, "prod");
    let target_inventory = renamed_inventory(&target, "dr-drill");
    let store_dir = workdir();
    let store = format!("file://{}", store_dir.path().display());
    let reports = workdir();
    let drill = |extra: &[&str]| {
        let mut args = vec![
            "drill",
            "--target-inventory",
            target_inventory.to_str().unwrap(),
            "--store",
            &store,
            "--report-dir",
            reports.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(reports.path(), &args)
    };
    let output = drill(&["--source-inventory", source_inventory.to_str().unwrap()]);
    let summary = text(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert!(
        summary.contains("Restore drill into dr-drill: PASSED"),
        "{summary}"
    );
    assert!(summary.contains("recovery point:"), "{summary}");
    assert!(summary.contains("recovery time:"), "{summary}");
    assert_eq!(
        digest(&target),
        expected,
        "the target holds the source's data"
    );

    let json = newest_report(reports.path());
    assert_eq!(json["schema"], "cairn.drill/1");
    assert_eq!(json["passed"], true);
    assert_eq!(json["target_deployment"], "dr-drill");
    assert_eq!(json["backup"]["deployment"], "prod");
    assert_eq!(json["backup"]["taken_by_drill"], true);
    assert!(json["backup"]["stored_bytes"].as_u64().unwrap() > 0);
    assert!(json["backup"]["data_bytes"].as_u64().unwrap() > 1_000_000);
    let point = json["recovery_point_seconds"].as_f64().unwrap();
    let time = json["recovery_time_seconds"].as_f64().unwrap();
    assert!(point > 0.0 && point < 600.0, "{point}");
    assert!(time > 0.0 && time < 600.0, "{time}");
    let verifications = json["verifications"].as_array().unwrap();
    assert_eq!(verifications.len(), 2, "{verifications:?}");
    for check in verifications {
        assert_eq!(check["result"], "passed", "{check}");
        assert!(!check["evidence"].as_str().unwrap().is_empty(), "{check}");
    }

    // A drill of the stored backup whose restore lost data: verification catches it.
    let real_verify = "/var/vcap/jobs/postgres/bin/bbr/post-restore-verify";
    let target_pg = target.host("pg", 0);
    std::fs::rename(
        target_pg
            .vcap_dir
            .join("jobs/postgres/bin/bbr/post-restore-verify"),
        target_pg.vcap_dir.join("jobs/postgres/bin/bbr/real-verify"),
    )
    .unwrap();
    let lossy = format!(
        "#!/bin/sh\nset -eu\nrunuser -u vcap -- psql -X -q -h /var/vcap/sys/run/postgres -d shop -c 'DELETE FROM order_items WHERE id % 7 = 0'\nexec {}\n",
        real_verify.replace("post-restore-verify", "real-verify")
    );
    target
        .install_script(target_pg, "postgres", "post-restore-verify", &lossy)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new report file name
    let output = drill(&["--latest", "prod"]);
    let summary = text(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert!(
        summary.contains("Restore drill into dr-drill: FAILED"),
        "{summary}"
    );
    assert!(summary.contains("FAILED      pg/0/postgres"), "{summary}");
    let json = newest_report(reports.path());
    assert_eq!(json["passed"], false);
    assert_eq!(json["backup"]["taken_by_drill"], false);
    assert!(json["recovery_point_seconds"].as_f64().unwrap() > point);
}

/// The newest drill-*.json in `dir`.
fn newest_report(dir: &Path) -> serde_json::Value {
    let mut reports: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("drill-")
        })
        .collect();
    reports.sort();
    let path = reports.last().expect("a drill report");
    assert!(
        path.with_extension("txt").exists(),
        "the readable summary is written too"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
