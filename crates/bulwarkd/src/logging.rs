//! The daemon's log: one line per event on stderr, whatever the event carries.
//!
//! Log fields can hold caller-chosen text (a user name in a failed login, a key label, a peer's
//! TLS error). A newline in such a field would start a forged log line; an ANSI escape would
//! rewrite the operator's terminal. The writer here escapes every control character of an
//! event except its final newline, so one event is always exactly one line, and the log is
//! written without colours (no escape sequence is ever legitimate in it).

use std::io::{self, Write};

/// A `MakeWriter` for `tracing_subscriber::fmt` that escapes control characters.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapingStderr {
    type Writer = Escaping<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(io::stderr())
    }
}

/// Writes each buffer (one formatted event) with its control characters escaped.
#[derive(Debug)]
pub struct Escaping<W>(pub W);

/// `event` with every control character (C0, DEL, C1) except a final newline shown as `\xNN`
/// or `\u{NN}`.
pub fn escape_event(event: &[u8]) -> Vec<u8> {
    let (body, nl) = match event.split_last() {
        Some((b'\n', body)) => (body, true),
        _ => (event, false),
    };
    let mut out = Vec::with_capacity(event.len() + 8);
    for chunk in body.utf8_chunks() {
        for c in chunk.valid().chars() {
            let n = u32::from(c);
            if (n < 0x20 && c != '\t') || n == 0x7f {
                out.extend_from_slice(format!("\\x{n:02x}").as_bytes());
            } else if (0x80..=0x9f).contains(&n) {
                out.extend_from_slice(format!("\\u{{{n:x}}}").as_bytes());
            } else {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    if nl {
        out.push(b'\n');
    }
    out
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_event(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Installs the daemon's log subscriber (`RUST_LOG`, default `info`) on stderr.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(EscapingStderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_is_one_line() {
        let ev = b"WARN login failed user=alice\n2026-01-01 INFO forged line\x1b[2J\x07\n";
        let out = escape_event(ev);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.ends_with('\n'));
        assert!(text.contains("\\x0a2026-01-01 INFO forged line\\x1b[2J\\x07"), "{text:?}");
        assert_eq!(escape_event("é\t\u{9b}".as_bytes()), "é\t\\u{9b}".as_bytes());
        assert_eq!(escape_event(b"\xff"), b"\\xff");
    }

    #[test]
    fn the_writer_escapes_what_it_is_given() {
        let mut w = Escaping(Vec::new());
        w.write_all(b"user=a\nb\n").unwrap();
        assert_eq!(w.0, b"user=a\\x0ab\n");
    }
}
