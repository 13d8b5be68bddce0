//! `match` values: globs (`*` = a run without `/`, `**` = any run, `?` = one character other
//! than `/`) or `/regex/` (always anchored), both with `${account}` and `${group}`
//! placeholders that expand to the requester's name and to each of its groups.

use regex_lite::Regex;

/// What placeholders expand to for one request.
pub struct Context<'a> {
    pub account: &'a str,
    pub groups: &'a [String],
}

/// A compiled `match` value.
pub struct Pattern {
    kind: Kind,
    /// Uses `${group}`: tried once per group of the requester, and never matches without one.
    per_group: bool,
}

enum Kind {
    /// No wildcard and no placeholder: plain string equality.
    Exact(String),
    Glob(Vec<GlobToken>),
    Regex(Regex),
    /// A regex with placeholders: compiled per request with the values escaped.
    RegexTemplate(Vec<Piece>),
}

/// Text with placeholders.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Account,
    Group,
}

#[derive(Debug, PartialEq)]
enum GlobToken {
    Piece(Piece),
    /// `*`
    Segment,
    /// `**`
    Any,
    /// `?`
    One,
}

impl Pattern {
    pub fn parse(value: &str) -> Result<Pattern, String> {
        let regex = value
            .strip_prefix('/')
            .and_then(|v| v.strip_suffix('/'))
            .filter(|_| value.len() >= 2);
        let pieces = placeholders(value)?;
        let per_group = pieces.contains(&Piece::Group);
        let kind = match regex {
            Some(source) => {
                let pieces = placeholders(source)?;
                // A template is compiled with stand-in values so that a bad regex fails the load.
                let compiled = compile_regex(&pieces, "x", "x")
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?;
                if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
                    Kind::Regex(compiled)
                } else {
                    Kind::RegexTemplate(pieces)
                }
            }
            None => {
                let tokens = glob_tokens(pieces);
                match tokens.as_slice() {
                    [] => Kind::Exact(String::new()),
                    [GlobToken::Piece(Piece::Text(text))] => Kind::Exact(text.clone()),
                    _ => Kind::Glob(tokens),
                }
            }
        };
        Ok(Pattern { kind, per_group })
    }

    pub fn matches(&self, value: &str, ctx: &Context) -> bool {
        let try_with = |group: &str| match &self.kind {
            Kind::Exact(text) => value == text,
            Kind::Regex(regex) => regex.is_match(value),
            Kind::Glob(tokens) => glob_match(tokens, value, ctx.account, group),
            Kind::RegexTemplate(pieces) => compile_regex(
                pieces,
                &regex_lite::escape(ctx.account),
                &regex_lite::escape(group),
            )
            .is_ok_and(|regex| regex.is_match(value)),
        };
        if self.per_group {
            ctx.groups.iter().any(|group| try_with(group))
        } else {
            try_with("")
        }
    }
}

fn compile_regex(pieces: &[Piece], account: &str, group: &str) -> Result<Regex, regex_lite::Error> {
    let mut source = String::from("^(?:");
    for piece in pieces {
        source.push_str(match piece {
            Piece::Text(text) => text,
            Piece::Account => account,
            Piece::Group => group,
        });
    }
    source.push_str(")$");
    Regex::new(&source)
}

/// Splits out `${account}` and `${group}`; any other `${...}` is an error.
fn placeholders(value: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{value:?}: unclosed `${{`"))?;
        pieces.push(match &after[..end] {
            "account" => Piece::Account,
            "group" => Piece::Group,
            other => {
                return Err(format!(
                    "{value:?}: unknown placeholder ${{{other}}} (use ${{account}} or ${{group}})"
                ));
            }
        });
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// Splits the text pieces of a glob at its wildcards.
fn glob_tokens(pieces: Vec<Piece>) -> Vec<GlobToken> {
    let mut out = Vec::new();
    for piece in pieces {
        let Piece::Text(text) = piece else {
            out.push(GlobToken::Piece(piece));
            continue;
        };
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let wildcard = match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    GlobToken::Any
                }
                '*' => GlobToken::Segment,
                '?' => GlobToken::One,
                _ => {
                    literal.push(c);
                    continue;
                }
            };
            if !literal.is_empty() {
                out.push(GlobToken::Piece(Piece::Text(std::mem::take(&mut literal))));
            }
            out.push(wildcard);
        }
        if !literal.is_empty() {
            out.push(GlobToken::Piece(Piece::Text(literal)));
        }
    }
    out
}

/// Matches without backtracking: the set of positions in `value` reachable after each token
/// is carried forward, so even a pattern full of stars costs O(tokens × length²) at worst.
fn glob_match(tokens: &[GlobToken], value: &str, account: &str, group: &str) -> bool {
    // Most rules fail on their leading text: reject those before allocating anything.
    if let Some(GlobToken::Piece(first)) = tokens.first()
        && !value.starts_with(piece_text(first, account, group))
    {
        return false;
    }
    if let Some(GlobToken::Piece(last)) = tokens.last()
        && !value.ends_with(piece_text(last, account, group))
    {
        return false;
    }
    let len = value.len();
    let mut reach = vec![false; len + 1];
    let mut next = vec![false; len + 1];
    reach[0] = true;
    for token in tokens {
        next.iter_mut().for_each(|r| *r = false);
        for start in (0..=len).filter(|&i| reach[i]) {
            let rest = &value[start..];
            match token {
                GlobToken::Piece(piece) => {
                    let text = piece_text(piece, account, group);
                    if rest.starts_with(text) {
                        next[start + text.len()] = true;
                    }
                }
                GlobToken::Any => {
                    // Every character boundary from here on: a byte inside a character is no
                    // place to slice `value` at.
                    for end in (start..=len).filter(|&i| value.is_char_boundary(i)) {
                        next[end] = true;
                    }
                }
                GlobToken::Segment => {
                    next[start] = true;
                    for (i, c) in rest.char_indices().take_while(|&(_, c)| c != '/') {
                        next[start + i + c.len_utf8()] = true;
                    }
                }
                GlobToken::One => {
                    if let Some(c) = rest.chars().next().filter(|&c| c != '/') {
                        next[start + c.len_utf8()] = true;
                    }
                }
            }
        }
        if !next.contains(&true) {
            return false;
        }
        std::mem::swap(&mut reach, &mut next);
    }
    reach[len]
}

fn piece_text<'a>(piece: &'a Piece, account: &'a str, group: &'a str) -> &'a str {
    match piece {
        Piece::Text(text) => text,
        Piece::Account => account,
        Piece::Group => group,
    }
}
