//! The version catalog: which versions each engine supports, its default version, the image for
//! a version, and which major upgrades are allowed.
//!
//! The built-in catalog is `catalog.yaml` next to this file, embedded at compile time and parsed
//! with the same [`Catalog::from_yaml`] that loads a replacement file, so the file format is the
//! documented interface (see the comments at the top of `catalog.yaml`).
//!
//! "Supported" means: the version falls in a listed *line* — a PostgreSQL major (`17`) or a MySQL
//! release series (`8.4`) — and is at least that line's `minimum`. Patch releases newer than any
//! the catalog knows are accepted without a catalog change.

use std::collections::BTreeMap;
use std::fmt;

use semver::Version;
use serde::Deserialize;

use crate::v1::Engine;

/// The catalog shipped with the operator.
pub const BUILTIN_CATALOG_YAML: &str = include_str!("catalog.yaml");

/// Why a catalog file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not YAML of the expected shape.
    #[error("catalog is not valid YAML of the expected shape: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// An engine has no entry.
    #[error("catalog has no entry for engine {0}; every engine needs lines and a default")]
    MissingEngine(Engine),
    /// A version string is not `x.y.z`.
    #[error("catalog {engine}: {what} {value:?} is not an x.y.z version")]
    BadVersion {
        /// Engine section.
        engine: Engine,
        /// Which field.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A line is not `N` or `N.M`.
    #[error("catalog {engine}: line {value:?} must be a major (\"17\") or major.minor (\"8.4\")")]
    BadLine {
        /// Engine section.
        engine: Engine,
        /// The value.
        value: String,
    },
    /// Some other inconsistency.
    #[error("catalog {engine}: {message}")]
    Inconsistent {
        /// Engine section.
        engine: Engine,
        /// What is wrong.
        message: String,
    },
}

/// A release line: a major (`17`) or a major.minor series (`8.4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Line {
    /// Major version.
    pub major: u64,
    /// Minor version for two-part lines.
    pub minor: Option<u64>,
}

impl Line {
    fn parse(s: &str) -> Option<Line> {
        let mut parts = s.split('.');
        let major = parse_component(parts.next()?)?;
        let minor = match parts.next() {
            Some(p) => Some(parse_component(p)?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Line { major, minor })
    }

    /// Whether `v` belongs to this line.
    pub fn contains(&self, v: &Version) -> bool {
        v.major == self.major && self.minor.is_none_or(|m| m == v.minor)
    }
}

fn parse_component(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            Some(m) => write!(f, "{}.{}", self.major, m),
            None => write!(f, "{}", self.major),
        }
    }
}

/// One supported line of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEntry {
    /// The line.
    pub line: Line,
    /// Lowest supported version in the line.
    pub minimum: Version,
    /// Highest supported version in the line, when the catalog pins one (a catalog whose images
    /// exist only for the versions it lists, as the local cluster's does); no bound otherwise.
    pub maximum: Option<Version>,
    /// Deprecation warning, if the line is on its way out.
    pub deprecated: Option<String>,
}

/// Everything the catalog knows about one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCatalog {
    image: String,
    two_part_versions: bool,
    default: Version,
    lines: Vec<LineEntry>,
    retired: Vec<Line>,
    upgrades: Vec<(Line, Line)>,
    upgrade_images: BTreeMap<(Line, Line), String>,
}

impl EngineCatalog {
    /// The image template (`{major}`, `{minor}`, `{patch}`, `{version}` are substituted).
    pub fn image_template(&self) -> &str {
        &self.image
    }

    /// The version a new Database of this engine gets when it names none.
    pub fn default(&self) -> &Version {
        &self.default
    }

    /// Lines that belong to the engine but are no longer supported.
    pub fn retired_lines(&self) -> &[Line] {
        &self.retired
    }

    /// The image that runs the upgrade from line `from` to line `to` (e.g. one holding both
    /// majors' binaries for pg_upgrade), when the catalog names one.
    pub fn upgrade_image(&self, from: Line, to: Line) -> Option<&str> {
        self.upgrade_images.get(&(from, to)).map(String::as_str)
    }

    /// Supported lines, oldest first.
    pub fn lines(&self) -> &[LineEntry] {
        &self.lines
    }

    /// Whether the engine's versions have only two meaningful parts (patch must be 0).
    pub fn two_part_versions(&self) -> bool {
        self.two_part_versions
    }

    /// Allowed line-to-line upgrades.
    pub fn upgrades(&self) -> &[(Line, Line)] {
        &self.upgrades
    }

    fn line_of(&self, v: &Version) -> Option<&LineEntry> {
        self.lines.iter().find(|l| l.line.contains(v))
    }
}

/// The version catalog for every engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    engines: BTreeMap<Engine, EngineCatalog>,
}

/// How a version relates to an engine's catalog; drives precise error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Supported.
    Supported,
    /// The engine writes two-part versions, so the patch must be 0.
    NonZeroPatch,
    /// In a supported line but older than its minimum.
    BelowMinimum(Version),
    /// In a supported line but newer than the highest version the catalog pins.
    AboveMaximum(Version),
    /// In a line the engine used to support.
    Retired(Line),
    /// Not in any line of this engine.
    Unknown,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    engines: BTreeMap<Engine, EngineFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EngineFile {
    image: String,
    #[serde(default)]
    two_part_versions: bool,
    default: String,
    lines: Vec<LineFile>,
    #[serde(default)]
    retired_lines: Vec<String>,
    #[serde(default)]
    upgrades: Vec<UpgradeFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineFile {
    line: String,
    minimum: String,
    #[serde(default)]
    maximum: Option<String>,
    #[serde(default)]
    deprecated: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpgradeFile {
    from: String,
    to: String,
    #[serde(default)]
    image: Option<String>,
}

/// Parses a strict `x.y.z` version: no pre-release, no build metadata, no leading zeros.
pub fn parse_xyz(s: &str) -> Option<Version> {
    let v = Version::parse(s).ok()?;
    (v.pre.is_empty() && v.build.is_empty()).then_some(v)
}

impl Catalog {
    /// The catalog shipped with the operator (`catalog.yaml`).
    pub fn builtin() -> Catalog {
        match Catalog::from_yaml(BUILTIN_CATALOG_YAML) {
            Ok(c) => c,
            // The embedded file is checked by a unit test; this cannot happen in a release build.
            Err(e) => panic!("built-in catalog.yaml is invalid: {e}"),
        }
    }

    /// Loads a catalog in the `catalog.yaml` format and checks it for consistency.
    pub fn from_yaml(s: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = serde_yaml::from_str(s)?;
        let mut engines = BTreeMap::new();
        for engine in Engine::ALL {
            let ef = file
                .engines
                .get(&engine)
                .ok_or(CatalogError::MissingEngine(engine))?;
            engines.insert(engine, Self::engine_from_file(engine, ef)?);
        }
        Ok(Catalog { engines })
    }

    fn engine_from_file(engine: Engine, ef: &EngineFile) -> Result<EngineCatalog, CatalogError> {
        let bad_version = |what, value: &str| CatalogError::BadVersion {
            engine,
            what,
            value: value.to_string(),
        };
        let bad_line = |value: &str| CatalogError::BadLine {
            engine,
            value: value.to_string(),
        };
        let inconsistent = |message: String| CatalogError::Inconsistent { engine, message };

        let mut lines = Vec::new();
        for lf in &ef.lines {
            let line = Line::parse(&lf.line).ok_or_else(|| bad_line(&lf.line))?;
            let minimum =
                parse_xyz(&lf.minimum).ok_or_else(|| bad_version("minimum", &lf.minimum))?;
            if !line.contains(&minimum) {
                return Err(inconsistent(format!(
                    "minimum {minimum} is not in line {line}"
                )));
            }
            let maximum = match &lf.maximum {
                None => None,
                Some(m) => {
                    let max = parse_xyz(m).ok_or_else(|| bad_version("maximum", m))?;
                    if !line.contains(&max) {
                        return Err(inconsistent(format!("maximum {max} is not in line {line}")));
                    }
                    if max < minimum {
                        return Err(inconsistent(format!(
                            "line {line}: maximum {max} is below minimum {minimum}"
                        )));
                    }
                    Some(max)
                }
            };
            lines.push(LineEntry {
                line,
                minimum,
                maximum,
                deprecated: lf.deprecated.clone(),
            });
        }
        if lines.is_empty() {
            return Err(inconsistent("no lines listed".into()));
        }
        lines.sort_by(|a, b| a.minimum.cmp(&b.minimum));
        for (i, a) in lines.iter().enumerate() {
            for b in &lines[i + 1..] {
                if a.line.contains(&b.minimum) || b.line.contains(&a.minimum) {
                    return Err(inconsistent(format!(
                        "lines {} and {} overlap",
                        a.line, b.line
                    )));
                }
            }
        }
        let retired = ef
            .retired_lines
            .iter()
            .map(|s| Line::parse(s).ok_or_else(|| bad_line(s)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut upgrades = Vec::new();
        let mut upgrade_images = BTreeMap::new();
        for u in &ef.upgrades {
            let from = Line::parse(&u.from).ok_or_else(|| bad_line(&u.from))?;
            let to = Line::parse(&u.to).ok_or_else(|| bad_line(&u.to))?;
            for l in [from, to] {
                if !lines.iter().any(|e| e.line == l) {
                    return Err(inconsistent(format!("upgrade names unknown line {l}")));
                }
            }
            let (fmin, tmin) = (
                lines.iter().find(|e| e.line == from).map(|e| &e.minimum),
                lines.iter().find(|e| e.line == to).map(|e| &e.minimum),
            );
            if fmin >= tmin {
                return Err(inconsistent(format!(
                    "upgrade {from} -> {to} goes backwards; upgrades must go to a newer line"
                )));
            }
            if let Some(image) = &u.image {
                if image.trim().is_empty() {
                    return Err(inconsistent(format!("upgrade {from} -> {to}: empty image")));
                }
                upgrade_images.insert((from, to), image.clone());
            }
            upgrades.push((from, to));
        }
        if !ef.image.contains('{') {
            return Err(inconsistent(format!(
                "image {:?} has no placeholder; use {{version}} or {{major}}.{{minor}}",
                ef.image
            )));
        }
        let default = parse_xyz(&ef.default).ok_or_else(|| bad_version("default", &ef.default))?;
        let ec = EngineCatalog {
            image: ef.image.clone(),
            two_part_versions: ef.two_part_versions,
            default,
            lines,
            retired,
            upgrades,
            upgrade_images,
        };
        if ec.support(&ec.default) != Support::Supported {
            return Err(inconsistent(format!(
                "default {} is not a supported version",
                ec.default
            )));
        }
        Ok(ec)
    }

    /// The per-engine part of the catalog.
    pub fn engine(&self, e: Engine) -> &EngineCatalog {
        // Construction guarantees an entry for every engine.
        &self.engines[&e]
    }

    /// The version a new Database of this engine gets when it names none.
    pub fn default_version(&self, e: Engine) -> &Version {
        &self.engine(e).default
    }

    /// Whether `v` is a supported version of `e` (in a listed line, at least its minimum).
    pub fn supports(&self, e: Engine, v: &Version) -> bool {
        self.support(e, v) == Support::Supported
    }

    /// Like [`Catalog::supports`], but says why not.
    pub fn support(&self, e: Engine, v: &Version) -> Support {
        self.engine(e).support(v)
    }

    /// The deprecation message for the line of `v`, if any.
    pub fn deprecation(&self, e: Engine, v: &Version) -> Option<&str> {
        self.engine(e).line_of(v)?.deprecated.as_deref()
    }

    /// The line `v` belongs to, if supported.
    pub fn line_of(&self, e: Engine, v: &Version) -> Option<Line> {
        self.engine(e).line_of(v).map(|l| l.line)
    }

    /// The container image for a supported version; `None` when unsupported.
    pub fn image(&self, e: Engine, v: &Version) -> Option<String> {
        if !self.supports(e, v) {
            return None;
        }
        Some(
            self.engine(e)
                .image
                .replace("{version}", &v.to_string())
                .replace("{major}", &v.major.to_string())
                .replace("{minor}", &v.minor.to_string())
                .replace("{patch}", &v.patch.to_string()),
        )
    }

    /// Whether an existing database at `from` may move to `to`: forward within a line, or along a
    /// listed upgrade edge between lines. Staying at the same version is allowed.
    pub fn upgrade_allowed(&self, e: Engine, from: &Version, to: &Version) -> bool {
        if to < from {
            return false;
        }
        let ec = self.engine(e);
        match (ec.line_of(from), ec.line_of(to)) {
            (Some(a), Some(b)) if a.line == b.line => true,
            (Some(a), Some(b)) => ec.upgrades.contains(&(a.line, b.line)),
            // An unsupported source (e.g. a catalog that dropped a line) can only move into a
            // supported line by an explicit edge, which cannot exist; the same version is fine.
            _ => from == to,
        }
    }

    /// Lines directly reachable from the line of `from`, for "upgrade to X first" hints.
    pub fn upgrade_targets(&self, e: Engine, from: &Version) -> Vec<Line> {
        let ec = self.engine(e);
        match ec.line_of(from) {
            Some(l) => ec
                .upgrades
                .iter()
                .filter(|(f, _)| *f == l.line)
                .map(|(_, t)| *t)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Human summary of supported lines, e.g. `14, 15, 16, 17, 18`.
    pub fn supported_summary(&self, e: Engine) -> String {
        self.engine(e)
            .lines
            .iter()
            .map(|l| l.line.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl EngineCatalog {
    fn support(&self, v: &Version) -> Support {
        if let Some(entry) = self.line_of(v) {
            if self.two_part_versions && v.patch != 0 {
                return Support::NonZeroPatch;
            }
            if v < &entry.minimum {
                return Support::BelowMinimum(entry.minimum.clone());
            }
            if let Some(max) = entry.maximum.as_ref().filter(|max| v > *max) {
                return Support::AboveMaximum(max.clone());
            }
            return Support::Supported;
        }
        match self.retired.iter().find(|l| l.contains(v)) {
            Some(l) => Support::Retired(*l),
            None => Support::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn builtin_catalog_parses_and_has_current_defaults() {
        let c = Catalog::builtin();
        assert_eq!(c.default_version(Engine::Postgres), &v("17.7.0"));
        assert_eq!(c.default_version(Engine::Mysql), &v("8.4.7"));
        assert_eq!(c.supported_summary(Engine::Postgres), "14, 15, 16, 17, 18");
        assert_eq!(c.supported_summary(Engine::Mysql), "8.0, 8.4");
    }

    #[test]
    fn supported_versions_follow_lines_not_exact_patches() {
        let c = Catalog::builtin();
        let cases = [
            (Engine::Postgres, "14.0.0", true),
            (Engine::Postgres, "17.7.0", true),
            (Engine::Postgres, "17.99.0", true), // a future minor release needs no catalog change
            (Engine::Postgres, "18.1.0", true),
            (Engine::Postgres, "17.7.1", false), // PostgreSQL has no third component
            (Engine::Postgres, "13.22.0", false),
            (Engine::Postgres, "19.0.0", false),
            (Engine::Postgres, "8.4.7", false),
            (Engine::Mysql, "8.0.44", true),
            (Engine::Mysql, "8.4.7", true),
            (Engine::Mysql, "8.4.99", true),
            (Engine::Mysql, "8.1.0", false),
            (Engine::Mysql, "5.7.44", false),
            (Engine::Mysql, "9.1.0", false),
            (Engine::Mysql, "17.7.0", false),
        ];
        for (e, ver, want) in cases {
            assert_eq!(c.supports(e, &v(ver)), want, "{e} {ver}");
        }
    }

    #[test]
    fn support_explains_why_a_version_is_not_supported() {
        let c = Catalog::builtin();
        assert_eq!(
            c.support(Engine::Postgres, &v("17.7.1")),
            Support::NonZeroPatch
        );
        assert_eq!(
            c.support(Engine::Mysql, &v("5.7.44")),
            Support::Retired(Line {
                major: 5,
                minor: Some(7)
            })
        );
        assert_eq!(
            c.support(Engine::Postgres, &v("13.1.0")),
            Support::Retired(Line {
                major: 13,
                minor: None
            })
        );
        assert_eq!(c.support(Engine::Postgres, &v("42.0.0")), Support::Unknown);
    }

    #[test]
    fn images_use_the_engines_real_tag_scheme() {
        let c = Catalog::builtin();
        assert_eq!(
            c.image(Engine::Postgres, &v("17.7.0")).as_deref(),
            Some("postgres:17.7")
        );
        assert_eq!(
            c.image(Engine::Mysql, &v("8.4.7")).as_deref(),
            Some("mysql:8.4.7")
        );
        assert_eq!(c.image(Engine::Mysql, &v("5.7.44")), None);
    }

    #[test]
    fn upgrades_move_forward_along_listed_edges_only() {
        let c = Catalog::builtin();
        let cases = [
            (Engine::Postgres, "17.2.0", "17.7.0", true),
            (Engine::Postgres, "17.7.0", "17.7.0", true),
            (Engine::Postgres, "16.4.0", "17.0.0", true),
            (Engine::Postgres, "14.9.0", "18.1.0", false), // one major at a time
            (Engine::Postgres, "17.7.0", "17.6.0", false),
            (Engine::Postgres, "17.0.0", "16.9.0", false),
            (Engine::Mysql, "8.0.44", "8.4.7", true),
            (Engine::Mysql, "8.4.0", "8.4.7", true),
            (Engine::Mysql, "8.4.7", "8.4.6", false),
            (Engine::Mysql, "8.4.7", "8.0.44", false),
        ];
        for (e, from, to, want) in cases {
            assert_eq!(
                c.upgrade_allowed(e, &v(from), &v(to)),
                want,
                "{e} {from} -> {to}"
            );
        }
        assert_eq!(
            c.upgrade_targets(Engine::Postgres, &v("14.1.0")),
            vec![Line {
                major: 15,
                minor: None
            }]
        );
    }

    #[test]
    fn replacement_catalog_in_the_documented_format_is_loaded() {
        let yaml = r#"
engines:
  postgres:
    image: "registry.local/pg:{major}.{minor}"
    twoPartVersions: true
    default: "16.4.0"
    lines:
      - { line: "16", minimum: "16.2.0" }
      - { line: "17", minimum: "17.0.0", deprecated: "test" }
    upgrades:
      - { from: "16", to: "17" }
  mysql:
    image: "registry.local/mysql:{version}"
    default: "8.4.3"
    lines:
      - { line: "8.4", minimum: "8.4.0" }
"#;
        let c = Catalog::from_yaml(yaml).unwrap();
        assert_eq!(c.default_version(Engine::Postgres), &v("16.4.0"));
        assert!(!c.supports(Engine::Postgres, &v("16.1.0")));
        assert_eq!(
            c.support(Engine::Postgres, &v("16.1.0")),
            Support::BelowMinimum(v("16.2.0"))
        );
        assert_eq!(c.deprecation(Engine::Postgres, &v("17.1.0")), Some("test"));
        assert_eq!(
            c.image(Engine::Mysql, &v("8.4.3")).as_deref(),
            Some("registry.local/mysql:8.4.3")
        );
        assert!(c.upgrade_allowed(Engine::Postgres, &v("16.4.0"), &v("17.0.0")));
    }

    #[test]
    fn pinned_lines_and_upgrade_images_of_the_local_catalog() {
        let c = Catalog::from_yaml(include_str!("../../deploy/local/catalog.yaml")).unwrap();
        let pg = c.engine(Engine::Postgres);
        let rows = [
            (
                "the_built_version_is_supported",
                "17.12.0",
                Support::Supported,
            ),
            (
                "an_older_patch_is_below_the_minimum",
                "17.11.0",
                Support::BelowMinimum(v("17.12.0")),
            ),
            (
                "a_newer_patch_has_no_image",
                "17.13.0",
                Support::AboveMaximum(v("17.12.0")),
            ),
            (
                "the_other_line_is_pinned_too",
                "15.21.0",
                Support::AboveMaximum(v("15.20.0")),
            ),
        ];
        for (name, version, want) in rows {
            assert_eq!(c.support(Engine::Postgres, &v(version)), want, "{name}");
        }
        let (from, to) = pg.upgrades()[0];
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("15".into(), "17".into())
        );
        assert_eq!(
            pg.upgrade_image(from, to),
            Some("localhost/db-operator/postgres-upgrade:15-17")
        );
        assert_eq!(pg.upgrade_image(to, from), None);
    }

    #[test]
    fn inconsistent_catalogs_are_rejected_with_a_reason() {
        let base = |pg: &str| {
            format!(
                "engines:\n  postgres:\n{pg}\n  mysql:\n    image: \"mysql:{{version}}\"\n    default: \"8.4.3\"\n    lines:\n      - {{ line: \"8.4\", minimum: \"8.4.0\" }}\n"
            )
        };
        let cases = [
            ("missing_engine", "engines:\n  postgres:\n    image: \"p:{version}\"\n    default: \"17.0.0\"\n    lines: [{ line: \"17\", minimum: \"17.0.0\" }]\n".to_string(), "no entry for engine mysql"),
            ("default_unsupported", base("    image: \"p:{version}\"\n    default: \"16.0.0\"\n    lines: [{ line: \"17\", minimum: \"17.0.0\" }]"), "default 16.0.0"),
            ("bad_version", base("    image: \"p:{version}\"\n    default: \"17\"\n    lines: [{ line: \"17\", minimum: \"17.0.0\" }]"), "not an x.y.z"),
            ("bad_line", base("    image: \"p:{version}\"\n    default: \"17.0.0\"\n    lines: [{ line: \"17.x\", minimum: \"17.0.0\" }]"), "must be a major"),
            ("minimum_outside_line", base("    image: \"p:{version}\"\n    default: \"17.0.0\"\n    lines: [{ line: \"17\", minimum: \"16.0.0\" }]"), "not in line 17"),
            ("edge_to_unknown_line", base("    image: \"p:{version}\"\n    default: \"17.0.0\"\n    lines: [{ line: \"17\", minimum: \"17.0.0\" }]\n    upgrades: [{ from: \"17\", to: \"18\" }]"), "unknown line 18"),
            ("backwards_edge", base("    image: \"p:{version}\"\n    default: \"17.0.0\"\n    lines: [{ line: \"16\", minimum: \"16.0.0\" }, { line: \"17\", minimum: \"17.0.0\" }]\n    upgrades: [{ from: \"17\", to: \"16\" }]"), "goes backwards"),
            ("unknown_field", base("    image: \"p:{version}\"\n    default: \"17.0.0\"\n    colour: red\n    lines: [{ line: \"17\", minimum: \"17.0.0\" }]"), "unknown field"),
            ("image_without_placeholder", base("    image: \"postgres:latest\"\n    default: \"17.0.0\"\n    lines: [{ line: \"17\", minimum: \"17.0.0\" }]"), "no placeholder"),
            ("maximum_outside_line", base("    image: \"p:{version}\"\n    default: \"17.0.0\"\n    lines: [{ line: \"17\", minimum: \"17.0.0\", maximum: \"18.0.0\" }]"), "maximum 18.0.0 is not in line 17"),
            ("maximum_below_minimum", base("    image: \"p:{version}\"\n    default: \"17.2.0\"\n    lines: [{ line: \"17\", minimum: \"17.2.0\", maximum: \"17.1.0\" }]"), "below minimum"),
            ("default_above_maximum", base("    image: \"p:{version}\"\n    default: \"17.3.0\"\n    lines: [{ line: \"17\", minimum: \"17.0.0\", maximum: \"17.2.0\" }]"), "default 17.3.0"),
            ("empty_upgrade_image", base("    image: \"p:{version}\"\n    default: \"17.0.0\"\n    lines: [{ line: \"16\", minimum: \"16.0.0\" }, { line: \"17\", minimum: \"17.0.0\" }]\n    upgrades: [{ from: \"16\", to: \"17\", image: \" \" }]"), "empty image"),
        ];
        for (name, yaml, fragment) in cases {
            let err = Catalog::from_yaml(&yaml).expect_err(name).to_string();
            assert!(err.contains(fragment), "{name}: {err}");
        }
    }
}
