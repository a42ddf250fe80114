//! Command-line configuration of certificate management, as a `clap::Args` struct the admission
//! binary flattens into its own flags (`#[command(flatten)] certs: certs::CertConfig`).

use std::path::PathBuf;
use std::time::Duration;

use opkit::parse_duration;

use crate::generate::ServingNames;
use crate::inject::InjectTargets;
use crate::rotation::RotationPolicy;

/// Flags for the certificate manager. Every flag also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct CertConfig {
    /// Generate, store, rotate and inject certificates ourselves. Set to false when
    /// cert-manager provides the Secret: the server then only loads and reloads --cert-dir.
    #[arg(long, env = "DBOP_MANAGE_CERTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_certs: bool,

    /// Namespace of the certificate Secret and the webhook Service (the operator's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "db-operator-system")]
    pub cert_namespace: String,

    /// Name of the certificate Secret.
    #[arg(
        long,
        env = "DBOP_CERT_SECRET",
        default_value = "db-operator-webhook-tls"
    )]
    pub cert_secret: String,

    /// Name of the webhook Service (the serving certificate gets `<svc>.<ns>.svc` names).
    #[arg(
        long,
        env = "DBOP_WEBHOOK_SERVICE",
        default_value = "db-operator-webhook"
    )]
    pub webhook_service: String,

    /// ValidatingWebhookConfigurations to inject the CA bundle into (comma-separated).
    #[arg(
        long,
        env = "DBOP_VALIDATING_WEBHOOKS",
        value_delimiter = ',',
        default_value = "db-operator-validating"
    )]
    pub validating_webhook_configs: Vec<String>,

    /// MutatingWebhookConfigurations to inject the CA bundle into (comma-separated).
    #[arg(
        long,
        env = "DBOP_MUTATING_WEBHOOKS",
        value_delimiter = ',',
        default_value = "db-operator-mutating"
    )]
    pub mutating_webhook_configs: Vec<String>,

    /// CRD whose conversion webhook gets the CA bundle (only while strategy is Webhook);
    /// empty to skip.
    #[arg(long, env = "DBOP_CRD_NAME", default_value = "databases.example.com")]
    pub crd_name: String,

    /// Directory the server reads tls.crt/tls.key from (the Secret's mount point in a pod).
    #[arg(
        long,
        env = "DBOP_CERT_DIR",
        default_value = "/etc/db-operator/webhook-tls"
    )]
    pub cert_dir: PathBuf,

    /// Write the Secret's certificate files into --cert-dir. Default: only when not running
    /// in a pod (KUBERNETES_SERVICE_HOST unset); in a pod the Secret is mounted there.
    #[arg(long, env = "DBOP_WRITE_CERT_DIR")]
    pub write_cert_dir: Option<bool>,

    /// Lifetime of a new CA (e.g. 365d).
    #[arg(long, env = "DBOP_CA_VALIDITY", default_value = "365d", value_parser = parse_duration)]
    pub ca_validity: Duration,

    /// Lifetime of a new serving certificate (e.g. 90d).
    #[arg(long, env = "DBOP_LEAF_VALIDITY", default_value = "90d", value_parser = parse_duration)]
    pub leaf_validity: Duration,

    /// Start an overlapping CA rotation when the CA expires within this.
    /// Must be longer than --leaf-validity (a leaf never outlives its CA).
    #[arg(long, env = "DBOP_CA_RENEW_BEFORE", default_value = "120d", value_parser = parse_duration)]
    pub ca_renew_before: Duration,

    /// Issue a new serving certificate when it expires within this.
    #[arg(long, env = "DBOP_LEAF_RENEW_BEFORE", default_value = "30d", value_parser = parse_duration)]
    pub leaf_renew_before: Duration,

    /// CA rotation: minimum wait between injecting old+new CA and serving a new-CA leaf.
    #[arg(long, env = "DBOP_BUNDLE_PROPAGATION", default_value = "30s", value_parser = parse_duration)]
    pub bundle_propagation: Duration,

    /// CA rotation: wait between issuing the new-CA leaf and dropping the old CA; must cover
    /// the kubelet's Secret-volume sync (about 60-90 s) plus the server's reload poll.
    #[arg(long, env = "DBOP_SECRET_PROPAGATION", default_value = "180s", value_parser = parse_duration)]
    pub secret_propagation: Duration,

    /// Safety-net re-check interval besides watch events.
    #[arg(long, env = "DBOP_CERT_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub cert_resync: Duration,

    /// How often the server re-reads --cert-dir for a rotated certificate.
    #[arg(long, env = "DBOP_CERT_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
}

impl CertConfig {
    /// Defaults, as if no flag were given (useful in tests).
    pub fn defaults() -> Self {
        Self {
            manage_certs: true,
            cert_namespace: "db-operator-system".into(),
            cert_secret: "db-operator-webhook-tls".into(),
            webhook_service: "db-operator-webhook".into(),
            validating_webhook_configs: vec!["db-operator-validating".into()],
            mutating_webhook_configs: vec!["db-operator-mutating".into()],
            crd_name: "databases.example.com".into(),
            cert_dir: PathBuf::from("/etc/db-operator/webhook-tls"),
            write_cert_dir: None,
            ca_validity: Duration::from_secs(365 * 86_400),
            leaf_validity: Duration::from_secs(90 * 86_400),
            ca_renew_before: crate::rotation::DEFAULT_CA_RENEW_BEFORE,
            leaf_renew_before: Duration::from_secs(30 * 86_400),
            bundle_propagation: Duration::from_secs(30),
            secret_propagation: Duration::from_secs(180),
            cert_resync: Duration::from_secs(60),
            cert_reload_interval: Duration::from_secs(2),
        }
    }

    /// `<cert_dir>/tls.crt`.
    pub fn cert_path(&self) -> PathBuf {
        self.cert_dir.join(crate::store::KEY_TLS_CRT)
    }

    /// `<cert_dir>/tls.key`.
    pub fn key_path(&self) -> PathBuf {
        self.cert_dir.join(crate::store::KEY_TLS_KEY)
    }

    /// Whether the manager writes the Secret's files into `cert_dir`.
    pub fn writes_cert_dir(&self) -> bool {
        self.write_cert_dir
            .unwrap_or_else(|| std::env::var_os("KUBERNETES_SERVICE_HOST").is_none())
    }

    /// Names the serving certificate must carry.
    pub fn serving_names(&self) -> ServingNames {
        ServingNames::for_service(&self.webhook_service, &self.cert_namespace)
    }

    /// Rotation timing.
    pub fn policy(&self) -> RotationPolicy {
        RotationPolicy {
            ca_validity: self.ca_validity,
            leaf_validity: self.leaf_validity,
            ca_renew_before: self.ca_renew_before,
            leaf_renew_before: self.leaf_renew_before,
            bundle_propagation: self.bundle_propagation,
            secret_propagation: self.secret_propagation,
        }
    }

    /// Checks that the timing flags can work together (see [`RotationPolicy::problems`]) and
    /// that the poll intervals are positive. Called by the manager before anything is written;
    /// call it at startup to fail fast.
    pub fn validate(&self) -> Result<(), crate::error::PolicyError> {
        let mut problems = if self.manage_certs {
            self.policy().problems()
        } else {
            Vec::new()
        };
        if self.cert_reload_interval.is_zero() {
            problems.push("--cert-reload-interval must be longer than 0".to_string());
        }
        if self.manage_certs && self.cert_resync.is_zero() {
            problems.push("--cert-resync must be longer than 0".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(crate::error::PolicyError { problems })
        }
    }

    /// Where the CA bundle goes.
    pub fn inject_targets(&self) -> InjectTargets {
        let names = |v: &[String]| v.iter().filter(|s| !s.is_empty()).cloned().collect();
        InjectTargets {
            validating: names(&self.validating_webhook_configs),
            mutating: names(&self.mutating_webhook_configs),
            crd: Some(self.crd_name.clone()).filter(|s| !s.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        certs: CertConfig,
    }

    #[test]
    fn flags_flatten_into_a_binary_and_match_defaults() {
        let cli = Cli::try_parse_from(["admission"]).unwrap();
        let defaults = CertConfig::defaults();
        assert_eq!(cli.certs.policy(), defaults.policy());
        assert_eq!(cli.certs.inject_targets(), defaults.inject_targets());
        assert_eq!(cli.certs.cert_path(), defaults.cert_path());

        let cli = Cli::try_parse_from([
            "admission",
            "--cert-namespace=ops",
            "--webhook-service=hook",
            "--validating-webhook-configs=a,b",
            "--crd-name=",
            "--leaf-validity=2h",
            "--manage-certs=false",
            "--write-cert-dir=true",
        ])
        .unwrap();
        assert!(!cli.certs.manage_certs);
        assert!(cli.certs.writes_cert_dir());
        assert_eq!(cli.certs.serving_names().dns[0], "hook.ops.svc");
        assert_eq!(cli.certs.inject_targets().validating, vec!["a", "b"]);
        assert_eq!(cli.certs.inject_targets().crd, None);
        assert_eq!(cli.certs.policy().leaf_validity, Duration::from_secs(7200));
    }
}
