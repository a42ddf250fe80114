//! Injects the CA bundle (CAs only, never the serving certificate) into every webhook of the
//! ValidatingWebhookConfiguration and MutatingWebhookConfiguration, and into the CRD's
//! conversion webhook when its strategy is `Webhook`.
//!
//! Writes are server-side apply patches under the field manager [`FIELD_MANAGER`] that carry
//! nothing but `caBundle`, so the fields other managers own (rules, selectors, service) are
//! untouched; `force` takes `caBundle` back from anyone who changed it. Each target is read
//! first and patched only when a `caBundle` differs, so a periodic or event-driven re-run is
//! cheap. A target that does not exist is reported, not created: installing the webhook
//! configurations is the deployment's job.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;
use tracing::{debug, info};

use crate::error::StoreError;
use crate::pem::bundle_info;

/// Field manager owning `caBundle` in every target.
pub const FIELD_MANAGER: &str = "db-operator-cabundle";

/// The objects to keep injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InjectTargets {
    /// ValidatingWebhookConfiguration names.
    pub validating: Vec<String>,
    /// MutatingWebhookConfiguration names.
    pub mutating: Vec<String>,
    /// CRD name (e.g. `databases.example.com`); injected only while it uses a conversion webhook.
    pub crd: Option<String>,
}

/// Which kind of object a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration.
    Validating,
    /// admissionregistration.k8s.io/v1 MutatingWebhookConfiguration.
    Mutating,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition (conversion webhook).
    Crd,
}

impl TargetKind {
    fn kind(&self) -> &'static str {
        match self {
            TargetKind::Validating => "ValidatingWebhookConfiguration",
            TargetKind::Mutating => "MutatingWebhookConfiguration",
            TargetKind::Crd => "CustomResourceDefinition",
        }
    }
}

/// The injected state of one target after [`Injector::inject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    /// Kind.
    pub kind: TargetKind,
    /// Object name.
    pub name: String,
    /// `false` if the object does not exist (or, for the CRD, has no conversion webhook).
    pub present: bool,
    /// caBundle of each webhook entry (PEM text; empty if unset), after our patch.
    pub bundles: Vec<String>,
    /// Whether we patched it in this run.
    pub patched: bool,
}

/// What one injection pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InjectReport {
    /// One row per target.
    pub targets: Vec<TargetState>,
}

impl InjectReport {
    /// Every webhook entry of every present target trusts each CA in `fingerprints`.
    pub fn all_contain(&self, fingerprints: &[String]) -> bool {
        self.targets
            .iter()
            .filter(|t| t.present)
            .flat_map(|t| t.bundles.iter())
            .all(|bundle| {
                let have: Vec<String> = bundle_info(bundle)
                    .map(|infos| infos.into_iter().map(|i| i.fingerprint).collect())
                    .unwrap_or_default();
                fingerprints.iter().all(|fp| have.contains(fp))
            })
    }

    /// Number of targets patched in this pass.
    pub fn patched(&self) -> usize {
        self.targets.iter().filter(|t| t.patched).count()
    }
}

/// Keeps the CA bundle injected into the targets.
#[derive(Clone)]
pub struct Injector {
    client: kube::Client,
    targets: InjectTargets,
}

impl Injector {
    /// An injector for `targets`.
    pub fn new(client: kube::Client, targets: InjectTargets) -> Self {
        Self { client, targets }
    }

    /// The configured targets.
    pub fn targets(&self) -> &InjectTargets {
        &self.targets
    }

    /// Makes every target's `caBundle` equal to `bundle_pem`, patching only those that differ.
    pub async fn inject(&self, bundle_pem: &str) -> Result<InjectReport, StoreError> {
        let mut report = InjectReport::default();
        for name in &self.targets.validating {
            let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
            let state = self
                .inject_webhooks(&api, TargetKind::Validating, name, bundle_pem, |o| {
                    o.webhooks
                        .iter()
                        .flatten()
                        .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                        .collect()
                })
                .await?;
            report.targets.push(state);
        }
        for name in &self.targets.mutating {
            let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
            let state = self
                .inject_webhooks(&api, TargetKind::Mutating, name, bundle_pem, |o| {
                    o.webhooks
                        .iter()
                        .flatten()
                        .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                        .collect()
                })
                .await?;
            report.targets.push(state);
        }
        if let Some(name) = &self.targets.crd {
            report
                .targets
                .push(self.inject_crd(name, bundle_pem).await?);
        }
        Ok(report)
    }

    async fn inject_webhooks<K>(
        &self,
        api: &Api<K>,
        kind: TargetKind,
        name: &str,
        bundle_pem: &str,
        entries: impl Fn(&K) -> Vec<(String, Option<ByteString>)>,
    ) -> Result<TargetState, StoreError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let err = |action, source| kube_err(action, kind, name, source);
        let Some(object) = api.get_opt(name).await.map_err(|e| err("get", e))? else {
            debug!(kind = kind.kind(), %name, "injection target not found; skipping");
            return Ok(absent(kind, name));
        };
        let entries = entries(&object);
        let stale = entries
            .iter()
            .any(|(_, ca)| ca.as_ref().map(|b| b.0.as_slice()) != Some(bundle_pem.as_bytes()));
        let mut state = TargetState {
            kind,
            name: name.to_string(),
            present: true,
            bundles: entries
                .iter()
                .map(|(_, ca)| pem_text(ca.as_ref()))
                .collect(),
            patched: false,
        };
        if !stale || entries.is_empty() {
            return Ok(state);
        }
        let encoded = encode(bundle_pem);
        let webhooks: Vec<_> = entries
            .iter()
            .map(|(webhook, _)| json!({"name": webhook, "clientConfig": {"caBundle": encoded}}))
            .collect();
        let patch = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind.kind(),
            "metadata": {"name": name},
            "webhooks": webhooks,
        });
        api.patch(name, &apply_params(), &Patch::Apply(&patch))
            .await
            .map_err(|e| err("apply caBundle to", e))?;
        info!(kind = kind.kind(), %name, webhooks = entries.len(), "injected CA bundle");
        state.bundles = vec![bundle_pem.to_string(); entries.len()];
        state.patched = true;
        Ok(state)
    }

    async fn inject_crd(&self, name: &str, bundle_pem: &str) -> Result<TargetState, StoreError> {
        let kind = TargetKind::Crd;
        let err = |action, source| kube_err(action, kind, name, source);
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let Some(crd) = api.get_opt(name).await.map_err(|e| err("get", e))? else {
            return Ok(absent(kind, name));
        };
        let Some(conversion) = crd
            .spec
            .conversion
            .as_ref()
            .filter(|c| c.strategy == "Webhook")
        else {
            debug!(%name, "CRD has no conversion webhook; nothing to inject");
            return Ok(absent(kind, name));
        };
        let current = conversion
            .webhook
            .as_ref()
            .and_then(|w| w.client_config.as_ref())
            .and_then(|c| c.ca_bundle.clone());
        let mut state = TargetState {
            kind,
            name: name.to_string(),
            present: true,
            bundles: vec![pem_text(current.as_ref())],
            patched: false,
        };
        if current.as_ref().map(|b| b.0.as_slice()) == Some(bundle_pem.as_bytes()) {
            return Ok(state);
        }
        // Only caBundle: owning `strategy` would let us fight whoever turns conversion off.
        let patch = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"conversion": {"webhook": {"clientConfig": {"caBundle": encode(bundle_pem)}}}},
        });
        api.patch(name, &apply_params(), &Patch::Apply(&patch))
            .await
            .map_err(|e| err("apply caBundle to", e))?;
        info!(%name, "injected CA bundle into CRD conversion webhook");
        state.bundles = vec![bundle_pem.to_string()];
        state.patched = true;
        Ok(state)
    }

    /// A stream that yields whenever any target changes (or is deleted/created), so injection
    /// can be re-checked at once. Watch errors are retried with backoff and not surfaced.
    pub fn changes(&self) -> Pin<Box<dyn Stream<Item = ()> + Send>> {
        let mut streams: Vec<Pin<Box<dyn Stream<Item = ()> + Send>>> = Vec::new();
        for name in &self.targets.validating {
            let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
            streams.push(watch_named(api, name));
        }
        for name in &self.targets.mutating {
            let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
            streams.push(watch_named(api, name));
        }
        if let Some(name) = &self.targets.crd {
            let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
            streams.push(watch_named(api, name));
        }
        Box::pin(futures::stream::select_all(streams))
    }
}

/// Watches one named object; yields `()` on every event.
pub fn watch_named<K>(api: Api<K>, name: &str) -> Pin<Box<dyn Stream<Item = ()> + Send>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    Box::pin(
        watcher(api, config)
            .default_backoff()
            .filter_map(|event| async move {
                match event {
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Some(()),
                    Ok(watcher::Event::InitDone) => Some(()),
                    Ok(_) => None,
                    Err(error) => {
                        debug!(%error, "watch error (retrying)");
                        None
                    }
                }
            }),
    )
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn absent(kind: TargetKind, name: &str) -> TargetState {
    TargetState {
        kind,
        name: name.to_string(),
        present: false,
        bundles: Vec::new(),
        patched: false,
    }
}

fn pem_text(bundle: Option<&ByteString>) -> String {
    bundle
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// caBundle is a base64 `[]byte` in JSON; ByteString's serializer does the encoding.
fn encode(bundle_pem: &str) -> serde_json::Value {
    serde_json::to_value(ByteString(bundle_pem.as_bytes().to_vec())).unwrap_or_default()
}

fn kube_err(action: &'static str, kind: TargetKind, name: &str, source: kube::Error) -> StoreError {
    StoreError::Kube {
        action,
        kind: kind.kind(),
        name: name.to_string(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate_ca;
    use crate::pem::cert_info_pem;
    use std::time::Duration;

    fn state(present: bool, bundles: Vec<String>) -> TargetState {
        TargetState {
            kind: TargetKind::Validating,
            name: "x".into(),
            present,
            bundles,
            patched: false,
        }
    }

    #[test]
    fn all_contain_requires_every_entry_of_every_present_target() {
        let now = jiff::Timestamp::now();
        let old = generate_ca("t", now, Duration::from_secs(60))
            .unwrap()
            .cert_pem;
        let new = generate_ca("t", now, Duration::from_secs(60))
            .unwrap()
            .cert_pem;
        let both = format!("{old}{new}");
        let fp = |pem: &str| cert_info_pem(pem).unwrap().fingerprint;
        let want = vec![fp(&old), fp(&new)];
        let cases = vec![
            (
                "every_entry_has_both",
                vec![state(true, vec![both.clone(), both.clone()])],
                true,
            ),
            (
                "one_entry_lags",
                vec![state(true, vec![both.clone(), old.clone()])],
                false,
            ),
            (
                "one_entry_emptied",
                vec![state(true, vec![both.clone(), String::new()])],
                false,
            ),
            (
                "absent_targets_do_not_count",
                vec![state(false, vec![]), state(true, vec![both.clone()])],
                true,
            ),
        ];
        for (name, targets, expected) in cases {
            assert_eq!(
                InjectReport { targets }.all_contain(&want),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn ca_bundle_is_base64_in_the_patch() {
        assert_eq!(encode("PEM"), serde_json::Value::String("UEVN".into()));
    }
}
