//! Kubernetes kinds and resources: the table of built-in API types (kind, group, plural
//! resource, short names, scope), the apimachinery rule that guesses a resource from a kind it
//! does not know, and the parsing of `KIND/NAME` as `kubectl` takes it (`po/web-0`,
//! `deployment.apps/web`, `Deployment/web`, `nodes/node-1`).
//!
//! Audit events name what they touch by resource (`pods`, `deployments`); Events by kind
//! (`Pod`, `Deployment`). The activity database keys every record by resource, so both meet.

/// One built-in API type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// `Pod`
    pub kind: &'static str,
    /// `""` for the core group, `apps`, `rbac.authorization.k8s.io`, ...
    pub group: &'static str,
    /// `pods`
    pub resource: &'static str,
    /// `kubectl`'s short names (`po`).
    pub short: &'static [&'static str],
    /// Whether objects of this type live in a namespace.
    pub namespaced: bool,
}

const fn k(
    kind: &'static str,
    group: &'static str,
    resource: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
) -> KindInfo {
    KindInfo {
        kind,
        group,
        resource,
        short,
        namespaced,
    }
}

/// The built-in types of Kubernetes 1.28 a user is likely to ask about.
pub const BUILTIN: &[KindInfo] = &[
    k("Pod", "", "pods", &["po"], true),
    k("Node", "", "nodes", &["no"], false),
    k("Namespace", "", "namespaces", &["ns"], false),
    k("Service", "", "services", &["svc"], true),
    k("Endpoints", "", "endpoints", &["ep"], true),
    k("ConfigMap", "", "configmaps", &["cm"], true),
    k("Secret", "", "secrets", &[], true),
    k("ServiceAccount", "", "serviceaccounts", &["sa"], true),
    k("Event", "", "events", &["ev"], true),
    k(
        "PersistentVolumeClaim",
        "",
        "persistentvolumeclaims",
        &["pvc"],
        true,
    ),
    k("PersistentVolume", "", "persistentvolumes", &["pv"], false),
    k(
        "ReplicationController",
        "",
        "replicationcontrollers",
        &["rc"],
        true,
    ),
    k("LimitRange", "", "limitranges", &["limits"], true),
    k("ResourceQuota", "", "resourcequotas", &["quota"], true),
    k("PodTemplate", "", "podtemplates", &[], true),
    k("Binding", "", "bindings", &[], true),
    k("ComponentStatus", "", "componentstatuses", &["cs"], false),
    k("Deployment", "apps", "deployments", &["deploy"], true),
    k("ReplicaSet", "apps", "replicasets", &["rs"], true),
    k("StatefulSet", "apps", "statefulsets", &["sts"], true),
    k("DaemonSet", "apps", "daemonsets", &["ds"], true),
    k(
        "ControllerRevision",
        "apps",
        "controllerrevisions",
        &[],
        true,
    ),
    k("Job", "batch", "jobs", &[], true),
    k("CronJob", "batch", "cronjobs", &["cj"], true),
    k(
        "HorizontalPodAutoscaler",
        "autoscaling",
        "horizontalpodautoscalers",
        &["hpa"],
        true,
    ),
    k(
        "PodDisruptionBudget",
        "policy",
        "poddisruptionbudgets",
        &["pdb"],
        true,
    ),
    k("Role", "rbac.authorization.k8s.io", "roles", &[], true),
    k(
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "rolebindings",
        &[],
        true,
    ),
    k(
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "clusterroles",
        &[],
        false,
    ),
    k(
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        &[],
        false,
    ),
    k("Ingress", "networking.k8s.io", "ingresses", &["ing"], true),
    k(
        "IngressClass",
        "networking.k8s.io",
        "ingressclasses",
        &[],
        false,
    ),
    k(
        "NetworkPolicy",
        "networking.k8s.io",
        "networkpolicies",
        &["netpol"],
        true,
    ),
    k("Lease", "coordination.k8s.io", "leases", &[], true),
    k(
        "EndpointSlice",
        "discovery.k8s.io",
        "endpointslices",
        &[],
        true,
    ),
    k(
        "StorageClass",
        "storage.k8s.io",
        "storageclasses",
        &["sc"],
        false,
    ),
    k("CSIDriver", "storage.k8s.io", "csidrivers", &[], false),
    k("CSINode", "storage.k8s.io", "csinodes", &[], false),
    k(
        "VolumeAttachment",
        "storage.k8s.io",
        "volumeattachments",
        &[],
        false,
    ),
    k(
        "PriorityClass",
        "scheduling.k8s.io",
        "priorityclasses",
        &["pc"],
        false,
    ),
    k(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        &["crd", "crds"],
        false,
    ),
    k(
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        &[],
        false,
    ),
    k(
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        &[],
        false,
    ),
    k(
        "CertificateSigningRequest",
        "certificates.k8s.io",
        "certificatesigningrequests",
        &["csr"],
        false,
    ),
    k(
        "APIService",
        "apiregistration.k8s.io",
        "apiservices",
        &[],
        false,
    ),
    k(
        "FlowSchema",
        "flowcontrol.apiserver.k8s.io",
        "flowschemas",
        &[],
        false,
    ),
    k(
        "PriorityLevelConfiguration",
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
        &[],
        false,
    ),
];

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → `""`).
pub fn group_of(api_version: &str) -> &str {
    match api_version.rsplit_once('/') {
        Some((g, _)) => g,
        None => "",
    }
}

/// The built-in type of a resource in a group (`None` for anything else).
pub fn by_resource(group: &str, resource: &str) -> Option<&'static KindInfo> {
    BUILTIN
        .iter()
        .find(|k| k.resource == resource && k.group == group)
}

/// The built-in type of a kind in a group.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static KindInfo> {
    BUILTIN.iter().find(|k| k.kind == kind && k.group == group)
}

/// The plural resource of a kind: the built-in one, else apimachinery's guess
/// (`UnsafeGuessKindToResource`: lower case, `s` → `ses`, `y` → `ies`, else `+s`).
pub fn resource_of_kind(group: &str, kind: &str) -> String {
    if let Some(k) = by_kind(group, kind) {
        return k.resource.to_string();
    }
    // An Event's involvedObject may carry a kind whose group it does not say.
    if let Some(k) = BUILTIN.iter().find(|k| k.kind == kind) {
        return k.resource.to_string();
    }
    let lower = kind.to_ascii_lowercase();
    if lower.is_empty() {
        return lower;
    }
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// The kind of a resource: the built-in one, else `None` (a guess back would be wrong too
/// often to show).
pub fn kind_of_resource(group: &str, resource: &str) -> Option<&'static str> {
    by_resource(group, resource).map(|k| k.kind)
}

/// What a user typed to name a type: `po`, `pods`, `Pod`, `deployment.apps`, `deploy`.
/// Resolved to a resource (and a group when the table or the text says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpec {
    /// The plural resource (`pods`).
    pub resource: String,
    /// The group when known (`Some("")` for the core group); `None` matches any group.
    pub group: Option<String>,
    /// The kind when known (`Pod`).
    pub kind: Option<String>,
    /// Whether it is namespaced, when known.
    pub namespaced: Option<bool>,
}

impl TypeSpec {
    /// Resolves a type name the way `kubectl` does for the built-in types; an unknown name is
    /// taken as a resource when it looks plural, else as a kind whose resource is guessed.
    pub fn parse(text: &str) -> Option<TypeSpec> {
        let text = text.trim();
        if text.is_empty() || text.contains(char::is_whitespace) {
            return None;
        }
        let (name, group) = match text.split_once('.') {
            Some((n, g)) if !g.is_empty() => (n, Some(g.to_ascii_lowercase())),
            Some(_) => return None,
            None => (text, None),
        };
        let lower = name.to_ascii_lowercase();
        let found = BUILTIN.iter().find(|k| {
            group.as_deref().is_none_or(|g| g == k.group)
                && (k.resource == lower
                    || k.kind.eq_ignore_ascii_case(&lower)
                    || k.short.contains(&lower.as_str()))
        });
        if let Some(k) = found {
            return Some(TypeSpec {
                resource: k.resource.to_string(),
                group: Some(k.group.to_string()),
                kind: Some(k.kind.to_string()),
                namespaced: Some(k.namespaced),
            });
        }
        // A resource name (`widgets`) or a kind (`Widget`): the first letter's case and the
        // plural ending tell which, as well as anything can without the server's discovery.
        let looks_like_kind = name.chars().next().is_some_and(char::is_uppercase);
        let resource = if !looks_like_kind && lower.ends_with('s') {
            lower
        } else {
            resource_of_kind("", name)
        };
        Some(TypeSpec {
            resource,
            group,
            kind: looks_like_kind.then(|| name.to_string()),
            namespaced: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_become_resources() {
        assert_eq!(resource_of_kind("", "Pod"), "pods");
        assert_eq!(resource_of_kind("apps", "ReplicaSet"), "replicasets");
        assert_eq!(
            resource_of_kind("networking.k8s.io", "Ingress"),
            "ingresses"
        );
        assert_eq!(resource_of_kind("example.com", "Policy"), "policies");
        assert_eq!(resource_of_kind("example.com", "Widget"), "widgets");
        assert_eq!(resource_of_kind("example.com", "Class"), "classes");
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
        assert_eq!(kind_of_resource("apps", "deployments"), Some("Deployment"));
    }

    #[test]
    fn type_names_as_kubectl_takes_them() {
        for t in ["po", "pod", "pods", "Pod"] {
            let s = TypeSpec::parse(t).unwrap();
            assert_eq!(s.resource, "pods", "{t}");
            assert_eq!(s.group.as_deref(), Some(""));
            assert_eq!(s.namespaced, Some(true));
        }
        let d = TypeSpec::parse("deployment.apps").unwrap();
        assert_eq!(
            (d.resource.as_str(), d.kind.as_deref()),
            ("deployments", Some("Deployment"))
        );
        assert_eq!(TypeSpec::parse("deploy").unwrap().resource, "deployments");
        assert_eq!(TypeSpec::parse("rs").unwrap().resource, "replicasets");
        assert_eq!(TypeSpec::parse("no").unwrap().namespaced, Some(false));
        assert_eq!(
            TypeSpec::parse("clusterrolebinding").unwrap().resource,
            "clusterrolebindings"
        );
        let crd = TypeSpec::parse("widgets.example.com").unwrap();
        assert_eq!(crd.resource, "widgets");
        assert_eq!(crd.group.as_deref(), Some("example.com"));
        assert_eq!(TypeSpec::parse("Widget").unwrap().resource, "widgets");
        assert_eq!(TypeSpec::parse(""), None);
        assert_eq!(TypeSpec::parse("pod."), None);
    }
}
