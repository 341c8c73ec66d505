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

/// The environment that configures a static seal instead of a stanza
/// ([`crate::SealIn::Environment`]): the seal type, the key id and the key
/// (base64; OpenBao reads no `file://` from this variable). Empty otherwise.
pub fn env(opts: &crate::ClusterOptions, cluster_dir: &Path) -> io::Result<Vec<(String, String)>> {
    if !(opts.seal_in == crate::SealIn::Environment && opts.seal == Seal::Static) {
        return Ok(Vec::new());
    }
    use base64::Engine;
    let key = std::fs::read(key_file(cluster_dir, &opts.name))?;
    Ok(vec![
        (ENV_SEAL_TYPE.to_owned(), "static".to_owned()),
        (ENV_KEY_ID.to_owned(), STATIC_KEY_ID.to_owned()),
        (
            ENV_KEY.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(key),
        ),
    ])
}

/// The second config file of [`crate::SealIn::JsonConfig`], in JSON: the
/// static stanza of [`stanza`].
pub fn json_config(seal_dir: &Path) -> String {
    serde_json::json!({"seal": {"static": {
        "current_key_id": STATIC_KEY_ID,
        "current_key": format!("file://{}", seal_dir.join("static.key").display()),
    }}})
    .to_string()
}

/// The variables [`env`] sets.
pub const ENV_SEAL_TYPE: &str = "BAO_SEAL_TYPE";
pub const ENV_KEY_ID: &str = "BAO_STATIC_SEAL_CURRENT_KEY_ID";
pub const ENV_KEY: &str = "BAO_STATIC_SEAL_CURRENT_KEY";

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
    fn a_seal_outside_the_hcl_config_is_in_the_environment_or_a_json_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = ensure_static_key(dir.path(), "openbao").unwrap();
        let opts = crate::ClusterOptions::openbao().seal(Seal::Static);
        assert!(
            env(&opts, dir.path()).unwrap().is_empty(),
            "a stanza: no env"
        );
        let in_env = opts.clone().seal_in(crate::SealIn::Environment);
        let vars = env(&in_env, dir.path()).unwrap();
        let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, [ENV_SEAL_TYPE, ENV_KEY_ID, ENV_KEY]);
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&key).unwrap());
        assert_eq!(vars[2].1, encoded);
        let shamir = crate::ClusterOptions::openbao().seal_in(crate::SealIn::Environment);
        assert!(env(&shamir, dir.path()).unwrap().is_empty());
        let json: serde_json::Value =
            serde_json::from_str(&json_config(Path::new("/d/secrets/openbao-seal"))).unwrap();
        assert_eq!(
            json["seal"]["static"]["current_key"],
            "file:///d/secrets/openbao-seal/static.key"
        );
    }

    #[test]
    fn the_stanza_names_the_key_file() {
        let s = stanza(Seal::Static, Path::new("/d/secrets/openbao-seal"));
        assert!(s.starts_with("seal \"static\" {"), "{s}");
        assert!(s.contains("current_key = \"file:///d/secrets/openbao-seal/static.key\""));
        assert!(stanza(Seal::Shamir, Path::new("/x")).is_empty());
    }
}
