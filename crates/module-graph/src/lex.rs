//! Rust source to the few tokens the scanner needs, with their lines.
//!
//! Comments (doc comments among them) vanish and every string, byte string, raw string and
//! character literal becomes one opaque token, so a path written in prose or in a literal never
//! looks like code. Lifetimes and labels (`'a`) are told apart from character literals (`'a'`).
//! Numbers and operators other than the ones paths are made of become [`Kind::Other`].

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An identifier or keyword; `raw` for `r#name`, which is never a keyword.
    Ident { text: String, raw: bool },
    /// A string literal of any flavour, with its text between the quotes (escapes left as written).
    Str(String),
    /// `::`
    PathSep,
    /// One punctuation character the scanner looks at: `{ } [ ] ( ) ; , * # ! = < . $`.
    Punct(char),
    /// Anything else: numbers, character literals, lifetimes, other operators.
    Other,
}

/// A token and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) line: u32,
}

impl Token {
    /// Whether this is the keyword (not a raw identifier) `word`.
    pub(crate) fn is_keyword(&self, word: &str) -> bool {
        matches!(&self.kind, Kind::Ident { text, raw: false } if text == word)
    }

    /// The identifier's text, for a plain or raw identifier.
    pub(crate) fn ident(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ident { text, .. } => Some(text),
            _ => None,
        }
    }

    pub(crate) fn is_punct(&self, c: char) -> bool {
        self.kind == Kind::Punct(c)
    }
}

const PUNCT: &[char] = &[
    '{', '}', '[', ']', '(', ')', ';', ',', '*', '#', '!', '=', '<', '.', '$',
];

/// Tokens of `source`. Never fails: an unterminated comment or literal runs to the end of the
/// file, which is what a reader of broken code would see too.
pub(crate) fn tokenize(source: &str) -> Vec<Token> {
    Lexer {
        chars: source.chars().collect(),
        pos: 0,
        line: 1,
        out: Vec::new(),
    }
    .run()
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: u32,
    out: Vec<Token>,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn push(&mut self, kind: Kind, line: u32) {
        self.out.push(Token { kind, line });
    }

    fn run(mut self) -> Vec<Token> {
        self.skip_shebang();
        while let Some(c) = self.peek(0) {
            let line = self.line;
            match c {
                c if c.is_whitespace() => {
                    self.bump();
                }
                '/' if self.peek(1) == Some('/') => self.line_comment(),
                '/' if self.peek(1) == Some('*') => self.block_comment(),
                '"' => {
                    let text = self.quoted();
                    self.push(Kind::Str(text), line);
                }
                '\'' => self.quote_or_lifetime(),
                ':' if self.peek(1) == Some(':') => {
                    self.pos += 2;
                    self.push(Kind::PathSep, line);
                }
                c if c.is_ascii_digit() => self.number(),
                c if is_ident_start(c) => self.ident_or_prefixed_literal(),
                c if PUNCT.contains(&c) => {
                    self.bump();
                    self.push(Kind::Punct(c), line);
                }
                _ => {
                    self.bump();
                    self.push(Kind::Other, line);
                }
            }
        }
        self.out
    }

    /// `#!/usr/bin/env ...` on the first line is not Rust; `#![attr]` is.
    fn skip_shebang(&mut self) {
        if self.peek(0) == Some('#') && self.peek(1) == Some('!') && self.peek(2) != Some('[') {
            while self.peek(0).is_some_and(|c| c != '\n') {
                self.bump();
            }
        }
    }

    fn line_comment(&mut self) {
        while self.peek(0).is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// Block comments nest in Rust: `/* a /* b */ still comment */`.
    fn block_comment(&mut self) {
        self.pos += 2;
        let mut depth = 1usize;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (Some('/'), Some('*')) => {
                    self.pos += 2;
                    depth += 1;
                }
                (Some('*'), Some('/')) => {
                    self.pos += 2;
                    depth -= 1;
                }
                (Some(_), _) => {
                    self.bump();
                }
                (None, _) => return,
            }
        }
    }

    /// A `"..."` literal from its opening quote; returns its text.
    fn quoted(&mut self) -> String {
        self.bump();
        let mut text = String::new();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    text.push(c);
                    if let Some(escaped) = self.bump() {
                        text.push(escaped);
                    }
                }
                '"' => break,
                _ => text.push(c),
            }
        }
        text
    }

    /// A raw literal from its `#`s or quote: `#"..."#` with as many `#` as opened it.
    fn raw_quoted(&mut self) -> String {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            self.bump();
            hashes += 1;
        }
        self.bump(); // the opening quote
        let mut text = String::new();
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|i| self.peek(i) == Some('#')) {
                self.pos += hashes;
                break;
            }
            text.push(c);
        }
        text
    }

    /// `'x'`, `'\n'`, `'\u{..}'` are characters; `'a` and `'static` are lifetimes or labels.
    fn quote_or_lifetime(&mut self) {
        let line = self.line;
        self.bump();
        match (self.peek(0), self.peek(1)) {
            (Some('\\'), _) => {
                self.bump();
                self.bump();
                while self.peek(0).is_some_and(|c| c != '\'' && c != '\n') {
                    self.bump();
                }
                self.bump();
            }
            (Some(_), Some('\'')) => {
                self.bump();
                self.bump();
            }
            _ => {
                while self.peek(0).is_some_and(is_ident_continue) {
                    self.bump();
                }
            }
        }
        self.push(Kind::Other, line);
    }

    /// Digits, suffixes, and a fraction only when a digit follows the dot (so `t.0.1` and
    /// `1..2` keep their dots).
    fn number(&mut self) {
        let line = self.line;
        while let Some(c) = self.peek(0) {
            let fraction = c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit());
            if !(is_ident_continue(c) || fraction) {
                break;
            }
            self.bump();
        }
        self.push(Kind::Other, line);
    }

    /// An identifier, or a literal with a prefix: `b"..."`, `r"..."`, `br#"..."#`, `c"..."`,
    /// `b'x'`; or a raw identifier `r#name`.
    fn ident_or_prefixed_literal(&mut self) {
        let line = self.line;
        let start = self.pos;
        while self.peek(0).is_some_and(is_ident_continue) {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        let next = self.peek(0);
        let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
        match (word.as_str(), next) {
            ("b" | "c", Some('"')) => {
                let text = self.quoted();
                self.push(Kind::Str(text), line);
            }
            (_, Some('"')) if raw_prefix => {
                let text = self.raw_quoted();
                self.push(Kind::Str(text), line);
            }
            (_, Some('#')) if raw_prefix && self.raw_string_follows() => {
                let text = self.raw_quoted();
                self.push(Kind::Str(text), line);
            }
            ("r", Some('#')) if self.peek(1).is_some_and(is_ident_start) => {
                self.pos += 1;
                let start = self.pos;
                while self.peek(0).is_some_and(is_ident_continue) {
                    self.pos += 1;
                }
                let text = self.chars[start..self.pos].iter().collect();
                self.push(Kind::Ident { text, raw: true }, line);
            }
            ("b", Some('\'')) => self.quote_or_lifetime(),
            _ => self.push(
                Kind::Ident {
                    text: word,
                    raw: false,
                },
                line,
            ),
        }
    }

    /// After `r`, `br` or `cr`: whether `#...#"` opens a raw string.
    fn raw_string_follows(&self) -> bool {
        let mut i = 0;
        while self.peek(i) == Some('#') {
            i += 1;
        }
        self.peek(i) == Some('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<Kind> {
        tokenize(source).into_iter().map(|t| t.kind).collect()
    }

    fn ident(text: &str) -> Kind {
        Kind::Ident {
            text: text.to_owned(),
            raw: false,
        }
    }

    #[test]
    fn comments_vanish_and_literals_are_opaque() {
        let source = "a // crate::x\n/* crate::y /* nested */ crate::z */ b \"crate::s\" \
                      r#\"crate::\"raw\"# br\"q\" c";
        assert_eq!(
            kinds(source),
            vec![
                ident("a"),
                ident("b"),
                Kind::Str("crate::s".into()),
                Kind::Str("crate::\"raw".into()),
                Kind::Str("q".into()),
                ident("c"),
            ]
        );
    }

    #[test]
    fn lifetimes_are_not_character_literals() {
        // Read as a character literal, `'a` would swallow everything up to the next quote.
        let toks = kinds("fn f<'a>(x: &'a str) -> char { let c = '\\''; 'q' } crate::m");
        assert!(toks.ends_with(&[ident("crate"), Kind::PathSep, ident("m")]));
        assert_eq!(toks.iter().filter(|k| **k == ident("x")).count(), 1);
    }

    #[test]
    fn lines_count_through_comments_and_strings() {
        let toks = tokenize("a\n/* one\ntwo */\n\"x\ny\"\nb");
        let lines: Vec<u32> = toks.iter().map(|t| t.line).collect();
        assert_eq!(lines, vec![1, 4, 6]);
    }

    #[test]
    fn raw_identifiers_are_not_keywords() {
        let toks = tokenize("r#mod mod");
        assert!(!toks[0].is_keyword("mod"));
        assert!(toks[1].is_keyword("mod"));
    }
}
