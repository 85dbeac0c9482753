//! Storage: PersistentVolumes, PersistentVolumeClaims and StorageClasses.

use jiff::Timestamp;
use serde_json::Value;

use super::duration::age;
use super::format::{access_modes, flag, name, quantity, text};
use super::{AGE, Col, NAME, Printer};

const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

pub(super) static PERSISTENT_VOLUME: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Capacity", "capacity is the description of the persistent volume's resources and capacity."),
        Col::string("Access Modes", "accessModes contains all ways the volume can be mounted."),
        Col::string("Reclaim Policy", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
        Col::string("Status", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
        Col::string("Claim", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
        Col::string("StorageClass", "StorageClass of the pv"),
        Col::string("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
        Col::string("Reason", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
        AGE,
        Col::string("VolumeMode", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.").wide(),
    ],
    cells: persistent_volume,
};

fn persistent_volume(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let claim_ref = &spec["claimRef"];
    let claim = if claim_ref.is_object() {
        format!("{}/{}", text(&claim_ref["namespace"]), text(&claim_ref["name"]))
    } else {
        String::new()
    };
    // PV defaulting: Retain, Pending and Filesystem.
    let reclaim = or_default(text(&spec["persistentVolumeReclaimPolicy"]), "Retain");
    vec![
        name(obj),
        Value::from(quantity(&spec["capacity"]["storage"])),
        Value::from(access_modes(&spec["accessModes"])),
        Value::from(reclaim),
        Value::from(phase(obj, "Pending")),
        Value::from(claim),
        Value::from(storage_class(obj)),
        Value::from(unset_or(&spec["volumeAttributesClassName"])),
        Value::from(text(&status["reason"])),
        age(obj, now),
        Value::from(or_default(text(&spec["volumeMode"]), "Filesystem")),
    ]
}

pub(super) static PERSISTENT_VOLUME_CLAIM: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Status", "phase represents the current phase of PersistentVolumeClaim."),
        Col::string("Volume", "volumeName is the binding reference to the PersistentVolume backing this claim."),
        Col::string("Capacity", "capacity represents the actual resources of the underlying volume."),
        Col::string("Access Modes", "accessModes contains the actual access modes the volume backing the PVC has."),
        Col::string("StorageClass", "StorageClass of the pvc"),
        Col::string("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
        AGE,
        Col::string("VolumeMode", "volumeMode defines what type of volume is required by the claim.").wide(),
    ],
    cells: persistent_volume_claim,
};

fn persistent_volume_claim(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let volume = text(&spec["volumeName"]);
    // Capacity and modes are only meaningful once the claim is bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (quantity(&status["capacity"]["storage"]), access_modes(&status["accessModes"]))
    };
    vec![
        name(obj),
        Value::from(phase(obj, "Pending")),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class(obj)),
        Value::from(unset_or(&spec["volumeAttributesClassName"])),
        age(obj, now),
        Value::from(or_default(text(&spec["volumeMode"]), "Filesystem")),
    ]
}

/// `status.phase` (defaulted), or `Terminating` once deletion started.
fn phase(obj: &Value, default: &'static str) -> String {
    if obj["metadata"]["deletionTimestamp"].is_null() {
        or_default(text(&obj["status"]["phase"]), default).to_string()
    } else {
        "Terminating".to_string()
    }
}

/// The beta storage-class annotation when present (even empty), else `spec.storageClassName`.
fn storage_class(obj: &Value) -> &str {
    match &obj["metadata"]["annotations"][BETA_CLASS_ANNOTATION] {
        Value::String(class) => class,
        _ => text(&obj["spec"]["storageClassName"]),
    }
}

/// A string pointer field: its value, or `<unset>` when nil.
fn unset_or(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => "<unset>".to_string(),
    }
}

fn or_default<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

pub(super) static STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Provisioner", "provisioner indicates the type of the provisioner."),
        Col::string(
            "ReclaimPolicy",
            "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
        ),
        Col::string(
            "VolumeBindingMode",
            "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound. When unset, VolumeBindingImmediate is used.",
        ),
        Col::string(
            "AllowVolumeExpansion",
            "allowVolumeExpansion shows whether the storage class allow volume expand.",
        ),
        AGE,
    ],
    cells: |obj, now| {
        let annotations = &obj["metadata"]["annotations"];
        let is_default =
            ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
                .iter()
                .any(|key| text(&annotations[*key]) == "true");
        let name = text(&obj["metadata"]["name"]);
        let name = if is_default { format!("{name} (default)") } else { name.to_string() };
        vec![
            Value::from(name),
            Value::from(text(&obj["provisioner"])),
            Value::from(or_default(text(&obj["reclaimPolicy"]), "Delete")),
            Value::from(or_default(text(&obj["volumeBindingMode"]), "Immediate")),
            Value::from(flag(&obj["allowVolumeExpansion"])),
            age(obj, now),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn bound_volume() {
        let pv = json!({
            "metadata": {"name": "pv-1", "creationTimestamp": "2025-05-01T12:00:00Z"},
            "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
                     "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local-path", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"},
        });
        let cells = (PERSISTENT_VOLUME.cells)(&pv, now());
        assert_eq!(cells.len(), PERSISTENT_VOLUME.columns.len());
        assert_eq!(
            cells,
            vec![
                json!("pv-1"),
                json!("5Gi"),
                json!("RWO"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("local-path"),
                json!("<unset>"),
                json!(""),
                json!("31d"),
                json!("Filesystem"),
            ]
        );
    }

    #[test]
    fn volume_defaults_and_terminating() {
        let pv = json!({"metadata": {"deletionTimestamp": "2025-06-01T11:00:00Z",
                                     "annotations": {"volume.beta.kubernetes.io/storage-class": ""}},
                        "spec": {"storageClassName": "fast", "volumeAttributesClassName": "gold"}});
        let cells = (PERSISTENT_VOLUME.cells)(&pv, now());
        assert_eq!(
            cells[1..8],
            [json!("0"), json!(""), json!("Retain"), json!("Terminating"), json!(""), json!(""), json!("gold")]
        );
        assert_eq!((PERSISTENT_VOLUME.cells)(&json!({}), now())[4], "Pending");
    }

    #[test]
    fn claims_show_capacity_only_when_bound() {
        let pending = json!({"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let cells = (PERSISTENT_VOLUME_CLAIM.cells)(&pending, now());
        assert_eq!(cells.len(), PERSISTENT_VOLUME_CLAIM.columns.len());
        assert_eq!(cells[1..7], [json!("Pending"), json!(""), json!(""), json!(""), json!(""), json!("<unset>")]);

        let bound = json!({"metadata": {"name": "data"},
                           "spec": {"volumeName": "pv-1", "storageClassName": "local-path", "volumeMode": "Block"},
                           "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteMany", "ReadOnlyMany"]}});
        let cells = (PERSISTENT_VOLUME_CLAIM.cells)(&bound, now());
        assert_eq!(cells[1..6], [json!("Bound"), json!("pv-1"), json!("2Gi"), json!("ROX,RWX"), json!("local-path")]);
        assert_eq!(cells[8], "Block");
    }

    #[test]
    fn storage_class_default_marker() {
        let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                        "provisioner": "kapal.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        let cells = (STORAGE_CLASS.cells)(&sc, now());
        assert_eq!(cells.len(), STORAGE_CLASS.columns.len());
        assert_eq!(
            cells[..5],
            [
                json!("local-path (default)"),
                json!("kapal.dev/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
        let beta = json!({"metadata": {"name": "x", "annotations": {"storageclass.beta.kubernetes.io/is-default-class": "true"}}, "allowVolumeExpansion": true});
        let cells = (STORAGE_CLASS.cells)(&beta, now());
        assert_eq!(cells[0], "x (default)");
        assert_eq!(cells[4], json!(true));
    }
}
