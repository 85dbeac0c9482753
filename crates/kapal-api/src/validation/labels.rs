//! Labels, annotations and label selectors (`metav1/validation`), and the selector matching
//! that workload validation needs to compare a selector with its template's labels.

use serde_json::Value;

use super::names::{is_qualified_name, is_valid_label_value};
use super::path::Path;
use super::report::{
    Errs, forbidden, get, invalid_str, items, required, str_list, str_map, str_or_empty, type_invalid,
};

/// Most bytes all annotations of one object may take (keys plus values).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// A label key must be a qualified name; each problem is reported on `path`, as upstream does.
pub(crate) fn validate_label_name(name: &str, path: &Path, errs: &mut Errs) {
    for msg in is_qualified_name(name) {
        errs.push(invalid_str(path, name, &msg));
    }
}

/// `ValidateLabels`: keys and values of the `key` map under `parent`, reported on the map's path.
pub(crate) fn validate_labels_at(parent: &Value, key: &str, path: &Path, errs: &mut Errs) {
    let p = path.child(key);
    for (k, v) in str_map(parent, key, path, errs).unwrap_or_default() {
        validate_label_name(k, &p, errs);
        for msg in is_valid_label_value(v) {
            errs.push(invalid_str(&p, v, &msg));
        }
    }
}

/// `ValidateAnnotations`: keys are qualified names (case-insensitively) and the total size is
/// at most 256 KiB.
pub(crate) fn validate_annotations_at(parent: &Value, key: &str, path: &Path, errs: &mut Errs) {
    let p = path.child(key);
    let annotations = str_map(parent, key, path, errs).unwrap_or_default();
    let mut total = 0usize;
    for (k, v) in annotations {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(invalid_str(&p, k, &msg));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(super::report::too_long(&p, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

/// `ValidateLabelSelector` on the selector object `sel` at `path`.
pub(crate) fn validate_label_selector(sel: &Value, path: &Path, errs: &mut Errs) {
    if !sel.is_object() {
        errs.push(type_invalid(path, sel, "object"));
        return;
    }
    validate_labels_at(sel, "matchLabels", path, errs);
    let exprs_path = path.child("matchExpressions");
    for (i, expr) in items(sel, "matchExpressions", path, errs).iter().enumerate() {
        let p = exprs_path.index(i);
        if !expr.is_object() {
            errs.push(type_invalid(&p, expr, "object"));
            continue;
        }
        let op = str_or_empty(expr, "operator", &p, errs);
        let values = str_list(expr, "values", &p, errs);
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required(&p.child("values"), "must be specified when `operator` is 'In' or 'NotIn'"));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(invalid_str(&p.child("operator"), op, "not a valid selector operator")),
        }
        let key = str_or_empty(expr, "key", &p, errs);
        validate_label_name(key, &p.child("key"), errs);
        for (j, v) in values.iter().enumerate() {
            for msg in is_valid_label_value(v) {
                errs.push(invalid_str(&p.child("values").index(j), v, &msg));
            }
        }
    }
}

/// Whether a selector selects nothing in particular (no labels, no expressions).
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    let labels = get(sel, "matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty());
    let exprs = get(sel, "matchExpressions").and_then(Value::as_array).is_none_or(|a| a.is_empty());
    labels && exprs
}

/// Whether `sel` converts to a selector (`LabelSelectorAsSelector` succeeds): known operators
/// with the right number of values.
pub(crate) fn selector_is_convertible(sel: &Value) -> bool {
    let exprs = get(sel, "matchExpressions").and_then(Value::as_array);
    exprs.is_none_or(|list| {
        list.iter().all(|e| {
            let n = e.get("values").and_then(Value::as_array).map_or(0, Vec::len);
            match e.get("operator").and_then(Value::as_str) {
                Some("In" | "NotIn") => n > 0,
                Some("Exists" | "DoesNotExist") => n == 0,
                _ => false,
            }
        })
    })
}

/// Whether `sel` matches the labels `labels` (an object of strings, or absent).
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let match_labels = get(sel, "matchLabels").and_then(Value::as_object);
    let labels_ok = match_labels.is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let exprs = get(sel, "matchExpressions").and_then(Value::as_array);
    let exprs_ok = exprs.is_none_or(|list| {
        list.iter().all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => label(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_like_labels_selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(selector_matches(&json!({"matchLabels": {"app": "web"}}), Some(&labels)));
        assert!(!selector_matches(&json!({"matchLabels": {"app": "db"}}), Some(&labels)));
        let exprs = json!({"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "canary", "operator": "DoesNotExist"}
        ]});
        assert!(selector_matches(&exprs, Some(&labels)));
        assert!(!selector_matches(&exprs, None));
    }

    #[test]
    fn bad_selector_requirements_are_reported() {
        let sel = json!({"matchLabels": {"a": "b c"}, "matchExpressions": [
            {"key": "k", "operator": "In"},
            {"key": "k", "operator": "Exists", "values": ["x"]},
            {"key": "k", "operator": "Like", "values": ["x"]}
        ]});
        let mut errs = Vec::new();
        validate_label_selector(&sel, &Path::new("spec").child("selector"), &mut errs);
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.selector.matchLabels",
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator"
            ]
        );
        assert_eq!(errs[1].message, "Required value: must be specified when `operator` is 'In' or 'NotIn'");
        assert!(!selector_is_convertible(&sel));
    }

    #[test]
    fn annotations_are_bounded() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let meta = json!({"annotations": {"a": big}});
        let mut errs = Vec::new();
        validate_annotations_at(&meta, "annotations", &Path::new("metadata"), &mut errs);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.annotations");
        assert_eq!(errs[0].message, "Too long: may not be more than 262144 bytes");
    }
}
