//! The gateway's own cgroup: `<current cgroup v2>/canarygate-<pid>`.
//!
//! `sock_ops` programs see the sockets of processes inside the cgroup they are attached
//! to, so the gateway creates a child of the cgroup it was started in, attaches there and
//! moves itself in before it opens any socket. Only the gateway's sockets are seen (not
//! the rest of the machine's, as attaching at the root would), and a service manager
//! still finds the process under the cgroup it started it in.
//!
//! On drop the process moves back to the parent and the directory is removed. Sockets
//! still open keep a reference to the (now removed) cgroup; that is fine for the kernel.
//! A gateway killed with SIGKILL cannot clean up; its empty directory is removed by the
//! next gateway that starts under the same parent.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::KernelError;

/// Prefix of the directories this module creates.
const PREFIX: &str = "canarygate-";

/// A cgroup created for this process.
#[derive(Debug)]
pub(super) struct OwnCgroup {
    path: PathBuf,
    parent: PathBuf,
    dir: File,
}

impl OwnCgroup {
    /// Creates `canarygate-<pid>` under the process's current cgroup v2 (the process is
    /// not moved yet: see [`OwnCgroup::enter`]).
    pub(super) fn create() -> Result<OwnCgroup, KernelError> {
        let parent = current_cgroup_dir()?;
        remove_stale(&parent);
        let path = parent.join(format!("{PREFIX}{}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => {}
            // Left by an earlier process with the same pid: empty, so reusable.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(KernelError::Cgroup(format!(
                    "cannot create {}: {e}",
                    path.display()
                )));
            }
        }
        let dir = match File::open(&path) {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_dir(&path);
                return Err(KernelError::Cgroup(format!(
                    "cannot open {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(OwnCgroup { path, parent, dir })
    }

    /// Moves the whole process (every thread) into the cgroup. Whether it is inside is
    /// read back from `cgroup.procs` on drop, so a failure here needs no bookkeeping.
    pub(super) fn enter(&self) -> Result<(), KernelError> {
        move_process(&self.path).map_err(|e| {
            KernelError::Cgroup(format!(
                "cannot move the gateway into {}: {e}",
                self.path.display()
            ))
        })
    }

    /// The directory, opened (what the program is attached to).
    pub(super) fn dir(&self) -> &File {
        &self.dir
    }

    /// Its path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let entered = is_member(&self.path);
        if entered && let Err(e) = move_process(&self.parent) {
            log::warn!(
                "cannot move the gateway back to {}: {e}; leaving {} in place",
                self.parent.display(),
                self.path.display()
            );
            return;
        }
        match fs::remove_dir(&self.path) {
            Ok(()) if entered => log::info!(
                "kernel accounting off: detached, left and removed cgroup {}",
                self.path.display()
            ),
            Ok(()) => {}
            Err(e) => log::warn!("cannot remove cgroup {}: {e}", self.path.display()),
        }
    }
}

/// Writes this process's pid to `dir/cgroup.procs`.
fn move_process(dir: &Path) -> io::Result<()> {
    fs::write(
        dir.join("cgroup.procs"),
        std::process::id().to_string().as_bytes(),
    )
}

/// Whether this process is listed in `dir/cgroup.procs`.
fn is_member(dir: &Path) -> bool {
    let me = std::process::id().to_string();
    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|procs| procs.lines().any(|l| l == me))
}

/// Directory of the process's current cgroup in the cgroup v2 hierarchy.
fn current_cgroup_dir() -> Result<PathBuf, KernelError> {
    let cgroups = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| KernelError::Cgroup(format!("cannot read /proc/self/cgroup: {e}")))?;
    let rel = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| KernelError::Cgroup("this process is in no cgroup v2 hierarchy".into()))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| KernelError::Cgroup(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let (root, mount) = cgroup2_mount(&mountinfo)
        .ok_or_else(|| KernelError::Cgroup("no cgroup2 file system is mounted".into()))?;
    let rel = rel.trim();
    // A mount of a sub-tree (`root` other than "/") shows paths relative to it.
    let inside = rel
        .strip_prefix(root.trim_end_matches('/'))
        .unwrap_or(rel)
        .trim_start_matches('/');
    let dir = PathBuf::from(mount).join(inside);
    if dir.join("cgroup.procs").is_file() {
        Ok(dir)
    } else {
        Err(KernelError::Cgroup(format!(
            "{} is not a cgroup v2 directory",
            dir.display()
        )))
    }
}

/// `(root, mount point)` of the first cgroup2 mount in `/proc/self/mountinfo` text.
fn cgroup2_mount(mountinfo: &str) -> Option<(&str, &str)> {
    mountinfo.lines().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        if rest.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut f = fields.split_whitespace();
        let root = f.nth(3)?;
        let mount = f.next()?;
        Some((root, mount))
    })
}

/// Removes `canarygate-<pid>` directories under `parent` whose process is gone.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            // Fails harmlessly (EBUSY) if something was moved into it meanwhile.
            if fs::remove_dir(entry.path()).is_ok() {
                log::info!("removed stale cgroup {}", entry.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cgroup2_mount;

    #[test]
    fn finds_the_cgroup2_mount() {
        let text = "\
31 24 0:27 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(text), Some(("/", "/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("1 2 0:3 / /x rw - tmpfs t rw"), None);
    }
}
