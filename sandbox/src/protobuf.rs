//! Decoding the one protobuf body kubectl commonly sends: a core/v1 Secret
//! (`kubectl create secret generic ...` uses `application/vnd.kubernetes.protobuf`).
//!
//! Owns the wire format: the `k8s\0` magic, the `runtime.Unknown` envelope
//! and the Secret/ObjectMeta fields the sandbox stores (name, generateName,
//! namespace, labels, annotations, finalizers, data, stringData, type,
//! immutable). Everything else is skipped. Responses are always JSON.

use base64::Engine;
use serde_json::{json, Map, Value};

const MAGIC: &[u8] = b"k8s\0";

/// One decoded field: number and payload.
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let num = u32::try_from(tag >> 3).ok()?;
        match tag & 7 {
            0 => out.push(Field::Varint(num, varint(buf, &mut pos)?)),
            1 => pos += 8,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push(Field::Bytes(num, &buf[pos..end]));
                pos = end;
            }
            5 => pos += 4,
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(out)
}

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

/// A map entry message `{ key = 1; value = 2 }`.
fn entry(b: &[u8]) -> Option<(String, &[u8])> {
    let (mut k, mut v) = (None, &b[..0]);
    for f in fields(b)? {
        match f {
            Field::Bytes(1, x) => k = Some(text(x)?),
            Field::Bytes(2, x) => v = x,
            _ => {}
        }
    }
    Some((k?, v))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for f in fields(b)? {
        match f {
            Field::Bytes(n @ (1 | 2 | 3 | 6), x) if !x.is_empty() => {
                let key = match n {
                    1 => "name",
                    2 => "generateName",
                    3 => "namespace",
                    _ => "resourceVersion",
                };
                m.insert(key.into(), json!(text(x)?));
            }
            Field::Bytes(11, x) => {
                let (k, v) = entry(x)?;
                labels.insert(k, json!(text(v)?));
            }
            Field::Bytes(12, x) => {
                let (k, v) = entry(x)?;
                annotations.insert(k, json!(text(v)?));
            }
            Field::Bytes(14, x) => finalizers.push(json!(text(x)?)),
            _ => {}
        }
    }
    for (key, map) in [("labels", labels), ("annotations", annotations)] {
        if !map.is_empty() {
            m.insert(key.into(), Value::Object(map));
        }
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(m))
}

fn secret(b: &[u8]) -> Option<Value> {
    let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}});
    let (mut data, mut string_data) = (Map::new(), Map::new());
    for f in fields(b)? {
        match f {
            Field::Bytes(1, x) => s["metadata"] = object_meta(x)?,
            Field::Bytes(2, x) => {
                let (k, v) = entry(x)?;
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                );
            }
            Field::Bytes(3, x) if !x.is_empty() => s["type"] = json!(text(x)?),
            Field::Bytes(4, x) => {
                let (k, v) = entry(x)?;
                string_data.insert(k, json!(text(v)?));
            }
            Field::Varint(5, v) => s["immutable"] = json!(v != 0),
            _ => {}
        }
    }
    if !data.is_empty() {
        s["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        s["stringData"] = Value::Object(string_data);
    }
    Some(s)
}

/// Decodes a protobuf-encoded v1 Secret into its JSON form; `None` if the
/// body is not one.
pub fn decode_secret(body: &[u8]) -> Option<Value> {
    let envelope = fields(body.strip_prefix(MAGIC)?)?;
    let mut raw = None;
    let mut kind = None;
    for f in envelope {
        match f {
            Field::Bytes(1, type_meta) => {
                for t in fields(type_meta)? {
                    if let Field::Bytes(2, k) = t {
                        kind = text(k);
                    }
                }
            }
            Field::Bytes(2, r) => raw = Some(r),
            _ => {}
        }
    }
    if kind.as_deref() != Some("Secret") {
        return None;
    }
    secret(raw?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3) | 2, u8::try_from(payload.len()).unwrap()];
        v.extend_from_slice(payload);
        v
    }

    fn map_entry(num: u8, k: &str, v: &[u8]) -> Vec<u8> {
        field(num, &[field(1, k.as_bytes()), field(2, v)].concat())
    }

    #[test]
    fn decodes_what_kubectl_create_secret_generic_sends() {
        let meta = [
            field(1, b"gen"),
            field(3, b"vault"),
            map_entry(11, "app", b"x"),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            map_entry(2, "a", b"b\x00"),
            field(3, b"Opaque"),
            vec![5 << 3, 1],
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [
            MAGIC.to_vec(),
            field(1, &type_meta),
            field(2, &secret),
            field(4, b"application/vnd.kubernetes.protobuf"),
        ]
        .concat();
        let v = decode_secret(&body).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"name": "gen", "namespace": "vault", "labels": {"app": "x"}})
        );
        assert_eq!(v["data"], json!({"a": "YgA="}));
        assert_eq!(
            (v["type"].as_str(), v["immutable"].as_bool()),
            (Some("Opaque"), Some(true))
        );
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, b"")].concat();
        assert!(decode_secret(&body).is_none());
        assert!(decode_secret(b"k8s\0\xff\xff").is_none());
        assert!(decode_secret(b"{}").is_none());
    }
}
