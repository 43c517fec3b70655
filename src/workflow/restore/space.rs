//! Free space for a restore: every artifact is extracted under `/var/vcap/store/bbr-backup` on
//! its instance before any script runs, so the files' bytes must fit there. One `df` per
//! instance that receives artifacts ([`commands::free_space`]); an instance whose artifacts do
//! not fit refuses the restore. A `df` that fails is a warning, not a refusal: the restore's
//! own copy would still stop at a full disk, before any script.

use super::Upload;
use crate::error::Error;
use crate::model::deployment::Deployment;
use crate::remote::commands;
use crate::remote::RemoteHostExt;

/// What one instance has and needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpace {
    /// Index into the deployment's instances.
    pub instance: usize,
    /// Bytes its artifacts take once extracted (those of known size).
    pub needed: u64,
    /// Bytes free under `/var/vcap/store` (or its nearest existing parent), when measured.
    pub available: Option<u64>,
    /// The file system's mount point, when measured.
    pub mount: Option<String>,
}

impl InstanceSpace {
    /// False only when measured and too small.
    #[must_use]
    pub fn fits(&self) -> bool {
        self.available
            .is_none_or(|available| self.needed <= available)
    }
}

/// What the free-space check found.
#[derive(Debug, Default)]
pub struct SpaceCheck {
    /// Per instance that receives artifacts, in instance order.
    pub instances: Vec<InstanceSpace>,
    /// One per instance whose artifacts do not fit.
    pub refusals: Vec<Error>,
    /// Instances whose free space could not be measured.
    pub warnings: Vec<String>,
}

/// Measures the free space of every instance that receives an upload (`sizes[i]` is the size
/// of `uploads[i]`, when known) and compares it with what its artifacts need.
pub async fn check_space(
    deployment: &Deployment,
    uploads: &[Upload],
    sizes: &[Option<u64>],
) -> SpaceCheck {
    let mut needed: Vec<(usize, u64)> = Vec::new();
    // A streamed restore puts nothing under /var/vcap/store/bbr-backup.
    for (upload, size) in uploads.iter().zip(sizes).filter(|(u, _)| !u.stream) {
        let instance = upload.job.0;
        match needed.iter_mut().find(|(i, _)| *i == instance) {
            Some((_, total)) => *total = total.saturating_add(size.unwrap_or(0)),
            None => needed.push((instance, size.unwrap_or(0))),
        }
    }
    needed.sort_unstable();
    let measures = needed.iter().map(|&(instance, needed)| async move {
        let remote = &deployment.instances[instance].remote;
        let measured = match remote.run(&commands::free_space()).await {
            Ok(output) if output.success() => commands::parse_free_space(&output.stdout),
            Ok(output) => Err(output.failure_detail()),
            Err(error) => Err(error.to_string()),
        };
        (instance, needed, measured)
    });
    let mut check = SpaceCheck::default();
    for (instance, needed, measured) in futures::future::join_all(measures).await {
        let name = &deployment.instances[instance].name;
        let space = match measured {
            Ok((available, mount)) => InstanceSpace {
                instance,
                needed,
                available: Some(available),
                mount: Some(mount),
            },
            Err(detail) => {
                check.warnings.push(format!(
                    "Could not measure the free space under {} on {name}: {detail}",
                    commands::STORE_DIRECTORY
                ));
                InstanceSpace {
                    instance,
                    needed,
                    available: None,
                    mount: None,
                }
            }
        };
        if !space.fits() {
            check.refusals.push(Error::InsufficientSpace {
                instance: name.clone(),
                needed,
                available: space.available.unwrap_or(0),
                mount: space.mount.clone().unwrap_or_default(),
            });
        }
        check.instances.push(space);
    }
    check
}
