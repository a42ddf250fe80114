//! `reconciler` binary: flags, JSON logging, the rate-limited client, health/metrics server,
//! leader election and the Database controller.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api::catalog::Catalog;
use clap::Parser;
use kube::runtime::events::{Recorder, Reporter};
use opkit::parse_duration;
use reconciler::client::{build_client, build_lease_client, WriteLog};
use reconciler::controller::{run_controller, run_with_leader_election, Scope, Stopped};
use reconciler::http;
use reconciler::leader::{LeaderElector, LeaseSettings};
use reconciler::metrics::Metrics;
use reconciler::reconcile::{Context, Settings};
use tracing::{error, info};

/// Reconciles `Database` resources (example.com/v1) into StatefulSets, Services, ConfigMaps,
/// Secrets and backup CronJobs.
#[derive(Debug, Parser)]
#[command(name = "reconciler", version)]
struct Flags {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Maximum number of Databases reconciled at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Client-side limit of API requests per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    kube_qps: u32,
    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, default_value = "0.0.0.0:8081")]
    http_addr: SocketAddr,
    /// Replacement version catalog (YAML); default is the built-in catalog.
    #[arg(long)]
    catalog_file: Option<std::path::PathBuf>,
    /// An updated pod not Ready within this time stalls the rollout (Degraded).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    rollout_timeout: Duration,
    /// Cleanup waiting longer than this reports itself as blocked.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    cleanup_timeout: Duration,
    /// Periodic re-check of a Ready Database.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    resync_interval: Duration,
    /// Enable leader election (disable only for a single replica or local debugging).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, default_value = "db-operator-reconciler")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity in the Lease (default: the pod name / hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// Log format: json (default, for the cluster) or text.
    #[arg(long, default_value = "json")]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if format == "text" {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .with_env_filter(filter)
            .init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    init_logging(&flags.log_format);
    if flags.renew_deadline >= flags.lease_duration || flags.retry_period >= flags.renew_deadline {
        anyhow::bail!("leader election needs retry-period < renew-deadline < lease-duration");
    }

    let catalog = match &flags.catalog_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading catalog {}", path.display()))?;
            Catalog::from_yaml(&text)
                .map_err(|e| anyhow::anyhow!("catalog {}: {e}", path.display()))?
        }
        None => Catalog::builtin(),
    };

    let metrics = Arc::new(Metrics::new());
    let health = http::health(metrics.clone());
    let addr = http::spawn(flags.http_addr, health.clone())
        .await
        .with_context(|| format!("binding {}", flags.http_addr))?;
    info!(%addr, "serving /healthz /readyz /metrics");

    let config = kube::Config::infer().await.context("loading kube config")?;
    let writes = WriteLog::new(Some(metrics.clone()));
    let lease_writes = WriteLog::for_client(Some(metrics.clone()), "lease");
    let lease_client =
        build_lease_client(config.clone(), lease_writes).context("building Lease client")?;
    let client = build_client(config, flags.kube_qps, writes).context("building kube client")?;
    let identity = flags.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("reconciler-{}", std::process::id()))
    });
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "db-operator".to_owned(),
            instance: Some(identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        catalog,
        recorder,
        metrics.clone(),
        Settings {
            rollout_timeout: flags.rollout_timeout,
            cleanup_timeout: flags.cleanup_timeout,
            ready_requeue: flags.resync_interval,
            ..Settings::default()
        },
    ));
    let scope = Scope {
        namespace: flags.namespace.clone(),
        concurrency: flags.concurrency,
    };
    health.set_ready(true);

    if !flags.leader_elect {
        info!("leader election disabled");
        metrics.leader.set(1);
        run_controller(ctx, scope, opkit::shutdown::signal()).await;
        return Ok(());
    }
    let lease_namespace = flags
        .lease_namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let settings = LeaseSettings {
        name: flags.lease_name.clone(),
        namespace: lease_namespace,
        identity,
        lease_duration: flags.lease_duration,
        renew_deadline: flags.renew_deadline,
        retry_period: flags.retry_period,
    };
    let elector = LeaderElector::new(lease_client.clone(), settings.clone());
    match run_with_leader_election(ctx, scope, elector, opkit::shutdown::signal()).await {
        Stopped::Shutdown => {
            // Hand over without making the follower wait for the Lease to expire.
            if let Err(e) = LeaderElector::new(lease_client, settings).release().await {
                error!(error = %e, "failed to release the Lease");
            }
            info!("shut down");
            Ok(())
        }
        Stopped::LostLeadership => {
            error!("lost leadership; exiting so a restart rejoins as a follower");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_defaults_parse_and_flags_use_the_shared_syntax() {
        let flags = Flags::try_parse_from(["reconciler"]).unwrap();
        assert_eq!(flags.rollout_timeout, Duration::from_secs(300));
        assert_eq!(flags.lease_duration, Duration::from_secs(15));
        assert_eq!(flags.retry_period, Duration::from_secs(2));
        let flags = Flags::try_parse_from(["reconciler", "--resync-interval", "1h30m"]).unwrap();
        assert_eq!(flags.resync_interval, Duration::from_secs(5400));
        for bad in ["-5s", "5", "soon"] {
            assert!(
                Flags::try_parse_from(["reconciler", "--cleanup-timeout", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
