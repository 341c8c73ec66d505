//! `kubectl vault dr status`: every member's role, reachability, health,
//! latency, lag behind the primary's newest snapshot, and score.
//!
//! Owns gathering a [`MemberView`] per member (the figures come from
//! `ops::dr::probe`, pod CPU and memory from `metrics.k8s.io` through
//! [`super::usage`] when served, the lag from the DR state and the
//! manifests, the score from `ops::dr::score`) and rendering them. Changes nothing: a group
//! without a DR state is shown from the file's roles at epoch 0.

use crate::cli::dr::{DrConfigArgs, DrStatusArgs};
use crate::cli::GlobalArgs;
use crate::cmd::dr::{Group, Mark, Member};
use crate::cmd::Failure;
use crate::ops::dr::probe::probe;
use crate::ops::dr::score::{ineligible, score, Figures, Lag};
use crate::ops::dr::state::{DrState, StandbySync};
use crate::ops::store::CredentialStore;
use crate::output::{table, Printer};
use crate::snapshot::location::{Location, Verification};
use crate::snapshot::manifest::Manifest;
use serde::Serialize;

/// What `dr status -o json` prints.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub group: String,
    pub primary: String,
    pub epoch: u64,
    /// The primary's newest snapshot at the location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::ops::dr::state::FailoverProgress>,
    pub clusters: Vec<MemberView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    pub name: String,
    pub context: String,
    pub namespace: String,
    /// `primary`, `standby`, or `fenced` (demoted by a failover).
    pub role: String,
    pub reachable: bool,
    /// Standbys only; 0 = cannot be chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ineligible: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synced: Option<StandbySync>,
    /// The credentials Secret's DR annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    /// The stored credentials' cluster id, when they could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Why something could not be read (credentials, pods).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

pub async fn run(
    global: &GlobalArgs,
    printer: &Printer,
    args: DrStatusArgs,
) -> Result<(), Failure> {
    let group = Group::open(global, &args.group).await?;
    let view = gather(&group, printer, &args.group).await?;
    printer.value(&view, render).map_err(Failure::failed)
}

/// Probes every member and scores the standbys against `state`.
pub async fn gather(
    group: &Group,
    printer: &Printer,
    args: &DrConfigArgs,
) -> Result<GroupView, Failure> {
    let stored = group.peek_state().await?;
    let state = stored.as_ref().map_or_else(
        || {
            let mut s = DrState::new(&group.config.name, group.config.initial_primary());
            s.epoch = 0;
            s
        },
        |v| v.state.clone(),
    );
    let mut views = futures::future::join_all(
        group
            .members
            .iter()
            .map(|m| look_at(m, printer, args, &state)),
    )
    .await;
    let primary_id = views
        .iter()
        .find(|v| v.name == state.primary)
        .and_then(|v| v.cluster_id.clone())
        .or_else(|| state.standbys.values().next().map(|s| s.cluster_id.clone()));
    let newest = match &primary_id {
        Some(id) => newest_of(&group.location, id).await,
        None => None,
    };
    for v in &mut views {
        if v.role != "standby" {
            continue;
        }
        if let (Some(sync), Some(newest)) = (&v.synced, &newest) {
            v.figures.lag = Some(lag(sync, newest));
        }
        v.score = Some(score(&v.figures));
        v.ineligible = ineligible(&v.figures).map(|i| i.to_string());
    }
    if let Some(v) = stored.as_ref() {
        let marks: Vec<_> = views
            .iter()
            .map(|v| (v.name.clone(), v.mark.clone()))
            .collect();
        group.check_not_rolled_back(v, &marks)?;
    }
    Ok(GroupView {
        group: group.config.name.clone(),
        primary: state.primary.clone(),
        epoch: state.epoch,
        newest_snapshot: newest.map(|m| m.snapshot),
        failover: state.failover.clone(),
        clusters: views,
    })
}

/// The newest snapshot of cluster `cluster_id` at `location` whose manifest
/// matches its size (not re-hashed: status stays cheap).
pub async fn newest_of(location: &Location, cluster_id: &str) -> Option<Manifest> {
    let entries = location.list().await.ok()?;
    entries
        .into_iter()
        .filter(|e| e.quick_status() == Verification::ManifestOk && e.of_cluster(Some(cluster_id)))
        .filter_map(|e| e.manifest)
        .max_by(|a, b| {
            (a.created(), a.raft_committed_index).cmp(&(b.created(), b.raft_committed_index))
        })
}

/// How far `sync` is behind `newest`.
pub fn lag(sync: &StandbySync, newest: &Manifest) -> Lag {
    let at = |t: &str| t.parse::<jiff::Timestamp>().ok();
    let secs = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| match (a, b) {
        (Some(a), Some(b)) => u64::try_from(a.as_second() - b.as_second()).unwrap_or(0),
        _ => 0,
    };
    let theirs = at(&sync.snapshot_time);
    Lag {
        rpo_seconds: secs(newest.created(), theirs),
        raft_index_behind: match (newest.raft_committed_index, sync.raft_index) {
            (Some(n), Some(s)) => Some(n.saturating_sub(s)),
            _ => None,
        },
        age_seconds: secs(Some(jiff::Timestamp::now()), theirs),
    }
}

/// One member as it is now.
pub async fn look_at(
    m: &Member,
    printer: &Printer,
    args: &DrConfigArgs,
    state: &DrState,
) -> MemberView {
    let mut view = MemberView {
        name: m.spec.name.clone(),
        context: m.spec.context.clone(),
        namespace: m.namespace.clone(),
        role: if state.primary == m.spec.name {
            "primary".into()
        } else if state.fences.contains_key(&m.spec.name) {
            "fenced".into()
        } else {
            "standby".into()
        },
        reachable: false,
        score: None,
        ineligible: None,
        figures: Figures::default(),
        synced: state.standbys.get(&m.spec.name).cloned(),
        mark: None,
        cluster_id: None,
        problems: vec![],
    };
    let found = tokio::time::timeout(args.probe_timeout * 3, m.cluster(printer)).await;
    let cluster = match found {
        Ok(Ok(c)) => c,
        Ok(Err(f)) => {
            view.problems.push(format!("{:#}", f.error));
            return view;
        }
        Err(_) => {
            view.problems
                .push(format!("no answer within {:?}", args.probe_timeout * 3));
            return view;
        }
    };
    let ctx = m.ctx(printer);
    let store = ctx.store(&cluster, None);
    let credentials = match store.load_credentials().await {
        Ok(Some(c)) => Some(c),
        Ok(None) => {
            view.problems
                .push(format!("no credentials in {}", store.credentials_object()));
            None
        }
        Err(e) => {
            view.problems.push(e.to_string());
            None
        }
    };
    view.cluster_id = credentials
        .as_ref()
        .map(|c| c.cluster_id.clone())
        .filter(|c| !c.is_empty());
    view.mark = m.marks(&m.secret_name(&cluster)).await;
    view.figures = probe(
        &cluster,
        credentials.as_ref().map(|c| &c.root_token),
        args.probes,
        args.probe_timeout,
    )
    .await;
    view.reachable = view.figures.reachable;
    let pods: Vec<String> = match cluster.pod_infos().await {
        Ok(pods) => pods.into_iter().map(|p| p.name).collect(),
        Err(_) => vec![],
    };
    view.figures
        .set_usage(super::usage::of_pods(&m.client, &m.namespace, &pods, args.probe_timeout).await);
    view
}

/// Millicores as `kubectl top` writes them (`20m`), or `-`.
fn cpu(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{}m", v.round()))
}

/// Bytes as `kubectl top` writes them (`73Mi`), or `-`.
fn memory(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{}Mi", v / (1024 * 1024)))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn render(view: &GroupView) -> String {
    let rows: Vec<Vec<String>> = view
        .clusters
        .iter()
        .map(|c| {
            let f = &c.figures;
            vec![
                c.name.clone(),
                c.role.clone(),
                if c.reachable { "yes" } else { "no" }.into(),
                f.health.map_or_else(|| "-".into(), |h| h.to_string()),
                format!("{}/{}", f.sealed, f.answering),
                f.leader.clone().unwrap_or_else(|| "-".into()),
                f.voters.map_or_else(|| "-".into(), |v| v.to_string()),
                f.failure_tolerance
                    .map_or_else(|| "-".into(), |v| v.to_string()),
                format!("{}/{}", ms(f.latency_p50_ms), ms(f.latency_p95_ms)),
                cpu(f.cpu_millicores),
                memory(f.memory_bytes),
                f.lag.as_ref().map_or_else(
                    || "-".into(),
                    |l| {
                        format!(
                            "{}s/{}",
                            l.rpo_seconds,
                            l.raft_index_behind
                                .map_or_else(|| "?".into(), |i| i.to_string())
                        )
                    },
                ),
                match (&c.score, &c.ineligible) {
                    (Some(_), Some(why)) => format!("0 ({why})"),
                    (Some(s), None) => s.to_string(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    let mut text = format!(
        "DR group {}: primary {} at epoch {}; newest snapshot {}\n",
        view.group,
        view.primary,
        view.epoch,
        view.newest_snapshot.as_deref().unwrap_or("(none)")
    );
    text.push_str(&table(
        &[
            "name",
            "role",
            "reachable",
            "health",
            "sealed",
            "leader",
            "voters",
            "tolerance",
            "p50/p95 ms",
            "cpu",
            "memory",
            "lag rpo/index",
            "score",
        ],
        &rows,
    ));
    for c in &view.clusters {
        for p in &c.problems {
            text.push_str(&format!("{}: {p}\n", c.name));
        }
        if c.synced.as_ref().is_some_and(|s| s.unsealed) && c.role == "standby" {
            text.push_str(&format!(
                "Warning: standby {} was left unsealed (--standby-unsealed); clients can write to data the next sync overwrites\n",
                c.name
            ));
        }
    }
    if let Some(f) = &view.failover {
        text.push_str(&format!(
            "A failover to {} at epoch {} is in progress (step {:?}, by {}); finish it with `kubectl vault dr failover --config FILE`\n",
            f.to, f.epoch, f.step, f.holder
        ));
    }
    text
}
