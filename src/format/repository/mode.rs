//! Unix `st_mode` ↔ Go's `os.FileMode`, the mode restic and rustic keep in a node.
//!
//! Why our own copy: rustic_core's mapper (`backend/ignore/mapper/nix_mapper.rs`) is in a
//! private module. Only the bits restic keeps: permissions, type, setuid, setgid, sticky.

/// Directory type bits of `st_mode`.
pub(super) const S_IFDIR: u32 = 0o040_000;
/// Symbolic link type bits.
pub(super) const S_IFLNK: u32 = 0o120_000;
/// Regular file type bits.
pub(super) const S_IFREG: u32 = 0o100_000;
const S_IFMT: u32 = 0o170_000;

const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;

/// `st_mode` (type and permission bits) as Go's mode.
#[must_use]
pub(super) const fn to_go(mode: u32) -> u32 {
    let mut go = mode & 0o777;
    match mode & S_IFMT {
        S_IFDIR => go |= GO_DIR,
        S_IFLNK => go |= GO_SYMLINK,
        _ => {}
    }
    if mode & 0o4000 != 0 {
        go |= GO_SETUID;
    }
    if mode & 0o2000 != 0 {
        go |= GO_SETGID;
    }
    if mode & 0o1000 != 0 {
        go |= GO_STICKY;
    }
    go
}

/// Go's mode as the permission bits of a tar header (setuid, setgid, sticky, rwx).
#[must_use]
pub(super) const fn permissions_from_go(go: u32) -> u32 {
    let mut mode = go & 0o777;
    if go & GO_SETUID != 0 {
        mode |= 0o4000;
    }
    if go & GO_SETGID != 0 {
        mode |= 0o2000;
    }
    if go & GO_STICKY != 0 {
        mode |= 0o1000;
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_as_restic_writes_them() {
        assert_eq!(to_go(S_IFREG | 0o644), 0o644);
        assert_eq!(to_go(S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(to_go(S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(to_go(S_IFREG | 0o4755), (1 << 23) | 0o755);
        for mode in [0o644, 0o4755, 0o2750, 0o1777] {
            assert_eq!(permissions_from_go(to_go(S_IFREG | mode)), mode);
        }
    }
}
