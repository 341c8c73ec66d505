//! Exit codes scripts can trust: bad command lines are refusals (1), never
//! the "failed, re-run" code 2, and the README's table says so.

use crate::harness::plugin_binary;

/// Runs the binary with `args` and no cluster: every case here is refused
/// before a kubeconfig is read.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(plugin_binary())
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("SOPS_AGE_RECIPIENTS")
        .output()
        .expect("run plugin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_1_never_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["-o", "xml", "status"], "xml"),
        (&["--transport", "foo", "status"], "foo"),
        (&["init", "--key-shares", "300"], "300"),
        (&["--age-recipient", "age1nope", "status"], "age1nope"),
        (&["frobnicate"], "frobnicate"),
        (&["status", "--no-such-flag"], "--no-such-flag"),
        (&["init", "--timeout", "5 parsecs"], "5 parsecs"),
        (&["completion"], "<SHELL>"),
        (&[], "Usage"),
    ];
    for (args, needle) in cases {
        let (code, _, stderr) = run(args);
        assert_eq!(code, 1, "{args:?} exits 1 (refused):\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?} names {needle}:\n{stderr}"
        );
    }
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    for args in [&["--help"][..], &["init", "--help"], &["--version"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.contains("kubectl"), "{args:?}: {stdout}");
    }
}

/// The README's exit-code table is the contract; it lists each code once and
/// puts usage errors under 1.
#[test]
fn readme_exit_code_table_documents_usage_errors_as_refusals() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("## Exit codes")
        .nth(1)
        .expect("README has an exit-code section");
    let rows: Vec<(String, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| code"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_owned(), cells[1].to_owned())
        })
        .collect();
    let codes: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes, ["0", "1", "2", "3"], "{rows:?}");
    assert!(rows[1].1.contains("usage errors"), "{rows:?}");
    assert!(!rows[2].1.contains("usage"), "{rows:?}");
}
