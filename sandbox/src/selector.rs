//! Label selectors: parsing `labelSelector=` and matching labels.
//!
//! Supports equality (`=`, `==`, `!=`), set-based (`in (a,b)`, `notin (a,b)`)
//! and existence (`key`, `!key`) requirements joined by commas.

use serde_json::{Map, Value};

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected (values), found {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Selector {
    /// Parses a selector string; an error names the offending part.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), parse_set(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), parse_set(rest)?)
            } else if part.contains(['(', ' ']) {
                return Err(format!("unable to parse requirement: {part:?}"));
            } else {
                Requirement::Exists(part.into())
            };
            reqs.push(req);
        }
        Ok(Self { reqs })
    }

    /// Whether `labels` (a JSON object of strings, or absent) satisfies every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| vs.iter().all(|x| x != v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether an object's `metadata.labels` satisfies the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

/// A field selector: `path=value`, `path==value`, `path!=value`, comma-joined,
/// where `path` is a dotted JSON path (`metadata.name`, `involvedObject.uid`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector: {part:?}"));
            };
            let pointer = format!("/{}", path.trim().replace('.', "/"));
            reqs.push((pointer, equal, value.trim().to_string()));
        }
        Ok(Self { reqs })
    }

    /// Whether `obj` satisfies every requirement (a missing field reads as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(ptr, equal, want)| {
            let have = match obj.pointer(ptr) {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels() -> Value {
        json!({"metadata": {"labels": {"app": "openbao", "component": "server", "idx": "1"}}})
    }

    fn m(s: &str) -> bool {
        Selector::parse(s).unwrap().matches_object(&labels())
    }

    #[test]
    fn equality_and_inequality() {
        assert!(m("app=openbao"));
        assert!(m("app==openbao,component=server"));
        assert!(!m("app=vault"));
        assert!(m("app!=vault"));
        assert!(!m("app!=openbao"));
        assert!(m("missing!=x"));
    }

    #[test]
    fn set_based_and_existence() {
        assert!(m("app in (vault, openbao)"));
        assert!(!m("app notin (openbao)"));
        assert!(m("idx in (0,1),app"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(!m("missing"));
        assert!(m(""));
    }

    #[test]
    fn field_selectors_follow_dotted_paths() {
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "openbao-0", "uid": "u"}, "count": 2});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&ev);
        assert!(m("involvedObject.name=openbao-0,involvedObject.uid=u"));
        assert!(m("metadata.name!=x,count=2"));
        assert!(!m("involvedObject.name==other"));
        assert!(m("missing.field="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(Selector::parse("app in openbao").is_err());
    }
}
