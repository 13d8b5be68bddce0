//! Globs, one language everywhere a pattern is written (the gateway's `require`,
//! personal-token limits and policy fixtures, and policies such as `immutable-tags`, as in
//! the `acl` policy): `*` is a run of characters without `/`, `**` any run, `?` one
//! character other than `/`, everything else itself; the whole value must match.

use serde::Deserialize;

/// One pattern or a list of them, as settings write either (`"releases/**"` or
/// `["v*", "latest"]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single pattern.
    One(String),
    /// Several patterns; any may match.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The patterns, as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

/// Whether `value` matches `pattern` as a whole.
pub fn matches(pattern: &str, value: &str) -> bool {
    #[derive(PartialEq)]
    enum Token {
        Char(char),
        Segment,
        Any,
        One,
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::Any
            }
            '*' => Token::Segment,
            '?' => Token::One,
            c => Token::Char(c),
        });
    }
    let v: Vec<char> = value.chars().collect();
    // reach[j]: the tokens so far can match the first j characters of the value.
    let mut reach = vec![false; v.len() + 1];
    reach[0] = true;
    for token in &tokens {
        let mut next = vec![false; v.len() + 1];
        for j in 0..=v.len() {
            next[j] = match token {
                Token::Any => reach[j] || (j > 0 && next[j - 1]),
                Token::Segment => reach[j] || (j > 0 && v[j - 1] != '/' && next[j - 1]),
                Token::One => j > 0 && reach[j - 1] && v[j - 1] != '/',
                Token::Char(c) => j > 0 && reach[j - 1] && v[j - 1] == *c,
            };
        }
        reach = next;
    }
    reach[v.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pattern_or_many_read_alike() {
        let one: OneOrMany = serde_json::from_str("\"v*\"").expect("one");
        let many: OneOrMany = serde_json::from_str("[\"v*\", \"latest\"]").expect("many");
        assert_eq!(one.into_vec(), ["v*"]);
        assert_eq!(many.into_vec(), ["v*", "latest"]);
    }

    /// Issue 19: globs mean what they mean in `acl`: `*` stays within one `/` segment.
    #[test]
    fn globs_match_whole_values_as_acl_globs_do() {
        assert!(matches("acme", "acme"));
        assert!(!matches("acme", "acme-evil"));
        assert!(matches("refs/heads/*", "refs/heads/main"));
        assert!(!matches("refs/heads/*", "refs/heads/feature/x"));
        assert!(matches("refs/heads/**", "refs/heads/feature/x"));
        assert!(matches("refs/tags/v?.*", "refs/tags/v1.2"));
        assert!(!matches("refs/tags/v?.*", "refs/heads/v1.2"));
        assert!(!matches("a?b", "a/b"));
        assert!(matches("*", ""));
        assert!(!matches("*", "a/b"));
        assert!(matches("é*", "équipe"));
        assert!(matches(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/app:ref:refs/heads/main"
        ));
        assert!(!matches("repo:acme/*", "repo:acme/app:ref:refs/heads/x/y"));
    }
}
