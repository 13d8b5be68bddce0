//! `match` values: globs (`*` = a run without `/`, `**` = any run, `?` = one character other
//! than `/`) or `/regex/` (always anchored), both with `${account}`, `${group}` and
//! `${claim:NAME}` placeholders that expand to the requester's name, to each of its groups,
//! and to the value of a claim of its token (`${claim:NAME|lower}`: lower-cased) (a pattern naming a claim the account does not
//! have matches nothing).

use regex_lite::Regex;
use std::borrow::Cow;

/// What placeholders expand to for one request.
pub struct Context<'a> {
    pub account: &'a str,
    pub groups: &'a [String],
    pub claims: &'a [(String, String)],
}

/// What placeholders expand to for one try of a pattern: the request, and the group being
/// tried for `${group}`.
struct Expand<'a> {
    ctx: &'a Context<'a>,
    group: &'a str,
}

impl<'a> Expand<'a> {
    /// A piece's text; None for a claim the account does not have.
    fn text(&self, piece: &'a Piece) -> Option<Cow<'a, str>> {
        let claim = |name: &str| {
            self.ctx
                .claims
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        match piece {
            Piece::Text(text) => Some(Cow::Borrowed(text)),
            Piece::Account => Some(Cow::Borrowed(self.ctx.account)),
            Piece::Group => Some(Cow::Borrowed(self.group)),
            Piece::Claim(name) => claim(name).map(Cow::Borrowed),
            Piece::LowerClaim(name) => claim(name).map(|v| Cow::Owned(v.to_lowercase())),
        }
    }
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
    Claim(String),
    /// `${claim:NAME|lower}`: the claim's value lower-cased (GitHub's `repository` keeps
    /// the owner's capitals; repository names are lower case).
    LowerClaim(String),
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
                let stand_ins = pieces.iter().map(|piece| match piece {
                    Piece::Text(text) => text.clone(),
                    _ => "x".to_string(),
                });
                let compiled =
                    anchored(stand_ins).map_err(|e| format!("invalid regex {value:?}: {e}"))?;
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
        let try_with = |group: &str| {
            let expand = Expand { ctx, group };
            match &self.kind {
                Kind::Exact(text) => value == text,
                Kind::Regex(regex) => regex.is_match(value),
                Kind::Glob(tokens) => glob_match(tokens, value, &expand),
                Kind::RegexTemplate(pieces) => {
                    // Placeholder values are matched literally, never as a pattern.
                    let sources: Option<Vec<String>> = pieces
                        .iter()
                        .map(|piece| match piece {
                            Piece::Text(text) => Some(text.clone()),
                            other => expand.text(other).map(|text| regex_lite::escape(&text)),
                        })
                        .collect();
                    sources.is_some_and(|sources| {
                        anchored(sources.into_iter()).is_ok_and(|regex| regex.is_match(value))
                    })
                }
            }
        };
        if self.per_group {
            ctx.groups.iter().any(|group| try_with(group))
        } else {
            try_with("")
        }
    }
}

/// The regex of these source pieces, anchored at both ends.
fn anchored(sources: impl Iterator<Item = String>) -> Result<Regex, regex_lite::Error> {
    Regex::new(&format!("^(?:{})$", sources.collect::<String>()))
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
            claim if claim.starts_with("claim:") && claim.len() > "claim:".len() => {
                let name = &claim["claim:".len()..];
                match name.split_once('|') {
                    None => Piece::Claim(name.to_string()),
                    Some((name, "lower")) if !name.is_empty() => {
                        Piece::LowerClaim(name.to_string())
                    }
                    Some(_) => {
                        return Err(format!(
                            "{value:?}: ${{{claim}}} is not a claim placeholder (write \
                             ${{claim:NAME}} or ${{claim:NAME|lower}})"
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "{value:?}: unknown placeholder ${{{other}}} (use ${{account}}, ${{group}}, \
                     ${{claim:NAME}} or ${{claim:NAME|lower}})"
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
/// A piece without text (a claim the account does not have) matches nothing.
fn glob_match<'a>(tokens: &'a [GlobToken], value: &str, expand: &Expand<'a>) -> bool {
    // Most rules fail on their leading text: reject those before allocating anything.
    if let Some(GlobToken::Piece(first)) = tokens.first()
        && !expand
            .text(first)
            .is_some_and(|text| value.starts_with(&*text))
    {
        return false;
    }
    if let Some(GlobToken::Piece(last)) = tokens.last()
        && !expand
            .text(last)
            .is_some_and(|text| value.ends_with(&*text))
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
                    let Some(text) = expand.text(piece) else {
                        return false;
                    };
                    if rest.starts_with(&*text) {
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
