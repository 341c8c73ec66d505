//! Auto-unseal for sandbox pods: OpenBao's `seal "static"` with a generated
//! 32-byte key, mounted the way a chart mounts a Secret.
//!
//! Owns where the key file lives and the config stanza that names it. The
//! key belongs to the cluster, not to a pod: it sits outside every pod's data
//! folder (a Secret volume, read-only, mode 0400), so wiping a pod's PVC
//! keeps it, and a second sandbox gets a different key. Which pods exist and
//! how their config is written is [`crate::pod`]'s business.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::Rng;

/// How the pods unseal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Seal {
    /// Shamir shares submitted to `sys/unseal` (the charts' default).
    #[default]
    Shamir,
    /// `seal "static"`: each pod unseals itself with the cluster's key file.
    Static,
    /// `seal "transit"`: each pod unseals itself through the transit key of
    /// one more server outside the StatefulSet ([`crate::transit`]).
    Transit,
}

/// The key id the stanza names (`current_key_id`).
pub const STATIC_KEY_ID: &str = "sandbox-1";

/// The Secret volume holding the static key: `<dir>/secrets/<sts>-seal/`,
/// as `secret: {secretName: <sts>-seal}` would project it.
pub fn secret_dir(cluster_dir: &Path, statefulset: &str) -> PathBuf {
    cluster_dir
        .join("secrets")
        .join(format!("{statefulset}-seal"))
}

/// The key file inside [`secret_dir`].
pub fn key_file(cluster_dir: &Path, statefulset: &str) -> PathBuf {
    secret_dir(cluster_dir, statefulset).join("static.key")
}

/// Creates the key file once (32 random bytes, mode 0400); an existing one is
/// kept, so a later `up` of the same folder unseals the same data.
pub fn ensure_static_key(cluster_dir: &Path, statefulset: &str) -> io::Result<PathBuf> {
    ensure_key_file(&key_file(cluster_dir, statefulset))
}

/// Creates a 32-byte random key at `path` once (mode 0400); an existing one is kept.
pub fn ensure_key_file(path: &Path) -> io::Result<PathBuf> {
    let path = path.to_path_buf();
    if path.exists() {
        return Ok(path);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let key: [u8; 32] = rand::rng().random();
    let tmp = path.with_extension("part");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o400)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    if crate::pod::running_as_root() {
        // As kubelet hands a Secret volume to the pod's fsGroup.
        std::os::unix::fs::chown(
            &tmp,
            Some(crate::pod::CONTAINER_UID),
            Some(crate::pod::CONTAINER_GID),
        )?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The server config stanza for `seal`, empty for Shamir. `seal_dir` is the
/// seal Secret's folder ([`secret_dir`]): the static key, or the transit
/// provider's address and the pods' token.
pub fn stanza(seal: Seal, seal_dir: &Path) -> String {
    match seal {
        Seal::Shamir => String::new(),
        Seal::Static => format!(
            "seal \"static\" {{\n  current_key_id = \"{STATIC_KEY_ID}\"\n  current_key = \"file://{}\"\n}}\n\n",
            seal_dir.join("static.key").display()
        ),
        Seal::Transit => {
            let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
            format!(
                "seal \"transit\" {{\n  address = \"{}\"\n  token = \"{}\"\n  key_name = \"{}\"\n  mount_path = \"transit/\"\n}}\n\n",
                read(crate::transit::address_file(seal_dir)).trim(),
                read(crate::transit::token_file(seal_dir)).trim(),
                crate::transit::KEY_NAME,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_32_bytes_kept_across_calls_and_unique_per_cluster() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ka = ensure_static_key(a.path(), "openbao").unwrap();
        let first = std::fs::read(&ka).unwrap();
        assert_eq!(first.len(), 32);
        ensure_static_key(a.path(), "openbao").unwrap();
        assert_eq!(
            std::fs::read(&ka).unwrap(),
            first,
            "an existing key is kept"
        );
        let kb = ensure_static_key(b.path(), "openbao").unwrap();
        assert_ne!(std::fs::read(kb).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ka).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
    }

    #[test]
    fn the_stanza_names_the_key_file() {
        let s = stanza(Seal::Static, Path::new("/d/secrets/openbao-seal"));
        assert!(s.starts_with("seal \"static\" {"), "{s}");
        assert!(s.contains("current_key = \"file:///d/secrets/openbao-seal/static.key\""));
        assert!(stanza(Seal::Shamir, Path::new("/x")).is_empty());
    }
}
