//! The records an answer rests on, gathered object by object. The cause rules run over what
//! is loaded and say what else they need (an owner, a node, an owner's other children); the
//! story's driver fetches that and runs them again, until nothing new is needed. The rules
//! themselves never touch a database, so they are tested on records made up in memory.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use kubetrail_activity::kinds;

use crate::backend::ObjectKey;
use crate::history::History;

/// Something the rules need that is not loaded yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Need {
    /// An object's records.
    Object(ObjectKey),
    /// The objects an owner (by uid) made.
    Owned(String),
    /// The object with this uid.
    Uid(String),
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.resource, &self.namespace, &self.name).cmp(&(
            &other.resource,
            &other.namespace,
            &other.name,
        ))
    }
}

/// What is loaded.
#[derive(Default)]
pub(crate) struct Evidence {
    pub histories: BTreeMap<ObjectKey, History>,
    /// Owner uid → the objects whose records name it as their owner.
    pub owned: BTreeMap<String, Vec<ObjectKey>>,
    /// Uid → the object that has it (`None`: no record has it).
    pub uids: BTreeMap<String, Option<ObjectKey>>,
    needs: RefCell<BTreeSet<Need>>,
}

impl Evidence {
    /// An object's history, or a note that it is needed.
    pub fn history(&self, key: &ObjectKey) -> Option<&History> {
        let h = self.histories.get(key);
        if h.is_none() {
            self.needs.borrow_mut().insert(Need::Object(key.clone()));
        }
        h
    }

    /// What an owner made, or a note that it is needed.
    pub fn children(&self, owner_uid: &str) -> Option<&[ObjectKey]> {
        let c = self.owned.get(owner_uid).map(Vec::as_slice);
        if c.is_none() {
            self.needs
                .borrow_mut()
                .insert(Need::Owned(owner_uid.to_string()));
        }
        c
    }

    /// The object with a uid (`Some(None)`: known to be absent), or a note that it is needed.
    pub fn by_uid(&self, uid: &str) -> Option<Option<&History>> {
        match self.uids.get(uid) {
            None => {
                self.needs.borrow_mut().insert(Need::Uid(uid.to_string()));
                None
            }
            Some(None) => Some(None),
            Some(Some(k)) => self.history(k).map(Some),
        }
    }

    /// The needs noted since the last call.
    pub fn take_needs(&self) -> Vec<Need> {
        std::mem::take(&mut *self.needs.borrow_mut())
            .into_iter()
            .collect()
    }
}

/// The key of an owner named by an owner reference, seen from an object in `namespace`.
pub(crate) fn owner_key(
    owner: &kubetrail_activity::Owner,
    child_namespace: &Option<Option<String>>,
) -> ObjectKey {
    let resource = kinds::resource_of_kind(&owner.group, &owner.kind);
    let namespaced = kinds::by_kind(&owner.group, &owner.kind).is_none_or(|k| k.namespaced);
    ObjectKey {
        resource,
        name: owner.name.clone(),
        namespace: Some(if namespaced {
            child_namespace.clone().flatten()
        } else {
            None
        }),
    }
}

/// The key of a node.
pub(crate) fn node_key(name: &str) -> ObjectKey {
    ObjectKey {
        resource: "nodes".into(),
        name: name.to_string(),
        namespace: Some(None),
    }
}
