//! `kubectl vault dr`: one command over several clusters, each reached
//! through its own kube context.
//!
//! Owns reading the DRGroup file, connecting to every member (an unknown
//! context is a refusal naming it), opening the DR state at the snapshot
//! location, the role annotations on each member's credentials Secret, and
//! the check that the DR state was not rolled back behind what a member's
//! annotation saw. The decisions are `ops::dr`'s; restores go through the
//! one restore path ([`crate::cmd::snapshot::restore_verified`]).

pub mod clients;
pub mod failover;
pub mod guard;
pub mod status;
pub mod sync;
pub mod usage;
pub mod watch;

use crate::cli::dr::{DrCommand, DrConfigArgs};
use crate::cli::GlobalArgs;
use crate::cmd::{Context, Failure};
use crate::ops::dr::config::{ClusterSpec, DrGroup};
use crate::ops::dr::state::{load_or_create, StateError, StateStore, Versioned};
use crate::output::Printer;
use crate::snapshot::location::Location;
use crate::store::dr_state::SharedState;
use crate::store::kube_secret::default_secret_name;
use crate::transport::discover::KubeCluster;
use anyhow::anyhow;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, Patch, PatchParams};

/// The annotations a member's credentials Secret carries.
pub const EPOCH_ANNOTATION: &str = "kubectl-vault.io/dr-epoch";
pub const ROLE_ANNOTATION: &str = "kubectl-vault.io/dr-role";
pub const PRIMARY_ANNOTATION: &str = "kubectl-vault.io/dr-primary";
pub const MEMBER_ANNOTATION: &str = "kubectl-vault.io/dr-member";
/// Where the group's DR state lives, so that a cluster alone can find it.
pub const STATE_ANNOTATION: &str = "kubectl-vault.io/dr-state";
/// The DR group's name (`metadata.name` of its file), so that a refusal can
/// say which file to pass to `dr sync`.
pub const GROUP_ANNOTATION: &str = "kubectl-vault.io/dr-group";

/// Runs a `dr` subcommand.
pub async fn run(global: GlobalArgs, printer: &Printer, command: DrCommand) -> Result<(), Failure> {
    match command {
        DrCommand::Status(args) => status::run(&global, printer, args).await,
        DrCommand::Sync(args) => sync::run(&global, printer, args).await,
        DrCommand::Failover(args) => failover::run(&global, printer, args).await,
        DrCommand::Watch(args) => watch::run(&global, printer, args).await,
    }
}

/// One member cluster, connected (no request sent yet).
pub struct Member {
    pub spec: ClusterSpec,
    pub global: GlobalArgs,
    pub client: kube::Client,
    pub namespace: String,
}

impl Member {
    pub fn ctx<'a>(&'a self, printer: &'a Printer) -> Context<'a> {
        Context {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            global: &self.global,
            printer,
        }
    }

    /// Finds the member's pods (and checks its StatefulSet when the file names one).
    pub async fn cluster(&self, printer: &Printer) -> Result<KubeCluster, Failure> {
        let cluster = self.ctx(printer).cluster().await.map_err(|f| Failure {
            exit: f.exit,
            error: f.error.context(format!("cluster {}", self.spec.name)),
        })?;
        if let Some(want) = &self.spec.statefulset {
            if cluster.statefulset() != Some(want.as_str()) {
                return Err(Failure::refused(anyhow!(
                    "cluster {}: the server pods in {}/{} belong to StatefulSet {}, not {want} as the DR group file says; fix spec.clusters[].statefulset",
                    self.spec.name,
                    self.spec.context,
                    self.namespace,
                    cluster.workload_name()
                )));
            }
        }
        Ok(cluster)
    }

    /// The member's credentials Secret name.
    pub fn secret_name(&self, cluster: &KubeCluster) -> String {
        default_secret_name(&cluster.workload_name())
    }

    /// The DR annotations of the credentials Secret (epoch, role, primary).
    pub async fn marks(&self, secret: &str) -> Option<Mark> {
        let api: Api<KubeSecret> = Api::namespaced(self.client.clone(), &self.namespace);
        let s = api.get_opt(secret).await.ok()??;
        let a = s.metadata.annotations?;
        Some(Mark {
            epoch: a.get(EPOCH_ANNOTATION)?.parse().ok()?,
            role: a.get(ROLE_ANNOTATION).cloned().unwrap_or_default(),
            primary: a.get(PRIMARY_ANNOTATION).cloned().unwrap_or_default(),
            member: a.get(MEMBER_ANNOTATION).cloned().unwrap_or_default(),
            state: a.get(STATE_ANNOTATION).cloned().unwrap_or_default(),
            group: a.get(GROUP_ANNOTATION).cloned().unwrap_or_default(),
        })
    }

    /// Annotates the credentials Secret with `role` at `epoch` under `primary`.
    pub async fn mark(&self, secret: &str, mark: &Mark) -> Result<(), Failure> {
        let api: Api<KubeSecret> = Api::namespaced(self.client.clone(), &self.namespace);
        let patch = serde_json::json!({"metadata": {"annotations": {
            EPOCH_ANNOTATION: mark.epoch.to_string(),
            ROLE_ANNOTATION: mark.role,
            PRIMARY_ANNOTATION: mark.primary,
            MEMBER_ANNOTATION: self.spec.name,
            STATE_ANNOTATION: mark.state,
            GROUP_ANNOTATION: mark.group,
        }}});
        api.patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| {
                Failure::failed(anyhow::Error::new(e).context(format!(
                    "could not annotate Secret {}/{secret} of cluster {} as {} at epoch {}",
                    self.namespace, self.spec.name, mark.role, mark.epoch
                )))
            })
    }
}

/// What a member's credentials Secret says about its DR role.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mark {
    pub epoch: u64,
    /// `primary`, `standby` or `demoted`.
    pub role: String,
    pub primary: String,
    /// This cluster's name in the DR group.
    pub member: String,
    /// The group's snapshot location, where the DR state is.
    pub state: String,
    /// The DR group's name.
    pub group: String,
}

impl Group {
    /// The mark of a member that is `role` at `epoch` under `primary`.
    pub fn mark(&self, role: &str, epoch: u64, primary: &str) -> Mark {
        Mark {
            epoch,
            role: role.to_owned(),
            primary: primary.to_owned(),
            member: String::new(),
            state: self.config.snapshots.clone(),
            group: self.config.name.clone(),
        }
    }
}

/// A DR group: its file, its members and its shared state.
pub struct Group {
    pub file: String,
    pub config: DrGroup,
    pub members: Vec<Member>,
    pub location: Location,
    pub state: SharedState,
}

impl Group {
    /// Reads the file and connects to every member; refuses (exit 1) a bad
    /// file, an unknown context, or a snapshot location that is not a
    /// folder or bucket prefix.
    pub async fn open(global: &GlobalArgs, args: &DrConfigArgs) -> Result<Group, Failure> {
        let file = args.config.display().to_string();
        let text = std::fs::read_to_string(&args.config).map_err(|e| {
            Failure::refused(anyhow!("could not read the DR group file {file}: {e}"))
        })?;
        let config = DrGroup::parse(&text, &file).map_err(Failure::refused)?;
        let location = Location::parse(&config.snapshots).map_err(|e| {
            Failure::refused(anyhow::Error::new(e).context(format!("spec.snapshots of {file}")))
        })?;
        let state = SharedState::of(&location).ok_or_else(|| {
            Failure::refused(anyhow!(
                "spec.snapshots of {file} names one file ({}); it must be a folder (ending in /) or s3://bucket/prefix/",
                config.snapshots
            ))
        })?;
        let mut members = Vec::new();
        for spec in &config.clusters {
            let mut g = global.clone();
            g.context = Some(spec.context.clone());
            g.namespace = Some(spec.namespace.clone());
            let (client, namespace, _) = crate::cmd::connect(&g).await.map_err(|f| Failure {
                exit: f.exit,
                error: f.error.context(format!(
                    "cluster {} of {file} names context {}",
                    spec.name, spec.context
                )),
            })?;
            members.push(Member {
                spec: spec.clone(),
                global: g,
                client,
                namespace,
            });
        }
        Ok(Group {
            file,
            config,
            members,
            location,
            state,
        })
    }

    pub fn member(&self, name: &str) -> Result<&Member, Failure> {
        self.members
            .iter()
            .find(|m| m.spec.name == name)
            .ok_or_else(|| {
                Failure::refused(anyhow!(
                    "{name} is not a cluster of {}; it names: {}",
                    self.file,
                    self.config.names().join(", ")
                ))
            })
    }

    /// The DR state, created from the file's roles when there is none yet.
    pub async fn load_state(&self) -> Result<Versioned, Failure> {
        load_or_create(
            &self.state,
            &self.config.name,
            self.config.initial_primary(),
        )
        .await
        .map_err(state_failure)
    }

    /// The DR state as stored, without creating it.
    pub async fn peek_state(&self) -> Result<Option<Versioned>, Failure> {
        self.state.load().await.map_err(state_failure)
    }

    /// Refuses a DR state whose epoch is behind what a member's Secret was
    /// annotated with: it was rolled back or edited by hand.
    pub fn check_not_rolled_back(
        &self,
        state: &Versioned,
        marks: &[(String, Option<Mark>)],
    ) -> Result<(), Failure> {
        for (name, mark) in marks {
            if let Some(m) = mark.as_ref().filter(|m| m.epoch > state.state.epoch) {
                return Err(Failure::refused(anyhow!(
                    "{} is at epoch {}, but cluster {name}'s credentials Secret was marked {} at epoch {} (primary {}): the DR state was rolled back or edited by hand; nothing was changed. Restore {} from its backup or version history to epoch {} or later",
                    self.state.object(),
                    state.state.epoch,
                    m.role,
                    m.epoch,
                    m.primary,
                    self.state.object(),
                    m.epoch
                )));
            }
        }
        Ok(())
    }
}

fn state_failure(e: StateError) -> Failure {
    match e {
        e @ (StateError::Corrupt { .. } | StateError::OtherGroup { .. }) => Failure::refused(e),
        e => Failure::failed(e),
    }
}
