//! The supervisor shell of a throwaway server: the script, what its exit
//! codes mean, and what it reports on stderr. What runs it, and when, is
//! the parent module's.

/// `$0`: the CLI; `$1`: the folder; `$2`: API port; `$3`: cluster port;
/// `$4`: the watchdog's deadline in seconds; `$5`: the CLI's address
/// variable; `$6`: `seal` to run with the live server's seal, read from the
/// server config files or folders `$7...` (the pod spec's `-config`), else
/// empty. Exits 73 when the server died at start (its log's end on
/// stderr), 74 when it never answered, 71 when the folder cannot be made,
/// 75 when no `seal` stanza was found and the environment sets no
/// `BAO_SEAL_TYPE`/`VAULT_SEAL_TYPE` either (stderr: `json FILE...`, the
/// JSON config files it did not read). Each `restart` line on stdin stops
/// the server (TERM, then KILL after 10 s) and starts it again on the same
/// folder and port, answering `ready <pid>` again.
pub(super) const SUPERVISOR: &str = r#"umask 077
d="$1"; p="$2"; c="$3"; t="$4"; av="$5"; sl="$6"; shift 6
for o in "${d%/*}"/.kubectl-vault-restore-test-*; do
  [ -d "$o" ] && [ "$o" != "$d" ] || continue
  q=$(cat "$o/supervisor" 2>/dev/null)
  if [ -n "$q" ]; then kill -0 "$q" 2>/dev/null || rm -rf "$o"
  elif [ -n "$(find "$o" -maxdepth 0 -mmin +10 2>/dev/null)" ]; then rm -rf "$o"; fi
done
mkdir "$d" || exit 71
echo $$ > "$d/supervisor"
mkdir "$d/raft" || { rm -rf "$d"; exit 71; }
cat > "$d/config.hcl" <<EOF
storage "raft" {
  path = "$d/raft"
  node_id = "kubectl-vault-restore-test"
  performance_multiplier = 1
}
listener "tcp" {
  address = "127.0.0.1:$p"
  cluster_address = "127.0.0.1:$c"
  tls_disable = true
}
api_addr = "http://127.0.0.1:$p"
cluster_addr = "https://127.0.0.1:$c"
disable_mlock = true
ui = false
EOF
if [ "$sl" = seal ]; then
  # Every top-level seal block of the live config, copied file to file in
  # the pod: it may hold a provider token, which never leaves the pod.
  for f0 in "$@"; do for f in "$f0" "$f0"/*.hcl; do
    [ -f "$f" ] && [ -r "$f" ] || continue
    awk 'function braces(l,  o, k) { o = gsub(/[{]/, "{", l); k = gsub(/[}]/, "}", l); return o - k }
      !on && n == 0 && /^[[:space:]]*seal[[:space:]]/ { on = 1; m = 0 }
      on { print; m += braces($0); if (m <= 0 && index($0, "}") > 0) on = 0; next }
      { n += braces($0) }' "$f" >> "$d/config.hcl"
  done; done
  # No stanza: the container's environment may configure the seal, and the
  # server started below inherits it. Else name the JSON files not read.
  if ! grep -q '^[[:space:]]*seal[[:space:]]' "$d/config.hcl" && [ -z "${BAO_SEAL_TYPE}${VAULT_SEAL_TYPE}" ]; then
    j=""; for f0 in "$@"; do for f in "$f0" "$f0"/*.json; do
      case "$f" in *.json) [ -f "$f" ] && j="$j $f" ;; esac
    done; done
    echo "json$j" >&2; rm -rf "$d"; exit 75
  fi
fi
start() {
  if [ "$sl" = seal ]; then
    # The container's environment may configure the seal (its provider's
    # credentials); only what would advertise the live pod goes.
    ( unset BAO_API_ADDR VAULT_API_ADDR BAO_CLUSTER_ADDR VAULT_CLUSTER_ADDR BAO_REDIRECT_ADDR VAULT_REDIRECT_ADDR BAO_RAFT_NODE_ID VAULT_RAFT_NODE_ID BAO_RAFT_PATH VAULT_RAFT_PATH
      HOME="$d"; export HOME; exec "$0" server -config "$d/config.hcl" ) >> "$d/server.log" 2>&1 &
  else
    env -i PATH="$PATH" HOME="$d" "$0" server -config "$d/config.hcl" >> "$d/server.log" 2>&1 &
  fi
  s=$!
  echo "$s" > "$d/server.pid"
}
start
setsid sh -c 'sup=$1; d=$2; end=$(( $(date +%s) + $3 ))
while kill -0 "$sup" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 1; done
s=$(cat "$d/server.pid" 2>/dev/null)
kill -9 $s "$sup" 2>/dev/null; i=0
while [ -n "$s" ] && kill -0 "$s" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done
rm -rf "$d"' kubectl-vault-restore-test-watchdog "$$" "$d" "$t" < /dev/null > /dev/null 2>&1 &
w=$!
stop() { kill -9 "$s" 2>/dev/null; wait "$s" 2>/dev/null; kill -9 "$w" 2>/dev/null; rm -rf "$d"; }
trap stop EXIT
trap 'exit 1' HUP INT TERM PIPE
answered() {
  i=0
  while :; do
    if ! kill -0 "$s" 2>/dev/null; then tail -n 5 "$d/server.log" >&2; exit 73; fi
    env -i PATH="$PATH" "$av=http://127.0.0.1:$p" "$0" status > /dev/null 2>&1
    case $? in 0|2) break;; esac
    i=$((i+1)); [ $i -lt 600 ] || { echo "the server did not answer on 127.0.0.1:$p" >&2; tail -n 5 "$d/server.log" >&2; exit 74; }
    sleep 0.1 2>/dev/null || sleep 1
  done
  kill -0 "$s" 2>/dev/null || { tail -n 5 "$d/server.log" >&2; exit 73; }
  echo "ready $s"
}
answered
while IFS= read -r line; do
  case "$line" in
    restart)
      kill -TERM "$s" 2>/dev/null; i=0
      while kill -0 "$s" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done
      kill -9 "$s" 2>/dev/null; wait "$s" 2>/dev/null
      start; answered ;;
  esac
done
exit 0"#;

/// The supervisor's exit when neither a `seal` stanza in the HCL configs
/// nor a seal type in the environment was found: nothing was started.
pub(super) const NO_SEAL_EXIT: i32 = 75;

/// The JSON config files a supervisor that exited [`NO_SEAL_EXIT`] found
/// and did not read (its last `json ...` line on stderr).
pub(super) fn unread_json(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("json"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Runs the supervisor with `cli` as its CLI, in seal mode, on
    /// `configs`, with `env` added to a clean environment; stdin closed.
    fn supervise(
        data: &std::path::Path,
        cli: &str,
        configs: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let dir = data.join(".kubectl-vault-restore-test-unit");
        Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(cli)
            .arg(&dir)
            .args(["47123", "47124", "60", "BAO_ADDR", "seal"])
            .args(configs)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run sh")
    }

    #[test]
    fn no_seal_stanza_and_no_seal_in_the_environment_starts_nothing_and_names_the_json_files() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let hcl = root.path().join("config.hcl");
        std::fs::write(&hcl, "storage \"raft\" {\n  path = \"/x\"\n}\n").unwrap();
        let conf = root.path().join("conf.d");
        std::fs::create_dir(&conf).unwrap();
        let json = conf.join("seal.json");
        std::fs::write(&json, r#"{"seal": {"static": {"current_key_id": "k"}}}"#).unwrap();
        // A CLI that must never run: it would leave a mark.
        let mark = root.path().join("ran");
        let cli = root.path().join("cli");
        std::fs::write(&cli, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
        Command::new("chmod").arg("755").arg(&cli).status().unwrap();

        let out = supervise(
            &data,
            cli.to_str().unwrap(),
            &[hcl.to_str().unwrap(), conf.to_str().unwrap()],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(NO_SEAL_EXIT), "{stderr}");
        assert_eq!(unread_json(&stderr), [json.display().to_string()]);
        assert!(!mark.exists(), "the CLI ran");
        assert_eq!(
            std::fs::read_dir(&data).unwrap().count(),
            0,
            "the folder was removed"
        );

        // A seal type in the environment: the server is started (it
        // inherits the variables), answers, and goes at the end of stdin.
        std::fs::write(
            &cli,
            format!(
                "#!/bin/sh\ntouch {}\ncase \"$1\" in server) exec sleep 30;; status) exit 2;; esac\n",
                mark.display()
            ),
        )
        .unwrap();
        let out = supervise(
            &data,
            cli.to_str().unwrap(),
            &[hcl.to_str().unwrap()],
            &[("BAO_SEAL_TYPE", "static")],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("ready "), "{stdout}");
        assert!(mark.exists(), "the server was started");
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    }

    #[test]
    fn the_unread_json_files_are_the_last_report_line() {
        assert_eq!(
            unread_json("noise\njson /a.json /b/c.json\n"),
            ["/a.json", "/b/c.json"]
        );
        assert!(unread_json("json\n").is_empty());
        assert!(unread_json("").is_empty());
    }
}
