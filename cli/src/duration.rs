//! Go-style durations as the CRDs take them (`24h`, `1h30m`, `175200h`).

/// Seconds in `text` (units h, m, s, ms, us, µs, ns; fractions allowed), or `None`
/// when it is not a duration.
pub fn parse_seconds(text: &str) -> Option<f64> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0.0);
    }
    let mut rest = s;
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Hours in a duration, for messages.
pub fn hours(seconds: f64) -> String {
    let h = seconds / 3600.0;
    if (h - h.round()).abs() < 1e-9 {
        format!("{}h", h.round())
    } else {
        format!("{h:.2}h")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_seconds("24h"), Some(86400.0));
        assert_eq!(parse_seconds("1h30m"), Some(5400.0));
        assert_eq!(parse_seconds("90m"), Some(5400.0));
        assert_eq!(parse_seconds("1.5h"), Some(5400.0));
        assert_eq!(parse_seconds("0"), Some(0.0));
        assert_eq!(parse_seconds("5y"), None);
        assert_eq!(parse_seconds("h"), None);
        assert_eq!(parse_seconds(""), None);
        assert_eq!(hours(86400.0), "24h");
    }
}
