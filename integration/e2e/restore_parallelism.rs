//! End-to-end: `restore --restore-parallelism N` (issue 21, lever 4) on real hosts. The
//! restore script of every host is wrapped: it marks itself started and running in a directory
//! all hosts see, waits (at most 30 s) until as many scripts have started as the test expects,
//! writes down how many had started and how many were running, runs the real restore and
//! unmarks itself as running. At N = 3 every script sees all three started while itself still
//! running, which a serial run can never show; at N = 1 each sees only itself running.
//! No time is measured: only which scripts were running together.

use std::fs;
use std::path::Path;

use crate::common::*;
use cairn_testbed::{TestBed, TestHost};

const HOSTS: u32 = 3;

/// Wraps the `files` job's restore script of `host` (see the module documentation).
fn wrap_restore(bed: &TestBed, host: &TestHost, rendezvous: &Path) {
    let bin = host.vcap_dir.join("jobs/files/bin/bbr");
    if !bin.join("restore.orig").exists() {
        fs::copy(bin.join("restore"), bin.join("restore.orig")).unwrap();
    }
    let name = format!("{}-{}", host.group, host.index);
    let body = format!(
        "#!/bin/sh\nset -eu\nb={dir}\ntouch \"$b/started-{name}\" \"$b/running-{name}\"\nwant=$(cat \"$b/want\")\ni=0\n\
         while [ \"$(ls \"$b\" | grep -c '^started-')\" -lt \"$want\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
         echo \"$(ls \"$b\" | grep -c '^started-') $(ls \"$b\" | grep -c '^running-')\" >> \"$b/seen-{name}\"\n\
         /var/vcap/jobs/files/bin/bbr/restore.orig\n\
         rm \"$b/running-{name}\"\n",
        dir = rendezvous.display()
    );
    bed.install_script(host, "files", "restore", &body).unwrap();
}

/// What each host's restore script saw, in host order: `STARTED RUNNING`, how many scripts
/// had started (markers never removed: the rendezvous) and how many were still running.
fn seen(rendezvous: &Path) -> Vec<String> {
    (0..HOSTS)
        .map(|i| {
            fs::read_to_string(rendezvous.join(format!("seen-node-{i}")))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn restore_scripts_of_several_instances_overlap_with_n_above_1_and_not_by_default() {
    cairn_testbed::require_root!();
    let specs: Vec<(&str, u32, &[&str])> =
        (0..HOSTS).map(|i| ("node", i, &["files"][..])).collect();
    let bed = TestBed::start(&specs).expect("test bed");
    let mut before = Vec::new();
    for host in bed.hosts() {
        let files = host.vcap_dir.join("store/files");
        fs::create_dir_all(&files).unwrap();
        write_pseudo_random(
            &files.join("data.bin"),
            3 * 1024 * 1024 + host.index as usize,
        );
        before.push(tree_digest(&files));
    }
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    let rendezvous = work.root().join("rendezvous");

    for (flag, want, expected) in [(None, "1", "1"), (Some("3"), "3", "3")] {
        let _ = fs::remove_dir_all(&rendezvous);
        fs::create_dir(&rendezvous).unwrap();
        fs::write(rendezvous.join("want"), want).unwrap();
        for host in bed.hosts() {
            wrap_restore(&bed, host, &rendezvous);
            fs::remove_dir_all(host.vcap_dir.join("store/files")).unwrap();
        }
        let mut args = vec!["restore", "--artifact-path", backup.to_str().unwrap()];
        if let Some(n) = flag {
            args.extend(["--restore-parallelism", n]);
        }
        let output = cairn(&bed, work.path(), &args);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let seen = seen(&rendezvous);
        assert_eq!(seen.len(), HOSTS as usize);
        for line in &seen {
            let (started, running) = line.split_once(' ').expect("two counts");
            match flag {
                // Serial: each script ran alone.
                None => assert_eq!(running, expected, "{seen:?}"),
                // Each saw all three started while itself still running: the first one to
                // start could not have, had they run one after another.
                Some(_) => assert_eq!(started, expected, "{seen:?}"),
            }
        }
        for (host, digest) in bed.hosts().iter().zip(&before) {
            assert_eq!(&tree_digest(&host.vcap_dir.join("store/files")), digest);
        }
        assert_nothing_left(&bed);
    }
}
