//! PersistentVolumeClaims: access modes, the storage request, and what may change later.

use serde_json::Value;

use super::equality::{diff, semantic_eq};
use super::labels::validate_label_selector;
use super::path::Path;
use super::report::check_enum;
use super::report::{Errs, forbidden, get, invalid_str, items, not_supported, obj_at, required, str_at};
use super::resources::{quantity_at, validate_quantity_value};

const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

/// `ValidatePersistentVolumeClaimSpec` at `path` (`spec`).
pub(crate) fn validate_pvc_spec(spec: &Value, path: &Path, errs: &mut Errs) {
    let modes = items(spec, "accessModes", path, errs);
    let mp = path.child("accessModes");
    if modes.is_empty() {
        errs.push(required(&mp, "at least 1 access mode is required"));
    }
    if let Some(sel) = get(spec, "selector") {
        validate_label_selector(sel, &path.child("selector"), errs);
    }
    let (mut rwop, mut others) = (false, false);
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(not_supported(&mp, m, ACCESS_MODES));
        } else if m == "ReadWriteOncePod" {
            rwop = true;
        } else {
            others = true;
        }
    }
    if rwop && others {
        errs.push(forbidden(&mp, "may not use ReadWriteOncePod with other access modes"));
    }
    // Upstream reports the storage request on `spec.resources[storage]`.
    let sp = path.child("resources").key("storage");
    match spec.pointer("/resources/requests/storage") {
        None | Some(Value::Null) => errs.push(required(&sp, "")),
        Some(v) => {
            if let Some(q) = quantity_at(v, &sp, errs) {
                if q.is_negative() || q.is_zero() {
                    errs.push(invalid_str(&sp, &q.text, "must be greater than zero"));
                } else {
                    validate_quantity_value("storage", &q, &sp, errs);
                }
            }
        }
    }
    if let Some(class) = str_at(spec, "storageClassName", path, errs)
        && !class.is_empty()
    {
        for msg in super::names::is_dns1123_subdomain(class) {
            errs.push(invalid_str(&path.child("storageClassName"), class, &msg));
        }
    }
    check_enum(spec, "volumeMode", path, &["Block", "Filesystem"], errs);
}

/// `ValidatePersistentVolumeClaim` beyond metadata.
pub(crate) fn validate_pvc(pvc: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let empty = Value::Object(Default::default());
    let spec = obj_at(pvc, "spec", &Path::new(""), errs).unwrap_or(&empty);
    validate_pvc_spec(spec, &sp, errs);
}

/// `ValidatePersistentVolumeClaimUpdate` beyond metadata and the new object's own validity.
/// The spec is immutable except the storage request of a bound claim, its volume attributes
/// class, and a volume name set for the first time.
pub(crate) fn validate_pvc_update(new: &Value, old: &Value, errs: &mut Errs) {
    let empty = Value::Object(Default::default());
    let new_spec = get(new, "spec").unwrap_or(&empty);
    let old_spec = get(old, "spec").unwrap_or(&empty);
    let mut munged = new_spec.clone();
    let bound = new.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if let Some(obj) = munged.as_object_mut() {
        let old_volume = old_spec.get("volumeName").and_then(Value::as_str).unwrap_or("");
        if old_volume.is_empty() {
            match old_spec.get("volumeName") {
                Some(v) => obj.insert("volumeName".into(), v.clone()),
                None => obj.remove("volumeName"),
            };
        }
        // A class set where there was none is allowed (upgrade from nil).
        if old_spec.get("storageClassName").is_none() && obj.contains_key("storageClassName") {
            obj.remove("storageClassName");
        }
        if bound {
            let old_storage = old_spec.pointer("/resources/requests/storage").cloned();
            if let Some(requests) =
                obj.get_mut("resources").and_then(|r| r.get_mut("requests")).and_then(Value::as_object_mut)
            {
                match old_storage {
                    Some(s) => requests.insert("storage".into(), s),
                    None => requests.remove("storage"),
                };
            }
            match old_spec.get("volumeAttributesClassName") {
                Some(v) => obj.insert("volumeAttributesClassName".into(), v.clone()),
                None => obj.remove("volumeAttributesClassName"),
            };
        }
    }
    if !semantic_eq(Some(&munged), Some(old_spec)) {
        errs.push(forbidden(
            &Path::new("spec"),
            &format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}",
                diff("core.PersistentVolumeClaimSpec", old_spec, &munged)
            ),
        ));
    }
    let quantity = |v: &Value, ptr: &str| v.pointer(ptr).and_then(|q| super::quantity::parse_json(q).ok());
    if let (Some(new_size), Some(old_size)) =
        (quantity(new_spec, "/resources/requests/storage"), quantity(old_spec, "/resources/requests/storage"))
        && new_size.cmp_value(&old_size).is_lt()
    {
        let status_size = quantity(old, "/status/capacity/storage");
        if status_size.is_none_or(|s| new_size.cmp_value(&s).is_le()) {
            errs.push(forbidden(
                &Path::new("spec").child("resources").child("requests").child("storage"),
                "field can not be less than status.capacity",
            ));
        }
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
    fn access_modes_and_storage_are_required() {
        let mut errs = Vec::new();
        validate_pvc(&json!({"spec": {}}), &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value"
            ]
        );
        let mut errs = Vec::new();
        validate_pvc(
            &json!({"spec": {"accessModes": ["ReadWriteOncePod", "ReadWriteOnce", "Everyone"], "resources": {"requests": {"storage": "0"}}}}),
            &mut errs,
        );
        assert_eq!(
            msgs(&errs),
            [
                "spec.accessModes: Unsupported value: \"Everyone\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
                "spec.resources[storage]: Invalid value: \"0\": must be greater than zero",
            ]
        );
    }

    #[test]
    fn bound_claims_may_grow() {
        let spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pv1"});
        let old = json!({"spec": spec, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut errs = Vec::new();
        validate_pvc_update(&grown, &old, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut shrunk = old.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        let mut errs = Vec::new();
        validate_pvc_update(&shrunk, &old, &mut errs);
        assert_eq!(
            msgs(&errs),
            ["spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"]
        );
        let mut moved = old.clone();
        moved["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        let mut errs = Vec::new();
        validate_pvc_update(&moved, &old, &mut errs);
        assert!(errs[0].message.starts_with("Forbidden: spec is immutable after creation except resources.requests"));
    }
}
