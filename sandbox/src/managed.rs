//! Field ownership (`metadata.managedFields`), as server-side apply sees it.
//!
//! Owns the FieldsV1 encoding, which manager owns which leaf field, and the
//! bookkeeping of plain writes (operation `Update`): a manager that changes a
//! field takes it over. Conflict and removal rules of Apply itself live in
//! [`crate::patch`].

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::meta;

/// Fields that identify an object or are set by the server; never owned.
const SERVER_FIELDS: [&str; 9] = [
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/resourceVersion",
    "/metadata/uid",
    "/metadata/managedFields",
    "/metadata/creationTimestamp",
    "/metadata/generation",
];

fn esc(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn unesc(k: &str) -> String {
    k.replace("~1", "/").replace("~0", "~")
}

fn collect_leaves(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                collect_leaves(child, &format!("{prefix}/{}", esc(k)), out);
            }
        }
        _ => {
            if !prefix.is_empty() && !SERVER_FIELDS.contains(&prefix) {
                out.insert(prefix.to_string());
            }
        }
    }
}

/// Every leaf field of `v` as a JSON pointer (lists count as one leaf).
pub fn leaf_paths(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_leaves(v, "", &mut out);
    out
}

/// Removes the field at `path`.
pub fn remove_path(obj: &mut Value, path: &str) {
    let Some((parent, last)) = path.rsplit_once('/') else {
        return;
    };
    if let Some(m) = obj.pointer_mut(parent).and_then(Value::as_object_mut) {
        m.remove(&unesc(last));
    }
}

/// Sets the field at `path`, creating parent objects.
pub fn set_path(obj: &mut Value, path: &str, value: Value) {
    let mut node = obj;
    let segs: Vec<String> = path.split('/').skip(1).map(unesc).collect();
    for (i, seg) in segs.iter().enumerate() {
        if !node.is_object() {
            *node = json!({});
        }
        let Some(m) = node.as_object_mut() else {
            return;
        };
        if i + 1 == segs.len() {
            m.insert(seg.clone(), value);
            return;
        }
        node = m.entry(seg.clone()).or_insert_with(|| json!({}));
    }
}

fn to_fields_v1(paths: &BTreeSet<String>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for seg in p.split('/').skip(1) {
            let entry = node
                .entry(format!("f:{}", unesc(seg)))
                .or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                let seg = k.strip_prefix("f:").unwrap_or(k);
                from_fields_v1(child, &format!("{prefix}/{}", esc(seg)), out);
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.to_string());
            }
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// `true` for `Apply`, `false` for `Update`.
    pub apply: bool,
    /// Owned leaf fields.
    pub fields: BTreeSet<String>,
}

/// All entries of an object.
pub fn read(obj: &Value) -> Vec<Entry> {
    let entries = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let mut fields = BTreeSet::new();
            from_fields_v1(&e["fieldsV1"], "", &mut fields);
            Some(Entry {
                manager: e["manager"].as_str()?.to_string(),
                apply: e["operation"] == "Apply",
                fields,
            })
        })
        .collect()
}

/// Writes `entries` (dropping fields `obj` no longer has, and empty entries).
pub fn write(obj: &mut Value, mut entries: Vec<Entry>, api_version: &str) {
    let now = meta::rfc3339(meta::now());
    for e in &mut entries {
        e.fields.retain(|p| obj.pointer(p).is_some());
    }
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager, "operation": if e.apply { "Apply" } else { "Update" },
                "apiVersion": api_version, "time": now, "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            })
        })
        .collect();
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            md.remove("managedFields");
        } else {
            md.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Records a create/update/patch by `manager`: the fields whose value it
/// changed become its own (operation `Update`) and leave other managers.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str) {
    let changed: BTreeSet<String> = leaf_paths(new)
        .into_iter()
        .filter(|p| old.and_then(|o| o.pointer(p)) != new.pointer(p))
        .collect();
    let mut entries = old.map(read).unwrap_or_default();
    for e in &mut entries {
        if e.apply || e.manager != manager {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    match entries
        .iter_mut()
        .find(|e| !e.apply && e.manager == manager)
    {
        Some(e) => e.fields.extend(changed),
        None => entries.push(Entry {
            manager: manager.to_string(),
            apply: false,
            fields: changed,
        }),
    }
    write(new, entries, api_version);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trips_with_escaped_keys() {
        let obj = json!({"metadata": {"name": "x", "labels": {"a/b": "1"}}, "data": {"k": "v"}});
        let paths = leaf_paths(&obj);
        assert_eq!(
            paths.iter().map(String::as_str).collect::<Vec<_>>(),
            ["/data/k", "/metadata/labels/a~1b"]
        );
        let mut back = BTreeSet::new();
        from_fields_v1(&to_fields_v1(&paths), "", &mut back);
        assert_eq!(back, paths);
    }

    #[test]
    fn an_update_takes_over_the_fields_it_changes() {
        let mut a = json!({"metadata": {"name": "s"}, "data": {"x": "1", "y": "2"}});
        record_update(None, &mut a, "creator", "v1");
        let mut b = a.clone();
        b["data"]["x"] = json!("9");
        record_update(Some(&a), &mut b, "editor", "v1");
        let entries = read(&b);
        let owned = |m: &str| {
            entries
                .iter()
                .find(|e| e.manager == m)
                .map(|e| e.fields.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            owned("creator").into_iter().collect::<Vec<_>>(),
            ["/data/y"]
        );
        assert_eq!(owned("editor").into_iter().collect::<Vec<_>>(), ["/data/x"]);
    }
}
