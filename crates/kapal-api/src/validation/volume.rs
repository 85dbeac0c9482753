//! Pod volumes (`ValidateVolumes`): one source per volume, unique DNS-label names, and the
//! details of the sources kubectl users write (emptyDir, hostPath, secret, configMap,
//! persistentVolumeClaim, nfs, downwardAPI, projected, csi, ephemeral).

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::container::{object_field_selector, resource_field_selector};
use super::path::Path;
use super::report::{
    Errs, check_enum, dns_label, duplicate_str, forbidden, get, int_at, invalid_int, invalid_str, items, required,
    str_or_empty, type_invalid,
};
use super::resources::quantity_at;

/// The volume sources upstream knows, in the order it checks them, with the path segment
/// used for the "more than 1 volume type" error (upstream's own spellings, typos included).
const VOLUME_SOURCES: &[(&str, &str)] = &[
    ("emptyDir", "emptyDir"),
    ("hostPath", "hostPath"),
    ("gitRepo", "gitRepo"),
    ("gcePersistentDisk", "gcePersistentDisk"),
    ("awsElasticBlockStore", "awsElasticBlockStore"),
    ("secret", "secret"),
    ("nfs", "nfs"),
    ("iscsi", "iscsi"),
    ("glusterfs", "glusterfs"),
    ("flocker", "flocker"),
    ("persistentVolumeClaim", "persistentVolumeClaim"),
    ("rbd", "rbd"),
    ("cinder", "cinder"),
    ("cephfs", "cephFS"),
    ("quobyte", "quobyte"),
    ("downwardAPI", "downwarAPI"),
    ("fc", "fc"),
    ("flexVolume", "flexVolume"),
    ("configMap", "configMap"),
    ("azureFile", "azureFile"),
    ("vsphereVolume", "vsphereVolume"),
    ("photonPersistentDisk", "photonPersistentDisk"),
    ("portworxVolume", "portworxVolume"),
    ("azureDisk", "azureDisk"),
    ("storageos", "storageos"),
    ("projected", "projected"),
    ("scaleIO", "scaleIO"),
    ("csi", "csi"),
    ("ephemeral", "ephemeral"),
    ("image", "image"),
];

const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// The volumes that validated, by name, with the source each uses.
pub(crate) type Volumes<'a> = BTreeMap<&'a str, &'static str>;

pub(crate) fn validate_volumes<'a>(spec: &'a Value, path: &Path, errs: &mut Errs) -> Volumes<'a> {
    let vp = path.child("volumes");
    let mut names = Volumes::new();
    for (i, vol) in items(spec, "volumes", path, errs).iter().enumerate() {
        let p = vp.index(i);
        if !vol.is_object() {
            errs.push(type_invalid(&p, vol, "object"));
            continue;
        }
        let mut own = Vec::new();
        let source = validate_volume_source(vol, &p, &mut own);
        let name = str_or_empty(vol, "name", &p, &mut own);
        if name.is_empty() {
            own.push(required(&p.child("name"), ""));
        } else {
            dns_label(name, &p.child("name"), &mut own);
        }
        if names.contains_key(name) {
            own.push(duplicate_str(&p.child("name"), name));
        }
        if own.is_empty() {
            names.insert(name, source.unwrap_or(""));
        } else {
            errs.extend(own);
        }
    }
    names
}

/// Checks that exactly one source is set, and the details of the common ones. Returns the
/// source used.
fn validate_volume_source(vol: &Value, p: &Path, errs: &mut Errs) -> Option<&'static str> {
    let mut found: Option<&'static str> = None;
    for &(key, forbidden_seg) in VOLUME_SOURCES {
        let Some(src) = get(vol, key) else { continue };
        if found.is_some() {
            errs.push(forbidden(&p.child(forbidden_seg), "may not specify more than 1 volume type"));
            continue;
        }
        found = Some(key);
        if !src.is_object() {
            errs.push(type_invalid(&p.child(key), src, "object"));
            continue;
        }
        let sp = p.child(key);
        match key {
            "emptyDir" => {
                if let Some(limit) = get(src, "sizeLimit")
                    && let Some(q) = quantity_at(limit, &sp.child("sizeLimit"), errs)
                    && q.is_negative()
                {
                    errs.push(forbidden(&sp.child("sizeLimit"), "SizeLimit field must be a valid resource quantity"));
                }
            }
            "hostPath" => {
                let hp = str_or_empty(src, "path", &sp, errs);
                if hp.is_empty() {
                    errs.push(required(&sp.child("path"), ""));
                } else {
                    no_backsteps(hp, &sp.child("path"), errs);
                    check_enum(
                        src,
                        "type",
                        &sp,
                        &[
                            "",
                            "BlockDevice",
                            "CharDevice",
                            "Directory",
                            "DirectoryOrCreate",
                            "File",
                            "FileOrCreate",
                            "Socket",
                        ],
                        errs,
                    );
                }
            }
            "secret" => {
                if str_or_empty(src, "secretName", &sp, errs).is_empty() {
                    errs.push(required(&sp.child("secretName"), ""));
                }
                file_mode(src, "defaultMode", &sp, errs);
                key_to_paths(src, &sp, errs);
            }
            "configMap" => {
                if str_or_empty(src, "name", &sp, errs).is_empty() {
                    errs.push(required(&sp.child("name"), ""));
                }
                file_mode(src, "defaultMode", &sp, errs);
                key_to_paths(src, &sp, errs);
            }
            "persistentVolumeClaim" if str_or_empty(src, "claimName", &sp, errs).is_empty() => {
                errs.push(required(&sp.child("claimName"), ""));
            }
            "nfs" => {
                let server = str_or_empty(src, "server", &sp, errs);
                if server.is_empty() {
                    errs.push(required(&sp.child("server"), ""));
                }
                let np = str_or_empty(src, "path", &sp, errs);
                if np.is_empty() {
                    errs.push(required(&sp.child("path"), ""));
                }
                if !np.starts_with('/') {
                    errs.push(invalid_str(&sp.child("path"), np, "must be an absolute path"));
                }
            }
            "downwardAPI" => {
                file_mode(src, "defaultMode", &sp, errs);
                for file in items(src, "items", &sp, errs) {
                    downward_api_file(file, &sp, errs);
                }
            }
            "projected" => {
                file_mode(src, "defaultMode", &sp, errs);
                projected_sources(src, &sp, errs);
            }
            "csi" if str_or_empty(src, "driver", &sp, errs).is_empty() => {
                errs.push(required(&sp.child("driver"), ""));
            }
            "ephemeral" if get(src, "volumeClaimTemplate").is_none() => {
                errs.push(required(&sp.child("volumeClaimTemplate"), ""));
            }
            _ => {}
        }
    }
    if found.is_none() {
        errs.push(required(p, "must specify a volume type"));
    }
    found
}

fn file_mode(src: &Value, key: &str, p: &Path, errs: &mut Errs) {
    if let Some(mode) = int_at(src, key, p, errs)
        && !(0..=0o777).contains(&mode)
    {
        errs.push(invalid_int(&p.child(key), mode, FILE_MODE_ERROR));
    }
}

fn key_to_paths(src: &Value, p: &Path, errs: &mut Errs) {
    let ip = p.child("items");
    for (i, kp) in items(src, "items", p, errs).iter().enumerate() {
        let p = ip.index(i);
        if str_or_empty(kp, "key", &p, errs).is_empty() {
            errs.push(required(&p.child("key"), ""));
        }
        let path = str_or_empty(kp, "path", &p, errs);
        if path.is_empty() {
            errs.push(required(&p.child("path"), ""));
        }
        local_non_reserved_path(path, &p.child("path"), errs);
        file_mode(kp, "mode", &p, errs);
    }
}

fn downward_api_file(file: &Value, p: &Path, errs: &mut Errs) {
    let path = str_or_empty(file, "path", p, errs);
    if path.is_empty() {
        errs.push(required(&p.child("path"), ""));
    }
    local_non_reserved_path(path, &p.child("path"), errs);
    let field_ref = get(file, "fieldRef");
    let resource_ref = get(file, "resourceFieldRef");
    match (field_ref, resource_ref) {
        (Some(f), r) => {
            object_field_selector(
                f,
                &["metadata.name", "metadata.namespace", "metadata.labels", "metadata.annotations", "metadata.uid"],
                &p.child("fieldRef"),
                errs,
            );
            if r.is_some() {
                errs.push(invalid_str(
                    p,
                    "resource",
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                ));
            }
        }
        (None, Some(r)) => resource_field_selector(r, &p.child("resourceFieldRef"), true, errs),
        (None, None) => errs.push(required(p, "one of fieldRef and resourceFieldRef is required")),
    }
    file_mode(file, "mode", p, errs);
}

fn projected_sources(src: &Value, p: &Path, errs: &mut Errs) {
    let sp = p.child("sources");
    let mut seen: HashSet<String> = HashSet::new();
    for (i, source) in items(src, "sources", p, errs).iter().enumerate() {
        let srcp = sp.index(i);
        let mut count = 0;
        for kind in ["secret", "configMap"] {
            let Some(s) = get(source, kind) else { continue };
            count += 1;
            let kp = srcp.child(kind);
            let name = str_or_empty(s, "name", &kp, errs);
            if name.is_empty() {
                errs.push(required(&kp.child("name"), ""));
            }
            key_to_paths(s, &kp, errs);
            for item in s.get("items").and_then(Value::as_array).into_iter().flatten() {
                if let Some(path) = item.get("path").and_then(Value::as_str).filter(|p| !p.is_empty())
                    && !seen.insert(path.to_string())
                {
                    errs.push(invalid_str(p, name, "conflicting duplicate paths"));
                }
            }
        }
        if let Some(d) = get(source, "downwardAPI") {
            count += 1;
            let dp = srcp.child("downwardAPI");
            for file in items(d, "items", &dp, errs) {
                downward_api_file(file, &dp, errs);
                if let Some(path) = file.get("path").and_then(Value::as_str).filter(|p| !p.is_empty())
                    && !seen.insert(path.to_string())
                {
                    errs.push(invalid_str(p, path, "conflicting duplicate paths"));
                }
            }
        }
        if let Some(t) = get(source, "serviceAccountToken") {
            count += 1;
            let tp = srcp.child("serviceAccountToken");
            if let Some(exp) = int_at(t, "expirationSeconds", &tp, errs) {
                if exp < 600 {
                    errs.push(invalid_int(
                        &tp.child("expirationSeconds"),
                        exp,
                        "may not specify a duration less than 10 minutes",
                    ));
                }
                if exp > 1 << 32 {
                    errs.push(invalid_int(
                        &tp.child("expirationSeconds"),
                        exp,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
            let path = str_or_empty(t, "path", &tp, errs);
            if path.is_empty() {
                errs.push(required(&p.child("path"), ""));
            } else {
                local_non_reserved_path(path, &p.child("path"), errs);
            }
        }
        if get(source, "clusterTrustBundle").is_some() {
            count += 1;
        }
        if count > 1 {
            errs.push(forbidden(&srcp, "may not specify more than 1 volume type per source"));
        }
    }
}

pub(crate) fn no_backsteps(target: &str, p: &Path, errs: &mut Errs) {
    if target.split('/').any(|part| part == "..") {
        errs.push(invalid_str(p, target, "must not contain '..'"));
    }
}

pub(crate) fn local_descending_path(target: &str, p: &Path, errs: &mut Errs) {
    if target.starts_with('/') {
        errs.push(invalid_str(p, target, "must be a relative path"));
    }
    no_backsteps(target, p, errs);
}

pub(crate) fn local_non_reserved_path(target: &str, p: &Path, errs: &mut Errs) {
    local_descending_path(target, p, errs);
    if target.starts_with("..") && !target.starts_with("../") {
        errs.push(invalid_str(p, target, "must not start with '..'"));
    }
}
