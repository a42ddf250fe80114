//! One fresh namespace per test, removed afterwards.
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, ServiceAccount};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, Config, Resource};

use crate::cluster::Cluster;
use crate::error::Error;
use crate::wait::{wait_for, NotYet};

/// Label put on every test namespace (`kubectl delete ns -l app.kubernetes.io/managed-by=testkit`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on test namespaces.
pub const MANAGED_BY_VALUE: &str = "testkit";
/// Label holding the (sanitized) prefix the test asked for, to find a test's leftovers.
const TEST_LABEL: &str = "testkit.example.com/test";
/// Events printed for a failed test's namespace.
const EVENTS_SHOWN: usize = 30;

/// A namespace owned by one test, with an admin client.
///
/// Call [`TestNamespace::cleanup`] at the end of the test. If the test panics first, dropping the
/// namespace prints the component log tails and the namespace's recent events, then deletes it
/// anyway (set `DBOP_KEEP_NAMESPACES=1` to keep it for inspection).
pub struct TestNamespace {
    name: String,
    client: Client,
    config: Config,
    log_dir: PathBuf,
    cleaned_up: bool,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl Cluster {
    /// Creates a fresh, uniquely named namespace (`<prefix>-<random>`) for one test. See
    /// [`TestNamespace`].
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        TestNamespace::create(self, prefix).await
    }
}

impl TestNamespace {
    async fn create(cluster: &Cluster, prefix: &str) -> Result<TestNamespace, Error> {
        let client = cluster.client()?;
        let prefix = sanitize(prefix);
        let name = format!("{prefix}-{}", unique_suffix());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [
                        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                        (TEST_LABEL.to_owned(), prefix.clone()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| Error::Api {
                context: format!("failed to create test namespace {name}"),
                source,
            })?;
        tracing::debug!(namespace = %name, "created test namespace");
        let ns = TestNamespace {
            name,
            client,
            config: cluster.config().clone(),
            log_dir: cluster.log_dir().to_owned(),
            cleaned_up: false,
        };
        // Pods are rejected until the controller-manager has created the `default`
        // ServiceAccount; waiting here saves every test from racing it.
        let accounts: Api<ServiceAccount> = ns.api();
        wait_for(
            Duration::from_secs(30),
            &format!("ServiceAccount {}/default", ns.name),
            || async {
                accounts
                    .get_opt("default")
                    .await?
                    .map(|_| ())
                    .ok_or_else(|| NotYet::new("absent"))
            },
        )
        .await?;
        Ok(ns)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin client this namespace was created with.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A namespaced [`Api`] for `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (without waiting for its contents to be finalized).
    pub async fn cleanup(mut self) -> Result<(), Error> {
        self.cleaned_up = true;
        delete_namespace(self.client.clone(), &self.name).await
    }
}

async fn delete_namespace(client: Client, name: &str) -> Result<(), Error> {
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Api {
            context: format!("failed to delete test namespace {name}"),
            source,
        }),
    }
}

/// Prints the namespace's most recent events (what controllers and the scheduler said).
async fn print_events(client: Client, namespace: &str) {
    let events: Api<Event> = Api::namespaced(client, namespace);
    match events.list(&ListParams::default()).await {
        Ok(list) => {
            let mut items = list.items;
            items.sort_by_key(|e| {
                e.metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse::<u64>().ok())
            });
            let shown = &items[items.len().saturating_sub(EVENTS_SHOWN)..];
            eprintln!(
                "----- testkit: last {} events in namespace {namespace} -----",
                shown.len()
            );
            for e in shown {
                let object = &e.involved_object;
                eprintln!(
                    "{} {} {}/{}: {}",
                    e.type_.as_deref().unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("-"),
                    object.kind.as_deref().unwrap_or("-"),
                    object.name.as_deref().unwrap_or("-"),
                    e.message.as_deref().unwrap_or(""),
                );
            }
        }
        Err(e) => eprintln!("testkit: cannot list events in {namespace}: {e}"),
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        let failed = std::thread::panicking();
        if failed {
            eprintln!("testkit: test failed while using namespace {}", self.name);
            crate::logs::dump_logs(&self.log_dir);
        }
        let keep = std::env::var_os("DBOP_KEEP_NAMESPACES").is_some();
        if keep {
            eprintln!(
                "testkit: keeping namespace {} (DBOP_KEEP_NAMESPACES)",
                self.name
            );
            if !failed {
                return;
            }
        }
        // The test's runtime may be shutting down, so use a private runtime and client.
        let config = self.config.clone();
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                if failed {
                    print_events(client.clone(), &name).await;
                }
                if keep {
                    return Ok(());
                }
                delete_namespace(client, &name)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("testkit: {e}"),
            Err(_) => eprintln!("testkit: deleting namespace {} panicked", self.name),
        }
    }
}

/// Lowercase alphanumerics and dashes, at most 40 characters, never empty.
fn sanitize(prefix: &str) -> String {
    let mut out: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    out = out.trim_matches('-').to_owned();
    if out.is_empty() {
        out.push_str("test");
    }
    out
}

/// 8 hex digits, unique across the tests of a process and unlikely to repeat across processes.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::{sanitize, unique_suffix};

    #[test]
    fn namespace_prefix_becomes_a_dns_label() {
        let (long, forty) = ("a".repeat(80), "a".repeat(40));
        let cases = [
            ("StatefulSet_Ready", "statefulset-ready"),
            ("--x--", "x"),
            ("", "test"),
            (long.as_str(), forty.as_str()),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), want, "input {input:?}");
        }
    }

    #[test]
    fn suffixes_differ_between_calls() {
        assert_ne!(unique_suffix(), unique_suffix());
    }
}
