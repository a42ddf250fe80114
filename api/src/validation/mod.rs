//! Validation of Database objects on CREATE and UPDATE, written as a checklist.
//!
//! Each rule is a small pure function over a [`Input`] that returns the [`FieldError`]s it finds
//! and may push warnings. [`validate`] runs every rule in [`RULES`] and merges the results into one
//! [`Verdict`], so a denial lists every problem at once. Each error carries the field path, the
//! offending value and a message that says how to fix it.
//!
//! Absent spec fields are not errors: the mutating webhook fills them, and
//! [`crate::resolved::resolve`] applies the same defaults for anyone who bypasses it. On UPDATE,
//! a transition rule (no shrink, no downgrade, ...) only applies when the old object had the field.

pub mod config;
pub mod schedule;
pub mod scheduling;

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ResourceRequirements;
use semver::Version;

use crate::catalog::{self, Catalog, Support};
use crate::quantity;
use crate::v1::{Database, Engine};

/// Smallest allowed `spec.storageSize`.
pub const MIN_STORAGE: &str = "1Gi";
/// Allowed `spec.replicas` range.
pub const REPLICAS_RANGE: std::ops::RangeInclusive<i32> = 1..=10;
/// How many upcoming backup times the schedule warning shows.
pub const NEXT_RUNS_SHOWN: usize = 3;

/// Longest `metadata.name` whose children all have valid names.
///
/// - CronJob `<name>-backup`: a CronJob name may have at most 52 characters, because the Jobs it
///   creates append an 11-character suffix and a Job's name must fit a 63-character label value.
///   `52 - len("-backup") = 45`. This is the binding limit.
/// - StatefulSet `<name>`: its controller-revision-hash label value is `<name>-<hash>` (hash up to
///   10 characters) and must fit 63, so at most 52.
/// - Pods `<name>-<ordinal>` (ordinal up to 9) are used as host names (63): at most 61.
/// - Service `<name>-headless` (DNS-1035 label, 63): at most 54.
/// - Secret `<name>-credentials` and ConfigMap `<name>-config` allow 253.
pub const MAX_NAME_LEN: usize = 45;
/// Characters the API server appends to `metadata.generateName`.
const GENERATED_SUFFIX_LEN: usize = 5;

/// One violated rule: where, what value, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path in dotted form, e.g. `spec.storageSize`.
    pub path: String,
    /// The offending value as the user wrote it (empty when the problem is the absence of a value).
    pub value: String,
    /// What is wrong and how to fix it; reads well after `"<path>: "`.
    pub message: String,
}

impl FieldError {
    /// Builds an error.
    pub fn new(
        path: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            path: path.into(),
            value: value.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    /// `spec.storageSize: cannot shrink from 20Gi to 10Gi; storage can only grow`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}

/// The outcome of validation: errors deny the request, warnings are shown by kubectl.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every violation found, in rule order.
    pub errors: Vec<FieldError>,
    /// Advice that does not block the request.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// True when there are no errors.
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every error, `"; "`-joined, for the AdmissionResponse status message. Empty when allowed.
    ///
    /// `spec.replicas: 0 is out of range; set 1 to 10; spec.storageSize: cannot shrink from 20Gi
    /// to 10Gi; storage can only grow`
    pub fn denial_message(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allowed() {
            f.write_str("allowed")
        } else {
            write!(f, "denied: {}", self.denial_message())
        }
    }
}

/// What every rule sees.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The object being admitted.
    pub new: &'a Database,
    /// The stored object on UPDATE.
    pub old: Option<&'a Database>,
    /// The version catalog.
    pub catalog: &'a Catalog,
    /// "Now", for the next backup times.
    pub now: Timestamp,
}

impl Input<'_> {
    /// The engine in effect: absent means the default, `postgres`.
    pub fn engine(&self) -> Engine {
        self.new.spec.engine.unwrap_or(Engine::Postgres)
    }
}

/// A rule: returns its errors, may push warnings.
pub type Rule = fn(&Input<'_>, &mut Vec<String>) -> Vec<FieldError>;

/// Every rule, in the order their errors are reported.
pub const RULES: &[(&str, Rule)] = &[
    ("name_fits_children", name_fits_children),
    ("engine_is_immutable", engine_is_immutable),
    ("replicas_in_range", replicas_in_range),
    ("version_is_supported", version_is_supported),
    ("version_never_goes_down", version_never_goes_down),
    ("storage_size_is_large_enough", storage_size_is_large_enough),
    ("storage_never_shrinks", storage_never_shrinks),
    (
        "storage_class_is_a_valid_name",
        storage_class_is_a_valid_name,
    ),
    ("storage_class_is_immutable", storage_class_is_immutable),
    (
        "backup_schedule_is_cronjob_syntax",
        backup_schedule_is_cronjob_syntax,
    ),
    ("limits_cover_requests", limits_cover_requests),
    ("config_is_valid", config_is_valid),
    ("scheduling_is_valid", scheduling_is_valid),
];

/// Validates `new` (and on UPDATE the transition from `old`) at the current time.
pub fn validate(new: &Database, old: Option<&Database>, catalog: &Catalog) -> Verdict {
    validate_at(new, old, catalog, Timestamp::now())
}

/// [`validate`] with an explicit "now" (only the backup-schedule warning depends on it).
pub fn validate_at(
    new: &Database,
    old: Option<&Database>,
    catalog: &Catalog,
    now: Timestamp,
) -> Verdict {
    let input = Input {
        new,
        old,
        catalog,
        now,
    };
    let mut verdict = Verdict::default();
    for (_, rule) in RULES {
        let errors = rule(&input, &mut verdict.warnings);
        verdict.errors.extend(errors);
    }
    verdict
}

// ---------------------------------------------------------------------------------------------
// metadata.name

/// `metadata.name` is a DNS-1035 label short enough for every child object's name.
pub fn name_fits_children(input: &Input<'_>, _warnings: &mut Vec<String>) -> Vec<FieldError> {
    let meta = &input.new.metadata;
    let (path, name, budget) = match (&meta.name, &meta.generate_name) {
        (Some(n), _) if !n.is_empty() => ("metadata.name", n.as_str(), MAX_NAME_LEN),
        (_, Some(g)) if !g.is_empty() => (
            "metadata.generateName",
            g.as_str(),
            MAX_NAME_LEN - GENERATED_SUFFIX_LEN,
        ),
        _ => return Vec::new(), // the API server itself rejects an object without a name
    };
    let mut errors = Vec::new();
    let generated = path == "metadata.generateName";
    if let Err(reason) = dns1035_label(name, generated) {
        errors.push(FieldError::new(
            path,
            name,
            format!(
                "{name:?} {reason}; the name is used for the StatefulSet and Services, so it must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
            ),
        ));
    }
    if name.len() > budget {
        let extra = if generated {
            format!(" (the API server appends {GENERATED_SUFFIX_LEN} characters to generateName)")
        } else {
            String::new()
        };
        errors.push(FieldError::new(
            path,
            name,
            format!(
                "{name:?} has {} characters but at most {budget} fit{extra}: the backup CronJob \"<name>-backup\" may have at most 52 characters because Kubernetes appends an 11-character suffix to the names of the Jobs it creates; choose a shorter name",
                name.len()
            ),
        ));
    }
    errors
}

/// DNS-1035 label syntax (length is checked separately). A generateName prefix may end in '-'.
fn dns1035_label(s: &str, prefix: bool) -> Result<(), &'static str> {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err("contains characters other than lowercase letters, digits and '-'");
    }
    if !bytes.first().is_some_and(u8::is_ascii_lowercase) {
        return Err("does not start with a lowercase letter");
    }
    if !prefix && bytes.last() == Some(&b'-') {
        return Err("ends with '-'");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// engine

/// `spec.engine` cannot change after creation: the data on the volumes belongs to one engine.
pub fn engine_is_immutable(input: &Input<'_>, _warnings: &mut Vec<String>) -> Vec<FieldError> {
    let Some(old_engine) = input.old.and_then(|o| o.spec.engine) else {
        return Vec::new();
    };
    let new_engine = input.engine();
    if new_engine == old_engine {
        return Vec::new();
    }
    vec![FieldError::new(
        "spec.engine",
        new_engine.as_str(),
        format!(
            "cannot change from {old_engine} to {new_engine}; the volumes hold {old_engine} data. Keep spec.engine: {old_engine}, or create a new Database and migrate the data"
        ),
    )]
}

// ---------------------------------------------------------------------------------------------
// replicas

/// `spec.replicas` is within 1..=10.
pub fn replicas_in_range(input: &Input<'_>, _warnings: &mut Vec<String>) -> Vec<FieldError> {
    match input.new.spec.replicas {
        Some(r) if !REPLICAS_RANGE.contains(&r) => vec![FieldError::new(
            "spec.replicas",
            r.to_string(),
            format!(
                "{r} is out of range; set a value from {} to {}",
                REPLICAS_RANGE.start(),
                REPLICAS_RANGE.end()
            ),
        )],
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// version

/// Parses `spec.version` as strict `x.y.z`, or explains the expected form.
pub fn parse_version(s: &str) -> Result<Version, String> {
    if let Some(v) = catalog::parse_xyz(s) {
        return Ok(v);
    }
    let parts: Vec<&str> = s.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let suggestion = if numeric && parts.len() < 3 {
        let mut padded: Vec<String> = parts
            .iter()
            .map(|p| p.trim_start_matches('0').to_string())
            .collect();
        for p in &mut padded {
            if p.is_empty() {
                *p = "0".into();
            }
        }
        while padded.len() < 3 {
            padded.push("0".into());
        }
        format!("; write all three parts, e.g. {}", padded.join("."))
    } else {
        "; use MAJOR.MINOR.PATCH with plain numbers, e.g. 17.7.0".to_string()
    };
    Err(format!("{s:?} is not an x.y.z version{suggestion}"))
}

/// `spec.version` is `x.y.z` and supported for the engine. Points at the other engine when the
/// version belongs there, and warns about deprecated lines. On UPDATE an unchanged version that
/// the catalog no longer supports is only a warning, so existing databases stay editable.
pub fn version_is_supported(input: &Input<'_>, warnings: &mut Vec<String>) -> Vec<FieldError> {
    let Some(raw) = input.new.spec.version.as_deref() else {
        return Vec::new();
    };
    let path = "spec.version";
    let version = match parse_version(raw) {
        Ok(v) => v,
        Err(msg) => return vec![FieldError::new(path, raw, msg)],
    };
    let engine = input.engine();
    let catalog = input.catalog;
    let support = catalog.support(engine, &version);
    if support == Support::Supported {
        if let Some(note) = catalog.deprecation(engine, &version) {
            warnings.push(format!("{path}: {engine} {version} is deprecated: {note}"));
        }
        return Vec::new();
    }
    let unchanged = input
        .old
        .and_then(|o| o.spec.version.as_deref())
        .is_some_and(|old| old == raw);
    let other = engine.other();
    let message = if catalog.supports(other, &version)
        || matches!(catalog.support(other, &version), Support::Retired(_))
    {
        let mut m = format!("{version} is a {other} version; set spec.engine: {other}");
        if let Support::Retired(line) = catalog.support(other, &version) {
            m.push_str(&format!(
                " (note that {other} {line} is no longer supported; supported {other} lines: {})",
                catalog.supported_summary(other)
            ));
        }
        m.push_str(&format!(
            ", or use a {engine} version ({}; default {})",
            catalog.supported_summary(engine),
            catalog.default_version(engine)
        ));
        m
    } else {
        let supported = format!(
            "supported {engine} lines: {} (default {})",
            catalog.supported_summary(engine),
            catalog.default_version(engine)
        );
        match support {
            Support::NonZeroPatch => format!(
                "{engine} versions have two parts, so the third must be 0: write {}.{}.0 for {engine} {}.{}",
                version.major, version.minor, version.major, version.minor
            ),
            Support::BelowMinimum(min) => format!(
                "{version} is older than the oldest supported {} release; use {min} or later",
                catalog.line_of(engine, &version).map(|l| l.to_string()).unwrap_or_default()
            ),
            Support::Retired(line) => {
                format!("{engine} {line} is no longer supported; {supported}")
            }
            Support::Unknown | Support::Supported => {
                format!("{engine} {version} is not in the version catalog; {supported}")
            }
        }
    };
    if unchanged {
        warnings.push(format!(
            "{path}: {message} (allowed because the version is unchanged; plan an upgrade)"
        ));
        return Vec::new();
    }
    vec![FieldError::new(path, raw, message)]
}

/// On UPDATE, `spec.version` never goes down (patch included) and crosses lines only along an
/// upgrade edge of the catalog.
pub fn version_never_goes_down(input: &Input<'_>, _warnings: &mut Vec<String>) -> Vec<FieldError> {
    let Some(old) = input.old else {
        return Vec::new();
    };
    let (Some(old_raw), Some(new_raw)) = (
        old.spec.version.as_deref(),
        input.new.spec.version.as_deref(),
    ) else {
        return Vec::new();
    };
    let (Ok(from), Ok(to)) = (parse_version(old_raw), parse_version(new_raw)) else {
        return Vec::new(); // a malformed new version is reported by version_is_supported
    };
    let engine = old.spec.engine.unwrap_or(Engine::Postgres);
    if input.engine() != engine {
        return Vec::new(); // reported by engine_is_immutable
    }
    if from != to && !input.catalog.supports(engine, &to) {
        return Vec::new(); // an unsupported target is reported by version_is_supported
    }
    let path = "spec.version";
    if to < from {
        return vec![FieldError::new(
            path,
            new_raw,
            format!(
                "cannot downgrade from {from} to {to}; versions can only go up because an older {engine} cannot safely read data written by a newer one. Set {from} or later"
            ),
        )];
    }
    let catalog = input.catalog;
    if catalog.upgrade_allowed(engine, &from, &to) {
        return Vec::new();
    }
    let from_line = catalog
        .line_of(engine, &from)
        .map(|l| l.to_string())
        .unwrap_or_else(|| format!("{}.{}", from.major, from.minor));
    let targets = catalog.upgrade_targets(engine, &from);
    let advice = if targets.is_empty() {
        format!("the catalog lists no upgrade from {engine} {from_line}")
    } else {
        let t: Vec<String> = targets.iter().map(|l| l.to_string()).collect();
        format!(
            "upgrade to a {} release first; {engine} moves one line at a time ({from_line} -> {})",
            t.join(" or "),
            t.join(" | ")
        )
    };
    vec![FieldError::new(
        path,
        new_raw,
        format!("cannot upgrade from {from} to {to} in one step: {advice}"),
    )]
}

// ---------------------------------------------------------------------------------------------
// storage

/// `spec.storageSize` is a quantity of at least 1Gi.
pub fn storage_size_is_large_enough(
    input: &Input<'_>,
    _warnings: &mut Vec<String>,
) -> Vec<FieldError> {
    let Some(size) = &input.new.spec.storage_size else {
        return Vec::new();
    };
    let path = "spec.storageSize";
    let parsed = match quantity::parse_quantity(size) {
        Ok(p) => p,
        Err(e) => return vec![FieldError::new(path, &size.0, e.to_string())],
    };
    let min = quantity::parse(MIN_STORAGE).map_or(i128::MAX, |q| q.nanos());
    if parsed.nanos() < min {
        return vec![FieldError::new(
            path,
            &size.0,
            format!(
                "{} is below the minimum of {MIN_STORAGE}; use at least {MIN_STORAGE}",
                size.0
            ),
        )];
    }
    Vec::new()
}

/// On UPDATE, `spec.storageSize` never shrinks (compared by value: `20Gi` equals `20480Mi`).
/// Growth passes with a warning about volume expansion.
pub fn storage_never_shrinks(input: &Input<'_>, warnings: &mut Vec<String>) -> Vec<FieldError> {
    let Some(old) = input.old.and_then(|o| o.spec.storage_size.as_ref()) else {
        return Vec::new();
    };
    let Some(new) = input.new.spec.storage_size.as_ref() else {
        return Vec::new();
    };
    // Exact, unbounded comparison: a stored value beyond 2^63-1 (which Kubernetes keeps as
    // written) must still forbid a shrink, not make the rule skip.
    let Ok(order) = quantity::compare_exact(&new.0, &old.0) else {
        return Vec::new(); // malformed values are reported by storage_size_is_large_enough
    };
    let path = "spec.storageSize";
    if order == std::cmp::Ordering::Less {
        return vec![FieldError::new(
            path,
            &new.0,
            format!(
                "cannot shrink from {} to {}; storage can only grow",
                old.0, new.0
            ),
        )];
    }
    if order == std::cmp::Ordering::Greater {
        warnings.push(format!(
            "{path}: growing from {} to {}; existing volumes expand only if their StorageClass sets allowVolumeExpansion: true, and storage can never shrink again",
            old.0, new.0
        ));
    }
    Vec::new()
}

/// `spec.storageClassName` is a DNS-1123 subdomain (or empty, which Kubernetes reads as "no
/// class": bind to a pre-provisioned volume), so the PersistentVolumeClaims can be created.
pub fn storage_class_is_a_valid_name(
    input: &Input<'_>,
    _warnings: &mut Vec<String>,
) -> Vec<FieldError> {
    let Some(class) = input.new.spec.storage_class_name.as_deref() else {
        return Vec::new();
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if class.is_empty() || (class.len() <= 253 && class.split('.').all(label_ok)) {
        return Vec::new();
    }
    vec![FieldError::new(
        "spec.storageClassName",
        class,
        format!(
            "{class:?} is not a StorageClass name; use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (kubectl get storageclass lists them)"
        ),
    )]
}

/// On UPDATE, a `spec.storageClassName` that was set cannot change: the volumes already exist in
/// that class and a StatefulSet's volume claim templates are immutable.
pub fn storage_class_is_immutable(
    input: &Input<'_>,
    _warnings: &mut Vec<String>,
) -> Vec<FieldError> {
    let Some(old) = input.old.and_then(|o| o.spec.storage_class_name.as_deref()) else {
        return Vec::new();
    };
    let new = input.new.spec.storage_class_name.as_deref();
    if new == Some(old) {
        return Vec::new();
    }
    let shown = new.map_or_else(|| "<unset>".to_string(), |n| format!("{n:?}"));
    vec![FieldError::new(
        "spec.storageClassName",
        new.unwrap_or_default(),
        format!(
            "cannot change from {old:?} to {shown}; the volumes already exist in {old:?}. Keep spec.storageClassName: {old}, or create a new Database and migrate the data"
        ),
    )]
}

// ---------------------------------------------------------------------------------------------
// backups

/// `spec.backupSchedule` is exactly what a Kubernetes CronJob accepts; the warning shows the next
/// run times.
pub fn backup_schedule_is_cronjob_syntax(
    input: &Input<'_>,
    warnings: &mut Vec<String>,
) -> Vec<FieldError> {
    let path = "spec.backupSchedule";
    let Some(raw) = input.new.spec.backup_schedule.as_deref() else {
        // No default exists, so defaulting cannot keep it: leaving it out of a replace is how
        // backups are switched off. Say so, in case the manifest merely forgot it.
        if let Some(old) = input.old.and_then(|o| o.spec.backup_schedule.as_deref()) {
            warnings.push(format!(
                "{path}: removed (was {old:?}); the backup CronJob is deleted and no more backups run. Set spec.backupSchedule again to keep backups"
            ));
        }
        return Vec::new();
    };
    match schedule::parse(raw) {
        Err(e) => vec![FieldError::new(
            path,
            raw,
            format!("{raw:?} is not a valid schedule: {e}"),
        )],
        Ok(s) => {
            let runs: Vec<String> = s
                .next_runs(input.now, NEXT_RUNS_SHOWN)
                .iter()
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .collect();
            if runs.is_empty() {
                warnings.push(format!(
                    "{path}: {raw:?} never runs (no matching date in the next five years); backups will not happen"
                ));
            } else {
                let from_now = if matches!(s, schedule::Schedule::Every(_)) {
                    " (counted from now; the CronJob counts from its creation)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "{path}: {raw:?} next backups at {}{from_now}",
                    runs.join(", ")
                ));
            }
            Vec::new()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// resources

/// For cpu and memory, `spec.resources.limits` is at least `spec.resources.requests`; every
/// quantity given for them parses.
pub fn limits_cover_requests(input: &Input<'_>, _warnings: &mut Vec<String>) -> Vec<FieldError> {
    let Some(ResourceRequirements {
        limits, requests, ..
    }) = &input.new.spec.resources
    else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for resource in ["cpu", "memory"] {
        let parse = |kind: &str,
                     map: &Option<
            std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >,
                     errors: &mut Vec<FieldError>| {
            let q = map.as_ref()?.get(resource)?;
            match quantity::parse_quantity(q) {
                Ok(p) if !p.is_negative() => Some((q.0.clone(), p)),
                Ok(_) => {
                    errors.push(FieldError::new(
                        format!("spec.resources.{kind}.{resource}"),
                        &q.0,
                        format!("{} is negative; use a positive quantity", q.0),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(FieldError::new(
                        format!("spec.resources.{kind}.{resource}"),
                        &q.0,
                        e.to_string(),
                    ));
                    None
                }
            }
        };
        let request = parse("requests", requests, &mut errors);
        let limit = parse("limits", limits, &mut errors);
        if let (Some((req_raw, req)), Some((lim_raw, lim))) = (request, limit) {
            if lim < req {
                errors.push(FieldError::new(
                    format!("spec.resources.limits.{resource}"),
                    &lim_raw,
                    format!(
                        "limit {lim_raw} is less than the request {req_raw}; raise the limit to at least {req_raw} or lower spec.resources.requests.{resource}"
                    ),
                ));
            }
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// config

/// `spec.config`: at most 20 keys, valid key syntax and single-line values, no operator-owned
/// keys, no parameter that runs commands, loads code or points the server at files (in any
/// MySQL spelling), known parameters type- and range-checked; unknown keys pass with a warning
/// unless their name marks them as taking a command, a library or a path.
pub fn config_is_valid(input: &Input<'_>, warnings: &mut Vec<String>) -> Vec<FieldError> {
    let Some(cfg) = &input.new.spec.config else {
        return Vec::new();
    };
    let engine = input.engine();
    let mut errors = Vec::new();
    if cfg.len() > config::MAX_CONFIG_KEYS {
        errors.push(FieldError::new(
            "spec.config",
            format!("{} keys", cfg.len()),
            format!(
                "has {} keys; at most {} are allowed, remove {}",
                cfg.len(),
                config::MAX_CONFIG_KEYS,
                cfg.len() - config::MAX_CONFIG_KEYS
            ),
        ));
    }
    let mut unknown = Vec::new();
    for (key, value) in cfg {
        let path = format!("spec.config.{key}");
        if let Err(msg) = config::check_key(key) {
            errors.push(FieldError::new("spec.config", key, msg));
            continue;
        }
        if let Err(msg) = config::check_value_safe(value) {
            errors.push(FieldError::new(path, value, msg));
            continue;
        }
        let canonical = config::canonical_key(engine, key);
        let spellings = config::mysql_spellings(engine, key);
        if spellings
            .iter()
            .any(|k| config::owned_keys(engine).contains(&k.as_str()))
        {
            errors.push(FieldError::new(
                path,
                value,
                format!("{key} is managed by the operator for {engine} and cannot be set; remove it from spec.config"),
            ));
            continue;
        }
        if let Some(hazard) = config::forbidden(engine, key) {
            errors.push(FieldError::new(
                path,
                value,
                format!(
                    "{key} cannot be set for {engine}: it {}; remove it from spec.config",
                    hazard.reason()
                ),
            ));
            continue;
        }
        match config::known_params(engine)
            .iter()
            .find(|(k, _)| *k == canonical)
        {
            Some((_, ty)) => {
                if let Err(expected) = config::check_value(engine, *ty, value) {
                    let hint = config::kubernetes_quantity_hint(engine, value)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    errors.push(FieldError::new(
                        path,
                        value,
                        format!("{value:?} is not valid for {engine} {key}: {expected}{hint}"),
                    ));
                }
            }
            None => match config::risky_unknown(engine, key) {
                Some(hazard) => errors.push(FieldError::new(
                    path,
                    value,
                    format!(
                        "{key} is not a {engine} parameter the operator knows, and its name says it may take a command, a library or a path (such a parameter {}); unknown parameters of that kind are denied, remove it from spec.config",
                        hazard.reason()
                    ),
                )),
                None => unknown.push(key.as_str()),
            },
        }
    }
    if !unknown.is_empty() {
        warnings.push(format!(
            "spec.config: {} not checked by the operator for {engine} and passed through as written; a misspelled parameter can stop the database from starting",
            unknown.join(", ")
        ));
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// scheduling

/// `spec.scheduling` holds what the API server accepts in a pod template: label keys and values,
/// toleration operators and effects, node-selector and label-selector operators with the values
/// they need, weights 1..100, topology spread constraints.
pub fn scheduling_is_valid(input: &Input<'_>, _warnings: &mut Vec<String>) -> Vec<FieldError> {
    input
        .new
        .spec
        .scheduling
        .as_ref()
        .map(scheduling::check)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
