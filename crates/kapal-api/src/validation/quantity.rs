//! Resource quantities (`500m`, `1Gi`, `1e3`) parsed the way `resource.ParseQuantity` parses
//! them, with its error strings, and compared by value.
//!
//! Only what validation needs: whether a string is a quantity, its sign, whether it is a whole
//! number, and an ordering good enough for "requests must not exceed limits".

use std::cmp::Ordering;

use serde_json::Value;

/// `ErrFormatWrong`: the text upstream returns for a malformed quantity.
pub const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// `ErrSuffix`.
pub const SUFFIX_ERROR: &str = "unable to parse quantity's suffix";

/// A parsed quantity: the text the user wrote and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    /// The text as written (or the JSON number's text).
    pub text: String,
    negative: bool,
    /// Integer and fractional digits, without sign or leading zeros.
    int_digits: String,
    frac_digits: String,
    /// The multiplier: `10^exp` or `2^exp`.
    base: u32,
    exp: i32,
}

impl Quantity {
    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.int_digits.bytes().chain(self.frac_digits.bytes()).all(|c| c == b'0')
    }

    /// Whether the value is a whole number (upstream: `MilliValue() % 1000 == 0`).
    pub fn is_integer(&self) -> bool {
        // value = D × 10^e10 × 2^e2, with D the digits and no trailing zeros in D.
        let all = format!("{}{}", self.int_digits, self.frac_digits);
        let digits = all.trim_end_matches('0');
        if digits.trim_start_matches('0').is_empty() {
            return true;
        }
        let (mut e10, e2) = if self.base == 2 { (0, i64::from(self.exp)) } else { (i64::from(self.exp), 0) };
        e10 += (all.len() - digits.len()) as i64 - self.frac_digits.len() as i64;
        if e10 >= 0 {
            return true;
        }
        let need = u32::try_from(-e10).unwrap_or(u32::MAX);
        let twos = need.saturating_sub(u32::try_from(e2).unwrap_or(0));
        if need > 25 {
            return false;
        }
        let modulus = 5u128.pow(need) * 2u128.pow(twos);
        let rem = digits.bytes().fold(0u128, |acc, c| (acc * 10 + u128::from(c - b'0')) % modulus);
        rem == 0
    }

    /// The value as a float, for ordering.
    pub fn approx(&self) -> f64 {
        let digits =
            format!("{}.{}", if self.int_digits.is_empty() { "0" } else { &self.int_digits }, self.frac_digits);
        let mantissa: f64 = digits.trim_end_matches('.').parse().unwrap_or(0.0);
        let scaled = mantissa * f64::from(self.base).powi(self.exp);
        if self.negative { -scaled } else { scaled }
    }

    /// Orders two quantities by value.
    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        self.approx().partial_cmp(&other.approx()).unwrap_or(Ordering::Equal)
    }
}

fn suffix_multiplier(suffix: &str) -> Option<(u32, i32)> {
    let decimal = |e| Some((10, e));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => Some((2, 10)),
        "Mi" => Some((2, 20)),
        "Gi" => Some((2, 30)),
        "Ti" => Some((2, 40)),
        "Pi" => Some((2, 50)),
        "Ei" => Some((2, 60)),
        s if s.starts_with(['e', 'E']) && s.len() > 1 => s[1..].parse::<i32>().ok().map(|e| (10, e)),
        _ => None,
    }
}

/// Parses a quantity string. The error is upstream's message.
pub fn parse(s: &str) -> Result<Quantity, &'static str> {
    if s.is_empty() {
        return Err(FORMAT_ERROR);
    }
    let b = s.as_bytes();
    let mut pos = 0;
    let negative = match b[0] {
        b'-' => {
            pos = 1;
            true
        }
        b'+' => {
            pos = 1;
            false
        }
        _ => false,
    };
    let digits_from = |start: usize| start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_end = digits_from(pos);
    let int_digits = s[pos..int_end].trim_start_matches('0').to_string();
    pos = int_end;
    let mut frac_digits = String::new();
    if b.get(pos) == Some(&b'.') {
        let frac_end = digits_from(pos + 1);
        frac_digits = s[pos + 1..frac_end].to_string();
        pos = frac_end;
    }
    let suffix_start = pos;
    pos += b[pos..].iter().take_while(|c| b"eEinumkKMGTP".contains(c)).count();
    if matches!(b.get(pos), Some(b'-' | b'+')) {
        pos += 1;
    }
    if digits_from(pos) != b.len() {
        return Err(FORMAT_ERROR);
    }
    let (base, exp) = suffix_multiplier(&s[suffix_start..]).ok_or(SUFFIX_ERROR)?;
    Ok(Quantity { text: s.to_string(), negative, int_digits, frac_digits, base, exp })
}

/// Parses a quantity given as JSON: a string, or a bare number as upstream also accepts.
pub fn parse_json(v: &Value) -> Result<Quantity, &'static str> {
    match v {
        Value::String(s) => parse(s),
        Value::Number(n) => parse(&n.to_string()),
        _ => Err(FORMAT_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_forms_users_write() {
        for s in ["1", "500m", "0.5", ".5", "1Gi", "128Mi", "1e3", "1E-3", "+2k", "-1", "1.G", "0"] {
            assert!(parse(s).is_ok(), "{s}");
        }
        assert_eq!(parse("").unwrap_err(), FORMAT_ERROR);
        assert_eq!(parse("abc").unwrap_err(), FORMAT_ERROR);
        assert_eq!(parse("1 Gi").unwrap_err(), FORMAT_ERROR);
        assert_eq!(parse("1Gb").unwrap_err(), FORMAT_ERROR);
        assert_eq!(parse("1iK").unwrap_err(), SUFFIX_ERROR);
        assert_eq!(parse("1mm").unwrap_err(), SUFFIX_ERROR);
        assert!(parse_json(&json!(2)).is_ok());
        assert!(parse_json(&json!(true)).is_err());
    }

    #[test]
    fn sign_integrality_and_order() {
        assert!(parse("-1").unwrap().is_negative());
        assert!(!parse("-0").unwrap().is_negative());
        assert!(parse("2").unwrap().is_integer());
        assert!(parse("1k").unwrap().is_integer());
        assert!(parse("1.5k").unwrap().is_integer());
        assert!(!parse("500m").unwrap().is_integer());
        assert!(!parse("1.5").unwrap().is_integer());
        assert!(parse("1000m").unwrap().is_integer());
        assert!(parse("1Ki").unwrap().is_integer());
        assert!(parse("1.5Ki").unwrap().is_integer());
        assert!(!parse("0.1Ki").unwrap().is_integer());
        assert!(!parse("1e-2147483648").unwrap().is_integer());
        let q = |s| parse(s).unwrap();
        assert_eq!(q("1Gi").cmp_value(&q("1073741824")), Ordering::Equal);
        assert_eq!(q("500m").cmp_value(&q("1")), Ordering::Less);
        assert_eq!(q("2").cmp_value(&q("1500m")), Ordering::Greater);
    }
}
