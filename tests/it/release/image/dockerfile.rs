//! The root Dockerfile against the image `scripts/release --image` built:
//! same files (the same scripts/image-rootfs onto `scratch`), same config.

use super::manifest_dir;
use serde_json::Value;
use std::collections::BTreeSet;

/// The Dockerfile's final stage, instruction by instruction (continuations joined).
fn dockerfile_final_stage() -> (String, Vec<(String, String)>) {
    let dockerfile =
        std::fs::read_to_string(manifest_dir().join("Dockerfile")).expect("Dockerfile");
    let joined = dockerfile.replace("\\\n", " ");
    let (build, last) = joined
        .rsplit_once("\nFROM ")
        .expect("a multi-stage Dockerfile");
    let instructions = last
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_owned(), rest.trim().to_owned())
        })
        .collect();
    (
        format!("{build}\nFROM {}", last.lines().next().unwrap_or_default()),
        instructions,
    )
}

/// `KEY=VALUE KEY2="VALUE 2"` (ENV, LABEL) into pairs.
fn dockerfile_pairs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("KEY=VALUE");
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, a) = quoted.split_once('"').expect("closing quote");
            (v.to_owned(), a)
        } else {
            let (v, a) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            (v.to_owned(), a)
        };
        out.push((key.trim().to_owned(), value));
        rest = after.trim();
    }
    out
}

/// The Dockerfile builds the same image: its build stage lays out the files
/// with scripts/image-rootfs, its final stage is `scratch` plus those files
/// with the config the release writes (labels' values come from build args).
pub(super) fn assert_dockerfile_matches(config: &Value) {
    let (build, stage) = dockerfile_final_stage();
    assert!(build.ends_with("\nFROM scratch"), "final stage: {build}");
    assert!(
        build.contains("scripts/image-rootfs target/release/kubectl-vault /rootfs"),
        "the build stage lays out the files with scripts/image-rootfs"
    );
    let c = &config["config"];
    let mut env = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let mut copies = Vec::new();
    for (op, rest) in &stage {
        match op.as_str() {
            "ENV" => env.extend(
                dockerfile_pairs(rest)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}")),
            ),
            "LABEL" => labels.extend(dockerfile_pairs(rest).into_iter().map(|(k, _)| k)),
            "USER" => assert_eq!(c["User"], rest.as_str(), "USER"),
            "WORKDIR" => assert_eq!(c["WorkingDir"], rest.as_str(), "WORKDIR"),
            "ENTRYPOINT" => assert_eq!(
                c["Entrypoint"],
                serde_json::from_str::<Value>(rest).expect("ENTRYPOINT is JSON")
            ),
            "CMD" => assert_eq!(
                c["Cmd"],
                serde_json::from_str::<Value>(rest).expect("CMD is JSON")
            ),
            "COPY" => copies.push(rest.clone()),
            "ARG" => {}
            other => panic!("unexpected {other} in the Dockerfile's final stage"),
        }
    }
    let want_env: BTreeSet<String> = c["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .map(|v| v.as_str().expect("env").to_owned())
        .collect();
    assert_eq!(env, want_env, "ENV");
    let want_labels: BTreeSet<String> = c["Labels"]
        .as_object()
        .expect("Labels")
        .keys()
        .cloned()
        .collect();
    assert_eq!(labels, want_labels, "LABEL keys");
    assert_eq!(
        copies.first().map(String::as_str),
        Some("--from=build /rootfs/ /"),
        "{copies:?}"
    );
}
