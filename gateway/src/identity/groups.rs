//! Group memberships from an Apache-style groups file.

use super::{InvalidFile, read};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Group memberships from an Apache `AuthGroupFile`: `group: user user ...` per line.
#[derive(Debug, Default)]
pub struct Groups {
    by_user: HashMap<String, Vec<String>>,
}

impl Groups {
    /// Parses the file. Blank lines and `#` comments are skipped; a group may span several
    /// lines, and members are separated by whitespace.
    pub fn parse(file: &str, text: &str) -> Result<Groups, InvalidFile> {
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (group, members) = line.split_once(':').ok_or_else(|| InvalidFile {
                file: file.to_string(),
                line: i + 1,
                message: "expected `group: user user ...`".into(),
            })?;
            let group = group.trim();
            if group.is_empty() || group.contains(char::is_whitespace) {
                return Err(InvalidFile {
                    file: file.to_string(),
                    line: i + 1,
                    message: format!("{group:?} is not a group name"),
                });
            }
            for user in members.split_whitespace() {
                if seen.insert((user.to_string(), group.to_string())) {
                    by_user
                        .entry(user.to_string())
                        .or_default()
                        .push(group.to_string());
                }
            }
        }
        Ok(Groups { by_user })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Groups, InvalidFile> {
        Groups::parse(&path.display().to_string(), &read(path)?)
    }

    /// The groups of `user`, in file order.
    pub fn of(&self, user: &str) -> &[String] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }
}
