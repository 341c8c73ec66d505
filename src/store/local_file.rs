//! The last resort: credentials in a local file with mode 0600.
//!
//! Used only when `sys/init` succeeded and the Secret store stayed unwritable
//! through the whole retry budget, so the keys exist nowhere else.

use crate::ops::credentials::Credentials;
use crate::ops::secret::SecretBytes;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `credentials` to a new file in `dir`; never overwrites one.
pub fn save_rescue_copy(
    dir: &Path,
    workload: &str,
    credentials: &Credentials,
) -> std::io::Result<PathBuf> {
    let stamp = jiff::Timestamp::now().as_second();
    let path = dir.join(format!("{workload}-credentials-{stamp}.json"));
    let bytes = SecretBytes::json(credentials).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(bytes.expose())?;
    file.sync_all()?;
    Ok(path)
}
