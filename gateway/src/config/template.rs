//! `${stageVariables.NAME}` templates in upstream path prefixes and added headers,
//! rendered once per published snapshot (never per request).

use std::collections::BTreeMap;

/// A stage-variable name: ASCII letters, digits and `_`, at least one.
pub(crate) fn is_var_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A parsed template: literal text and variable references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

const OPEN: &str = "${stageVariables.";

impl Template {
    /// Parses `text`; `$` not followed by `{` is literal.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            if i > 0 {
                parts.push(Part::Lit(rest[..i].to_owned()));
            }
            let tail = &rest[i..];
            let Some(after) = tail.strip_prefix(OPEN) else {
                return Err(format!(
                    "only ${{stageVariables.NAME}} can be used, in '{text}'"
                ));
            };
            let Some(end) = after.find('}') else {
                return Err(format!("unterminated ${{ in '{text}'"));
            };
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(format!(
                    "'{name}' is not a variable name (letters, digits, _) in '{text}'"
                ));
            }
            parts.push(Part::Var(name.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Renders with `vars`; an undefined variable renders as the empty string.
    pub(crate) fn render(&self, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(name) => out.push_str(vars.get(name).map_or("", String::as_str)),
            }
        }
        out
    }
}

/// Parses and renders in one step; a text that does not parse renders as itself (the
/// configuration was checked when it was loaded).
pub(crate) fn render(text: &str, vars: &BTreeMap<String, String>) -> String {
    Template::parse(text).map_or_else(|_| text.to_owned(), |t| t.render(vars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables() {
        let vars: BTreeMap<String, String> = [("version".to_owned(), "v2".to_owned())].into();
        assert_eq!(render("/${stageVariables.version}/x", &vars), "/v2/x");
        assert_eq!(render("a${stageVariables.missing}b", &vars), "ab");
        assert_eq!(render("cost $5", &vars), "cost $5");
        assert!(Template::parse("${stageVariables.version").is_err());
        assert!(Template::parse("${env.HOME}").is_err());
        assert!(Template::parse("${stageVariables.a-b}").is_err());
    }
}
