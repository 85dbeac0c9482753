//! Leases (`pkg/apis/coordination/validation`).

use serde_json::Value;

use super::path::Path;
use super::report::{Errs, get, int_at, invalid_int};

/// `ValidateLeaseSpec`.
pub(crate) fn validate_lease(lease: &Value, errs: &mut Errs) {
    let Some(spec) = get(lease, "spec") else { return };
    let sp = Path::new("spec");
    if let Some(d) = int_at(spec, "leaseDurationSeconds", &sp, errs)
        && d <= 0
    {
        errs.push(invalid_int(&sp.child("leaseDurationSeconds"), d, "must be greater than 0"));
    }
    if let Some(t) = int_at(spec, "leaseTransitions", &sp, errs)
        && t < 0
    {
        errs.push(invalid_int(&sp.child("leaseTransitions"), t, "must be greater than or equal to 0"));
    }
    for key in ["holderIdentity", "preferredHolder", "strategy"] {
        super::report::str_at(spec, key, &sp, errs);
    }
    for key in ["acquireTime", "renewTime"] {
        if let Some(t) = super::report::str_at(spec, key, &sp, errs)
            && t.parse::<jiff::Timestamp>().is_err()
        {
            errs.push(super::report::invalid_str(
                &sp.child(key),
                t,
                "must be a timestamp in RFC 3339 format with microseconds",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_are_positive() {
        let mut errs = Vec::new();
        validate_lease(
            &json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2024-05-01T10:00:00.000000Z"}}),
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let mut errs = Vec::new();
        validate_lease(
            &json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1, "holderIdentity": 5}}),
            &mut errs,
        );
        let m: Vec<String> = errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            m,
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
                "spec.holderIdentity: Invalid value: \"integer\": spec.holderIdentity in body must be of type string: \"integer\"",
            ]
        );
    }
}
