//! The one duration syntax of every flag of every binary: jiff's "friendly" format
//! (`90s`, `5m`, `1h30m`, `500ms`, `2m 30s`, `1.5h`, `90d`, `2 hours`), with days and weeks
//! counted as 24 hours and 7 days. Refused: empty input, a number without a unit, negative
//! durations (`-5s`, `5s ago`), years and months (no fixed length), anything else jiff does not
//! parse. [`parse_duration`] is shaped for clap's `value_parser`.

use std::time::Duration;

use jiff::fmt::friendly::SpanParser;
use jiff::SpanRelativeTo;

/// Examples shown in every error, so the fix is in the message.
const EXAMPLES: &str = "e.g. 90s, 5m, 1h30m, 500ms or 2m 30s";

static PARSER: SpanParser = SpanParser::new();

/// Why a flag's value is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: give a number with a unit, {EXAMPLES}")]
    Empty,
    #[error("duration {0:?} has no unit: write e.g. {0}s for seconds ({EXAMPLES})")]
    MissingUnit(String),
    #[error("duration {0:?} is negative: give a length of time, {EXAMPLES}")]
    Negative(String),
    #[error("duration {0:?} uses years or months, which have no fixed length: use days (d) or weeks (w)")]
    Calendar(String),
    #[error("invalid duration {input:?}: {reason} (write {EXAMPLES})")]
    Invalid { input: String, reason: String },
}

/// Parses a duration flag; see the [module documentation](self) for the syntax.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let input = text.trim();
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '+'))
    {
        return Err(DurationError::MissingUnit(input.to_owned()));
    }
    let invalid = |reason: String| DurationError::Invalid {
        input: input.to_owned(),
        reason,
    };
    let span = PARSER
        .parse_span(input)
        .map_err(|e| invalid(e.to_string()))?;
    if span.is_negative() {
        return Err(DurationError::Negative(input.to_owned()));
    }
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(DurationError::Calendar(input.to_owned()));
    }
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| invalid(e.to_string()))?;
    Duration::try_from(signed).map_err(|e| invalid(e.to_string()))
}

/// The inverse of [`parse_duration`] for messages: the largest of `d`, `h`, `m`, `s` that
/// divides the duration exactly, else milliseconds (`90d`, `36h`, `45s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || (d.as_secs() == 0 && !d.is_zero()) {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn accepted_durations() {
        let cases = [
            ("seconds", "90s", secs(90)),
            ("minutes", "5m", secs(300)),
            ("hours_and_minutes", "1h30m", secs(5400)),
            ("milliseconds", "500ms", Duration::from_millis(500)),
            ("space_between_units", "2m 30s", secs(150)),
            ("comma_between_units", "2m, 30s", secs(150)),
            ("surrounding_whitespace", "  15s \n", secs(15)),
            ("zero", "0s", Duration::ZERO),
            ("fraction", "1.5h", secs(5400)),
            ("days_are_24_hours", "90d", secs(90 * 86_400)),
            ("weeks_are_7_days", "2w", secs(14 * 86_400)),
            ("long_unit_names", "2 hours 5 minutes", secs(7500)),
            ("explicit_plus", "+10s", secs(10)),
            ("microseconds", "250us", Duration::from_micros(250)),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{name}: {text:?}");
        }
    }

    /// Whether a refusal is the one the row expects.
    type IsExpected = fn(&DurationError) -> bool;

    #[test]
    fn refused_durations() {
        let cases: [(&str, &str, IsExpected); 12] = [
            ("empty", "", |e| matches!(e, DurationError::Empty)),
            ("blank", "   ", |e| matches!(e, DurationError::Empty)),
            ("bare_number", "2", |e| {
                matches!(e, DurationError::MissingUnit(_))
            }),
            ("bare_zero", "0", |e| {
                matches!(e, DurationError::MissingUnit(_))
            }),
            ("bare_fraction", "1.5", |e| {
                matches!(e, DurationError::MissingUnit(_))
            }),
            ("minus_sign", "-5s", |e| {
                matches!(e, DurationError::Negative(_))
            }),
            ("ago", "5s ago", |e| matches!(e, DurationError::Negative(_))),
            ("years", "1y", |e| matches!(e, DurationError::Calendar(_))),
            ("months", "2mo", |e| matches!(e, DurationError::Calendar(_))),
            ("unknown_unit", "5 fortnights", |e| {
                matches!(e, DurationError::Invalid { .. })
            }),
            ("garbage", "abc", |e| {
                matches!(e, DurationError::Invalid { .. })
            }),
            ("iso8601_is_another_syntax", "PT5M", |e| {
                matches!(e, DurationError::Invalid { .. })
            }),
        ];
        for (name, text, is_expected) in cases {
            match parse_duration(text) {
                Ok(d) => panic!("{name}: {text:?} parsed as {d:?}"),
                Err(e) => assert!(is_expected(&e), "{name}: {text:?} gave {e:?}"),
            }
        }
    }

    #[test]
    fn errors_say_how_to_fix_the_value() {
        let message = parse_duration("5 fortnights").unwrap_err().to_string();
        assert!(message.contains("\"5 fortnights\""), "{message}");
        assert!(message.contains("1h30m"), "{message}");
        let message = parse_duration("30").unwrap_err().to_string();
        assert!(message.contains("30s"), "{message}");
    }

    #[test]
    fn formatted_durations_parse_back() {
        for d in [
            secs(90 * 86_400),
            secs(36 * 3600),
            secs(45),
            secs(120),
            Duration::from_millis(250),
            Duration::from_millis(1500),
            Duration::ZERO,
        ] {
            let text = format_duration(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(format_duration(secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(secs(36 * 3600)), "36h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
