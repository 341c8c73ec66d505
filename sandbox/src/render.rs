//! JSON for the objects the fleet owns: Pods, the StatefulSet, Namespaces.
//!
//! Owns how a [`PodView`] looks to kubectl and kube-rs (metadata, spec,
//! status with conditions and containerStatuses). Stored kinds render
//! themselves; tables are [`crate::table`]'s.

use serde_json::{json, Value};

use crate::fleet::{Fleet, PodView};
use crate::meta;
use crate::options::ClusterOptions;
use crate::pod::{API_PORT, CLUSTER_PORT};
use crate::seal::Seal;

/// The sidecar container's name.
pub const SIDECAR: &str = "agent";
const SIDECAR_IMAGE: &str = "busybox:1.37";

fn labels(opts: &ClusterOptions) -> Value {
    json!({
        "app.kubernetes.io/name": opts.flavour.app_name(),
        "app.kubernetes.io/instance": opts.instance(),
        "component": "server",
    })
}

/// `data_path` is where the PVC is mounted as the container sees it: the
/// host folder for a pod (exec'd commands run on the host), the charts' path
/// in the StatefulSet template; `config_path` likewise for the server config.
fn container_spec(
    opts: &ClusterOptions,
    data_path: &str,
    seal_path: &str,
    config_path: &str,
) -> Value {
    let mut mounts = vec![json!({"name": "data", "mountPath": data_path})];
    if opts.seal == Seal::Static {
        mounts.push(json!({"name": "seal-key", "mountPath": seal_path, "readOnly": true}));
    }
    let p = opts.flavour.env_prefix();
    let scheme = opts.listener_scheme();
    let mut extra_env = Vec::new();
    if opts.tls_listener {
        // A chart user's `extraVolumes: [{type: secret, name: <sts>-tls}]`
        // and `extraEnvironmentVars: {<P>_CACERT: ...}`.
        let dir = chart_tls_path(opts);
        mounts.push(json!({"name": "userconfig-tls", "mountPath": dir, "readOnly": true}));
        match opts.listener_ca {
            crate::ListenerCa::CaCert => extra_env
                .push(json!({"name": format!("{p}_CACERT"), "value": format!("{dir}/ca.crt")})),
            crate::ListenerCa::CaPath => {
                extra_env.push(json!({"name": format!("{p}_CAPATH"), "value": dir}))
            }
            crate::ListenerCa::ServerConfig => {}
        }
        if opts.listener_client_auth {
            let client = format!("{dir}-client");
            mounts.push(
                json!({"name": "userconfig-client-tls", "mountPath": client, "readOnly": true}),
            );
            extra_env.push(
                json!({"name": format!("{p}_CLIENT_CERT"), "value": format!("{client}/tls.crt")}),
            );
            extra_env.push(
                json!({"name": format!("{p}_CLIENT_KEY"), "value": format!("{client}/tls.key")}),
            );
        }
    }
    let mut server = format!("{} server -config={config_path}", opts.flavour.cli());
    if opts.seal_in == crate::SealIn::JsonConfig && opts.seal == Seal::Static {
        // The seal in a second config file beside the first (`seal.json`).
        let json = std::path::Path::new(config_path).with_file_name("seal.json");
        server.push_str(&format!(" -config={}", json.display()));
    }
    let mut spec = json!({
        "name": opts.container(),
        "image": opts.image(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-ec"],
        "args": [server],
        "ports": [
            {"containerPort": API_PORT, "name": "http", "protocol": "TCP"},
            {"containerPort": CLUSTER_PORT, "name": "https-internal", "protocol": "TCP"},
        ],
        "env": [
            // The charts point the CLI at its own server on loopback.
            {"name": opts.flavour.addr_env(), "value": format!("{scheme}://127.0.0.1:{API_PORT}")},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
            {"name": "HOSTNAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}},
            {"name": format!("{}_K8S_POD_NAME", opts.flavour.env_prefix()), "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": format!("{}_K8S_NAMESPACE", opts.flavour.env_prefix()), "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
            {"name": format!("{}_API_ADDR", opts.flavour.env_prefix()), "value": format!("{scheme}://$(POD_IP):{API_PORT}")},
            {"name": format!("{}_CLUSTER_ADDR", opts.flavour.env_prefix()), "value": format!("https://$(HOSTNAME).{}-internal:{CLUSTER_PORT}", opts.name)},
            {"name": "SKIP_CHOWN", "value": "true"},
            {"name": "SKIP_SETCAP", "value": "true"},
        ],
        "readinessProbe": {
            "exec": {"command": ["/bin/sh", "-ec", format!("{} status -tls-skip-verify", opts.flavour.cli())]},
            "periodSeconds": 5, "failureThreshold": 2, "successThreshold": 1, "timeoutSeconds": 3,
        },
        "volumeMounts": mounts,
    });
    if opts.seal_in == crate::SealIn::Environment && opts.seal == Seal::Static {
        // A chart user's `extraSecretEnvironmentVars` from the seal Secret.
        extra_env.extend([
            json!({"name": crate::seal::ENV_SEAL_TYPE, "value": "static"}),
            json!({"name": crate::seal::ENV_KEY_ID, "value": crate::seal::STATIC_KEY_ID}),
            json!({"name": crate::seal::ENV_KEY, "valueFrom": {"secretKeyRef": {"name": format!("{}-seal", opts.name), "key": "static.key.b64"}}}),
        ]);
    }
    if let Some(env) = spec["env"].as_array_mut() {
        env.extend(extra_env);
    }
    spec
}

/// Where the charts' entrypoint writes the server config it starts with.
const CHART_CONFIG: &str = "/tmp/storageconfig.hcl";

/// Where a chart's `extraVolumes` mounts the `<sts>-tls` Secret.
fn chart_tls_path(opts: &ClusterOptions) -> String {
    format!("/{}/userconfig/{}-tls", opts.flavour.app_name(), opts.name)
}

/// The pod's volumes: the PVC, and with a static seal the Secret holding its
/// key (`<sts>-seal`, mode 0400), as a chart's `server.volumes` adds it.
fn volumes(opts: &ClusterOptions, claim: Value) -> Value {
    let mut v = vec![json!({"name": "data", "persistentVolumeClaim": claim})];
    if opts.seal == Seal::Static {
        v.push(json!({"name": "seal-key", "secret": {"secretName": format!("{}-seal", opts.name), "defaultMode": 256}}));
    }
    if opts.tls_listener {
        v.push(json!({"name": "userconfig-tls", "secret": {"secretName": format!("{}-tls", opts.name), "defaultMode": 420}}));
        if opts.listener_client_auth {
            v.push(json!({"name": "userconfig-client-tls", "secret": {"secretName": format!("{}-client-tls", opts.name), "defaultMode": 256}}));
        }
    }
    Value::Array(v)
}

/// Where the chart would mount the seal Secret.
fn chart_seal_path(opts: &ClusterOptions) -> String {
    format!("/{}/userconfig/{}-seal", opts.flavour.app_name(), opts.name)
}

fn sidecar_spec() -> Value {
    json!({"name": SIDECAR, "image": SIDECAR_IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "infinity"]})
}

fn container_status(
    name: &str,
    image: &str,
    ready: bool,
    restarts: u32,
    started: &str,
    running: bool,
    uid: &str,
) -> Value {
    let state = if running {
        json!({"running": {"startedAt": started}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    json!({
        "name": name, "image": image, "imageID": format!("docker.io/{image}"),
        "containerID": format!("containerd://{}{name}{restarts}", uid.replace('-', "")),
        "ready": ready, "started": running, "restartCount": restarts, "state": state, "lastState": {},
    })
}

/// A Pod object for `p`.
pub fn pod(fleet: &Fleet, p: &PodView) -> Value {
    let opts = fleet.options();
    let ip = p.ip.to_string();
    let ready = p.running && p.health.is_ready();
    let created = meta::rfc3339(p.created);
    let started = meta::rfc3339(p.started_at);
    let mut lbl = labels(opts);
    lbl["statefulset.kubernetes.io/pod-name"] = json!(p.name);
    lbl["apps.kubernetes.io/pod-index"] = json!(p.ordinal.to_string());
    lbl["controller-revision-hash"] = json!(format!("{}-5d8f9c7b6", opts.name));
    let data_path = fleet.layout(&p.name).data().display().to_string();
    let seal_path = crate::seal::secret_dir(&fleet.layout(&p.name).cluster_dir(), &opts.name)
        .display()
        .to_string();
    let spec = fleet.spec();
    let config_path = fleet.layout(&p.name).config().display().to_string();
    let mut containers = vec![container_spec(&spec, &data_path, &seal_path, &config_path)];
    let main_status = container_status(
        opts.container(),
        &spec.image(),
        ready,
        p.restart_count,
        &started,
        p.running,
        &p.uid,
    );
    let mut statuses = vec![main_status];
    if opts.sidecar {
        containers.insert(0, sidecar_spec());
        statuses.insert(
            0,
            container_status(SIDECAR, SIDECAR_IMAGE, true, 0, &created, true, &p.uid),
        );
    }
    let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": created});
    let ready = ready && p.deleting.is_none();
    let mut pod = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": p.name,
            "generateName": format!("{}-", opts.name),
            "namespace": opts.namespace,
            "uid": p.uid,
            "resourceVersion": p.resource_version.to_string(),
            "creationTimestamp": created,
            "labels": lbl,
            "annotations": {"kubectl.kubernetes.io/default-container": opts.container()},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": opts.name,
                "uid": fleet.uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "containers": containers,
            "hostname": p.name,
            "subdomain": format!("{}-internal", opts.name),
            "serviceAccountName": opts.name,
            "nodeName": "sandbox",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 10,
            "volumes": volumes(opts, json!({"claimName": format!("data-{}", p.name)})),
        },
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": created,
            "qosClass": "BestEffort",
            "conditions": [
                cond("PodReadyToStartContainers", true),
                cond("Initialized", true),
                cond("Ready", ready),
                cond("ContainersReady", ready),
                cond("PodScheduled", true),
            ],
            "containerStatuses": statuses,
        },
    });
    if let Some(at) = p.deleting {
        pod["metadata"]["deletionTimestamp"] = json!(meta::rfc3339(at));
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(10);
    }
    if p.pending {
        // Scheduled, containers being created: no IP, nothing ready.
        pod["status"]["phase"] = json!("Pending");
        for key in ["podIP", "podIPs", "startTime"] {
            if let Some(status) = pod["status"].as_object_mut() {
                status.remove(key);
            }
        }
        pod["status"]["conditions"] = json!([
            cond("PodReadyToStartContainers", false),
            cond("Initialized", true),
            cond("Ready", false),
            cond("ContainersReady", false),
            cond("PodScheduled", true),
        ]);
    }
    pod
}

/// The StatefulSet object.
pub fn statefulset(fleet: &Fleet, revision: u64) -> Value {
    let opts = fleet.options();
    let pods = fleet.pods();
    let ready = pods
        .iter()
        .filter(|p| p.running && p.health.is_ready())
        .count();
    let chart_data_path = format!("/{}/data", opts.flavour.app_name());
    let mut template_containers = vec![container_spec(
        &fleet.spec(),
        &chart_data_path,
        &chart_seal_path(opts),
        CHART_CONFIG,
    )];
    if opts.sidecar {
        template_containers.insert(0, sidecar_spec());
    }
    let mut template_spec = json!({"containers": template_containers, "serviceAccountName": opts.name, "terminationGracePeriodSeconds": 10});
    if opts.seal == Seal::Static {
        // The PVC comes from volumeClaimTemplates; only the Secret is a volume.
        let mut v = volumes(opts, Value::Null);
        if let Some(list) = v.as_array_mut() {
            list.retain(|vol| vol["name"] != "data");
        }
        template_spec["volumes"] = v;
    }
    let rev = format!("{}-5d8f9c7b6", opts.name);
    json!({
        "kind": "StatefulSet",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": opts.name, "namespace": opts.namespace, "uid": fleet.uid,
            "resourceVersion": revision.to_string(), "generation": 1,
            "creationTimestamp": meta::rfc3339(fleet.created),
            "labels": labels(opts),
        },
        "spec": {
            "replicas": fleet.desired(),
            "podManagementPolicy": opts.pod_management.as_str(),
            "serviceName": format!("{}-internal", opts.name),
            "selector": {"matchLabels": labels(opts)},
            "template": {
                "metadata": {"labels": labels(opts), "annotations": {"kubectl.kubernetes.io/default-container": opts.container()}},
                "spec": template_spec,
            },
            "updateStrategy": {"type": "OnDelete"},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
            }],
        },
        "status": {
            "observedGeneration": 1,
            "replicas": pods.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": pods.len(),
            "updatedReplicas": pods.len(),
            "currentRevision": rev,
            "updateRevision": rev,
            "collisionCount": 0,
        },
    })
}

/// A Namespace object.
pub fn namespace(name: &str, created: &str) -> Value {
    json!({
        "kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": name, "uid": format!("00000000-0000-4000-8000-{:012x}", name.len()),
                     "resourceVersion": "1", "creationTimestamp": created,
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// Wraps items into a `*List`.
pub fn list(kind: &str, api_version: &str, items: Vec<Value>, revision: &str) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": {"resourceVersion": revision}, "items": items})
}
