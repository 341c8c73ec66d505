//! What phase 1 tells the operator to apply: the raft values for both
//! charts, the ports between pods and the readiness probe that keeps
//! `helm upgrade --wait` from deadlocking on sealed pods.

/// The values text for a StatefulSet `sts` of `replicas` pods whose data
/// volume is mounted at `data_path`.
pub fn raft_values(sts: &str, replicas: u8, data_path: &str) -> String {
    let joins: String = (0..replicas)
        .map(|i| {
            format!(
                "          retry_join {{\n            leader_api_addr = \"http://{sts}-{i}.{sts}-internal:8200\"\n          }}\n"
            )
        })
        .collect();
    let values = format!(
        r#"server:
  standalone:
    enabled: false
  ha:
    enabled: true
    replicas: {replicas}
    raft:
      enabled: true
      setNodeId: true
      config: |
        ui = true
        listener "tcp" {{
          tls_disable = 1
          address = "[::]:8200"
          cluster_address = "[::]:8201"
        }}
        storage "raft" {{
          path = "{data_path}"
{joins}        }}
        service_registration "kubernetes" {{}}
  readinessProbe:
    enabled: true
    path: "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204"
"#
    );
    format!(
        "Apply these values (both the openbao/openbao and the hashicorp/vault chart read them; keep your own listener/TLS settings in the config), for example `helm upgrade <release> <chart> --reuse-values -f raft-values.yaml`:\n\n{values}\n\
         Pods must reach each other on 8200 (API; the retry_join challenge goes there) and 8201 (raft), both directions.\n\
         The readiness probe above counts sealed and uninitialized pods as ready, so `helm upgrade --wait` does not deadlock before phase 2 unseals them.\n\
         If the chart's updateStrategy is OnDelete (the default), delete pod {sts}-0 after the upgrade so it restarts on raft.\n\
         Then run `kubectl vault migrate --to raft` again (or let the post-upgrade hook run it) to finish: unseal, join and verify {replicas} voters.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_join_every_pod_on_the_api_port_and_set_node_ids() {
        let v = raft_values("openbao", 3, "/openbao/data");
        for i in 0..3 {
            assert!(
                v.contains(&format!("http://openbao-{i}.openbao-internal:8200")),
                "{v}"
            );
        }
        assert!(v.contains("setNodeId: true"));
        assert!(v.contains("standalone:\n    enabled: false"));
        assert!(v.contains("8201"));
        assert!(v.contains("sealedcode=204&uninitcode=204"));
    }
}
