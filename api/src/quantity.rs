//! Exact parsing and comparison of Kubernetes resource quantities (`10Gi`, `500m`, `1e9`, `1.5G`).
//!
//! Implements the grammar of `k8s.io/apimachinery/pkg/api/resource`:
//!
//! ```text
//! <quantity>     ::= <sign>? <number> <suffix>
//! <number>       ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>       ::= <binarySI> | <decimalSI> | <decimalExponent>
//! <binarySI>     ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>    ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= (e | E) <sign>? <digits>
//! ```
//!
//! Values are held exactly as an integer count of nano-units (10^-9), rounding finer fractions
//! up as Kubernetes does, so `20Gi == 21474836480 == 20480Mi` and `0.5 == 500m` compare equal.
//! Magnitudes above 2^63-1 base units are rejected like Kubernetes rejects them.

use std::cmp::Ordering;
use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a string is not a quantity (or not a usable byte count).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty; use a value such as 10Gi")]
    Empty,
    /// The string does not follow the quantity grammar.
    #[error("{value:?} is not a quantity: {reason}; use a number with an optional suffix such as 10Gi, 500Mi or 1e9")]
    Invalid {
        /// The offending input.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Larger in magnitude than 2^63-1 base units.
    #[error("{value:?} is too large; quantities are limited to 2^63-1")]
    TooLarge {
        /// The offending input.
        value: String,
    },
    /// A byte count was requested for a negative quantity.
    #[error("{value:?} is negative; a size must be positive")]
    Negative {
        /// The offending input.
        value: String,
    },
}

/// A parsed quantity: an exact count of nano-units. Ordered by value, not by spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParsedQuantity {
    nanos: i128,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const MAX_NANOS: i128 = (i64::MAX as i128) * NANOS_PER_UNIT;

impl ParsedQuantity {
    /// The value in nano-units (10^-9 of the base unit).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in milli-units, rounded up (the CPU convention: `0.1` -> 100).
    pub fn millis_ceil(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The value in whole base units, rounded up (Kubernetes' `Quantity.Value()`).
    pub fn units_ceil(&self) -> i128 {
        div_ceil(self.nanos, NANOS_PER_UNIT)
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

impl fmt::Display for ParsedQuantity {
    /// Shows the value in base units, exactly (`1.5`, `21474836480`, `0.001`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let whole = abs / NANOS_PER_UNIT as u128;
        let frac = abs % NANOS_PER_UNIT as u128;
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

fn div_ceil(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d != 0 && n > 0 {
        q + 1
    } else {
        q
    }
}

/// A quantity split into its parts, before any arithmetic: value =
/// `±int.frac × 10^exp10 × 2^exp2`.
struct Lexed<'a> {
    negative: bool,
    int_digits: &'a str,
    frac_digits: &'a str,
    exp10: i64,
    exp2: u32,
}

/// Splits `s` by the quantity grammar. Exponents are read as i64 (any digit count that fits), so
/// callers decide what is too large.
fn lex(s: &str) -> Result<Lexed<'_>, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let invalid = |reason| QuantityError::Invalid {
        value: s.to_string(),
        reason,
    };
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &s[int_start..i];
    let mut frac_digits = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &s[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(invalid("it must start with a number"));
    }
    let suffix = &s[i..];
    // (power of ten, power of two) contributed by the suffix.
    let (exp10, exp2): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let rest = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(|| {
                    invalid(
                        "unknown suffix (binary: Ki Mi Gi Ti Pi Ei; decimal: n u m k M G T P E)",
                    )
                })?;
            let digits = rest
                .strip_prefix('-')
                .or_else(|| rest.strip_prefix('+'))
                .unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("an exponent must be e or E followed by an integer"));
            }
            let e: i64 = rest.parse().map_err(|_| QuantityError::TooLarge {
                value: s.to_string(),
            })?;
            (e, 0)
        }
    };
    Ok(Lexed {
        negative,
        int_digits,
        frac_digits,
        exp10,
        exp2,
    })
}

/// Parses a quantity string exactly.
pub fn parse(s: &str) -> Result<ParsedQuantity, QuantityError> {
    let too_large = || QuantityError::TooLarge {
        value: s.to_string(),
    };
    let Lexed {
        negative,
        int_digits,
        frac_digits,
        exp10,
        exp2,
    } = lex(s)?;
    if !(-999_999..=999_999).contains(&exp10) {
        return Err(too_large());
    }

    // mantissa = int_digits ++ frac_digits (trailing fraction zeros carry no value).
    let frac_digits = frac_digits.trim_end_matches('0');
    let mut mantissa: i128 = 0;
    for b in int_digits.bytes().chain(frac_digits.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    mantissa = mantissa.checked_shl(exp2).ok_or_else(too_large)?;
    if exp2 > 0 && mantissa.leading_zeros() == 0 {
        return Err(too_large());
    }
    // nanos = mantissa * 10^(exp10 - frac_len + 9), rounding up any remainder.
    let scale = exp10 - frac_digits.len() as i64 + 9;
    let nanos = if mantissa == 0 {
        0
    } else if scale >= 0 {
        if scale > 38 {
            return Err(too_large());
        }
        let factor = 10i128.checked_pow(scale as u32).ok_or_else(too_large)?;
        mantissa.checked_mul(factor).ok_or_else(too_large)?
    } else if -scale > 38 {
        1 // smaller than a nano-unit: Kubernetes rounds it up to the smallest step
    } else {
        div_ceil(mantissa, 10i128.pow((-scale) as u32))
    };
    if nanos > MAX_NANOS {
        return Err(too_large());
    }
    Ok(ParsedQuantity {
        nanos: if negative { -nanos } else { nanos },
    })
}

/// Parses a [`Quantity`] exactly.
pub fn parse_quantity(q: &Quantity) -> Result<ParsedQuantity, QuantityError> {
    parse(&q.0)
}

/// The number of bytes a quantity denotes, rounded up to a whole byte. `"20Gi"` and `"20480Mi"`
/// both give 21474836480. Negative quantities are an error.
pub fn parse_bytes(q: &Quantity) -> Result<u128, QuantityError> {
    let parsed = parse_quantity(q)?;
    if parsed.is_negative() {
        return Err(QuantityError::Negative { value: q.0.clone() });
    }
    Ok(parsed.units_ceil() as u128)
}

/// Compares two quantity strings by value.
pub fn compare(a: &str, b: &str) -> Result<Ordering, QuantityError> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

/// Compares two quantity strings by their exact value, with no magnitude limit.
///
/// Kubernetes stores quantities beyond 2^63-1 (`100Ei`, `1e30`) as written, so a stored object
/// can hold one even though [`parse`] rejects it. Rules that compare an old value with a new one
/// (storage never shrinks) use this, so such a value cannot switch the rule off. Only grammar
/// errors fail; no arithmetic can overflow (the digits are multiplied out as decimal digits).
pub fn compare_exact(a: &str, b: &str) -> Result<Ordering, QuantityError> {
    Ok(ExactDecimal::of(a)?.cmp(&ExactDecimal::of(b)?))
}

/// `±digits × 10^exp` with no leading or trailing zero digits; zero has no digits.
#[derive(Debug, PartialEq, Eq)]
struct ExactDecimal {
    negative: bool,
    digits: Vec<u8>,
    exp: i128,
}

impl ExactDecimal {
    fn of(s: &str) -> Result<Self, QuantityError> {
        let l = lex(s)?;
        let mut digits: Vec<u8> = l
            .int_digits
            .bytes()
            .chain(l.frac_digits.bytes())
            .map(|b| b - b'0')
            .collect();
        // × 2^exp2, as repeated doubling of the decimal digits (exp2 ≤ 60).
        for _ in 0..l.exp2 {
            let mut carry = 0u8;
            for d in digits.iter_mut().rev() {
                let v = *d * 2 + carry;
                *d = v % 10;
                carry = v / 10;
            }
            if carry > 0 {
                digits.insert(0, carry);
            }
        }
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        let trailing = digits.iter().rev().take_while(|d| **d == 0).count();
        digits.truncate(digits.len() - trailing);
        let exp = i128::from(l.exp10) - l.frac_digits.len() as i128 + trailing as i128;
        Ok(ExactDecimal {
            negative: l.negative && !digits.is_empty(),
            digits,
            exp,
        })
    }

    /// Position of the leading digit (its power of ten + 1); compares magnitudes of non-zero values.
    fn magnitude(&self) -> i128 {
        self.digits.len() as i128 + self.exp
    }

    fn cmp_abs(&self, other: &Self) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        // Same leading position: the digit sequences compare lexicographically (no trailing zeros,
        // so a longer sequence with an equal prefix is larger).
        self.magnitude()
            .cmp(&other.magnitude())
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

impl Ord for ExactDecimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
        }
    }
}

impl PartialOrd for ExactDecimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> u128 {
        parse_bytes(&Quantity(s.to_string())).unwrap()
    }

    #[test]
    fn binary_decimal_and_exponent_forms_parse_to_exact_bytes() {
        let cases: &[(&str, u128)] = &[
            ("0", 0),
            ("1", 1),
            ("1Ki", 1024),
            ("20Gi", 20 * (1 << 30)),
            ("20480Mi", 20 * (1 << 30)),
            ("1.5Gi", 3 * (1 << 29)),
            ("1k", 1000),
            ("1M", 1_000_000),
            ("10G", 10_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1Ei", 1 << 60),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1e+3", 1000),
            ("12e-1", 2),
            ("+5", 5),
            ("1.", 1),
            (".5k", 500),
            ("500m", 1),
            ("1500m", 2),
            ("0.000001", 1),
        ];
        for (input, want) in cases {
            assert_eq!(bytes(input), *want, "{input}");
        }
    }

    #[test]
    fn equal_values_in_different_units_compare_equal() {
        for (a, b) in [
            ("20Gi", "20480Mi"),
            ("0.5", "500m"),
            ("1k", "1000"),
            ("1e3", "1k"),
            ("1Gi", "1073741824"),
            ("100m", "0.1"),
            ("1n", "0.000000001"),
        ] {
            assert_eq!(compare(a, b).unwrap(), Ordering::Equal, "{a} vs {b}");
        }
        assert_eq!(compare("1Gi", "1G").unwrap(), Ordering::Greater);
        assert_eq!(compare("999Mi", "1Gi").unwrap(), Ordering::Less);
        assert_eq!(compare("-1", "0").unwrap(), Ordering::Less);
    }

    #[test]
    fn garbage_is_rejected() {
        for input in [
            "", "Gi", "abc", "10 Gi", " 10Gi", "10Gi ", "10gi", "10GB", "10KiB", "1.2.3", ".", "-",
            "+", "1e", "1e+", "1ee3", "1e3.5", "0x10", "10Ki5", "1,000", "١٠",
        ] {
            assert!(parse(input).is_err(), "{input:?} should be rejected");
        }
    }

    #[test]
    fn values_beyond_int64_are_rejected_as_too_large() {
        for input in [
            "9223372036854775808",
            "8Ei",
            "1e19",
            "1e999999",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(
                matches!(parse(input), Err(QuantityError::TooLarge { .. })),
                "{input:?} -> {:?}",
                parse(input)
            );
        }
        assert!(parse("9223372036854775807").is_ok());
        assert!(parse("7Ei").is_ok());
    }

    #[test]
    fn exact_comparison_has_no_magnitude_limit_and_agrees_with_parse() {
        use Ordering::*;
        let cases = [
            // beyond 2^63-1 and beyond i128 nano-units
            ("100Ei", "10Gi", Greater),
            ("8Ei", "7Ei", Greater),
            ("9223372036854775808", "9223372036854775807", Greater),
            ("1e30", "1e29", Greater),
            ("1e40", "99e38", Greater),
            ("1e999999999", "1e999999998", Greater),
            ("1e-999999999", "0", Greater),
            ("-1e40", "1", Less),
            ("-1e40", "-1e39", Less),
            ("8Ei", "9223372036854775809", Less),
            ("8Ei", "9223372036854775808e0", Equal),
            ("8Ei", "9223372036854775808", Equal),
            // equal values in other spellings
            ("100Ei", "115292150460684697600", Equal),
            ("1e21", "1000E", Equal),
            ("20Gi", "20480Mi", Equal),
            ("0.5", "500m", Equal),
            ("0", "-0", Equal),
            ("0.000", "0e10", Equal),
            ("1.50", "1500m", Equal),
            ("1Ki", "1.024k", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_exact(a, b).unwrap(), want, "{a} vs {b}");
            assert_eq!(compare_exact(b, a).unwrap(), want.reverse(), "{b} vs {a}");
        }
        assert!(compare_exact("10Gi", "ten").is_err());
        assert!(compare_exact("1e99999999999999999999", "1").is_err());
    }

    proptest::proptest! {
        #[test]
        fn exact_comparison_matches_parse_within_its_range(
            a in 0u64..1_000_000_000, b in 0u64..1_000_000_000,
            ua in 0usize..6, ub in 0usize..6,
        ) {
            let units = ["", "k", "Mi", "Gi", "m", "e3"];
            let (a, b) = (format!("{a}{}", units[ua]), format!("{b}{}", units[ub]));
            proptest::prop_assert_eq!(compare_exact(&a, &b).unwrap(), compare(&a, &b).unwrap());
        }
    }

    #[test]
    fn negative_quantities_have_no_byte_count() {
        assert!(matches!(
            parse_bytes(&Quantity("-1Gi".into())),
            Err(QuantityError::Negative { .. })
        ));
    }

    #[test]
    fn tiny_fractions_round_up_like_kubernetes() {
        assert_eq!(parse("0.1n").unwrap().nanos(), 1);
        assert_eq!(parse("1e-20").unwrap().nanos(), 1);
        assert_eq!(parse("100m").unwrap().millis_ceil(), 100);
        assert_eq!(parse("0.0001").unwrap().millis_ceil(), 1);
    }

    proptest::proptest! {
        #[test]
        fn the_same_amount_in_any_unit_parses_to_the_same_value(n in 0u64..1_000_000) {
            let n = u128::from(n);
            let gi = bytes(&format!("{n}Gi"));
            proptest::prop_assert_eq!(gi, n << 30);
            proptest::prop_assert_eq!(bytes(&format!("{}Mi", n * 1024)), gi);
            proptest::prop_assert_eq!(bytes(&format!("{}Ki", n * 1024 * 1024)), gi);
            proptest::prop_assert_eq!(bytes(&format!("{}", n << 30)), gi);
            proptest::prop_assert_eq!(bytes(&format!("{n}k")), n * 1000);
            proptest::prop_assert_eq!(bytes(&format!("{n}e3")), n * 1000);
            proptest::prop_assert_eq!(bytes(&format!("{n}000m")), n);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,12}") {
            let _ = parse(&s);
        }
    }

    #[test]
    fn display_shows_exact_base_units() {
        assert_eq!(parse("1500m").unwrap().to_string(), "1.5");
        assert_eq!(parse("2Ki").unwrap().to_string(), "2048");
        assert_eq!(parse("-1m").unwrap().to_string(), "-0.001");
    }
}
