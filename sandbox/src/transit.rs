//! The transit seal provider: one more `bao server` outside the StatefulSet,
//! as another OpenBao cluster serving a transit key would be.
//!
//! Owns the provider's folder (`<cluster>/transit-provider/`: config, raft
//! data, its own static seal key, its root token, its log), its one-time
//! setup (init, the transit mount, the key `autounseal`, a policy that may
//! only encrypt and decrypt with it, and a periodic token for the pods), and
//! taking it down and up. The provider seals itself with `seal "static"`,
//! so it comes back unsealed after `up`, with the same key. The pods' token
//! and the provider's address sit in the seal Secret's folder
//! (`<cluster>/secrets/<sts>-seal/`), where [`crate::seal::stanza`] reads
//! them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::spawner::{ServerProcess, Spawner};

/// The transit key the pods' seal stanza names.
pub const KEY_NAME: &str = "autounseal";
const PORT: u16 = 8200;
const POLICY: &str = "path \"transit/encrypt/autounseal\" { capabilities = [\"update\"] }\n\
                      path \"transit/decrypt/autounseal\" { capabilities = [\"update\"] }\n";

/// The running (or stopped) provider.
pub struct TransitProvider {
    dir: PathBuf,
    ip: Ipv4Addr,
    bao: PathBuf,
    process: Mutex<Option<ServerProcess>>,
}

/// The provider's address, as the pods' stanza names it.
pub fn address_file(seal_dir: &Path) -> PathBuf {
    seal_dir.join("transit-address")
}

/// The pods' token for the provider (the Secret a chart would mount).
pub fn token_file(seal_dir: &Path) -> PathBuf {
    seal_dir.join("transit-token")
}

impl TransitProvider {
    /// Starts the provider in `<cluster_dir>/transit-provider`, setting it up
    /// on first use; writes the pods' address and token into `seal_dir`.
    pub async fn start(
        cluster_dir: &Path,
        seal_dir: &Path,
        bao: &Path,
        spawner: &Spawner,
    ) -> anyhow::Result<Self> {
        let dir = cluster_dir.join("transit-provider");
        std::fs::create_dir_all(dir.join("data"))?;
        let previous = std::fs::read_to_string(dir.join("ip"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let ip = crate::pod::allocate_ip(previous)?;
        std::fs::write(dir.join("ip"), ip.to_string())?;
        let key = crate::seal::ensure_key_file(&dir.join("seal.key"))?;
        std::fs::write(dir.join("config.hcl"), config(&dir, &key, ip))?;
        let provider = TransitProvider {
            dir,
            ip,
            bao: bao.to_path_buf(),
            process: Mutex::new(None),
        };
        provider.up(spawner).await?;
        if !provider.dir.join("root-token").exists() {
            provider.set_up(seal_dir).await?;
        }
        Ok(provider)
    }

    /// `http://<ip>:8200`.
    pub fn address(&self) -> String {
        format!("http://{}:{PORT}", self.ip)
    }

    /// Starts the server (if it is not running) and waits until it is
    /// unsealed (its static seal) and active.
    pub async fn up(&self, spawner: &Spawner) -> anyhow::Result<()> {
        let running = {
            let mut p = self.process.lock().unwrap_or_else(|p| p.into_inner());
            p.as_mut().is_some_and(|p| !p.has_exited())
        };
        if !running {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("server.log"))?;
            let mut cmd = Command::new(&self.bao);
            cmd.arg("server")
                .arg("-config")
                .arg(self.dir.join("config.hcl"))
                .current_dir(&self.dir)
                .env_clear()
                .env("HOME", &self.dir)
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            let process = spawner.spawn(cmd).context("start the transit provider")?;
            *self.process.lock().unwrap_or_else(|p| p.into_inner()) = Some(process);
        }
        let initialized = self.dir.join("root-token").exists();
        self.wait("listening and, once set up, active", |out| {
            !initialized || out.contains("\"sealed\": false")
        })
        .await
    }

    /// Kills the server: the pods' seal cannot reach it until [`Self::up`].
    pub fn down(&self) {
        if let Some(p) = self
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            p.kill();
        }
    }

    /// One-time setup: init, transit, key, policy, the pods' token.
    async fn set_up(&self, seal_dir: &Path) -> anyhow::Result<()> {
        let init = self.cli(None, &["operator", "init", "-format=json"], None)?;
        let init: serde_json::Value = serde_json::from_str(&init).context("operator init")?;
        let root = init["root_token"]
            .as_str()
            .context("operator init gave no root token")?
            .to_owned();
        write_private(&self.dir.join("root-token"), &root)?;
        self.wait("unsealed", |out| out.contains("\"sealed\": false"))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        // The mount fails until the server is active.
        while let Err(e) = self.cli(Some(&root), &["secrets", "enable", "transit"], None) {
            if Instant::now() > deadline {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.cli(
            Some(&root),
            &["write", "-f", &format!("transit/keys/{KEY_NAME}")],
            None,
        )?;
        self.cli(
            Some(&root),
            &["policy", "write", KEY_NAME, "-"],
            Some(POLICY),
        )?;
        let token = self.cli(
            Some(&root),
            &[
                "token",
                "create",
                "-orphan",
                "-period=768h",
                &format!("-policy={KEY_NAME}"),
                "-field=token",
            ],
            None,
        )?;
        std::fs::create_dir_all(seal_dir)?;
        write_private(&token_file(seal_dir), token.trim())?;
        std::fs::write(address_file(seal_dir), self.address())?;
        Ok(())
    }

    /// Polls `bao status -format=json` until `ready` holds on its output.
    async fn wait(&self, what: &str, ready: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `status` exits 2 while sealed; its JSON is still printed.
            let out = self.cli_output(None, &["status", "-format=json"], None);
            if let Ok((_, stdout)) = &out {
                if stdout.contains("\"initialized\"") && ready(stdout) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the transit provider at {} is not {what} after 30s: {out:?}",
                    self.address()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn cli(
        &self,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<String> {
        let (ok, stdout) = self.cli_output(token, args, stdin)?;
        if !ok {
            bail!("bao {} failed on the transit provider: {stdout}", args[0]);
        }
        Ok(stdout)
    }

    fn cli_output(
        &self,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<(bool, String)> {
        use std::io::Write;
        let mut cmd = Command::new(&self.bao);
        cmd.args(args)
            .env_clear()
            .env("HOME", &self.dir)
            .env("BAO_ADDR", self.address())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("BAO_TOKEN", t);
        }
        let mut child = cmd
            .spawn()
            .context("run bao against the transit provider")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            text.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        Ok((out.status.success(), text))
    }
}

impl Drop for TransitProvider {
    fn drop(&mut self) {
        self.down();
    }
}

fn config(dir: &Path, key: &Path, ip: Ipv4Addr) -> String {
    format!(
        "storage \"raft\" {{\n  path = \"{data}\"\n  node_id = \"transit-provider\"\n}}\n\n\
         seal \"static\" {{\n  current_key_id = \"provider-1\"\n  current_key = \"file://{key}\"\n}}\n\n\
         listener \"tcp\" {{\n  address = \"{ip}:{PORT}\"\n  cluster_address = \"{ip}:8201\"\n  tls_disable = true\n}}\n\n\
         api_addr = \"http://{ip}:{PORT}\"\ncluster_addr = \"http://{ip}:8201\"\ndisable_mlock = true\nui = false\n",
        data = dir.join("data").display(),
        key = key.display(),
    )
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o400)
        .open(path)?;
    f.write_all(text.as_bytes())
}
