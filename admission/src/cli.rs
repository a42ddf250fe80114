//! Command-line interface of the `admission` binary (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /validate, /mutate, /convert, /healthz, /readyz and /metrics over HTTPS.
    Serve(ServeArgs),
    /// Default and validate a Database manifest offline; exit 1 on denial, 3 on unreadable input.
    Check(CheckArgs),
    /// Write a development CA and a serving certificate for localhost (ca.crt, tls.crt, tls.key).
    DevCert(DevCertArgs),
}

/// Parses `15s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}; use e.g. 15s, 500ms, 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration unit in {s:?}; use ms, s or m")),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443", env = "ADMISSION_LISTEN")]
    pub listen: SocketAddr,
    /// PEM certificate chain served to clients (leaf first).
    #[arg(long, env = "ADMISSION_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "ADMISSION_TLS_KEY")]
    pub tls_key: PathBuf,
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
    /// Time allowed for receiving a request body.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Time allowed for a whole webhook request.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// After SIGTERM, keep serving this long with /readyz failing (so the Service drops the
    /// pod before the listener closes); 5s suits a Deployment, 0 a terminal.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            request_timeout: self.request_timeout,
            shutdown_grace: self.shutdown_grace,
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
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("7h").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
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
