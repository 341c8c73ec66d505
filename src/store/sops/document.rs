//! The document tree: JSON and YAML parsed into one ordered shape, and emitted back.
//!
//! Decides how text becomes [`Node`]s in document order (the MAC depends on that
//! order) and how nodes become text again. YAML is emitted with every string
//! double-quoted, so no reader (sops's go-yaml included) can take a string such
//! as `2001-12-14` for a timestamp or `no` for a boolean. Comments in YAML input
//! are not kept. Which values are encrypted is decided elsewhere (`rules`).

use super::SopsError;

/// One node of a document, maps in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A YAML timestamp (only produced by decrypting a sops `type:time` value);
    /// emitted unquoted in YAML so it stays a timestamp.
    Time(String),
    Null,
}

/// The two text formats sops documents come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON object (credentials documents).
    Json,
    /// A single YAML document whose root is a mapping (Kubernetes manifests).
    Yaml,
}

impl Format {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
        }
    }
}

impl Node {
    pub(crate) fn get<'a>(&'a self, key: &str) -> Option<&'a Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) | Node::Time(s) => Some(s),
            _ => None,
        }
    }
}

/// Parses `text` in `format`; the root must be a mapping.
pub(crate) fn parse(text: &str, format: Format) -> Result<Vec<(String, Node)>, SopsError> {
    let root = match format {
        Format::Json => {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| SopsError::Parse {
                    format: format.name(),
                    reason: format!(
                        "line {} column {}: {:?}",
                        e.line(),
                        e.column(),
                        e.classify()
                    ),
                })?;
            from_json(value)
        }
        Format::Yaml => {
            let value: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| SopsError::Parse {
                    format: format.name(),
                    reason: yaml_reason(&e),
                })?;
            from_yaml(value)?
        }
    };
    match root {
        Node::Map(entries) => Ok(entries),
        _ => Err(SopsError::Parse {
            format: format.name(),
            reason: "the document root is not a mapping".into(),
        }),
    }
}

/// A serde_yaml error reduced to its position and a fixed phrase: its message
/// may quote pieces of the input, and the input may hold secrets.
fn yaml_reason(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(loc) => format!(
            "invalid YAML at line {} column {}",
            loc.line(),
            loc.column()
        ),
        None => "invalid YAML (more than one document, or not a YAML value)".into(),
    }
}

fn from_json(value: serde_json::Value) -> Node {
    use serde_json::Value;
    match value {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(b),
        // sops reads every JSON number as a float64.
        Value::Number(n) => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Node::Str(s),
        Value::Array(items) => Node::List(items.into_iter().map(from_json).collect()),
        Value::Object(map) => Node::Map(map.into_iter().map(|(k, v)| (k, from_json(v))).collect()),
    }
}

fn from_yaml(value: serde_yaml::Value) -> Result<Node, SopsError> {
    use serde_yaml::Value;
    Ok(match value {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Node::Int(i),
            None => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Node::Str(s),
        Value::Sequence(items) => {
            Node::List(items.into_iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        Value::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key = match k {
                    Value::String(s) => s,
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Null => "null".into(),
                    _ => return Err(unsupported("a mapping key that is not a scalar")),
                };
                entries.push((key, from_yaml(v)?));
            }
            Node::Map(entries)
        }
        Value::Tagged(_) => return Err(unsupported("a tagged YAML value (`!tag`)")),
    })
}

fn unsupported(what: &str) -> SopsError {
    SopsError::Parse {
        format: "YAML",
        reason: format!("{what} is not supported"),
    }
}

/// Emits a root mapping as text in `format`.
pub(crate) fn emit(root: &[(String, Node)], format: Format) -> Result<String, SopsError> {
    match format {
        Format::Json => {
            let mut value = to_json_map(root);
            let text = serde_json::to_string_pretty(&value).map_err(|e| SopsError::Emit {
                format: "JSON",
                reason: format!("{:?}", e.classify()),
            });
            scrub_json(&mut value);
            let mut text = text?;
            text.push('\n');
            Ok(text)
        }
        Format::Yaml => {
            let mut out = String::new();
            if root.is_empty() {
                out.push_str("{}\n");
            } else {
                yaml_map(root, 0, &mut out);
            }
            Ok(out)
        }
    }
}

/// Overwrites the strings of an intermediate JSON tree (it may hold plaintext).
fn scrub_json(value: &mut serde_json::Value) {
    use zeroize::Zeroize as _;
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(scrub_json),
        _ => {}
    }
}

fn to_json_map(entries: &[(String, Node)]) -> serde_json::Value {
    serde_json::Value::Object(
        entries
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    )
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Map(entries) => to_json_map(entries),
        Node::List(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Str(s) | Node::Time(s) => Value::String(s.clone()),
        Node::Int(i) => Value::from(*i),
        Node::Float(f) => json_float(*f),
        Node::Bool(b) => Value::Bool(*b),
        Node::Null => Value::Null,
    }
}

/// Integral floats print without a fraction, as sops (Go) prints them; JSON has
/// no NaN or infinity, so those become null.
fn json_float(f: f64) -> serde_json::Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < EXACT {
        serde_json::Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    }
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn yaml_map(entries: &[(String, Node)], depth: usize, out: &mut String) {
    for (i, (k, v)) in entries.iter().enumerate() {
        // The first entry of a map inside a list item continues the `- ` line.
        if i > 0 || depth == 0 || !out.ends_with("- ") {
            indent(out, depth);
        }
        yaml_key(k, out);
        out.push(':');
        yaml_child(v, depth, out);
    }
}

fn yaml_child(v: &Node, depth: usize, out: &mut String) {
    match v {
        Node::Map(m) if !m.is_empty() => {
            out.push('\n');
            yaml_map(m, depth + 2, out);
        }
        Node::List(l) if !l.is_empty() => {
            out.push('\n');
            yaml_list(l, depth + 2, out);
        }
        scalar => {
            out.push(' ');
            yaml_scalar(scalar, out);
            out.push('\n');
        }
    }
}

fn yaml_list(items: &[Node], depth: usize, out: &mut String) {
    for item in items {
        indent(out, depth);
        match item {
            Node::Map(m) if !m.is_empty() => {
                out.push_str("- ");
                yaml_map(m, depth + 2, out);
            }
            Node::List(l) if !l.is_empty() => {
                out.push_str("-\n");
                yaml_list(l, depth + 2, out);
            }
            scalar => {
                out.push_str("- ");
                yaml_scalar(scalar, out);
                out.push('\n');
            }
        }
    }
}

fn yaml_scalar(node: &Node, out: &mut String) {
    match node {
        Node::Map(_) => out.push_str("{}"),
        Node::List(_) => out.push_str("[]"),
        Node::Str(s) => yaml_quoted(s, out),
        Node::Time(s) => {
            if is_plain_timestamp(s) {
                out.push_str(s)
            } else {
                yaml_quoted(s, out)
            }
        }
        Node::Int(i) => out.push_str(&i.to_string()),
        Node::Float(f) => out.push_str(&yaml_float(*f)),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Null => out.push_str("null"),
    }
}

fn yaml_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let text = format!("{f:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// Only digits, `-`, `:`, `.`, `T`, `Z`, `+`: safe to emit unquoted.
fn is_plain_timestamp(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | '.' | 'T' | 'Z' | '+'))
}

fn yaml_key(k: &str, out: &mut String) {
    const AMBIGUOUS: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "<<",
    ];
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !AMBIGUOUS.contains(&k.to_ascii_lowercase().as_str());
    if plain {
        out.push_str(k);
    } else {
        yaml_quoted(k, out);
    }
}

/// A YAML double-quoted scalar; escapes everything YAML would not read back verbatim.
fn yaml_quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_yaml(text: &str) -> Vec<(String, Node)> {
        let parsed = parse(text, Format::Yaml).unwrap();
        let emitted = emit(&parsed, Format::Yaml).unwrap();
        let again = parse(&emitted, Format::Yaml).unwrap();
        assert_eq!(
            parsed, again,
            "YAML round trip changed the tree:\n{emitted}"
        );
        parsed
    }

    #[test]
    fn yaml_strings_are_always_quoted() {
        let tree = vec![
            ("date".to_string(), Node::Str("2001-12-14".into())),
            ("no".to_string(), Node::Str("no".into())),
            ("n".to_string(), Node::Int(3)),
        ];
        let text = emit(&tree, Format::Yaml).unwrap();
        assert_eq!(text, "date: \"2001-12-14\"\n\"no\": \"no\"\n\"n\": 3\n");
    }

    #[test]
    fn yaml_round_trips_awkward_values() {
        round_trip_yaml(concat!(
            "a: \"quote \\\" back\\\\slash\"\n",
            "b: \"ünï 🦀 \\u2028 \\x01 \\x7f \\u0085 \\ufeff\"\n",
            "c: \"\"\n",
            "d: [1, 2.5, -0.0, 1e300, .inf, -.inf, true, null, [], {}]\n",
            "e: [{x: 1, y: [a, [b, c]]}, [[d]], {}]\n",
            "\"key with: colon\": {\"#\": 1, \"- \": 2, \"\": 3, \"8080\": 4}\n",
        ));
    }

    #[test]
    fn json_keeps_key_order_and_prints_integral_floats_as_integers() {
        let text = r#"{"z":1,"a":[2.5,3],"m":{"y":true,"b":null}}"#;
        let tree = parse(text, Format::Json).unwrap();
        let keys: Vec<_> = tree.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        let out = emit(&tree, Format::Json).unwrap();
        let reparsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            reparsed,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        assert!(out.contains("\"z\": 1,"), "{out}");
    }

    #[test]
    fn non_mapping_roots_are_refused() {
        for (text, format) in [
            ("[1]", Format::Json),
            ("- 1\n", Format::Yaml),
            ("", Format::Yaml),
        ] {
            assert!(matches!(parse(text, format), Err(SopsError::Parse { .. })));
        }
    }

    #[test]
    fn yaml_parse_errors_do_not_quote_input() {
        let err = parse("a: \"secret-value\nb: [", Format::Yaml).unwrap_err();
        assert!(!err.to_string().contains("secret-value"), "{err}");
    }
}
