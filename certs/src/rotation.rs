//! The rotation state machine: given what the Secret holds (already parsed into [`Observed`])
//! and the time, decide the single next step. Pure and clock-injected so every transition is
//! unit-tested; [`crate::store`] carries the steps out.
//!
//! Phases (stored as an annotation on the Secret):
//!
//! * `Stable`: `ca` signs `leaf`; the bundle is `[ca]`. In this order:
//!   - leaf missing, invalid or lacking a name: **IssueLeaf** from `ca`.
//!   - CA expiring within `ca_renew_before`, or forced: **StartCaRotation**: generate `next_ca`,
//!     bundle becomes `[ca, next_ca]`, phase `BundlePublished`. The leaf is still from `ca`.
//!   - leaf expiring within `leaf_renew_before`: **IssueLeaf** from `ca` (the CA and the bundle
//!     are untouched, so the API server trusts the new leaf at once) — unless `ca` cannot give
//!     a new leaf more than the renew window (leaves are capped at the CA's expiry); then
//!     **StartCaRotation**. Checking the leaf first would reissue it forever (the livelock).
//!   - forced leaf: **IssueLeaf**.
//! * `BundlePublished`: wait until the bundle with both CAs is injected everywhere (the manager
//!   reports it) and `bundle_propagation` has passed since the phase began (time for every API
//!   server to load the new webhook configuration); then **PromoteNextCa**: issue the leaf from
//!   `next_ca`, `ca := next_ca`, phase `LeafRotated`. The bundle still holds both CAs, so old and
//!   new leaves both verify while replicas pick up the new one.
//! * `LeafRotated`: once `secret_propagation` has passed (kubelet Secret-volume sync, default
//!   60 s, plus its cache TTL and a margin; the documented criterion for "every replica serves
//!   the new leaf" — replicas that do not are also unready, see `manager::Readiness`):
//!   **DropOldCa**: bundle becomes `[ca]`, phase `Stable`.
//!
//! Repairs: no Secret: **Create** everything anew. No usable CA (unparsable, key missing or
//! mismatched, expired) while the bundle holds a live CA: **RecoverCa** — a new `next_ca`
//! beside the live old CAs, phase `BundlePublished`, then the usual promotion and drop (the
//! served leaf stays trusted throughout); with nothing trusted left: **Create**. A bundle missing the current CA (or `next_ca` during rotation):
//! **RepairBundle**. `next_ca` lost during `BundlePublished`: **AbortCaRotation** back to
//! `Stable`; the lookahead restarts it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;

/// Where a CA rotation stands. Serialized in the Secret's phase annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// One CA, in the bundle, signing the leaf.
    #[default]
    Stable,
    /// Bundle holds the old and the next CA; the leaf is still from the old CA.
    BundlePublished,
    /// The leaf is from the new CA; the bundle still holds the old CA for replicas that lag.
    LeafRotated,
}

impl Phase {
    /// The annotation value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Stable => "Stable",
            Phase::BundlePublished => "BundlePublished",
            Phase::LeafRotated => "LeafRotated",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Stable" => Ok(Phase::Stable),
            "BundlePublished" => Ok(Phase::BundlePublished),
            "LeafRotated" => Ok(Phase::LeafRotated),
            other => Err(format!("unknown rotation phase {other:?}")),
        }
    }
}

/// A rotation requested by a person (Secret annotation) rather than by the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForceRotation {
    /// Issue a new serving certificate from the current CA.
    Leaf,
    /// Run a full, overlapping CA rotation.
    Ca,
}

impl ForceRotation {
    /// The annotation value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ForceRotation::Leaf => "leaf",
            ForceRotation::Ca => "ca",
        }
    }
}

impl FromStr for ForceRotation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leaf" => Ok(ForceRotation::Leaf),
            "ca" => Ok(ForceRotation::Ca),
            other => Err(format!(
                "unknown forced rotation {other:?} (use leaf or ca)"
            )),
        }
    }
}

/// Default `--ca-renew-before`: longer than the default leaf validity (90 d), so no leaf is ever
/// cut short by its CA's expiry.
pub const DEFAULT_CA_RENEW_BEFORE: Duration = Duration::from_secs(120 * 24 * 3600);

/// When to rotate and how long to wait between overlap steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// Lifetime of a new serving certificate.
    pub leaf_validity: Duration,
    /// Start a CA rotation when the CA expires within this.
    pub ca_renew_before: Duration,
    /// Issue a new serving certificate when it expires within this.
    pub leaf_renew_before: Duration,
    /// Minimum time between publishing `[old, new]` and issuing the leaf from the new CA.
    pub bundle_propagation: Duration,
    /// Minimum time between issuing the new-CA leaf and dropping the old CA from the bundle.
    pub secret_propagation: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            ca_validity: crate::generate::DEFAULT_CA_VALIDITY,
            leaf_validity: crate::generate::DEFAULT_LEAF_VALIDITY,
            ca_renew_before: DEFAULT_CA_RENEW_BEFORE,
            leaf_renew_before: Duration::from_secs(30 * 24 * 3600),
            bundle_propagation: Duration::from_secs(30),
            secret_propagation: Duration::from_secs(180),
        }
    }
}

impl RotationPolicy {
    /// Every impossible or self-defeating combination of the timing flags, each saying how to
    /// fix it; empty when the policy can work.
    pub fn problems(&self) -> Vec<String> {
        use opkit::format_duration as f;
        let mut problems = Vec::new();
        if self.leaf_validity.is_zero() {
            problems.push("--leaf-validity must be longer than 0".to_string());
        }
        if self.ca_validity.is_zero() {
            problems.push("--ca-validity must be longer than 0".to_string());
        }
        if self.leaf_renew_before >= self.leaf_validity {
            problems.push(format!(
                "--leaf-renew-before ({}) must be shorter than --leaf-validity ({}): every new \
                 serving certificate would be due for renewal the moment it is issued",
                f(self.leaf_renew_before),
                f(self.leaf_validity)
            ));
        }
        if self.ca_renew_before >= self.ca_validity {
            problems.push(format!(
                "--ca-renew-before ({}) must be shorter than --ca-validity ({}): every new CA \
                 would be due for rotation the moment it is generated",
                f(self.ca_renew_before),
                f(self.ca_validity)
            ));
        }
        if self.ca_renew_before <= self.leaf_validity {
            problems.push(format!(
                "--ca-renew-before ({}) must be longer than --leaf-validity ({}): a serving \
                 certificate never outlives its CA, so leaves issued late in the CA's life \
                 would be cut short and reissuing them could not help",
                f(self.ca_renew_before),
                f(self.leaf_validity)
            ));
        }
        let rotation = self
            .bundle_propagation
            .saturating_add(self.secret_propagation);
        if self.ca_validity.saturating_sub(self.ca_renew_before) <= rotation {
            problems.push(format!(
                "--ca-validity ({}) minus --ca-renew-before ({}) must exceed --bundle-propagation \
                 plus --secret-propagation ({}): a new CA would be due again before its own \
                 rotation has finished",
                f(self.ca_validity),
                f(self.ca_renew_before),
                f(rotation)
            ));
        }
        if self.leaf_renew_before <= self.secret_propagation {
            problems.push(format!(
                "--leaf-renew-before ({}) must be longer than --secret-propagation ({}): a \
                 replaced serving certificate may still be served that long by replicas whose \
                 Secret volume lags, so it must still be valid then",
                f(self.leaf_renew_before),
                f(self.secret_propagation)
            ));
        }
        problems
    }

    /// `Ok` if [`problems`](Self::problems) finds none.
    pub fn validate(&self) -> Result<(), crate::error::PolicyError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(crate::error::PolicyError { problems })
        }
    }
}

/// Facts about one certificate that the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// End of validity.
    pub not_after: Timestamp,
}

/// Facts about the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// End of validity.
    pub not_after: Timestamp,
    /// Verifies against the current CA (signature, validity, names) and the key matches.
    pub valid_for_ca: bool,
    /// Carries every SAN the configuration asks for (service renamed => reissue).
    pub has_required_names: bool,
}

/// What the Secret holds, parsed, plus what the manager learned about injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `false` when the Secret does not exist.
    pub exists: bool,
    /// The CA signing leaves; `None` if missing, unparsable, not a CA, or its key is missing.
    pub ca: Option<CertFacts>,
    /// The CA being rotated in; `None` outside a rotation or if unusable.
    pub next_ca: Option<CertFacts>,
    /// The serving certificate; `None` if missing or unparsable.
    pub leaf: Option<LeafFacts>,
    /// The bundle contains the current CA.
    pub bundle_has_ca: bool,
    /// The bundle contains `next_ca` (meaningful only when `next_ca` is `Some`).
    pub bundle_has_next_ca: bool,
    /// The bundle contains CAs other than `ca` and `next_ca` (e.g. the old CA after promotion).
    pub bundle_has_others: bool,
    /// The bundle holds at least one unexpired CA certificate other than `next_ca`: something
    /// the API server trusts today, which a CA replacement can overlap with.
    pub bundle_has_live_ca: bool,
    /// Stored phase.
    pub phase: Phase,
    /// When the stored phase began; `None` if never recorded.
    pub phase_since: Option<Timestamp>,
    /// Forced rotation requested on the Secret.
    pub force: Option<ForceRotation>,
    /// Every injection target's caBundle contains every CA of the Secret's bundle.
    pub bundle_injected: bool,
}

/// Why a new leaf is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafReason {
    /// Missing or unparsable.
    Missing,
    /// Does not verify against the current CA, or its key does not match.
    Invalid,
    /// Lacks a required DNS/IP name.
    NamesChanged,
    /// Expires within the lookahead.
    Expiring,
    /// Requested via the force annotation.
    Forced,
}

/// The single next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Generate a CA and leaf; bundle `[ca]`; phase `Stable`.
    Create,
    /// Issue a new leaf from the current CA.
    IssueLeaf(LeafReason),
    /// Generate `next_ca`; bundle `[ca, next_ca]`; phase `BundlePublished`.
    StartCaRotation,
    /// Leaf from `next_ca`; `ca := next_ca`; phase `LeafRotated`.
    PromoteNextCa,
    /// Bundle `[ca]`; phase `Stable`.
    DropOldCa,
    /// `next_ca` unusable mid-rotation: bundle `[ca]`, phase `Stable`.
    AbortCaRotation,
    /// The CA is unusable but the bundle still holds a live CA: generate `next_ca`; bundle
    /// becomes the live CAs plus `next_ca`; phase `BundlePublished`. The leaf stays until
    /// promotion, exactly as in a rotation.
    RecoverCa,
    /// Bundle lacks a CA it must hold: rebuild it.
    RepairBundle,
    /// Nothing to do; look again at this time at the latest.
    Wait {
        /// When the next time-driven step is due.
        until: Timestamp,
    },
}

impl Action {
    /// True if the step writes the Secret.
    pub fn writes(&self) -> bool {
        !matches!(self, Action::Wait { .. })
    }

    /// A short, stable name for metrics labels and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::IssueLeaf(_) => "issue_leaf",
            Action::StartCaRotation => "start_ca_rotation",
            Action::PromoteNextCa => "promote_next_ca",
            Action::DropOldCa => "drop_old_ca",
            Action::AbortCaRotation => "abort_ca_rotation",
            Action::RecoverCa => "recover_ca",
            Action::RepairBundle => "repair_bundle",
            Action::Wait { .. } => "wait",
        }
    }

    /// Every label [`label`](Self::label) can return for a writing step.
    pub const WRITE_LABELS: [&'static str; 8] = [
        "create",
        "issue_leaf",
        "start_ca_rotation",
        "promote_next_ca",
        "drop_old_ca",
        "abort_ca_rotation",
        "recover_ca",
        "repair_bundle",
    ];
}

/// Decides the next step. Ordering matters: structural repairs first, then in-flight CA
/// rotation steps, then time- or force-driven starts. Within `Stable` the CA comes before an
/// expiring leaf: a leaf is capped at its CA's expiry, so once the CA has less time left than
/// the leaf's renew window every reissued leaf would be "expiring" again and the CA rotation
/// would never start (the rotation livelock).
pub fn next_action(observed: &Observed, now: Timestamp, policy: &RotationPolicy) -> Action {
    if !observed.exists {
        return Action::Create;
    }
    let Some(ca) = &observed.ca else {
        return without_usable_ca(observed, now, policy);
    };
    let leaf_problem = leaf_problem(observed, now, policy);
    // Reissuing from the current CA only helps when the new leaf would not be expiring at once.
    let reissue_helps = ca_can_back_leaf(ca, now, policy);
    let since = observed.phase_since.unwrap_or(now);
    let elapsed = now.duration_since(since).unsigned_abs();

    match observed.phase {
        Phase::BundlePublished => {
            if observed.next_ca.is_none() {
                return Action::AbortCaRotation;
            }
            if !observed.bundle_has_ca || !observed.bundle_has_next_ca {
                return Action::RepairBundle;
            }
            if observed.bundle_injected && elapsed >= policy.bundle_propagation {
                return Action::PromoteNextCa;
            }
            // A leaf about to lapse cannot wait for the rotation; reissue it from the old CA,
            // unless the old CA cannot give it more time (then only the promotion helps).
            if let Some(reason) = leaf_problem.filter(|r| {
                *r != LeafReason::Forced && (*r != LeafReason::Expiring || reissue_helps)
            }) {
                return Action::IssueLeaf(reason);
            }
            // Not yet injected: the manager re-runs on injection changes, so "now" is right.
            let promote_at = add(since, policy.bundle_propagation).max(now);
            let mut due = vec![promote_at];
            if reissue_helps {
                due.push(leaf_due(observed, policy, now));
            }
            Action::Wait {
                until: earliest(&due),
            }
        }
        Phase::LeafRotated => {
            if !observed.bundle_has_ca {
                return Action::RepairBundle;
            }
            if let Some(reason) = leaf_problem.filter(|r| {
                *r != LeafReason::Forced && (*r != LeafReason::Expiring || reissue_helps)
            }) {
                return Action::IssueLeaf(reason);
            }
            if elapsed >= policy.secret_propagation || !observed.bundle_has_others {
                return Action::DropOldCa;
            }
            Action::Wait {
                until: earliest(&[
                    add(since, policy.secret_propagation),
                    leaf_due(observed, policy, now),
                ]),
            }
        }
        Phase::Stable => {
            if !observed.bundle_has_ca {
                return Action::RepairBundle;
            }
            // A leaf that is missing, broken or lacks a name is replaced first, even if the CA
            // is due: a short-lived valid leaf beats an invalid one during the CA rotation.
            if let Some(reason) = leaf_problem.filter(|r| {
                matches!(
                    r,
                    LeafReason::Missing | LeafReason::Invalid | LeafReason::NamesChanged
                )
            }) {
                return Action::IssueLeaf(reason);
            }
            if observed.bundle_has_others || observed.next_ca.is_some() {
                // Leftovers of an interrupted rotation: settle on [ca] before starting another.
                return Action::DropOldCa;
            }
            let ca_due = ca_due(ca, policy);
            if observed.force == Some(ForceRotation::Ca) || now >= ca_due {
                return Action::StartCaRotation;
            }
            if leaf_problem == Some(LeafReason::Expiring) {
                return if reissue_helps {
                    Action::IssueLeaf(LeafReason::Expiring)
                } else {
                    // The CA cannot back a leaf beyond the renew window: rotate the CA now.
                    Action::StartCaRotation
                };
            }
            if leaf_problem == Some(LeafReason::Forced) {
                return Action::IssueLeaf(LeafReason::Forced);
            }
            Action::Wait {
                until: earliest(&[ca_due, leaf_due(observed, policy, now)]),
            }
        }
    }
}

/// The Secret exists but its CA is unusable (unparsable, not a CA, key missing or mismatched,
/// expired). If the bundle still holds a live CA the API server trusts, replace the CA with
/// the same overlap as a rotation (new CA published beside the old first, leaf switched after
/// propagation, old CA dropped last); only when nothing trusted is left is everything created
/// anew at once.
fn without_usable_ca(observed: &Observed, now: Timestamp, policy: &RotationPolicy) -> Action {
    if observed.next_ca.is_none() {
        return if observed.bundle_has_live_ca {
            Action::RecoverCa
        } else {
            Action::Create
        };
    }
    if !observed.bundle_has_next_ca {
        return Action::RepairBundle;
    }
    let since = match observed.phase {
        Phase::BundlePublished => observed.phase_since.unwrap_or(now),
        // The CA broke mid-way through another phase: the next CA is published, so count the
        // propagation from now.
        _ => now,
    };
    let elapsed = now.duration_since(since).unsigned_abs();
    let leaf_expired = observed.leaf.as_ref().is_none_or(|l| l.not_after <= now);
    if (observed.bundle_injected && elapsed >= policy.bundle_propagation) || leaf_expired {
        return Action::PromoteNextCa;
    }
    Action::Wait {
        until: add(since, policy.bundle_propagation).max(now),
    }
}

/// When a CA rotation is due by the clock.
fn ca_due(ca: &CertFacts, policy: &RotationPolicy) -> Timestamp {
    sub(ca.not_after, policy.ca_renew_before)
}

/// True if a leaf issued now from `ca` would be outside its renew window (leaves are capped at
/// the CA's expiry).
fn ca_can_back_leaf(ca: &CertFacts, now: Timestamp, policy: &RotationPolicy) -> bool {
    let leaf_end = add(now, policy.leaf_validity).min(ca.not_after);
    now < sub(leaf_end, policy.leaf_renew_before)
}

fn leaf_problem(
    observed: &Observed,
    now: Timestamp,
    policy: &RotationPolicy,
) -> Option<LeafReason> {
    let Some(leaf) = &observed.leaf else {
        return Some(LeafReason::Missing);
    };
    if !leaf.valid_for_ca {
        return Some(LeafReason::Invalid);
    }
    if !leaf.has_required_names {
        return Some(LeafReason::NamesChanged);
    }
    if now >= sub(leaf.not_after, policy.leaf_renew_before) {
        return Some(LeafReason::Expiring);
    }
    if observed.force == Some(ForceRotation::Leaf) {
        return Some(LeafReason::Forced);
    }
    None
}

fn leaf_due(observed: &Observed, policy: &RotationPolicy, now: Timestamp) -> Timestamp {
    observed
        .leaf
        .as_ref()
        .map(|l| sub(l.not_after, policy.leaf_renew_before))
        .unwrap_or(now)
}

fn earliest(times: &[Timestamp]) -> Timestamp {
    times.iter().copied().min().unwrap_or(Timestamp::MAX)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn policy() -> RotationPolicy {
        RotationPolicy {
            ca_validity: Duration::from_secs(365 * DAY as u64),
            leaf_validity: Duration::from_secs(90 * DAY as u64),
            ca_renew_before: Duration::from_secs(120 * DAY as u64),
            leaf_renew_before: Duration::from_secs(30 * DAY as u64),
            bundle_propagation: Duration::from_secs(30),
            secret_propagation: Duration::from_secs(180),
        }
    }

    /// A healthy, stable Secret issued at t(0): CA for a year, leaf for 90 days.
    fn stable() -> Observed {
        Observed {
            exists: true,
            ca: Some(CertFacts {
                not_after: t(365 * DAY),
            }),
            next_ca: None,
            leaf: Some(LeafFacts {
                not_after: t(90 * DAY),
                valid_for_ca: true,
                has_required_names: true,
            }),
            bundle_has_ca: true,
            bundle_has_next_ca: false,
            bundle_has_others: false,
            bundle_has_live_ca: true,
            phase: Phase::Stable,
            phase_since: Some(t(0)),
            force: None,
            bundle_injected: true,
        }
    }

    /// The CA broke; `RecoverCa` published a next CA at `since`.
    fn recovering(since: i64) -> Observed {
        Observed {
            ca: None,
            leaf: leaf(90 * DAY, false, true),
            ..bundle_published(since)
        }
    }

    fn ca(not_after: i64) -> Option<CertFacts> {
        Some(CertFacts {
            not_after: t(not_after),
        })
    }

    fn bundle_published(since: i64) -> Observed {
        Observed {
            next_ca: Some(CertFacts {
                not_after: t(700 * DAY),
            }),
            bundle_has_next_ca: true,
            phase: Phase::BundlePublished,
            phase_since: Some(t(since)),
            ..stable()
        }
    }

    fn leaf_rotated(since: i64) -> Observed {
        Observed {
            bundle_has_others: true,
            phase: Phase::LeafRotated,
            phase_since: Some(t(since)),
            ..stable()
        }
    }

    fn leaf(not_after: i64, valid: bool, names: bool) -> Option<LeafFacts> {
        Some(LeafFacts {
            not_after: t(not_after),
            valid_for_ca: valid,
            has_required_names: names,
        })
    }

    #[test]
    fn next_action_table() {
        let day = |d: i64| d * DAY;
        #[rustfmt::skip]
        let cases: Vec<(&str, Observed, Timestamp, Action)> = vec![
            ("missing_secret_is_created", Observed { exists: false, ..stable() }, t(0), Action::Create),
            ("unusable_ca_without_anything_trusted_regenerates_everything", Observed { ca: None, bundle_has_live_ca: false, ..stable() }, t(0), Action::Create),
            ("unusable_ca_with_a_trusted_bundle_is_replaced_with_overlap", Observed { ca: None, ..stable() }, t(0), Action::RecoverCa),
            ("replacement_ca_waits_for_bundle_propagation", recovering(0), t(10), Action::Wait { until: t(30) }),
            ("replacement_ca_waits_for_injection", Observed { bundle_injected: false, ..recovering(0) }, t(100), Action::Wait { until: t(100) }),
            ("replacement_ca_is_promoted_once_propagated", recovering(0), t(30), Action::PromoteNextCa),
            ("replacement_ca_missing_from_bundle_is_repaired", Observed { bundle_has_next_ca: false, ..recovering(0) }, t(30), Action::RepairBundle),
            ("replacement_ca_is_promoted_at_once_when_the_leaf_has_expired", Observed { bundle_injected: false, leaf: leaf(5, false, true), ..recovering(0) }, t(10), Action::PromoteNextCa),
            ("replacement_ca_lost_restarts_the_replacement", Observed { next_ca: None, ..recovering(0) }, t(10), Action::RecoverCa),
            ("healthy_secret_waits_until_leaf_renewal_is_due", stable(), t(day(1)), Action::Wait { until: t(day(60)) }),
            ("ca_due_wins_over_an_expiring_leaf", Observed { leaf: leaf(day(260), true, true), ..stable() }, t(day(245)), Action::StartCaRotation),
            ("leaf_capped_at_a_ca_too_short_to_renew_it_rotates_the_ca", Observed { ca: ca(day(20)), leaf: leaf(day(20), true, true), ..stable() }, t(day(1)), Action::StartCaRotation),
            ("broken_leaf_is_replaced_before_the_ca_rotation_starts", Observed { ca: ca(day(20)), leaf: leaf(day(20), false, true), ..stable() }, t(day(1)), Action::IssueLeaf(LeafReason::Invalid)),
            ("leaf_inside_lookahead_is_reissued", stable(), t(day(60)), Action::IssueLeaf(LeafReason::Expiring)),
            ("expired_leaf_is_reissued", stable(), t(day(100)), Action::IssueLeaf(LeafReason::Expiring)),
            ("missing_leaf_is_reissued", Observed { leaf: None, ..stable() }, t(1), Action::IssueLeaf(LeafReason::Missing)),
            ("leaf_from_another_ca_is_reissued", Observed { leaf: leaf(day(90), false, true), ..stable() }, t(1), Action::IssueLeaf(LeafReason::Invalid)),
            ("leaf_without_new_service_name_is_reissued", Observed { leaf: leaf(day(90), true, false), ..stable() }, t(1), Action::IssueLeaf(LeafReason::NamesChanged)),
            ("forced_leaf_rotation_keeps_the_ca", Observed { force: Some(ForceRotation::Leaf), ..stable() }, t(1), Action::IssueLeaf(LeafReason::Forced)),
            ("ca_inside_lookahead_starts_overlap", Observed { leaf: leaf(day(400), true, true), ..stable() }, t(day(305)), Action::StartCaRotation),
            ("forced_ca_rotation_starts_overlap", Observed { force: Some(ForceRotation::Ca), ..stable() }, t(1), Action::StartCaRotation),
            ("forced_ca_wins_over_forced_nothing_else", Observed { force: Some(ForceRotation::Ca), leaf: leaf(day(90), true, true), ..stable() }, t(day(2)), Action::StartCaRotation),
            ("bundle_missing_ca_is_repaired", Observed { bundle_has_ca: false, ..stable() }, t(1), Action::RepairBundle),
            ("stable_leftover_old_ca_is_dropped", Observed { bundle_has_others: true, ..stable() }, t(1), Action::DropOldCa),
            ("stable_leftover_next_ca_is_dropped", Observed { next_ca: Some(CertFacts { not_after: t(day(700)) }), ..stable() }, t(1), Action::DropOldCa),
            // BundlePublished
            ("published_bundle_waits_for_propagation", bundle_published(0), t(10), Action::Wait { until: t(30) }),
            ("published_bundle_waits_for_injection", Observed { bundle_injected: false, ..bundle_published(0) }, t(100), Action::Wait { until: t(100) }),
            ("published_and_injected_bundle_promotes_next_ca", bundle_published(0), t(30), Action::PromoteNextCa),
            ("lost_next_ca_aborts_rotation", Observed { next_ca: None, ..bundle_published(0) }, t(60), Action::AbortCaRotation),
            ("bundle_without_next_ca_is_repaired_before_promotion", Observed { bundle_has_next_ca: false, ..bundle_published(0) }, t(60), Action::RepairBundle),
            ("bundle_without_old_ca_is_repaired_before_promotion", Observed { bundle_has_ca: false, ..bundle_published(0) }, t(60), Action::RepairBundle),
            ("lapsing_leaf_is_reissued_from_old_ca_while_not_injected", Observed { bundle_injected: false, leaf: leaf(day(1), true, true), ..bundle_published(0) }, t(60), Action::IssueLeaf(LeafReason::Expiring)),
            ("capped_leaf_waits_for_the_promotion_instead_of_reissuing", Observed { ca: ca(day(20)), leaf: leaf(day(20), true, true), bundle_injected: false, ..bundle_published(0) }, t(day(1)), Action::Wait { until: t(day(1)) }),
            ("forced_leaf_waits_during_ca_rotation", Observed { force: Some(ForceRotation::Leaf), ..bundle_published(0) }, t(10), Action::Wait { until: t(30) }),
            // LeafRotated
            ("rotated_leaf_keeps_old_ca_during_secret_propagation", leaf_rotated(0), t(100), Action::Wait { until: t(180) }),
            ("rotated_leaf_drops_old_ca_after_secret_propagation", leaf_rotated(0), t(180), Action::DropOldCa),
            ("rotated_leaf_without_old_ca_settles_immediately", Observed { bundle_has_others: false, ..leaf_rotated(0) }, t(1), Action::DropOldCa),
            ("rotated_bundle_without_new_ca_is_repaired", Observed { bundle_has_ca: false, ..leaf_rotated(0) }, t(1), Action::RepairBundle),
            ("rotated_phase_with_broken_leaf_reissues", Observed { leaf: None, ..leaf_rotated(0) }, t(1), Action::IssueLeaf(LeafReason::Missing)),
            ("unknown_phase_start_counts_from_now", Observed { phase_since: None, ..leaf_rotated(0) }, t(500), Action::Wait { until: t(680) }),
        ];
        for (name, observed, now, want) in cases {
            assert_eq!(next_action(&observed, now, &policy()), want, "{name}");
        }
    }

    /// Walks a full CA rotation with a simulated Secret and checks the invariant the webhook
    /// depends on at every step: the CA that signed the served leaf is in the bundle.
    #[test]
    fn full_ca_rotation_keeps_the_leaf_issuer_in_the_bundle_at_every_step() {
        #[derive(Clone, Debug)]
        struct Sim {
            ca: u32,
            next: Option<u32>,
            leaf_issuer: u32,
            bundle: Vec<u32>,
            phase: Phase,
            since: Timestamp,
            force: Option<ForceRotation>,
        }
        let observe = |s: &Sim| Observed {
            exists: true,
            ca: Some(CertFacts {
                not_after: t(365 * DAY),
            }),
            next_ca: s.next.map(|_| CertFacts {
                not_after: t(700 * DAY),
            }),
            leaf: leaf(90 * DAY, s.leaf_issuer == s.ca, true),
            bundle_has_ca: s.bundle.contains(&s.ca),
            bundle_has_next_ca: s.next.is_some_and(|n| s.bundle.contains(&n)),
            bundle_has_others: s.bundle.iter().any(|c| *c != s.ca && Some(*c) != s.next),
            bundle_has_live_ca: true,
            phase: s.phase,
            phase_since: Some(s.since),
            force: s.force,
            bundle_injected: true,
        };
        let mut s = Sim {
            ca: 1,
            next: None,
            leaf_issuer: 1,
            bundle: vec![1],
            phase: Phase::Stable,
            since: t(0),
            force: Some(ForceRotation::Ca),
        };
        let mut seen = Vec::new();
        let mut now = t(1);
        for _ in 0..20 {
            assert!(
                s.bundle.contains(&s.leaf_issuer),
                "leaf issuer missing from bundle: {s:?}"
            );
            let action = next_action(&observe(&s), now, &policy());
            seen.push(action.clone());
            match action {
                Action::StartCaRotation => {
                    s.next = Some(2);
                    s.bundle = vec![1, 2];
                    s.phase = Phase::BundlePublished;
                    s.since = now;
                    s.force = None;
                }
                Action::PromoteNextCa => {
                    s.ca = 2;
                    s.leaf_issuer = 2;
                    s.next = None;
                    s.phase = Phase::LeafRotated;
                    s.since = now;
                }
                Action::DropOldCa => {
                    s.bundle = vec![s.ca];
                    s.phase = Phase::Stable;
                    s.since = now;
                }
                Action::Wait { until } => {
                    if s.phase == Phase::Stable {
                        break;
                    }
                    now = until;
                }
                other => panic!("unexpected {other:?} in {s:?}"),
            }
        }
        assert_eq!(s.bundle, vec![2]);
        assert_eq!(s.leaf_issuer, 2);
        assert!(
            matches!(
                seen.as_slice(),
                [
                    Action::StartCaRotation,
                    Action::Wait { .. },
                    Action::PromoteNextCa,
                    Action::Wait { .. },
                    Action::DropOldCa,
                    Action::Wait { .. }
                ]
            ),
            "{seen:?}"
        );
    }

    /// Even with timing flags that validation refuses (CA renewed later than the leaf), an
    /// expiring leaf capped at its CA's expiry starts the CA rotation instead of being reissued
    /// again and again.
    #[test]
    fn ca_rotation_is_not_starved_by_a_leaf_capped_at_the_ca() {
        let misordered = RotationPolicy {
            ca_renew_before: Duration::from_secs(10 * DAY as u64),
            ..policy()
        };
        let observed = Observed {
            ca: ca(25 * DAY),
            leaf: leaf(25 * DAY, true, true),
            ..stable()
        };
        assert_eq!(
            next_action(&observed, t(0), &misordered),
            Action::StartCaRotation
        );
    }

    #[test]
    fn impossible_timing_flags_are_refused_with_the_fix() {
        let secs = Duration::from_secs;
        let base = RotationPolicy {
            ca_validity: secs(75),
            leaf_validity: secs(30),
            ca_renew_before: secs(40),
            leaf_renew_before: secs(12),
            bundle_propagation: secs(1),
            secret_propagation: secs(3),
        };
        let cases: Vec<(&str, RotationPolicy, &str)> = vec![
            ("short_validities_in_seconds_are_fine", base.clone(), ""),
            ("defaults_are_fine", RotationPolicy::default(), ""),
            (
                "zero_leaf_validity",
                RotationPolicy {
                    leaf_validity: secs(0),
                    leaf_renew_before: secs(0),
                    ..base.clone()
                },
                "--leaf-validity must be longer than 0",
            ),
            (
                "leaf_renewed_at_birth",
                RotationPolicy {
                    leaf_renew_before: secs(30),
                    ..base.clone()
                },
                "--leaf-renew-before (30s) must be shorter than --leaf-validity (30s)",
            ),
            (
                "ca_renewed_at_birth",
                RotationPolicy {
                    ca_renew_before: secs(80),
                    ..base.clone()
                },
                "--ca-renew-before (80s) must be shorter than --ca-validity (75s)",
            ),
            (
                "ca_renewed_within_a_leaf_lifetime",
                RotationPolicy {
                    ca_renew_before: secs(30),
                    ..base.clone()
                },
                "--ca-renew-before (30s) must be longer than --leaf-validity (30s)",
            ),
            (
                "old_defaults_60d_ca_renewal_with_90d_leaves",
                RotationPolicy {
                    ca_renew_before: Duration::from_secs(60 * DAY as u64),
                    ..RotationPolicy::default()
                },
                "--ca-renew-before (60d) must be longer than --leaf-validity (90d)",
            ),
            (
                "ca_due_again_before_its_rotation_ends",
                RotationPolicy {
                    bundle_propagation: secs(30),
                    secret_propagation: secs(5),
                    ..base.clone()
                },
                "must exceed --bundle-propagation plus --secret-propagation (35s)",
            ),
            (
                "leaf_renewed_later_than_replicas_lag",
                RotationPolicy {
                    secret_propagation: secs(12),
                    ..base.clone()
                },
                "--leaf-renew-before (12s) must be longer than --secret-propagation (12s)",
            ),
        ];
        for (name, policy, want) in cases {
            let problems = policy.problems();
            if want.is_empty() {
                assert!(problems.is_empty(), "{name}: {problems:?}");
                assert!(policy.validate().is_ok(), "{name}");
            } else {
                assert!(
                    problems.iter().any(|p| p.contains(want)),
                    "{name}: want {want:?} in {problems:?}"
                );
                let err = policy.validate().unwrap_err().to_string();
                assert!(
                    err.starts_with("invalid certificate rotation flags: "),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn phase_and_force_annotations_round_trip() {
        for phase in [Phase::Stable, Phase::BundlePublished, Phase::LeafRotated] {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        }
        for force in [ForceRotation::Leaf, ForceRotation::Ca] {
            assert_eq!(force.as_str().parse::<ForceRotation>(), Ok(force));
        }
        assert!("sometime".parse::<Phase>().is_err());
        assert!("everything".parse::<ForceRotation>().is_err());
    }
}
