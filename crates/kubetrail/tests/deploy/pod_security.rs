//! The Pod Security Standards' "restricted" profile (which includes "baseline"), as
//! kube-apiserver v1.28's PodSecurity admission checks it, over a pod spec (and the pod's
//! annotations): <https://kubernetes.io/docs/concepts/security/pod-security-standards/>.
//! Each rule below is one control of the page, named as there.

use serde_json::Value;

/// Capabilities "baseline" allows to add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls "baseline" allows (v1.28).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume types "restricted" allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn containers(spec: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            out.push((format!("{list}[{}]", c["name"].as_str().unwrap_or("?")), c));
        }
    }
    out
}

/// The violations of "restricted" by a pod (`spec`, and `annotations` of its metadata).
pub fn restricted_violations(spec: &Value, annotations: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let pod_sc = &spec["securityContext"];
    let cs = containers(spec);

    // Baseline.
    if pod_sc["windowsOptions"]["hostProcess"] == true
        || cs
            .iter()
            .any(|(_, c)| c["securityContext"]["windowsOptions"]["hostProcess"] == true)
    {
        v.push("HostProcess: windowsOptions.hostProcess must not be true".into());
    }
    for ns in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[ns] == true {
            v.push(format!("Host Namespaces: {ns} must not be true"));
        }
    }
    for (name, c) in &cs {
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            v.push(format!("Privileged Containers: {name} is privileged"));
        }
        for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            let cap = cap.as_str().unwrap_or("");
            if !BASELINE_CAPABILITIES.contains(&cap) {
                v.push(format!("Capabilities (baseline): {name} adds {cap}"));
            }
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if p["hostPort"].as_i64().is_some_and(|h| h != 0) {
                v.push(format!(
                    "Host Ports: {name} uses hostPort {}",
                    p["hostPort"]
                ));
            }
        }
        if !(sc["procMount"].is_null() || sc["procMount"] == "Default") {
            v.push(format!("/proc Mount Type: {name} sets {}", sc["procMount"]));
        }
    }
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        if vol.get("hostPath").is_some() {
            v.push(format!("HostPath Volumes: {}", vol["name"]));
        }
    }
    if let Some(a) = annotations.as_object() {
        for (k, val) in a {
            if k.starts_with("container.apparmor.security.beta.kubernetes.io/") {
                let val = val.as_str().unwrap_or("");
                if val != "runtime/default" && !val.starts_with("localhost/") {
                    v.push(format!("AppArmor: {k} = {val}"));
                }
            }
        }
    }
    let selinux_ok = |sc: &Value| {
        let o = &sc["seLinuxOptions"];
        let ty = o["type"].as_str().unwrap_or("");
        ["", "container_t", "container_init_t", "container_kvm_t"].contains(&ty)
            && o["user"].is_null()
            && o["role"].is_null()
    };
    if !selinux_ok(pod_sc) || cs.iter().any(|(_, c)| !selinux_ok(&c["securityContext"])) {
        v.push("SELinux: seLinuxOptions beyond the allowed types".into());
    }
    for s in pod_sc["sysctls"].as_array().into_iter().flatten() {
        let n = s["name"].as_str().unwrap_or("");
        if !SAFE_SYSCTLS.contains(&n) {
            v.push(format!("Sysctls: {n}"));
        }
    }

    // Restricted.
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        let types: Vec<&String> = vol
            .as_object()
            .map(|o| o.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        for t in types {
            if !RESTRICTED_VOLUMES.contains(&t.as_str()) {
                v.push(format!("Volume Types: {} is a {t} volume", vol["name"]));
            }
        }
    }
    let pod_non_root = pod_sc["runAsNonRoot"] == true;
    let seccomp_ok = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault") | Some("Localhost")
        )
    };
    let pod_seccomp = seccomp_ok(pod_sc);
    if pod_sc["runAsUser"] == 0 {
        v.push("Running as Non-root user: the pod's runAsUser is 0".into());
    }
    if matches!(
        pod_sc["seccompProfile"]["type"].as_str(),
        Some("Unconfined")
    ) {
        v.push("Seccomp: the pod's profile is Unconfined".into());
    }
    for (name, c) in &cs {
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!(
                "Privilege Escalation: {name} must set allowPrivilegeEscalation: false"
            ));
        }
        let non_root = match &sc["runAsNonRoot"] {
            Value::Bool(b) => *b,
            _ => pod_non_root,
        };
        if !non_root {
            v.push(format!("Running as Non-root: {name} may run as root"));
        }
        if sc["runAsUser"] == 0 {
            v.push(format!("Running as Non-root user: {name} runs as user 0"));
        }
        let seccomp = if sc["seccompProfile"].is_null() {
            pod_seccomp
        } else {
            seccomp_ok(sc)
        };
        if !seccomp {
            v.push(format!(
                "Seccomp: {name} is not RuntimeDefault or Localhost"
            ));
        }
        let drops_all = sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            v.push(format!("Capabilities: {name} must drop ALL"));
        }
        for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if cap != "NET_BIND_SERVICE" {
                v.push(format!("Capabilities: {name} adds {cap}"));
            }
        }
    }
    v
}
