# Shared by million_files.sh and repository_million.sh (sourced, not run): the million-file
# tree on one test-bed host, the cheap job scripts a job of many files would write, and the
# listing that proves a restore gave the tree back. The caller defines `on_host COMMAND...`
# (as root in the host's namespaces).

# million_job_scripts SCRIPTS_DIR: the files job's backup hard-links the tree into the artifact
# directory (`cp -al`), its restore replaces the tree with the restored artifact directory.
million_job_scripts() {
    printf '#!/bin/sh\nset -eu\ncp -al /var/vcap/store/files/. "$BBR_ARTIFACT_DIRECTORY"\n' >"$1/backup"
    printf '#!/bin/sh\nset -eu\nrm -rf /var/vcap/store/files\nmv "${BBR_ARTIFACT_DIRECTORY%%/}" /var/vcap/store/files\n' >"$1/restore"
    chmod 755 "$1/backup" "$1/restore"
}

# million_write_tree FILES: FILES small files (1 to 300 bytes, 1,000 per directory) and three
# large ones (2 x 64 MiB random, 64 MiB of log lines) in the host's /var/vcap/store/files.
million_write_tree() {
    on_host python3 - /var/vcap/store/files "$1" <<'EOF'
import os, sys
tree, count = sys.argv[1], int(sys.argv[2])
for number in range(count):
    directory = os.path.join(tree, "d%04d" % (number // 1000))
    if number % 1000 == 0:
        os.makedirs(directory, exist_ok=True)
    line = b"file %d of a million-file artifact\n" % number
    with open(os.path.join(directory, "f%07d.txt" % number), "wb") as out:
        out.write(line * (1 + number % 7))
with open(os.path.join(tree, "random-1.bin"), "wb") as out:
    out.write(os.urandom(64 << 20))
with open(os.path.join(tree, "random-2.bin"), "wb") as out:
    out.write(os.urandom(64 << 20))
with open(os.path.join(tree, "app.log"), "wb") as out:
    line = b"2026-12-07T03:00:00Z INFO request handled in 12ms path=/v2/apps status=200\n"
    out.write(line * ((64 << 20) // len(line)))
EOF
}

# million_listing: the sha256 of a listing of the host's tree: every entry with its kind and
# size (directories: kind only), then every file's sha256, sorted.
million_listing() {
    on_host sh -c 'cd /var/vcap/store/files &&
        { find . \( -type d -printf "d %p\n" \) -o -printf "%y %s %p\n" | LC_ALL=C sort;
          find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-64'
}
