//! What a `--to`/`--from` text names, read without touching the
//! environment, the network or the filesystem.
//!
//! Owns the schemes this tool knows and the refusal of every other one.
//! Opening a target (building an object-store client from the provider's
//! usual environment, telling a folder from a file on disk) is
//! [`crate::snapshot::location::Location::from_target`]'s business.

use crate::snapshot::SnapshotError;
use std::path::PathBuf;

/// The object stores this build speaks, by URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    S3,
    Gcs,
    Azure,
}

impl Provider {
    fn of(scheme: &str) -> Option<Provider> {
        match scheme {
            "s3" => Some(Provider::S3),
            "gs" => Some(Provider::Gcs),
            "az" => Some(Provider::Azure),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::S3 => "S3",
            Provider::Gcs => "GCS",
            Provider::Azure => "Azure Blob",
        }
    }

    pub fn container(self) -> &'static str {
        match self {
            Provider::Azure => "container",
            _ => "bucket",
        }
    }
}

/// A snapshot location as written, before it is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A folder: a path ending in `/`, or a `file://` URL.
    Dir(PathBuf),
    /// A path without a trailing `/`: the folder when one is there when
    /// the target is opened, else one snapshot file.
    Path(PathBuf),
    /// A prefix in a bucket (an Azure container), without its slashes at
    /// either end.
    Bucket {
        provider: Provider,
        bucket: String,
        prefix: String,
    },
}

impl Target {
    /// Parses `./file.snap`, `./dir/`, `file:///dir/`, `s3://bucket/prefix/`,
    /// `gs://bucket/prefix/` and `az://container/prefix/`.
    ///
    /// # Guarantees
    /// - Pure: the same text always gives the same answer, on any machine.
    /// - A `scheme://` this tool does not know is refused, naming it (and
    ///   the spelling it wants for the known look-alikes), so that no such
    ///   text is ever taken for a relative path.
    pub fn parse(text: &str) -> Result<Target, SnapshotError> {
        let bad = |why: &str| SnapshotError::ParseLocation(text.to_owned(), why.to_owned());
        if let Some((scheme, rest)) = text.split_once("://") {
            if let Some(provider) = Provider::of(scheme) {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad(&format!("no {} name", provider.container())));
                }
                return Ok(Target::Bucket {
                    provider,
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                });
            }
        }
        if let Some(scheme) = url_scheme(text).filter(|s| *s != "file") {
            let why = match scheme {
                "azure" | "abfs" | "abfss" | "wasb" | "wasbs" => {
                    format!("{scheme}:// is written az://container/prefix/ here")
                }
                "gcs" => "gcs:// is written gs://bucket/prefix/ here".to_owned(),
                _ => format!("{scheme}:// is not a scheme this tool knows"),
            };
            return Err(bad(&format!(
                "{why}; use s3://bucket/prefix/, gs://bucket/prefix/, az://container/prefix/, file:///dir/ or a path"
            )));
        }
        if let Some(path) = text.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("no path after file://"));
            }
            return Ok(Target::Dir(PathBuf::from(path)));
        }
        if text.is_empty() {
            return Err(bad("empty"));
        }
        if text.ends_with('/') {
            Ok(Target::Dir(PathBuf::from(text)))
        } else {
            Ok(Target::Path(PathBuf::from(text)))
        }
    }
}

/// The scheme of `text` when it looks like a URL (`name://...`).
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_look_alike_schemes_are_refused_by_name() {
        for (text, says) in [
            ("ftp://x/y", "ftp:// is not a scheme this tool knows"),
            ("azure://c/p/", "is written az://container/prefix/"),
            ("gcs://b/p/", "is written gs://bucket/prefix/"),
            ("gs:///p/", "no bucket name"),
            ("az:///p/", "no container name"),
            ("s3://", "no bucket name"),
            ("HTTPS://host/p", "HTTPS:// is not a scheme"),
            ("file://", "no path after file://"),
            ("", "empty"),
        ] {
            let err = Target::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn buckets_keep_their_prefix_without_its_slashes() {
        for (text, provider, bucket, prefix) in [
            ("s3://b/prod/vault/", Provider::S3, "b", "prod/vault"),
            ("gs://b", Provider::Gcs, "b", ""),
            ("az://c//x//", Provider::Azure, "c", "x"),
        ] {
            assert_eq!(
                Target::parse(text).unwrap(),
                Target::Bucket {
                    provider,
                    bucket: bucket.into(),
                    prefix: prefix.into()
                },
                "{text}"
            );
        }
    }

    #[test]
    fn paths_are_folders_by_their_slash_and_files_otherwise_until_opened() {
        assert_eq!(
            Target::parse("file:///srv/snaps/").unwrap(),
            Target::Dir("/srv/snaps/".into())
        );
        assert_eq!(Target::parse("out/").unwrap(), Target::Dir("out/".into()));
        // Not a URL: a relative path that happens to hold "://" after a dot.
        assert_eq!(
            Target::parse("./weird://name.snap").unwrap(),
            Target::Path("./weird://name.snap".into())
        );
        // Whether /tmp is a folder is for opening to find out, not parsing.
        assert_eq!(Target::parse("/tmp").unwrap(), Target::Path("/tmp".into()));
    }
}
