//! Text a person reads: labels, user names and other caller-chosen strings escaped for a
//! terminal or a log line.
//!
//! PKCS#11 lets a label hold any bytes, so a label can carry a newline (forging a line in a
//! table or a log) or an ANSI escape sequence (rewriting the officer's terminal). Every
//! human-facing output passes such strings through [`Escaped`]: control characters (C0, DEL,
//! C1) and invalid UTF-8 become visible `\n`, `\x1b`, `\u{9b}` escapes, and a backslash is
//! doubled so an escape cannot be faked. Printable text, including non-ASCII letters, is kept.
//! Machine output (`--json`) is not escaped here: JSON encoders escape control characters
//! themselves.

use std::fmt;

/// A string or byte string shown with control characters escaped.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a [u8]);

impl<'a> Escaped<'a> {
    /// Escapes a string.
    pub fn str(s: &'a str) -> Self {
        Self(s.as_bytes())
    }
}

fn push_char(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if u32::from(c) < 0x20 || c == '\u{7f}' => write!(f, "\\x{:02x}", u32::from(c)),
        // C1 controls (0x9b is a one-byte CSI on some terminals) and other invisible
        // formatting characters that can reorder or hide text (bidi overrides).
        c if ('\u{80}'..='\u{9f}').contains(&c)
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c) =>
        {
            write!(f, "\\u{{{:x}}}", u32::from(c))
        }
        c => f.write_char(c),
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                push_char(f, c)?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// `s` escaped, as an owned string.
pub fn escape(s: &str) -> String {
    Escaped::str(s).to_string()
}

/// `b` escaped (invalid UTF-8 shown as `\xNN`), as an owned string.
pub fn escape_bytes(b: &[u8]) -> String {
    Escaped(b).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_ansi_escapes_become_visible() {
        assert_eq!(escape("plain label é"), "plain label é");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\u{1b}[2J\u{1b}]0;pwned\u{7}"), "\\x1b[2J\\x1b]0;pwned\\x07");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("x\u{202e}txt.exe"), "x\\u{202e}txt.exe");
        assert_eq!(escape_bytes(&[b'k', 0xff, 0]), "k\\xff\\x00");
        // A literal backslash cannot fake an escape.
        assert_eq!(escape("\\n"), "\\\\n");
        let out = escape("\u{0}\u{1f}\u{7f}\u{85}\r\t");
        assert!(!out.chars().any(char::is_control), "{out:?}");
    }
}
