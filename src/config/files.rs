//! Secret files that other users of the machine can read.
//!
//! `cookies.keys_file`, `providers[].client_secret_file` and `providers[].private_key_file` hold
//! what lets anyone forge our sessions or act as our OAuth client. A file readable by "others"
//! (or by a group the process is not in) is usually a mistake made while copying it into place,
//! and it is easy to fix; it is not a reason to refuse to start (the same file may be read by a
//! sidecar on purpose), so it is a warning at startup and in `token-handler check`.

use std::path::{Path, PathBuf};

/// A configured file that holds a secret, with the key that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The configuration key, e.g. `providers[0].client_secret_file`.
    pub key: String,
    pub path: PathBuf,
}

/// A secret file whose mode lets users other than the process's own read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseSecretFile {
    pub key: String,
    pub path: PathBuf,
    /// The permission bits, e.g. `0o644`.
    pub mode: u32,
}

impl std::fmt::Display for LooseSecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} has mode {:04o}, so other users can read it; make it readable by token-handler alone (chmod 600)",
            self.key,
            self.path.display(),
            self.mode
        )
    }
}

/// The secret files other users can read: "others" may read, or a group may read and the file's
/// group is none of the process's own groups. A group the process belongs to is how Kubernetes
/// shares Secret volumes with a non-root container (`fsGroup`, mode 0440), so that is not
/// warned about. Files that cannot be inspected are skipped: reading them already succeeded or
/// failed at load.
pub fn loose_secret_files(files: &[SecretFile]) -> Vec<LooseSecretFile> {
    let groups = own_groups();
    files
        .iter()
        .filter_map(|f| {
            let (mode, gid) = mode_and_group(&f.path)?;
            let others = mode & 0o004 != 0;
            let foreign_group = mode & 0o040 != 0 && !groups.contains(&gid);
            (others || foreign_group).then(|| LooseSecretFile {
                key: f.key.clone(),
                path: f.path.clone(),
                mode,
            })
        })
        .collect()
}

#[cfg(unix)]
fn mode_and_group(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.mode() & 0o7777, meta.gid()))
}

#[cfg(not(unix))]
fn mode_and_group(_path: &Path) -> Option<(u32, u32)> {
    None
}

/// The process's effective group and supplementary groups, from `/proc/self/status` (Linux).
/// Elsewhere the list is empty, so any group-readable secret file is reported.
fn own_groups() -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for line in status.lines() {
        if let Some(ids) = line.strip_prefix("Gid:") {
            // Real, effective, saved, filesystem: the effective one decides access.
            groups.extend(
                ids.split_whitespace()
                    .nth(1)
                    .and_then(|g| g.parse::<u32>().ok()),
            );
        } else if let Some(ids) = line.strip_prefix("Groups:") {
            groups.extend(ids.split_whitespace().filter_map(|g| g.parse::<u32>().ok()));
        }
    }
    groups
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_readable_secret_files_are_reported_private_ones_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "secret").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            SecretFile {
                key: format!("cookies.{name}"),
                path,
            }
        };
        let files = [
            file("open", 0o644),
            file("private", 0o600),
            file("own_group", 0o640),
        ];
        let loose = loose_secret_files(&files);
        assert_eq!(loose.len(), 1, "{loose:?}");
        assert_eq!(loose[0].key, "cookies.open");
        assert_eq!(loose[0].mode, 0o644);
        let message = loose[0].to_string();
        assert!(
            message.contains("0644") && message.contains("chmod 600"),
            "{message}"
        );
        assert!(!message.contains("secret\n"));
    }
}
