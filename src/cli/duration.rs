//! Durations on the command line: a whole number with an optional unit, `s`, `m`, `h` or `d`
//! (`90`, `90s`, `30m`, `2h`, `90d`); a bare number is seconds. The one parser every duration
//! flag uses (`value_parser = duration::seconds`), so each accepts and refuses the same text.
//!
//! The grammar is one number and one letter, smaller than any duration crate's (which accept
//! `1h 30m`, months, fractions and milliseconds that these flags must refuse), so it is written
//! here rather than trimmed down from one.

/// The units, with their length in seconds.
const UNITS: [(char, u64); 4] = [('s', 1), ('m', 60), ('h', 3_600), ('d', 86_400)];

/// What a duration flag's error says it accepts.
const EXPECTED: &str = "expected a whole number of seconds or a number with a unit, s, m, h or d \
                        (90, 30m, 2h, 90d)";

/// Parses `text` into whole seconds; a clap `value_parser`.
pub fn seconds(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((at, letter)) if letter.is_ascii_alphabetic() => (&text[..at], letter),
        _ => (text, 's'),
    };
    let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("unknown unit `{unit}`: {EXPECTED}"));
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EXPECTED.to_string());
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(scale))
        .ok_or_else(|| format!("{text} is too long a duration"))
}

/// Like `seconds`, refusing zero: for lifetimes and timeouts.
pub fn positive(text: &str) -> Result<u64, String> {
    match seconds(text)? {
        0 => Err("must be longer than 0 seconds".into()),
        secs => Ok(secs),
    }
}

/// `secs` in the largest unit that divides it exactly: `7200` is `2h`, `90` is `90s`.
pub fn display(secs: u64) -> String {
    let (unit, scale) = UNITS
        .iter()
        .rev()
        .find(|(_, scale)| secs > 0 && secs.is_multiple_of(*scale))
        .copied()
        .unwrap_or(('s', 1));
    format!("{}{unit}", secs / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_each_unit_and_bare_seconds_parse() {
        for (text, secs) in [
            ("0", 0),
            ("90", 90),
            ("90s", 90),
            ("30m", 1_800),
            ("2h", 7_200),
            ("90d", 7_776_000),
            ("007m", 420),
        ] {
            assert_eq!(seconds(text), Ok(secs), "{text}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_what_is_expected() {
        for text in [
            "", "m", "-5", "+5", "1.5h", "1h30m", "2 h", " 2h", "2H", "2w", "2ms", "1e3", "٣",
        ] {
            let err = seconds(text).expect_err(text);
            assert!(
                err.contains("s, m, h or d"),
                "{text:?} gave {err:?}, which does not say what is expected"
            );
        }
        assert!(
            seconds("99999999999999999999d")
                .expect_err("overflow")
                .contains("too long")
        );
        assert!(
            seconds("999999999999999999d")
                .expect_err("overflow")
                .contains("too long")
        );
    }

    #[test]
    fn display_picks_the_largest_exact_unit() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (5_400, "90m"),
            (7_200, "2h"),
        ] {
            assert_eq!(display(secs), text);
            assert_eq!(seconds(text), Ok(secs));
        }
        assert_eq!(display(7_776_000), "90d");
    }
}
