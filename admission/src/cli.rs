//! Command-line interface of the `admission` binary (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use opkit::parse_duration;

use crate::logging::LogFormat;
use crate::router::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "admission",
    version,
    about = "Admission and conversion webhooks for example.com Databases"
)]
pub struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "ADMISSION_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup; boxing the large `serve` flags would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /validate, /mutate, /convert, /healthz, /readyz and /metrics over HTTPS.
    Serve(ServeArgs),
    /// Default and validate a Database manifest offline; exit 1 on denial, 3 on unreadable input.
    Check(CheckArgs),
    /// Write a development CA and a serving certificate for localhost (ca.crt, tls.crt, tls.key).
    DevCert(DevCertArgs),
    /// Print the version catalog: engines, supported versions, images and allowed upgrades.
    Catalog(CatalogArgs),
}

/// A count of at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443", env = "ADMISSION_LISTEN")]
    pub listen: SocketAddr,
    /// PEM certificate chain served to clients (leaf first), e.g. from cert-manager or
    /// `admission dev-cert`. Re-read every --cert-reload-interval, so a rotation on disk needs
    /// no restart. Outside --cert-dir this turns certificate management off; default:
    /// <cert-dir>/tls.crt.
    #[arg(long, env = "ADMISSION_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (default: <cert-dir>/tls.key).
    #[arg(long, env = "ADMISSION_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With managed certificates: how long to wait for the certificate files in --cert-dir
    /// (the Secret's mount in a pod, which the kubelet fills after the Secret is created).
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub cert_files_timeout: Duration,
    /// Certificate management (Secret, rotation, caBundle injection), shared with the `certs`
    /// crate.
    #[command(flatten)]
    pub certs: certs::CertConfig,
    /// Replacement version catalog (YAML); the built-in catalog otherwise.
    #[arg(long, env = "ADMISSION_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Kubeconfig for the namespace cache (default: in-cluster, then $KUBECONFIG/~/.kube/config).
    #[arg(long, conflicts_with_all = ["in_cluster", "no_cluster"])]
    pub kubeconfig: Option<PathBuf>,
    /// Use the in-cluster service account for the namespace cache.
    #[arg(long, conflicts_with = "no_cluster")]
    pub in_cluster: bool,
    /// Run without a cluster: the production-namespace replicas default is skipped.
    #[arg(long, env = "ADMISSION_NO_CLUSTER")]
    pub no_cluster: bool,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed for a TLS handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Time allowed for HTTP/1 request headers.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Time allowed for receiving a request body (within --request-timeout).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Time allowed for a whole webhook request, body included; answered 503 beyond it. Keep
    /// it below the webhook configurations' `timeoutSeconds` (10 in the install) so the API
    /// server gets our answer rather than its own timeout.
    #[arg(long, default_value = "9s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Reviews admitted at once (reading, queued or evaluating); one more is answered 429 with
    /// `Retry-After: 1` before its body is read.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub max_in_flight: usize,
    /// Body bytes of the reviews admitted at once (declared Content-Length, or
    /// --max-body-bytes when undeclared); beyond it 429. At least --max-body-bytes.
    #[arg(long, default_value_t = 24 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,
    /// Reviews decoded and evaluated at once on the blocking pool (default: one per core, at
    /// least 2).
    #[arg(long, value_parser = positive)]
    pub review_workers: Option<usize>,
    /// Open connections at once; beyond it a new connection is accepted and closed at once.
    #[arg(long, default_value_t = 256, value_parser = positive)]
    pub max_connections: usize,
    /// Close a connection that has had no request in flight for this long (HTTP/1.1
    /// keep-alive and HTTP/2, the latter with GOAWAY; the API server reconnects).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Close a connection whose first request has not arrived this long after it was accepted
    /// (TLS handshake included).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub first_request_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// After SIGTERM, keep serving this long with /readyz failing (so the Service drops the
    /// pod before the listener closes); 5s suits a Deployment, 0s a terminal.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
}

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// The `certs` manager keeps the Secret and caBundle current and the files in --cert-dir
    /// (mounted, or written by the manager); the server waits for them, then reloads them.
    Managed,
    /// Only load and reload these files (cert-manager, dev-cert, or no cluster).
    Files { cert: PathBuf, key: PathBuf },
}

impl ServeArgs {
    /// Picks the certificate source: managed when `--manage-certs` is on (the default), a
    /// cluster is available, and `--tls-cert`/`--tls-key`, if given, are the files in
    /// `--cert-dir`; otherwise files only.
    pub fn cert_source(&self, cluster_available: bool) -> CertSource {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => (self.certs.cert_path(), self.certs.key_path()),
        };
        let in_cert_dir = cert == self.certs.cert_path() && key == self.certs.key_path();
        if self.certs.manage_certs && cluster_available && in_cert_dir {
            CertSource::Managed
        } else {
            CertSource::Files { cert, key }
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            request_timeout: self.request_timeout,
            shutdown_grace: self.shutdown_grace,
            max_in_flight: self.max_in_flight,
            max_in_flight_bytes: self.max_in_flight_bytes,
            review_workers: self
                .review_workers
                .unwrap_or_else(crate::router::default_review_workers),
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            first_request_timeout: self.first_request_timeout,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum CheckOutput {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The Database manifest (YAML or JSON).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// The current (stored) manifest, to check an UPDATE.
    #[arg(long)]
    pub old: Option<PathBuf>,
    /// Replacement version catalog (YAML).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Evaluate as if the namespace is labelled `environment: production`.
    #[arg(long)]
    pub production: bool,
    /// Report format.
    #[arg(short = 'o', long, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Catalog file (YAML, the format of the built-in catalog); the built-in catalog otherwise.
    #[arg(long = "catalog-file", visible_alias = "catalog", value_name = "FILE")]
    pub catalog_file: Option<PathBuf>,
    /// Output format: a table for people, or JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
}

#[derive(Debug, Args)]
pub struct DevCertArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// DNS names or IP addresses of the serving certificate (repeatable).
    #[arg(long = "host", default_values_t = crate::devcert::DEFAULT_HOSTS.map(String::from))]
    pub hosts: Vec<String>,
    /// Validity in days from today.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=825))]
    pub days: u32,
}

/// Loads the catalog from `path`, or the built-in one.
pub fn load_catalog(path: Option<&std::path::Path>) -> Result<api::catalog::Catalog, crate::Error> {
    let Some(path) = path else {
        return Ok(api::catalog::Catalog::builtin());
    };
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::Catalog {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    api::catalog::Catalog::from_yaml(&text).map_err(|e| crate::Error::Catalog {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["admission", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn duration_flags_and_the_certs_flags_share_one_syntax() {
        let args = serve_args(&[]);
        assert_eq!(args.request_timeout, Duration::from_secs(9));
        assert_eq!(args.shutdown_delay, Duration::ZERO);
        assert_eq!(args.certs.leaf_validity, Duration::from_secs(90 * 86_400));
        let args = serve_args(&["--idle-timeout", "2m 30s", "--leaf-renew-before", "1h30m"]);
        assert_eq!(args.idle_timeout, Duration::from_secs(150));
        assert_eq!(args.certs.leaf_renew_before, Duration::from_secs(5400));
        for (flag, bad) in [
            ("--shutdown-grace", "-5s"),
            ("--ca-validity", "10"),
            ("--request-timeout", ""),
            ("--cert-resync", "often"),
        ] {
            assert!(
                Cli::try_parse_from(["admission", "serve", flag, bad]).is_err(),
                "{flag} {bad:?}"
            );
        }
    }

    #[test]
    fn certificate_source_follows_flags_and_cluster() {
        let files = |c: &str, k: &str| CertSource::Files {
            cert: PathBuf::from(c),
            key: PathBuf::from(k),
        };
        let cases: [(&str, &[&str], bool, CertSource); 6] = [
            (
                "managed_by_default_with_a_cluster",
                &[],
                true,
                CertSource::Managed,
            ),
            (
                "deployment_flags_naming_the_cert_dir_stay_managed",
                &[
                    "--tls-cert=/etc/db-operator/webhook-tls/tls.crt",
                    "--tls-key=/etc/db-operator/webhook-tls/tls.key",
                ],
                true,
                CertSource::Managed,
            ),
            (
                "own_files_outside_the_cert_dir_are_served_as_given",
                &["--tls-cert=/tmp/dev/tls.crt", "--tls-key=/tmp/dev/tls.key"],
                true,
                files("/tmp/dev/tls.crt", "/tmp/dev/tls.key"),
            ),
            (
                "cert_manager_mode_serves_the_cert_dir",
                &["--manage-certs=false", "--cert-dir=/certs"],
                true,
                files("/certs/tls.crt", "/certs/tls.key"),
            ),
            (
                "no_cluster_serves_files",
                &["--cert-dir=/certs"],
                false,
                files("/certs/tls.crt", "/certs/tls.key"),
            ),
            (
                "host_run_with_a_cert_dir_is_managed",
                &["--cert-dir=.local/webhook-certs", "--write-cert-dir=true"],
                true,
                CertSource::Managed,
            ),
        ];
        for (name, args, cluster, want) in cases {
            assert_eq!(serve_args(args).cert_source(cluster), want, "{name}");
        }
    }

    #[test]
    fn tls_cert_without_key_is_a_usage_error() {
        assert!(Cli::try_parse_from(["admission", "serve", "--tls-cert", "c"]).is_err());
    }

    #[test]
    fn kubeconfig_and_no_cluster_conflict() {
        let parsed = Cli::try_parse_from([
            "admission",
            "serve",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--kubeconfig",
            "x",
            "--no-cluster",
        ]);
        assert!(parsed.is_err());
    }
}
