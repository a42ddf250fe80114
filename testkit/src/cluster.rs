//! Finding, attaching to, and if needed starting the local control plane.
//!
//! Module dependencies go one way: `wait` and `logs` know nothing of the cluster, `cluster`
//! uses `wait`, and `namespace` uses both (it adds [`Cluster::namespace`]).
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::conditions;
use kube::ResourceExt;
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::error::Error;

/// Environment variable naming a kubeconfig to use instead of `.local/kubeconfig`. When it is
/// set the harness never starts a cluster itself.
pub const KUBECONFIG_ENV: &str = "DBOP_KUBECONFIG";

/// How long the API server gets to answer `/version` before the cluster counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a freshly applied CRD gets to become `Established`.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// A reachable cluster, shared by every test of a test binary.
///
/// It holds configuration only: [`Cluster::client`] builds a new [`kube::Client`] on the calling
/// test's runtime (each `#[tokio::test]` has its own runtime, and a client must not outlive the
/// runtime it was built on).
#[derive(Debug)]
pub struct Cluster {
    config: Config,
    kubeconfig: PathBuf,
    repo_root: PathBuf,
    log_dir: PathBuf,
}

/// Attaches to the local cluster, starting it with `deploy/local/up` when it is not running.
///
/// The first call in a test binary does the work; later calls return the same handle. Starting
/// is skipped when `DBOP_KUBECONFIG` is set: that cluster must already be up.
pub async fn cluster() -> Result<&'static Cluster, Error> {
    let cluster = CLUSTER.get_or_try_init(Cluster::attach_or_start).await?;
    // From now on a timed-out wait prints these logs.
    crate::logs::remember_cluster_log_dir(&cluster.log_dir);
    Ok(cluster)
}

impl Cluster {
    async fn attach_or_start() -> Result<Cluster, Error> {
        let repo_root = repo_root()?;
        let log_dir = repo_root.join(".local").join("logs");
        if let Some(path) = std::env::var_os(KUBECONFIG_ENV) {
            let path = PathBuf::from(path);
            return Cluster::attach(path, repo_root, log_dir).await;
        }
        let kubeconfig = repo_root.join(".local").join("kubeconfig");
        if kubeconfig.exists() {
            match Cluster::attach(kubeconfig.clone(), repo_root.clone(), log_dir.clone()).await {
                Ok(cluster) => return Ok(cluster),
                Err(e) => tracing::info!(error = %e, "local cluster not usable; starting it"),
            }
        }
        run_up(&repo_root, &log_dir).await?;
        Cluster::attach(kubeconfig, repo_root, log_dir).await
    }

    async fn attach(
        kubeconfig: PathBuf,
        repo_root: PathBuf,
        log_dir: PathBuf,
    ) -> Result<Cluster, Error> {
        let config = load_config(&kubeconfig).await?;
        let cluster = Cluster {
            config,
            kubeconfig,
            repo_root,
            log_dir,
        };
        let client = cluster.client()?;
        match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(version)) => {
                tracing::debug!(version = %version.git_version, server = %cluster.config.cluster_url, "attached to cluster");
                Ok(cluster)
            }
            Ok(Err(e)) => Err(Error::Unreachable {
                path: cluster.kubeconfig,
                reason: e.to_string(),
            }),
            Err(_) => Err(Error::Unreachable {
                path: cluster.kubeconfig,
                reason: format!("no answer to GET /version within {PROBE_TIMEOUT:?}"),
            }),
        }
    }

    /// A new admin (`system:masters`) client bound to the calling runtime.
    pub fn client(&self) -> Result<Client, Error> {
        self.client_from(self.config.clone())
    }

    /// A client that impersonates `user` (and `groups`) through the admin credentials, for
    /// testing what RBAC allows a less privileged identity. `system:authenticated` is added by
    /// the API server.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            (!groups.is_empty()).then(|| groups.iter().map(|g| (*g).to_owned()).collect());
        self.client_from(config)
    }

    /// A client acting as the ServiceAccount `namespace/name` (user
    /// `system:serviceaccount:<namespace>:<name>` with the ServiceAccount groups).
    pub fn client_as_service_account(&self, namespace: &str, name: &str) -> Result<Client, Error> {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let ns_group = format!("system:serviceaccounts:{namespace}");
        self.client_as(&user, &["system:serviceaccounts", &ns_group])
    }

    fn client_from(&self, config: Config) -> Result<Client, Error> {
        Client::try_from(config).map_err(|source| Error::Client {
            path: self.kubeconfig.clone(),
            source,
        })
    }

    /// Installs (server-side apply, forced, as `field_manager`) a CustomResourceDefinition and
    /// waits until the API server reports it `Established`, so the test can use its resource.
    pub async fn install_crd(
        &self,
        crd: &CustomResourceDefinition,
        field_manager: &str,
    ) -> Result<(), Error> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client()?);
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(crd),
        )
        .await
        .map_err(|source| Error::Api {
            context: format!("failed to apply CustomResourceDefinition {name}"),
            source,
        })?;
        let what = format!("CustomResourceDefinition {name} to be established");
        crate::wait::await_condition(
            &crds,
            &name,
            CRD_ESTABLISH_TIMEOUT,
            &what,
            conditions::is_crd_established(),
        )
        .await
        .map(drop)
    }

    /// The kubeconfig the harness uses (admin credentials).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs kubectl (`$DBOP_BIN_DIR/kubectl`, else `kubectl` on PATH) with the admin kubeconfig:
    /// `Ok(stdout)` on success, `Err` naming the command with its stdout and stderr otherwise.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let bin = std::env::var_os("DBOP_BIN_DIR")
            .map(|d| PathBuf::from(d).join("kubectl"))
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let out = tokio::process::Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "kubectl {} ({}): stdout {stdout:?} stderr {:?}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The kube client configuration (admin credentials), e.g. to derive other identities.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The repository root (the directory holding `deploy/local/up`).
    pub fn repo_root(&self) -> &Path {
        &self.repo_root
    }

    /// Directory of the component logs (`.local/logs`).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Prints the tails of all component logs to stderr (see [`crate::dump_logs`]).
    pub fn dump_logs(&self) {
        crate::logs::dump_logs(&self.log_dir);
    }
}

async fn load_config(path: &Path) -> Result<Config, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_owned(),
            source,
        })
}

/// Walks up from the crate under test (runtime `CARGO_MANIFEST_DIR`, else this crate's) to the
/// directory that contains `deploy/local/up`.
fn repo_root() -> Result<PathBuf, Error> {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join("deploy").join("local").join("up").is_file())
        .map(Path::to_path_buf)
        .ok_or(Error::RepoRootNotFound(start))
}

/// Runs `deploy/local/up` (which builds missing binaries and serializes concurrent callers with
/// a file lock). Its output goes to the test's stderr. The host operator stays off
/// (`DBOP_OPERATOR=off`, as `deploy/local/test-env` does): tests run their own controllers and
/// webhooks, and a cluster-wide webhook or a second reconciler would interfere with them.
async fn run_up(repo_root: &Path, log_dir: &Path) -> Result<(), Error> {
    let up = repo_root.join("deploy").join("local").join("up");
    let command = up.display().to_string();
    eprintln!("testkit: no local cluster answering; running {command} (a cold build of the binaries takes a while)");
    let status = tokio::process::Command::new(&up)
        .current_dir(repo_root)
        .env("DBOP_OPERATOR", "off")
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| Error::StartCluster {
            command: command.clone(),
            reason: e.to_string(),
            log_dir: log_dir.to_owned(),
        })?;
    if status.success() {
        Ok(())
    } else {
        crate::logs::dump_logs(log_dir);
        Err(Error::StartCluster {
            command,
            reason: status.to_string(),
            log_dir: log_dir.to_owned(),
        })
    }
}
