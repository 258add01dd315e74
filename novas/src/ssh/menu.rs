//! The resource menu shown to a shell login that named no resource
//! (`ssh -t alice@novas`): a numbered list, then a line typed by the user.
//! The client's terminal is in raw mode, so NOVAS echoes and edits the
//! line itself; [`LineInput`] does that without I/O.

/// Longest line accepted at the prompt.
const MAX_LINE: usize = 256;

/// What a chunk of typed bytes did.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Still typing; echo these bytes.
    More(Vec<u8>),
    /// Enter pressed: the line, and what to echo first.
    Line(String, Vec<u8>),
    /// Ctrl-C or Ctrl-D.
    Cancel,
}

#[derive(Debug, Default)]
pub struct LineInput {
    line: String,
    /// Inside an escape sequence (arrow keys and the like): skipped.
    escape: Escape,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    No,
    Started,
    Csi,
}

impl LineInput {
    pub fn feed(&mut self, data: &[u8]) -> Typed {
        let mut echo = Vec::new();
        for &b in data {
            match (self.escape, b) {
                (Escape::Started, b'[' | b'O') => {
                    self.escape = Escape::Csi;
                    continue;
                }
                (Escape::Started, _) => {
                    self.escape = Escape::No;
                    continue;
                }
                (Escape::Csi, 0x40..=0x7e) => {
                    self.escape = Escape::No;
                    continue;
                }
                (Escape::Csi, _) => continue,
                (Escape::No, 0x1b) => {
                    self.escape = Escape::Started;
                    continue;
                }
                (Escape::No, _) => {}
            }
            match b {
                b'\r' | b'\n' => {
                    echo.extend_from_slice(b"\r\n");
                    return Typed::Line(std::mem::take(&mut self.line), echo);
                }
                0x03 | 0x04 => return Typed::Cancel,
                0x7f | 0x08 if self.line.pop().is_some() => {
                    echo.extend_from_slice(b"\x08 \x08");
                }
                0x20..=0x7e if self.line.len() < MAX_LINE => {
                    self.line.push(b as char);
                    echo.push(b);
                }
                // Escape sequences, other control bytes, non-ASCII: ignored.
                _ => {}
            }
        }
        Typed::More(echo)
    }
}

/// The menu text.
pub fn render(user: &str, names: &[String]) -> String {
    let mut s = format!("\r\nNOVAS: {user}, choose a resource:\r\n");
    for (i, n) in names.iter().enumerate() {
        s.push_str(&format!("  {}) {n}\r\n", i + 1));
    }
    s.push_str("number or name (Ctrl-C to leave): ");
    s
}

/// The resource a typed line picks: its number or its name.
pub fn pick<'a>(line: &str, names: &'a [String]) -> Option<&'a String> {
    let line = line.trim();
    if let Ok(i) = line.parse::<usize>() {
        return i.checked_sub(1).and_then(|i| names.get(i));
    }
    names.iter().find(|n| n.as_str() == line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_editing() {
        let mut l = LineInput::default();
        assert_eq!(l.feed(b"wex"), Typed::More(b"wex".to_vec()));
        assert_eq!(l.feed(b"\x7f"), Typed::More(b"\x08 \x08".to_vec()));
        // An arrow key (split across chunks) is skipped whole.
        assert_eq!(l.feed(b"\x1b["), Typed::More(vec![]));
        assert_eq!(l.feed(b"Ab"), Typed::More(b"b".to_vec()));
        assert_eq!(l.feed(b"\r"), Typed::Line("web".into(), b"\r\n".to_vec()));
        assert_eq!(l.feed(b"\x7f"), Typed::More(vec![]), "nothing to erase");
        assert_eq!(l.feed(b"1\x03"), Typed::Cancel);
        let mut long = LineInput::default();
        long.feed(&[b'x'; 1000]);
        assert!(matches!(long.feed(b"\n"), Typed::Line(s, _) if s.len() == MAX_LINE));
    }

    #[test]
    fn picking() {
        let names = vec!["web-1".to_string(), "db".to_string()];
        assert_eq!(pick("1", &names).map(String::as_str), Some("web-1"));
        assert_eq!(pick(" 2 ", &names).map(String::as_str), Some("db"));
        assert_eq!(pick("db", &names).map(String::as_str), Some("db"));
        for bad in ["0", "3", "", "web"] {
            assert_eq!(pick(bad, &names), None, "{bad:?}");
        }
        let text = render("alice", &names);
        assert!(
            text.contains("1) web-1") && text.contains("2) db"),
            "{text}"
        );
    }
}
