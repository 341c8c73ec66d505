//! File-storage data on a pod's data volume, through exec: the tar stream a
//! migrate backs up, the `operator migrate` copy into raft beside it, and
//! the check that file data is there at all.
//!
//! Owns the in-pod scripts. Their argv holds folder names, the pod name and
//! the cluster address, never a secret: `operator migrate` needs no token
//! (it copies encrypted storage entries as they are).

use crate::ops::migrate::{FileData, KeyCount, Room};
use crate::ops::node::{NodeError, VaultNode};
use crate::transport::exec::{parse_cli_error, ExecNode, StreamStdin, Streaming};
use crate::transport::pod::PodNode;

/// Entries in the data folder that are not file-storage keys: the raft copy,
/// its node id, and this tool's own files.
const NOT_FILE_DATA: &str = "raft|vault.db|node-id|.kubectl-vault*";

/// `$1`: the data folder. Writes a gzipped tar of the file-storage entries
/// (everything but [`NOT_FILE_DATA`]) to stdout.
fn backup_script() -> String {
    format!(
        r#"cd "$1" || exit 71
set --
for f in * .[!.]*; do
  [ -e "$f" ] || continue
  case "$f" in {NOT_FILE_DATA}) ;; *) set -- "$@" "$f";; esac
done
[ $# -gt 0 ] || {{ echo "no file storage data in $PWD" >&2; exit 72; }}
exec tar -czf - "$@""#
    )
}

/// `$0`: the CLI; `$1`: data folder; `$2`: node id; `$3`: cluster_addr.
/// Discards an earlier raft copy, runs `operator migrate` file → raft into
/// the same folder, writes `node-id` (read by raft when the charts' values do
/// not set one) and prints `{"source":N,"copied":M}`.
const COPY_SCRIPT: &str = r#"set -e; d="$1"; pod="$2"; addr="$3"; cd "$d"
rm -rf raft vault.db node-id
t="${TMPDIR:-/tmp}"; cfg="$t/kubectl-vault-migrate.hcl"; log="$t/kubectl-vault-migrate.log"
printf 'storage_source "file" {\n  path = "%s"\n}\nstorage_destination "raft" {\n  path = "%s"\n  node_id = "%s"\n}\ncluster_addr = "%s"\n' "$d" "$d" "$pod" "$addr" > "$cfg"
n=$(find . -type f ! -path './raft/*' ! -name vault.db ! -name node-id ! -name '.kubectl-vault*' | wc -l)
if ! "$0" operator migrate -config "$cfg" > "$log" 2>&1; then tail -n 5 "$log" >&2; rm -rf raft vault.db; exit 1; fi
c=$(grep -c 'copied key' "$log" || true)
printf '%s' "$pod" > node-id
rm -f "$cfg" "$log"
echo "{\"source\": $n, \"copied\": $c}""#;

/// `$1`: data folder. Prints the KiB the file data takes (without an
/// earlier raft copy) and the KiB free on its volume.
const ROOM: &str = r#"cd "$1" || exit 71
u=0; for f in * .[!.]*; do [ -e "$f" ] || continue; case "$f" in raft|vault.db) ;; *) k=$(du -sk "$f" | cut -f1); u=$((u + k));; esac; done
f=$(df -Pk . | awk 'NR==2 {print $4}')
echo "{\"used\": $u, \"free\": $f}""#;

/// `$1`: data folder. Exit 0 when file-storage data is there (`core/`).
const HAS_FILE_DATA: &str = r#"[ -d "$1/core" ] && ls "$1/core" | grep -q ."#;

fn data_dir(node: &ExecNode, pod: &str) -> Result<String, NodeError> {
    node.data_dir().map(str::to_owned).ok_or_else(|| {
        NodeError::Malformed(format!(
            "the server container of {pod} mounts no PersistentVolumeClaim; file storage data must be on one"
        ))
    })
}

/// Starts the backup tar stream of `node`'s data folder.
pub async fn backup_stream(node: &PodNode) -> Result<Streaming, NodeError> {
    let exec = node.exec();
    let dir = data_dir(exec, node.name())?;
    exec.stream(
        vec!["sh".into(), "-c".into(), backup_script(), "tar".into(), dir],
        StreamStdin::<tokio::io::Empty> {
            first_line: None,
            body: None,
        },
        true,
    )
    .await
}

/// Whether file-storage data sits on `node`'s data volume.
pub async fn has_file_data(node: &PodNode) -> Result<bool, NodeError> {
    let exec = node.exec();
    let dir = data_dir(exec, node.name())?;
    let out = exec
        .run(
            vec![
                "sh".into(),
                "-c".into(),
                HAS_FILE_DATA.into(),
                "sh".into(),
                dir,
            ],
            None,
        )
        .await?;
    Ok(out.exit_code == 0)
}

/// [`FileData`] over exec into the pods of one cluster.
pub struct ExecFileData {
    pub nodes: Vec<PodNode>,
}

impl ExecFileData {
    fn node(&self, pod: &str) -> Result<&PodNode, NodeError> {
        self.nodes
            .iter()
            .find(|n| n.name() == pod)
            .ok_or_else(|| NodeError::PodGone(pod.to_owned()))
    }
}

impl FileData for ExecFileData {
    async fn room(&self, pod: &str) -> Result<Room, NodeError> {
        let exec = self.node(pod)?.exec();
        let dir = data_dir(exec, pod)?;
        let out = exec
            .run(
                vec!["sh".into(), "-c".into(), ROOM.into(), "sh".into(), dir],
                None,
            )
            .await?;
        if out.exit_code != 0 {
            return Err(parse_cli_error(&out.stderr, out.exit_code));
        }
        #[derive(serde::Deserialize)]
        struct Sizes {
            used: u64,
            free: u64,
        }
        let sizes: Sizes = serde_json::from_slice(&out.stdout)
            .map_err(|e| NodeError::Malformed(format!("the data volume's sizes: {e}")))?;
        Ok(Room {
            used: sizes.used,
            free: sizes.free,
        })
    }

    async fn copy_to_raft(&self, pod: &str, cluster_addr: &str) -> Result<KeyCount, NodeError> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.name() == pod)
            .ok_or_else(|| NodeError::PodGone(pod.to_owned()))?;
        let exec = node.exec();
        let dir = data_dir(exec, pod)?;
        let out = exec
            .run(
                vec![
                    "sh".into(),
                    "-c".into(),
                    COPY_SCRIPT.into(),
                    exec.cli().binary().into(),
                    dir,
                    pod.into(),
                    cluster_addr.into(),
                ],
                None,
            )
            .await?;
        if out.exit_code != 0 {
            return Err(parse_cli_error(&out.stderr, out.exit_code));
        }
        #[derive(serde::Deserialize)]
        struct Counts {
            source: u64,
            copied: u64,
        }
        let counts: Counts = serde_json::from_slice(&out.stdout)
            .map_err(|e| NodeError::Malformed(format!("operator migrate's key count: {e}")))?;
        Ok(KeyCount {
            source: counts.source,
            copied: counts.copied,
        })
    }
}
