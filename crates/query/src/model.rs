//! The queries and the answers, all serializable: a query's inputs fit a URL's query string
//! (`to_query_string` / `from_query_string`, one flat key per input) or a command line, and
//! every answer is JSON (`kubetrail who -o json` prints a [`Story`]).

use serde::{Deserialize, Serialize};

use crate::spec::{Cursor, List, ObjectSpec, Order, Position, RecordClass, TimeSpec};

/// Which records a timeline shows. Every input is optional; together they narrow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimelineQuery {
    /// Records at or after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<TimeSpec>,
    /// Records before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<TimeSpec>,
    /// The namespace of the object a record is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// One object (`pod/web-0`) or one type (`pods`), its subresources included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectSpec>,
    /// The user who made a request, or whom it impersonated (a service account is a user:
    /// `system:serviceaccount:NS:NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A group the requesting user was in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Audit verbs (`create,delete`).
    #[serde(skip_serializing_if = "List::is_empty")]
    pub verb: List,
    /// A subresource (`eviction`, `exec`, `scale`, `binding`, `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// Event reasons (`BackOff,Evicted`).
    #[serde(skip_serializing_if = "List::is_empty")]
    pub reason: List,
    /// Only audit events, only Events or only gap records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<RecordClass>,
    /// Only Warning Events.
    #[serde(skip_serializing_if = "is_false")]
    pub warnings: bool,
    /// Only failed requests (response code 400 and above: refused, forbidden, failed).
    #[serde(skip_serializing_if = "is_false")]
    pub failed: bool,
    /// Only requests that change something (create, update, patch, delete, deletecollection)
    /// and the other kinds of records; reads (get, list, watch) left out.
    #[serde(skip_serializing_if = "is_false")]
    pub writes: bool,
    /// Newest first (default) or oldest first.
    #[serde(skip_serializing_if = "is_newest")]
    pub order: Order,
    /// Where the page starts (the `next` of the previous page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Live updates: only records stored after this position, oldest first (`order` and
    /// `cursor` are then ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Position>,
    /// Records per page (default 100, at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_newest(o: &Order) -> bool {
    *o == Order::Newest
}

/// The query-string form of a query, and back (`namespace=shop&verb=delete,create`).
macro_rules! query_string {
    ($t:ty) => {
        impl $t {
            /// The query as a URL query string (without `?`).
            pub fn to_query_string(&self) -> String {
                serde_urlencoded::to_string(self).unwrap_or_default()
            }
            /// Reads a URL query string (without `?`); unknown keys are refused.
            pub fn from_query_string(s: &str) -> Result<Self, crate::QueryError> {
                serde_urlencoded::from_str(s)
                    .map_err(|e| crate::QueryError::BadQuery(e.to_string()))
            }
        }
    };
}

query_string!(TimelineQuery);
query_string!(WhoQuery);

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most records one page holds.
pub const MAX_LIMIT: u32 = 1000;

impl TimelineQuery {
    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// A page of a timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePage {
    /// The records, in the order asked for.
    pub entries: Vec<Entry>,
    /// Where the next page starts, when there may be more (pass it as `cursor`).
    pub next: Option<Cursor>,
    /// The newest position this answer covers: pass it as `after` to get what is stored
    /// later (live updates).
    pub position: Position,
}

/// One object's story: `kubetrail who`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhoQuery {
    /// The object: `pod/web-0`, `deployment.apps/web`, `node/node-1`.
    pub object: Option<ObjectSpec>,
    /// Its namespace; without one, the object is looked for in every namespace (and the
    /// answer is an error naming them when it exists in several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The window: records at or after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<TimeSpec>,
    /// Records before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<TimeSpec>,
}

/// A group, resource, namespace and name: what a record is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The API group (`""`: core).
    pub group: String,
    /// The plural resource (`pods`).
    pub resource: String,
    /// The kind (`Pod`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The namespace (none for cluster-scoped objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
    /// The uid, when the records show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Who acted: the user of an audit event, or the component that reported an Event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// A short name for people: `alice`, `replicaset-controller`, `kubelet on node-1`,
    /// `kube-scheduler`, `taint-controller (Event)`.
    pub display: String,
    /// The authenticated user, for audit events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `NAMESPACE/NAME` when the user is a service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The user the request impersonated, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated: Option<String>,
    /// The reporting component, for Events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The client the request came from (its user agent), for audit events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The address the request came from, for audit events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Whether this actor is a person or an outside client (not a controller of the cluster
    /// itself): where a chain of causes ends.
    pub external: bool,
}

/// One record, as a timeline row or a story step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The record id (fetch the record itself with it).
    pub id: String,
    /// Where the record sits in the store's order.
    pub position: Position,
    /// When it happened (an audit event: when the request was received; an Event: its
    /// last occurrence), RFC 3339.
    pub time: String,
    /// `k8s_audit`, `k8s_event`, `gap`, `error`.
    pub record_kind: String,
    /// What the record is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// The subresource of a request (`eviction`, `scale`, `status`, `binding`, `exec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// The audit verb.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// Who.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// Where the request came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// The client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The response code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// Whether the request failed (code 400 and above).
    pub failed: bool,
    /// The response's message, for failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// The Event's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The Event's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The Event's message (or a gap record's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many times the Event had occurred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// One line for people: `carol create pods/web-1/eviction → 201`.
    pub summary: String,
}

/// A stored record exactly as it was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The record id.
    pub id: String,
    /// Where it sits in the store's order.
    pub position: Position,
    /// The record (the JSON kubetrail delivered).
    pub record: serde_json::Value,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// It was created.
    Created,
    /// Its spec or data changed (other than the cases below).
    Updated,
    /// Its replica count changed.
    Scaled,
    /// A Deployment's (or other workload's) pod template changed: a new revision rolls out.
    RolledOut,
    /// A workload was restarted (`kubectl rollout restart`), or a container restarted.
    Restarted,
    /// Its deletion was asked for; it goes away once its finalizers or its kubelet are done.
    DeletionRequested,
    /// It was evicted (a graceful deletion asked for through the Eviction API, by the taint
    /// manager, by the scheduler's preemption, or a pod failed by its kubelet under node
    /// pressure).
    Evicted,
    /// It was removed from the API.
    Deleted,
    /// A pod was bound to a node by the scheduler.
    Bound,
    /// A node was marked unschedulable.
    Cordoned,
    /// A node was marked schedulable again.
    Uncordoned,
    /// A taint was added to a node.
    Tainted,
    /// A taint was removed from a node.
    Untainted,
    /// A node's Ready condition became False or Unknown.
    NotReady,
    /// A node's Ready condition became True.
    Ready,
    /// A node reported memory, disk or PID pressure.
    UnderPressure,
}

impl ChangeKind {
    /// The word for people.
    pub fn word(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Scaled => "scaled",
            ChangeKind::RolledOut => "rolled out",
            ChangeKind::Restarted => "restarted",
            ChangeKind::DeletionRequested => "deletion requested",
            ChangeKind::Evicted => "evicted",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Bound => "bound",
            ChangeKind::Cordoned => "cordoned",
            ChangeKind::Uncordoned => "uncordoned",
            ChangeKind::Tainted => "tainted",
            ChangeKind::Untainted => "untainted",
            ChangeKind::NotReady => "not ready",
            ChangeKind::Ready => "ready",
            ChangeKind::UnderPressure => "under pressure",
        }
    }
}

/// One change of the object and the chain of causes that led to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What happened.
    pub what: ChangeKind,
    /// When (RFC 3339).
    pub time: String,
    /// Who did it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The change for people: `scaled 3→5`, `evicted through the Eviction API`.
    pub summary: String,
    /// The records that show it.
    pub record_ids: Vec<String>,
    /// Why: `causes[0]` led to this change, `causes[1]` to `causes[0]`, and so on, up to an
    /// actor outside the cluster's own controllers, or to where the records end.
    pub causes: Vec<Cause>,
    /// Why the chain stops where it does, when the evidence to go on is not in the records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// One step of a chain of causes: a change of some object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// The object that changed.
    pub object: ObjectRef,
    /// What happened to it.
    pub what: ChangeKind,
    /// When (RFC 3339).
    pub time: String,
    /// Who did it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The change for people.
    pub summary: String,
    /// How it led to the step before it: `owner`, `replicas`, `replacement`, `node`, ...
    /// with the evidence in words.
    pub link: String,
    /// The records that show the change (and the link).
    pub record_ids: Vec<String>,
}

/// What the records say about the object at the end of the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndState {
    /// `exists`, `terminating`, `failed` (a pod its kubelet evicted), `deleted` or `unknown`.
    pub state: String,
    /// Since when (RFC 3339), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// For people: `terminating since 23:03:58 (deletion asked by node-controller; no
    /// record shows it removed)`.
    pub detail: String,
    /// The records that show it.
    pub record_ids: Vec<String>,
}

/// An object a workload made (a Deployment's ReplicaSets, a ReplicaSet's pods), with its
/// own end state and what it made in turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Child {
    /// The object.
    pub object: ObjectRef,
    /// When it was created (RFC 3339), when the records show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Its end state.
    pub state: EndState,
    /// What it made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
}

/// `kubetrail who`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Story {
    /// The object.
    pub object: ObjectRef,
    /// Every uid the object had in the window (more than one if it was made again).
    pub uids: Vec<String>,
    /// The window's bounds as resolved (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The window's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Every record about the object (its subresources included, and Events naming it),
    /// oldest first.
    pub steps: Vec<Entry>,
    /// Its changes, oldest first, each with its causes.
    pub changes: Vec<Change>,
    /// Its state at the end of the window.
    pub state: EndState,
    /// What it made (for workloads).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
    /// Evidence the answer needed and the records do not hold (an audit policy that left
    /// something out, Events lost or expired, records outside the window).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Whether the object had more records than one answer shows (the oldest are left out).
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}
