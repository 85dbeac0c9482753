#!/usr/bin/env python3
"""Generates `schema_table.rs`: the protobuf layout of the Kubernetes API types.

Two crates of the cargo registry are the sources; neither is a dependency of Kapal:

* `k8s-pb` (prost bindings generated from the upstream `generated.proto` files) gives, for every
  message, its fields' tag numbers, wire types, labels and message types;
* `k8s-openapi` (serde types generated from the upstream OpenAPI document) gives the exact JSON
  name of every field (its hand-rolled `Deserialize` impls map `"podIP" => Field::Key_pod_ip`) and
  the `(apiVersion, kind)` of every top-level kind (`impl crate::Resource`).

Only the messages reachable from the GA kinds of `k8s-openapi`'s `v1_33` module are written.
Go's `json:",inline"` embeddings (Volume's VolumeSource, Probe's ProbeHandler, ...) are found by
comparing the two crates. Three small lists below are kept by hand, because neither crate knows
them: META_KINDS, and OMIT_ZERO / KEEP_EMPTY_STRING (which Go fields are pointers).

Regenerate (from the repository root, after `cargo fetch` made both crates available):

    python3 crates/kapal-api/src/protobuf/generate.py
    rustfmt --edition 2024 crates/kapal-api/src/protobuf/schema_table.rs

Options: `--registry DIR` (default: the first `~/.cargo/registry/src/*` holding both crates),
`--out FILE`, `--report` (print the fields whose JSON name had to be guessed), `--all-versions`
(also the alpha and beta group versions; by default only the GA ones are written).
"""

import argparse
import glob
import os
import re
import sys

PB_CRATE = "k8s-pb-0.9.0"
OPENAPI_CRATE = "k8s-openapi-0.29.0"
OPENAPI_VERSION = "v1_33"
# Newer modules of k8s-openapi, consulted for the JSON names of fields that k8s-pb (built from a
# newer Kubernetes) has and v1_33 does not.
OPENAPI_NEWER = ["v1_34", "v1_35", "v1_36", "v1_37"]

META = ("apimachinery", "pkg", "apis", "meta", "v1")

# Kinds that `metav1.AddToGroupVersion` registers in every group version: a client may send them
# under any apiVersion (client-go sends `DeleteOptions` as `apps/v1`, `v1`, ...).
# Only the ones sent as request bodies (the other options travel as query parameters).
META_KINDS = ["DeleteOptions", "Status"]

# Messages whose JSON form is not an object: (module, message) -> Special variant, with the field
# layout the decoder relies on (checked here against k8s-pb).
SPECIAL = {
    (META, "Time"): ("Time", [(1, "int64", "optional"), (2, "int32", "optional")]),
    (META, "MicroTime"): ("MicroTime", [(1, "int64", "optional"), (2, "int32", "optional")]),
    (META, "Duration"): ("Duration", [(1, "int64", "optional")]),
    (META, "FieldsV1"): ("FieldsV1", [(1, "bytes", "optional")]),
    (META, "Verbs"): ("StringList", [(1, "string", "repeated")]),
    (("apimachinery", "pkg", "api", "resource"), "Quantity"): ("Quantity", [(1, "string", "optional")]),
    (("apimachinery", "pkg", "util", "intstr"), "IntOrString"):
        ("IntOrString", [(1, "int64", "optional"), (2, "int32", "optional"), (3, "string", "optional")]),
    (("apimachinery", "pkg", "runtime"), "RawExtension"): ("RawExtension", [(1, "bytes", "optional")]),
}
APIEXT = ("apiextensions_apiserver", "pkg", "apis", "apiextensions")
for _v in ("v1", "v1beta1"):
    SPECIAL[(APIEXT + (_v,), "Json")] = ("Json", [(1, "bytes", "optional")])
    # These three keep their fields: the decoder reads them as objects, then picks the JSON form.
    SPECIAL[(APIEXT + (_v,), "JsonSchemaPropsOrArray")] = ("SchemaOrArray", None)
    SPECIAL[(APIEXT + (_v,), "JsonSchemaPropsOrBool")] = ("SchemaOrBool", None)
    SPECIAL[(APIEXT + (_v,), "JsonSchemaPropsOrStringArray")] = ("SchemaOrStringArray", None)
# `ExtraValue` (authentication, authorization, certificates): `[]string` in Go, a message in proto.
EXTRA_VALUE = ("StringList", [(1, "string", "repeated")])

# Go non-pointer int and bool fields tagged `omitempty`. Protobuf cannot tell them from pointer
# fields (gogo writes both, and writes non-pointer ones even when zero), so without this list a
# zero would be kept: right for pointers (`replicas: 0`, `runAsUser: 0`,
# `allowPrivilegeEscalation: false` must survive), noise for these. Only fields known from the
# Go types to be non-pointer belong here; a missing entry costs a harmless `0`/`false`, a wrong
# entry loses data.
OMIT_ZERO = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta": ["generation"],
    "k8s.io.apimachinery.pkg.apis.meta.v1.Condition": ["observedGeneration"],
    "k8s.io.api.core.v1.PodCondition": ["observedGeneration"],
    "k8s.io.api.core.v1.PodStatus": ["observedGeneration"],
    "k8s.io.api.core.v1.Event": ["count"],
    "k8s.io.api.core.v1.EventSeries": ["count"],
    "k8s.io.api.events.v1.Event": ["deprecatedCount"],
    "k8s.io.api.core.v1.NFSVolumeSource": ["readOnly"],
    "k8s.io.api.core.v1.PersistentVolumeClaimVolumeSource": ["readOnly"],
    "k8s.io.api.core.v1.Container": ["stdin", "stdinOnce", "tty"],
    "k8s.io.api.core.v1.EphemeralContainerCommon": ["stdin", "stdinOnce", "tty"],
    "k8s.io.api.core.v1.PodSpec": ["hostNetwork", "hostPID", "hostIPC"],
    "k8s.io.api.core.v1.ContainerPort": ["hostPort"],
    "k8s.io.api.core.v1.ServicePort": ["nodePort"],
    "k8s.io.api.core.v1.ServiceSpec": ["healthCheckNodePort", "publishNotReadyAddresses"],
    "k8s.io.api.core.v1.Probe": ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                                 "failureThreshold"],
    "k8s.io.api.core.v1.VolumeMount": ["readOnly"],
    "k8s.io.api.core.v1.NodeSpec": ["unschedulable"],
    "k8s.io.api.apps.v1.DeploymentSpec": ["minReadySeconds", "paused"],
    "k8s.io.api.apps.v1.DeploymentStatus": ["observedGeneration", "replicas", "updatedReplicas", "readyReplicas",
                                            "availableReplicas", "unavailableReplicas"],
    "k8s.io.api.apps.v1.ReplicaSetSpec": ["minReadySeconds"],
    "k8s.io.api.apps.v1.ReplicaSetStatus": ["fullyLabeledReplicas", "readyReplicas", "availableReplicas",
                                            "observedGeneration"],
    "k8s.io.api.apps.v1.StatefulSetSpec": ["minReadySeconds"],
    "k8s.io.api.apps.v1.StatefulSetStatus": ["observedGeneration", "readyReplicas", "currentReplicas",
                                             "updatedReplicas"],
    "k8s.io.api.apps.v1.DaemonSetSpec": ["minReadySeconds"],
    "k8s.io.api.apps.v1.DaemonSetStatus": ["observedGeneration", "updatedNumberScheduled", "numberAvailable",
                                           "numberUnavailable"],
    "k8s.io.api.batch.v1.JobStatus": ["active", "succeeded", "failed"],
    "k8s.io.api.policy.v1.PodDisruptionBudgetStatus": ["observedGeneration"],
    "k8s.io.api.scheduling.v1.PriorityClass": ["globalDefault"],
    "k8s.io.api.networking.v1.ServiceBackendPort": ["number"],
    "k8s.io.api.autoscaling.v2.HorizontalPodAutoscalerStatus": ["currentReplicas"],
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionSpec": ["preserveUnknownFields"],
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionVersion": ["deprecated"],
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps": [
        "exclusiveMaximum", "exclusiveMinimum", "uniqueItems", "nullable", "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string"],
}
# Go pointer string fields whose empty value means something other than unset (the empty class
# of a PersistentVolumeClaim disables dynamic provisioning). Every other empty string is dropped:
# for a non-pointer Go string (nearly all of them) "" is the unset value, and JSON omits it.
KEEP_EMPTY_STRING = {
    "k8s.io.api.core.v1.PersistentVolumeClaimSpec": ["storageClassName", "volumeAttributesClassName"],
    "k8s.io.api.coordination.v1.LeaseSpec": ["holderIdentity"],
}

# The only scalar types Kubernetes uses; any other makes the generator fail rather than guess.
SCALARS = {"string": "Str", "bytes": "Bytes", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64"}
MAP_VALUES = {"string": "MapStr", "bytes": "MapBytes"}

FIELD_RE = re.compile(r'#\[prost\((.*)\)\]')
STRUCT_RE = re.compile(r'^pub struct (\w+) ?\{(\})?')
TYPE_PATH_RE = re.compile(r'((?:(?:super|crate)::)*(?:[a-z_0-9]+::)*[A-Z]\w*)')
NOT_MESSAGES = {"Option", "Vec", "Box", "BTreeMap", "String"}


def fail(msg):
    sys.exit("generate.py: " + msg)


class PbField:
    def __init__(self, name, scalar, label, tag, map_value, type_text):
        self.name, self.scalar, self.label, self.tag = name, scalar, label, tag
        self.map_value, self.type_text = map_value, type_text
        self.target = None  # (module, message) for message and map<string, message> fields


def parse_prost_attr(attr):
    """`message, optional, tag = "1"` -> (scalar, label, tag, map_value)."""
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    m = re.match(r'btree_map = "string, (\w+)"', attr)
    if m:
        return "map", "map", tag, m.group(1)
    first = attr.split(",")[0].strip()
    scalar = "bytes" if first.startswith("bytes") else first
    label = "repeated" if ", repeated" in attr else ("required" if ", required" in attr else "optional")
    return scalar, label, tag, None


def parse_pb_file(path, module):
    """Yields (message name, [PbField]) for every struct of a prost-generated module."""
    lines = open(path).read().split("\n")
    i, n = 0, len(lines)
    while i < n:
        m = STRUCT_RE.match(lines[i])
        i += 1
        if not m:
            continue
        name, fields = m.group(1), []
        if m.group(2):
            yield name, fields
            continue
        while i < n and lines[i] != "}":
            a = FIELD_RE.search(lines[i])
            i += 1
            if not a:
                continue
            while i < n and (lines[i].strip().startswith("///") or lines[i].strip().startswith("#[")):
                i += 1
            decl = lines[i].strip()
            i += 1
            while not decl.endswith(",") or decl.count("<") != decl.count(">"):
                decl += lines[i].strip()
                i += 1
            fm = re.match(r'pub ((?:r#)?\w+):\s*(.*),$', decl)
            if not fm:
                fail("cannot parse field %r in %s" % (decl, path))
            scalar, label, tag, map_value = parse_prost_attr(a.group(1))
            fields.append(PbField(fm.group(1).replace("r#", ""), scalar, label, tag, map_value, fm.group(2)))
        yield name, fields


def resolve(module, type_text):
    """The (module, message) named by the last message path in a prost field type."""
    paths = [p for p in TYPE_PATH_RE.findall(type_text) if p.split("::")[-1] not in NOT_MESSAGES]
    if len(paths) != 1:
        fail("cannot find the message type in %r" % type_text)
    parts = paths[0].split("::")
    base = list(module)
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    while parts[0] == "super":
        base.pop()
        parts = parts[1:]
    return tuple(base + parts[:-1]), parts[-1]


def load_pb(root):
    messages = {}
    for path in glob.glob(os.path.join(root, "src", "**", "mod.rs"), recursive=True):
        module = tuple(os.path.relpath(os.path.dirname(path), os.path.join(root, "src")).split(os.sep))
        for name, fields in parse_pb_file(path, module):
            for f in fields:
                if f.scalar == "message" or f.map_value == "message":
                    f.target = resolve(module, f.type_text)
            messages[(module, name)] = fields
    return messages


def load_openapi(root, version):
    """(module, lowercased struct name) -> (struct name, [json keys]); plus [(apiVersion, kind, module)]."""
    structs, resources = {}, []
    base = os.path.join(root, "src", version)
    for path in glob.glob(os.path.join(base, "**", "*.rs"), recursive=True):
        if os.path.basename(path) in ("mod.rs", "list.rs"):
            continue
        text = open(path).read()
        module = tuple(os.path.relpath(os.path.dirname(path), base).split(os.sep))
        sm = re.search(r'^pub (?:struct|enum) (\w+)', text, re.M)
        if not sm:
            continue
        keys = re.findall(r'^\s*"([^"]+)" => Field::Key_\w+,', text, re.M)
        structs[(module, sm.group(1).lower())] = (sm.group(1), keys)
        for rm in re.finditer(r'impl crate::Resource for (\w+) \{\s*const API_VERSION: &\'static str = "([^"]*)";'
                              r'.*?const KIND: &\'static str = "([^"]*)";', text, re.S):
            resources.append((rm.group(2), rm.group(3), module, rm.group(1)))
    return structs, resources


def norm(s):
    return re.sub(r'[^a-z0-9]', '', s.lower())


def guess_json_name(snake):
    head, *rest = snake.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registry")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema_table.rs"))
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--all-versions", action="store_true", help="also the alpha and beta group versions")
    args = ap.parse_args()

    registry = args.registry
    if not registry:
        for cand in sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*"))):
            if os.path.isdir(os.path.join(cand, PB_CRATE)) and os.path.isdir(os.path.join(cand, OPENAPI_CRATE)):
                registry = cand
                break
    if not registry:
        fail("no cargo registry holds both %s and %s (run `cargo fetch` in a crate depending on them)"
             % (PB_CRATE, OPENAPI_CRATE))

    pb = load_pb(os.path.join(registry, PB_CRATE))
    openapi_root = os.path.join(registry, OPENAPI_CRATE)
    structs, resources = load_openapi(openapi_root, OPENAPI_VERSION)
    newer = [load_openapi(openapi_root, v)[0] for v in OPENAPI_NEWER
             if os.path.isdir(os.path.join(openapi_root, "src", v))]
    pb_by_lower = {(mod, name.lower()): (mod, name) for (mod, name) in pb}

    # Roots: every kind of v1_33 that k8s-pb has, plus the meta kinds.
    roots = []
    for api_version, kind, module, struct in resources:
        if not args.all_versions and not re.search(r'(^|/)v\d+$', api_version):
            continue
        key = pb_by_lower.get((module, struct.lower()))
        if key:
            roots.append((api_version, kind, key))
        elif args.report:
            print("no protobuf message for %s %s" % (api_version, kind), file=sys.stderr)
    meta_roots = []
    for kind in META_KINDS:
        if (META, kind) not in pb:
            fail("k8s-pb has no meta/v1 %s" % kind)
        meta_roots.append((kind, (META, kind)))
    roots.sort(key=lambda r: (r[0], r[1]))

    # Reachable messages, numbered in breadth-first order from the roots.
    order, index = [], {}

    def visit(key):
        if key not in index:
            if key not in pb:
                fail("unknown message %s" % ".".join(key[0] + (key[1],)))
            index[key] = len(order)
            order.append(key)

    for _, _, key in roots:
        visit(key)
    for _, key in meta_roots:
        visit(key)
    i = 0
    while i < len(order):
        key = order[i]
        i += 1
        special = special_of(key)
        if special and special[1] is not None:
            continue
        for f in pb[key]:
            if f.target:
                visit(f.target)

    def openapi_keys(key):
        found = {}
        for table in [structs] + newer:
            e = table.get((key[0], key[1].lower()))
            if e:
                for k in e[1]:
                    found.setdefault(norm(k), k)
        return found

    # JSON names per message; a message field whose name is no JSON key of its parent, but whose
    # own fields all are, is embedded with `json:",inline"` in Go (Volume's VolumeSource, Probe's
    # ProbeHandler, ...): its fields sit in the parent object, and its JSON names are the parent's.
    names = {key: openapi_keys(key) for key in order}

    def covers(key, keys):
        """Whether every field of `key`, looking through nested inline candidates, is in `keys`."""
        return all(norm(c.name) in keys or (c.scalar == "message" and c.label == "optional"
                                             and not special_of(c.target) and pb[c.target]
                                             and covers(c.target, keys))
                   for c in pb[key])

    inline = set()
    changed = True
    while changed:
        changed = False
        for key in order:
            special = special_of(key)
            if special and special[1] is not None or not names[key]:
                continue
            for f in pb[key]:
                if (f.scalar != "message" or f.label != "optional" or norm(f.name) in names[key]
                        or (key, f.tag) in inline or special_of(f.target)):
                    continue
                if pb[f.target] and covers(f.target, names[key]):
                    inline.add((key, f.tag))
                    for c in pb[f.target]:
                        if norm(c.name) in names[key]:
                            names[f.target].setdefault(norm(c.name), names[key][norm(c.name)])
                    changed = True

    out = []
    guessed = []
    for key in order:
        module, name = key
        special = special_of(key)
        entry = None
        for table in [structs] + newer:
            entry = table.get((module, name.lower()))
            if entry:
                break
        proto_name = "k8s.io." + ".".join(module) + "." + (entry[0] if entry else name)
        fields = pb[key]
        if special and special[1] is not None:
            got = [(f.tag, f.scalar, f.label) for f in fields]
            if got != special[1]:
                fail("%s: layout %r, expected %r" % (proto_name, got, special[1]))
            out.append((proto_name, special[0], []))
            continue
        json_names = names[key]
        omit = set(OMIT_ZERO.get(proto_name, []))
        keep_empty = set(KEEP_EMPTY_STRING.get(proto_name, []))
        rows = []
        for f in fields:
            if (key, f.tag) in inline:
                rows.append((f, "", field_kind(f, index), "I"))
                continue
            json = json_names.get(norm(f.name))
            if json is None:
                json = guess_json_name(f.name)
                if not special:
                    guessed.append("%s.%s -> %s" % (proto_name, f.name, json))
            rows.append((f, json, field_kind(f, index), field_flags(f, json, omit, keep_empty)))
            omit.discard(json)
            keep_empty.discard(json)
        if omit or keep_empty:
            fail("%s has no fields %s" % (proto_name, sorted(omit | keep_empty)))
        out.append((proto_name, special[0] if special else "None", rows))
    for name in OMIT_ZERO.keys() | KEEP_EMPTY_STRING.keys():
        if not any(o[0] == name for o in out):
            fail("unknown message %s in OMIT_ZERO/KEEP_EMPTY_STRING" % name)

    if args.report:
        for g in guessed:
            print("guessed " + g, file=sys.stderr)
    write(args.out, out, roots, meta_roots, index)
    print("wrote %s: %d messages, %d fields, %d kinds, %d guessed names"
          % (args.out, len(out), sum(len(o[2]) for o in out), len(roots), len(guessed)), file=sys.stderr)


def special_of(key):
    if key in SPECIAL:
        return SPECIAL[key]
    if key[1] == "ExtraValue":
        return EXTRA_VALUE
    return None


def field_kind(f, index):
    if f.scalar == "map":
        if f.map_value == "message":
            return "MapMsg(%d)" % index[f.target]
        if f.map_value not in MAP_VALUES:
            fail("unsupported map value %s" % f.map_value)
        return MAP_VALUES[f.map_value]
    if f.scalar == "message":
        return "Msg(%d)" % index[f.target]
    if f.scalar not in SCALARS:
        fail("unsupported scalar %s" % f.scalar)
    return SCALARS[f.scalar]


def field_flags(f, json, omit, keep_empty):
    flags = []
    if f.label == "repeated":
        flags.append("R")
    elif f.scalar == "string" and json not in keep_empty:
        flags.append("Z")
    elif f.scalar in ("bool", "int32", "int64", "double") and json in omit:
        flags.append("Z")
    return "|".join(flags) or "0"


def write(path, out, roots, meta_roots, index):
    w = []
    w.append("// @generated by generate.py from the sources of the k8s-pb 0.9.0 and k8s-openapi 0.29.0 (v1_33)")
    w.append("// crates. Do not edit; regenerate with")
    w.append("//")
    w.append("//     python3 crates/kapal-api/src/protobuf/generate.py")
    w.append("//     rustfmt --edition 2024 crates/kapal-api/src/protobuf/schema_table.rs")
    w.append("//")
    w.append("// `F(tag, json name, kind, flags)`: flags `R` repeated, `Z` omitted when zero, `I` inline (the")
    w.append("// message's fields belong to the enclosing object, Go's `json:\",inline\"`).")
    w.append("")
    w.append("use super::layout::Kind::*;")
    w.append("use super::layout::{F, I, Message, R, Special, Z};")
    w.append("")
    w.append("/// Every message reachable from a known kind; `Msg(i)` and `MapMsg(i)` index this list.")
    w.append("#[rustfmt::skip]")
    w.append("pub(super) static MESSAGES: &[Message] = &[")
    for i, (name, special, rows) in enumerate(out):
        fields = ", ".join("F(%d, %s, %s, %s)" % (f.tag, rust_str(json), kind, flags) for f, json, kind, flags in rows)
        w.append("    /* %d */ Message { name: %s, special: Special::%s, fields: &[%s] }," % (i, rust_str(name), special, fields))
    w.append("];")
    w.append("")
    w.append("/// `(apiVersion, kind, message)`, sorted by apiVersion then kind.")
    w.append("#[rustfmt::skip]")
    w.append("pub(super) static KINDS: &[(&str, &str, u16)] = &[")
    for api_version, kind, key in roots:
        w.append("    (%s, %s, %d)," % (rust_str(api_version), rust_str(kind), index[key]))
    w.append("];")
    w.append("")
    w.append("/// meta/v1 kinds that every group version registers, by kind.")
    w.append("#[rustfmt::skip]")
    w.append("pub(super) static META_KINDS: &[(&str, u16)] = &[")
    for kind, key in meta_roots:
        w.append("    (%s, %d)," % (rust_str(kind), index[key]))
    w.append("];")
    with open(path, "w") as fh:
        fh.write("\n".join(w) + "\n")


if __name__ == "__main__":
    main()
