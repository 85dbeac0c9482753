//! ConfigMaps and Secrets: config keys, the 1 MiB size limit, Secret types, and the
//! `immutable` flag.

use base64::Engine as _;
use serde_json::Value;

use super::equality::semantic_eq;
use super::names::is_config_map_key;
use super::path::Path;
use super::report::{Errs, bool_at, forbidden, get, go_quote, immutable_raw, invalid_str, required, str_map, too_long};

/// Most bytes the data of one ConfigMap or Secret may hold (`core.MaxSecretSize`).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

const IMMUTABLE_MSG: &str = "field is immutable when `immutable` is set";

fn check_key(key: &str, path: &Path, errs: &mut Errs) {
    for msg in is_config_map_key(key) {
        errs.push(invalid_str(path, key, &msg));
    }
}

/// The decoded length of a base64 value, or `None` (reported) when it is not base64.
fn decoded_len(v: &str, path: &Path, errs: &mut Errs) -> Option<usize> {
    match base64::engine::general_purpose::STANDARD.decode(v) {
        Ok(bytes) => Some(bytes.len()),
        Err(e) => {
            errs.push(invalid_str(path, "<value omitted>", &format!("illegal base64 data: {e}")));
            None
        }
    }
}

fn decoded(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(v).ok()
}

/// `ValidateConfigMap` beyond metadata.
pub(crate) fn validate_config_map(cm: &Value, errs: &mut Errs) {
    let root = Path::new("");
    let data = str_map(cm, "data", &root, errs).unwrap_or_default();
    let binary = str_map(cm, "binaryData", &root, errs).unwrap_or_default();
    let mut total = 0usize;
    for (k, v) in &data {
        let p = Path::new("data").key(k);
        check_key(k, &p, errs);
        if binary.iter().any(|(b, _)| b == k) {
            errs.push(invalid_str(&p, k, "duplicate of key present in binaryData"));
        }
        total += v.len();
    }
    for (k, v) in &binary {
        let p = Path::new("binaryData").key(k);
        check_key(k, &p, errs);
        total += decoded_len(v, &p, errs).unwrap_or(0);
    }
    if total > MAX_DATA_SIZE {
        // Upstream reports the size on the whole object (an empty path).
        errs.push(too_long(&root, MAX_DATA_SIZE));
    }
}

/// `ValidateConfigMapUpdate` beyond metadata and the new object's own validity.
pub(crate) fn validate_config_map_update(new: &Value, old: &Value, errs: &mut Errs) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(forbidden(&Path::new("immutable"), IMMUTABLE_MSG));
    }
    for key in ["data", "binaryData"] {
        if !semantic_eq(get(new, key), get(old, key)) {
            errs.push(forbidden(&Path::new(key), IMMUTABLE_MSG));
        }
    }
}

/// The keys of a Secret with their decoded sizes: `data` (base64) and `stringData` (plain),
/// which kube-apiserver merges into `data` before validating.
fn secret_entries<'a>(secret: &'a Value, errs: &mut Errs) -> Vec<(&'a str, Option<usize>)> {
    let root = Path::new("");
    let mut entries: Vec<(&str, Option<usize>)> = Vec::new();
    for (k, v) in str_map(secret, "data", &root, errs).unwrap_or_default() {
        let len = decoded_len(v, &Path::new("data").key(k), errs);
        entries.push((k, len));
    }
    for (k, v) in str_map(secret, "stringData", &root, errs).unwrap_or_default() {
        match entries.iter_mut().find(|(e, _)| *e == k) {
            Some(e) => e.1 = Some(v.len()),
            None => entries.push((k, Some(v.len()))),
        }
    }
    entries
}

/// The bytes of one Secret key, from `stringData` or decoded `data`.
fn secret_value(secret: &Value, key: &str) -> Option<Vec<u8>> {
    if let Some(s) = secret.pointer(&format!("/stringData/{}", key.replace('~', "~0").replace('/', "~1"))) {
        return s.as_str().map(|s| s.as_bytes().to_vec());
    }
    get(secret, "data").and_then(|d| d.get(key)).and_then(Value::as_str).and_then(decoded)
}

/// `ValidateSecret` beyond metadata.
pub(crate) fn validate_secret(secret: &Value, errs: &mut Errs) {
    let data = Path::new("data");
    let entries = secret_entries(secret, errs);
    let mut total = 0usize;
    for (k, len) in &entries {
        check_key(k, &data.key(k), errs);
        total += len.unwrap_or(0);
    }
    if total > MAX_DATA_SIZE {
        errs.push(too_long(&data, MAX_DATA_SIZE));
    }
    let has = |key: &str| entries.iter().any(|(k, _)| *k == key);
    let secret_type = super::report::str_or_empty(secret, "type", &Path::new(""), errs);
    match secret_type {
        "kubernetes.io/service-account-token" => {
            let name =
                secret.pointer("/metadata/annotations/kubernetes.io~1service-account.name").and_then(Value::as_str);
            if name.is_none_or(str::is_empty) {
                errs.push(required(
                    &Path::new("metadata").child("annotations").key("kubernetes.io/service-account.name"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if secret_type == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            if !has(key) {
                errs.push(required(&data.key(key), ""));
            } else if let Some(bytes) = secret_value(secret, key)
                && let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes)
            {
                errs.push(invalid_str(&data.key(key), "<secret contents redacted>", &e.to_string()));
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required(&data.key("username"), ""));
            errs.push(required(&data.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if secret_value(secret, "ssh-privatekey").is_none_or(|v| v.is_empty()) => {
            errs.push(required(&data.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errs.push(required(&data.key(key), ""));
                }
            }
        }
        _ => {}
    }
}

/// `ValidateSecretUpdate` beyond metadata and the new object's own validity.
pub(crate) fn validate_secret_update(new: &Value, old: &Value, errs: &mut Errs) {
    let type_of =
        |s: &Value| s.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or("Opaque").to_string();
    let (new_type, old_type) = (type_of(new), type_of(old));
    if new_type != old_type {
        errs.push(immutable_raw(&Path::new("type"), &go_quote(&new_type)));
    }
    let mut ignored = Vec::new();
    if bool_at(old, "immutable", &Path::new(""), &mut ignored) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(forbidden(&Path::new("immutable"), IMMUTABLE_MSG));
    }
    let same_data = new.get("stringData").is_none() && semantic_eq(get(new, "data"), get(old, "data"));
    if !same_data {
        errs.push(forbidden(&Path::new("data"), IMMUTABLE_MSG));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &Errs) -> Vec<String> {
        errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn config_keys_and_size() {
        let mut errs = Vec::new();
        validate_config_map(
            &json!({"data": {"ok.key": "v", "bad/key": "v"}, "binaryData": {"ok.key": "AAA="}}),
            &mut errs,
        );
        let m = msgs(&errs);
        assert_eq!(m[0], "data[ok.key]: Invalid value: \"ok.key\": duplicate of key present in binaryData");
        assert!(m[1].starts_with(
            "data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
        ));
        let mut errs = Vec::new();
        validate_config_map(&json!({"data": {"big": "x".repeat(MAX_DATA_SIZE + 1)}}), &mut errs);
        assert_eq!(msgs(&errs), [": Too long: may not be more than 1048576 bytes"]);
    }

    #[test]
    fn immutable_config_maps_keep_their_data() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let mut errs = Vec::new();
        validate_config_map_update(&json!({"immutable": true, "data": {"a": "2"}}), &old, &mut errs);
        assert_eq!(msgs(&errs), ["data: Forbidden: field is immutable when `immutable` is set"]);
        let mut errs = Vec::new();
        validate_config_map_update(&json!({"data": {"a": "1"}}), &old, &mut errs);
        assert_eq!(msgs(&errs), ["immutable: Forbidden: field is immutable when `immutable` is set"]);
        let mut errs = Vec::new();
        validate_config_map_update(&json!({"data": {"a": "2"}}), &json!({"data": {"a": "1"}}), &mut errs);
        assert!(errs.is_empty());
    }

    #[test]
    fn secret_types_need_their_keys() {
        let mut errs = Vec::new();
        validate_secret(&json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}}), &mut errs);
        assert_eq!(msgs(&errs), ["data[tls.key]: Required value"]);
        let mut errs = Vec::new();
        validate_secret(
            &json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "a", "tls.key": "b"}}),
            &mut errs,
        );
        assert!(errs.is_empty());
        let mut errs = Vec::new();
        validate_secret(
            &json!({"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "nope"}}),
            &mut errs,
        );
        assert_eq!(errs[0].field, "data[.dockerconfigjson]");
        assert!(errs[0].message.starts_with("Invalid value: \"<secret contents redacted>\": "));
        let mut errs = Vec::new();
        validate_secret(&json!({"type": "kubernetes.io/basic-auth"}), &mut errs);
        assert_eq!(msgs(&errs), ["data[username]: Required value", "data[password]: Required value"]);
        let mut errs = Vec::new();
        validate_secret(&json!({"type": "kubernetes.io/service-account-token"}), &mut errs);
        assert_eq!(msgs(&errs), ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]);
    }

    #[test]
    fn secret_data_must_be_base64_and_small() {
        let mut errs = Vec::new();
        validate_secret(&json!({"data": {"a": "not base64!"}}), &mut errs);
        assert_eq!(errs[0].field, "data[a]");
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_DATA_SIZE + 1]);
        let mut errs = Vec::new();
        validate_secret(&json!({"data": {"a": big}}), &mut errs);
        assert_eq!(msgs(&errs), ["data: Too long: may not be more than 1048576 bytes"]);
    }

    #[test]
    fn secret_type_is_immutable() {
        let mut errs = Vec::new();
        validate_secret_update(&json!({"type": "kubernetes.io/tls"}), &json!({}), &mut errs);
        assert_eq!(msgs(&errs), ["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]);
    }
}
