//! `admission catalog`: what a version catalog offers, for people (a table) and scripts (JSON).

use serde::Serialize;

use api::catalog::{Catalog, LineEntry};
use api::v1::Engine;

/// The whole catalog as `admission catalog -o json` prints it.
#[derive(Debug, Serialize, PartialEq)]
pub struct CatalogView {
    pub engines: Vec<EngineView>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EngineView {
    pub engine: String,
    /// The version a Database of this engine gets when it names none, and its image.
    pub default: VersionImage,
    /// The image template (`{major}`, `{minor}`, `{patch}`, `{version}`).
    pub image_template: String,
    /// Supported lines, oldest first.
    pub lines: Vec<LineView>,
    /// Lines the engine no longer supports.
    pub retired_lines: Vec<String>,
    /// Allowed major upgrades (moving forward inside a line is always allowed).
    pub upgrades: Vec<UpgradeView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct VersionImage {
    pub version: String,
    pub image: String,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LineView {
    pub line: String,
    pub minimum: String,
    /// Absent: every newer release of the line is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<String>,
    /// The image of the line's oldest supported version.
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct UpgradeView {
    pub from: String,
    pub to: String,
    /// The image that runs the upgrade, when the catalog names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl CatalogView {
    pub fn of(catalog: &Catalog) -> CatalogView {
        let engines = Engine::ALL
            .iter()
            .map(|&engine| {
                let ec = catalog.engine(engine);
                let image_of = |v| catalog.image(engine, v).unwrap_or_default();
                EngineView {
                    engine: engine.to_string(),
                    default: VersionImage {
                        version: ec.default().to_string(),
                        image: image_of(ec.default()),
                    },
                    image_template: ec.image_template().to_owned(),
                    lines: ec
                        .lines()
                        .iter()
                        .map(|l: &LineEntry| LineView {
                            line: l.line.to_string(),
                            minimum: l.minimum.to_string(),
                            maximum: l.maximum.as_ref().map(ToString::to_string),
                            image: image_of(&l.minimum),
                            deprecated: l.deprecated.clone(),
                        })
                        .collect(),
                    retired_lines: ec.retired_lines().iter().map(ToString::to_string).collect(),
                    upgrades: ec
                        .upgrades()
                        .iter()
                        .map(|&(from, to)| UpgradeView {
                            from: from.to_string(),
                            to: to.to_string(),
                            image: ec.upgrade_image(from, to).map(str::to_owned),
                        })
                        .collect(),
                }
            })
            .collect();
        CatalogView { engines }
    }

    /// The table `admission catalog` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.engines {
            out.push_str(&format!(
                "{} (default {}: {})\n",
                e.engine, e.default.version, e.default.image
            ));
            let rows: Vec<[String; 4]> = e
                .lines
                .iter()
                .map(|l| {
                    let versions = match &l.maximum {
                        Some(max) if *max == l.minimum => max.clone(),
                        Some(max) => format!("{} to {max}", l.minimum),
                        None => format!("{} or later", l.minimum),
                    };
                    let note = l
                        .deprecated
                        .as_deref()
                        .map(|d| format!("deprecated: {d}"))
                        .unwrap_or_default();
                    [l.line.clone(), versions, l.image.clone(), note]
                })
                .collect();
            let header = ["LINE", "VERSIONS", "IMAGE", ""].map(str::to_owned);
            let width = |i: usize| {
                std::iter::once(&header)
                    .chain(&rows)
                    .map(|r| r[i].len())
                    .max()
                    .unwrap_or(0)
            };
            let (w0, w1, w2) = (width(0), width(1), width(2));
            for r in std::iter::once(&header).chain(&rows) {
                let line = format!("  {:w0$}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3]);
                out.push_str(line.trim_end());
                out.push('\n');
            }
            for u in &e.upgrades {
                let image = u
                    .image
                    .as_deref()
                    .map(|i| format!(" (runs in {i})"))
                    .unwrap_or_default();
                out.push_str(&format!("  upgrade {} -> {}{image}\n", u.from, u.to));
            }
            if !e.retired_lines.is_empty() {
                out.push_str(&format!("  retired: {}\n", e.retired_lines.join(", ")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_catalog_lists_both_postgres_lines_their_images_and_the_upgrade_image() {
        let catalog = Catalog::from_yaml(include_str!("../../deploy/local/catalog.yaml")).unwrap();
        let view = CatalogView::of(&catalog);
        let pg = &view.engines[0];
        assert_eq!(pg.engine, "postgres");
        assert_eq!(
            pg.default,
            VersionImage {
                version: "17.12.0".into(),
                image: "localhost/db-operator/postgres:17.12".into()
            }
        );
        let lines: Vec<_> = pg
            .lines
            .iter()
            .map(|l| {
                (
                    l.line.as_str(),
                    l.minimum.as_str(),
                    l.maximum.as_deref(),
                    l.image.as_str(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                (
                    "15",
                    "15.20.0",
                    Some("15.20.0"),
                    "localhost/db-operator/postgres:15.20"
                ),
                (
                    "17",
                    "17.12.0",
                    Some("17.12.0"),
                    "localhost/db-operator/postgres:17.12"
                ),
            ]
        );
        assert_eq!(
            pg.upgrades,
            [UpgradeView {
                from: "15".into(),
                to: "17".into(),
                image: Some("localhost/db-operator/postgres-upgrade:15-17".into())
            }]
        );
        let text = view.to_text();
        assert!(
            text.contains("postgres (default 17.12.0: localhost/db-operator/postgres:17.12)"),
            "{text}"
        );
        assert!(
            text.contains(
                "upgrade 15 -> 17 (runs in localhost/db-operator/postgres-upgrade:15-17)"
            ),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.trim_start().starts_with("15")
                && l.contains("15.20.0 ")
                && l.contains(":15.20")),
            "{text}"
        );
    }

    #[test]
    fn builtin_catalog_shows_open_ended_lines_and_deprecations() {
        let view = CatalogView::of(&Catalog::builtin());
        let text = view.to_text();
        assert!(text.contains("14.0.0 or later"), "{text}");
        assert!(text.contains("deprecated: PostgreSQL 14"), "{text}");
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["engines"][1]["engine"], "mysql");
        assert!(json["engines"][0]["lines"][0].get("maximum").is_none());
        assert_eq!(
            json["engines"][0]["imageTemplate"],
            "postgres:{major}.{minor}"
        );
    }
}
