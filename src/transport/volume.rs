//! The data volume of a server container, as the restore-test sees it:
//! how much room is free on it, measured inside the pod.
//!
//! Owns the in-pod probe and the reading of its answer. Whether the room
//! suffices is `ops::restore_test::Room`'s decision; the throwaway server
//! that uses the room is [`crate::transport::scratch`]'s.

use crate::ops::node::{NodeError, VaultNode};
use crate::transport::exec::ExecNode;

/// `$1`: the data folder. POSIX `df` in KiB (busybox and GNU alike), one
/// line per file system, never wrapped.
const FREE: &str = r#"df -Pk "$1""#;

/// Why the free space is not known.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("the server container of pod {pod} mounts no PersistentVolumeClaim: the restore-test keeps its throwaway server's storage on the data volume")]
    NoDataVolume { pod: String },
    #[error("could not read the free space of the data volume in pod {pod}: {reason}")]
    Probe { pod: String, reason: String },
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The bytes free on the file system of `exec`'s data volume, where the
/// throwaway server would keep its storage.
pub async fn free_bytes(exec: &ExecNode) -> Result<u64, VolumeError> {
    let pod = exec.name().to_owned();
    let data = exec
        .data_dir()
        .ok_or_else(|| VolumeError::NoDataVolume { pod: pod.clone() })?;
    let out = exec
        .run(
            vec![
                "sh".into(),
                "-c".into(),
                FREE.into(),
                "sh".into(),
                data.to_owned(),
            ],
            None,
        )
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.exit_code, available_bytes(&text)) {
        (0, Some(free)) => Ok(free),
        _ => Err(VolumeError::Probe {
            pod,
            reason: format!(
                "`df -Pk {data}` exited {} with no size: {}",
                out.exit_code,
                out.stderr.trim()
            ),
        }),
    }
}

/// The `Available` column of `df -Pk`'s last line, in bytes.
fn available_bytes(df: &str) -> Option<u64> {
    let line = df.lines().rev().find(|l| !l.trim().is_empty())?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_available_is_read_from_the_posix_line_in_bytes() {
        let gnu = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                   /dev/sda1         51474912 20123456  28713072      42% /openbao/data\n";
        assert_eq!(available_bytes(gnu), Some(28_713_072 * 1024));
        let busybox = "Filesystem           1024-blocks    Used Available Capacity Mounted on\n\
                       overlay                1015416     204   1015212   0% /vault/data\n";
        assert_eq!(available_bytes(busybox), Some(1_015_212 * 1024));
        // Only a header, nothing, or a line that is not df's: unknown.
        assert_eq!(
            available_bytes("Filesystem 1024-blocks Used Available Capacity Mounted on\n"),
            None
        );
        assert_eq!(available_bytes(""), None);
        assert_eq!(
            available_bytes("df: /nope: No such file or directory\n"),
            None
        );
    }
}
