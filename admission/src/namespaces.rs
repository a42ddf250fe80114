//! Namespace label cache feeding the "3 replicas in production namespaces" default.
//!
//! With cluster access, a metadata-only reflector keeps every Namespace's labels in memory; a
//! lookup is a hash-map read, never an API call on the request path. Without cluster access
//! the cache is [`NamespaceCache::Disabled`] and lookups answer `None`, which tells
//! `api::defaulting` to skip the rule.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::task::JoinHandle;

/// The label and value that mark a production namespace.
pub const PRODUCTION_LABEL: (&str, &str) = ("environment", "production");

/// Where namespace labels come from.
#[derive(Clone)]
pub enum NamespaceCache {
    /// No cluster: the production rule is skipped.
    Disabled,
    /// A watch-fed store; `synced` turns true after the first complete list.
    Watched {
        store: Store<PartialObjectMeta<Namespace>>,
        synced: Arc<AtomicBool>,
    },
}

impl std::fmt::Debug for NamespaceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamespaceCache::Disabled => f.write_str("NamespaceCache::Disabled"),
            NamespaceCache::Watched { store, synced } => f
                .debug_struct("NamespaceCache::Watched")
                .field("namespaces", &store.len())
                .field("synced", &synced.load(Ordering::Relaxed))
                .finish(),
        }
    }
}

impl NamespaceCache {
    /// Starts watching namespace metadata with `client`. The returned task runs until aborted;
    /// watch errors are retried with kube's default backoff and logged.
    pub fn watch(client: kube::Client) -> (NamespaceCache, JoinHandle<()>) {
        // `Api<PartialObjectMeta<_>>` makes metadata-only list/watch requests: labels are all we need.
        let api = kube::Api::<PartialObjectMeta<Namespace>>::all(client);
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let cache = NamespaceCache::Watched {
            store: store.clone(),
            synced: synced.clone(),
        };
        let task = tokio::spawn(async move {
            let ready = {
                let store = store.clone();
                let synced = synced.clone();
                async move {
                    if store.wait_until_ready().await.is_ok() {
                        synced.store(true, Ordering::Release);
                        tracing::info!(namespaces = store.len(), "namespace cache synced");
                    }
                }
            };
            let events = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default()).default_backoff(),
            )
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "namespace watch failed; retrying");
                }
            });
            futures::join!(ready, events);
        });
        (cache, task)
    }

    /// Whether lookups can be trusted: always for `Disabled`, after the first list otherwise.
    pub fn is_ready(&self) -> bool {
        match self {
            NamespaceCache::Disabled => true,
            NamespaceCache::Watched { synced, .. } => synced.load(Ordering::Acquire),
        }
    }

    /// `Some(true)` for a namespace labelled `environment: production`, `Some(false)` for any
    /// other known namespace, `None` when there is no cluster, the cache has not synced yet, or
    /// the namespace is not (yet) in the cache: the defaulting rule is then skipped rather than
    /// guessed.
    pub fn production_namespace(&self, namespace: Option<&str>) -> Option<bool> {
        let NamespaceCache::Watched { store, synced } = self else {
            return None;
        };
        if !synced.load(Ordering::Acquire) {
            return None;
        }
        let ns = store.get(&ObjectRef::new(namespace?))?;
        Some(is_production(ns.metadata.labels.as_ref()))
    }
}

/// True when the labels carry `environment: production`.
pub fn is_production(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(PRODUCTION_LABEL.0))
        .is_some_and(|v| v == PRODUCTION_LABEL.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use std::collections::BTreeMap;

    fn ns(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        let mut meta = PartialObjectMeta::<Namespace>::default();
        meta.metadata.name = Some(name.to_owned());
        meta.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        );
        meta
    }

    fn watched(namespaces: Vec<PartialObjectMeta<Namespace>>, synced: bool) -> NamespaceCache {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for n in namespaces {
            writer.apply_watcher_event(&Event::InitApply(n));
        }
        writer.apply_watcher_event(&Event::InitDone);
        NamespaceCache::Watched {
            store,
            synced: Arc::new(AtomicBool::new(synced)),
        }
    }

    #[test]
    fn production_label_is_reported_per_namespace() {
        let cache = watched(
            vec![
                ns("prod", &[("environment", "production")]),
                ns("staging", &[("environment", "staging")]),
                ns("bare", &[]),
            ],
            true,
        );
        assert_eq!(cache.production_namespace(Some("prod")), Some(true));
        assert_eq!(cache.production_namespace(Some("staging")), Some(false));
        assert_eq!(cache.production_namespace(Some("bare")), Some(false));
        assert_eq!(cache.production_namespace(Some("unknown")), None);
        assert_eq!(cache.production_namespace(None), None);
        assert!(cache.is_ready());
    }

    #[test]
    fn unsynced_cache_skips_the_rule_and_is_not_ready() {
        let cache = watched(vec![ns("prod", &[("environment", "production")])], false);
        assert_eq!(cache.production_namespace(Some("prod")), None);
        assert!(!cache.is_ready());
    }

    #[test]
    fn without_cluster_the_rule_is_skipped() {
        let cache = NamespaceCache::Disabled;
        assert_eq!(cache.production_namespace(Some("prod")), None);
        assert!(cache.is_ready());
    }
}
