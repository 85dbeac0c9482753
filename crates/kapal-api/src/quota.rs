//! ResourceQuota accounting shared by the API server's quota admission and the ResourceQuota
//! controller: exact quantity arithmetic (upstream `resource.Quantity` add, compare and canonical
//! text), the usage one object charges (upstream's quota evaluators for pods, services,
//! persistent volume claims and generic object counts), and which quotas an object falls under
//! (scopes and scope selectors).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// How a quantity is written back, as upstream's `resource.Format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `500m`, `2k`.
    DecimalSi,
    /// `128Mi`, `1Gi`.
    BinarySi,
    /// `1e3`.
    DecimalExponent,
}

/// A quantity held exactly, in billionths (upstream rounds every quantity up to nano precision).
#[derive(Debug, Clone, Copy)]
pub struct Amount {
    nanos: i128,
    format: Format,
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

const NANO: i128 = 1_000_000_000;

impl Amount {
    /// A whole count, as upstream's `resource.NewQuantity(n, DecimalSI)`.
    pub fn count(n: i64) -> Amount {
        Amount { nanos: i128::from(n) * NANO, format: Format::DecimalSi }
    }

    /// Zero.
    pub fn zero() -> Amount {
        Amount::count(0)
    }

    /// Parses a quantity string (`500m`, `1Gi`, `1e3`); the error says what is wrong.
    pub fn parse(text: &str) -> Result<Amount, QuantityError> {
        let bad = || QuantityError(text.to_string());
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            Some(_) => (false, text),
            None => return Err(bad()),
        };
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let (base, exp, format) = suffix_multiplier(suffix).ok_or_else(bad)?;
        let digits: String = format!("{int}{frac}");
        let mut value: i128 = 0;
        for c in digits.trim_start_matches('0').bytes() {
            value = value.checked_mul(10).and_then(|v| v.checked_add(i128::from(c - b'0'))).ok_or_else(bad)?;
        }
        // value × 10^(9 - frac) × base^exp, rounded up to a whole nano.
        let mut ten_exp = 9 - i32::try_from(frac.len()).map_err(|_| bad())?;
        let mut two_exp = 0;
        match base {
            10 => ten_exp += exp,
            _ => two_exp = exp,
        }
        let scale = |v: i128, factor: i128, times: i32| -> Option<i128> {
            (0..times).try_fold(v, |acc, _| acc.checked_mul(factor))
        };
        value = scale(value, 2, two_exp).ok_or_else(bad)?;
        if ten_exp >= 0 {
            value = scale(value, 10, ten_exp).ok_or_else(bad)?;
        } else {
            let divisor = scale(1, 10, -ten_exp).unwrap_or(i128::MAX);
            value = value / divisor + i128::from(value % divisor != 0);
        }
        Ok(Amount { nanos: if negative { -value } else { value }, format })
    }

    /// Parses a quantity given as JSON (a string, or a bare number as upstream also accepts).
    pub fn from_json(value: &Value) -> Result<Amount, QuantityError> {
        match value {
            Value::String(s) => Amount::parse(s),
            Value::Number(n) => Amount::parse(&n.to_string()),
            other => Err(QuantityError(other.to_string())),
        }
    }

    /// The sum, written in this quantity's format, or in the other's when this one is zero
    /// (upstream `Quantity.Add`).
    pub fn plus(self, other: Amount) -> Amount {
        Amount { nanos: self.nanos.saturating_add(other.nanos), format: self.format_with(other) }
    }

    /// The difference, formatted as [`Amount::plus`] formats.
    pub fn minus(self, other: Amount) -> Amount {
        Amount { nanos: self.nanos.saturating_sub(other.nanos), format: self.format_with(other) }
    }

    fn format_with(self, other: Amount) -> Format {
        if self.nanos == 0 { other.format } else { self.format }
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value in thousandths, rounded up (upstream `MilliValue`).
    pub fn milli_value(&self) -> i64 {
        let milli = self.nanos / 1_000_000 + i128::from(self.nanos % 1_000_000 > 0);
        i64::try_from(milli).unwrap_or(if milli < 0 { i64::MIN } else { i64::MAX })
    }

    /// The value rounded up to a whole number (upstream `Value`).
    pub fn value(&self) -> i64 {
        let whole = self.nanos / NANO + i128::from(self.nanos % NANO > 0);
        i64::try_from(whole).unwrap_or(if whole < 0 { i64::MIN } else { i64::MAX })
    }

    /// A quantity of `milli` thousandths, written like `500m` (upstream `NewMilliQuantity`).
    pub fn from_milli(milli: i64) -> Amount {
        Amount { nanos: i128::from(milli) * 1_000_000, format: Format::DecimalSi }
    }
}

/// A malformed quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

fn suffix_multiplier(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = |e| Some((10, e, Format::DecimalSi));
    let binary = |e| Some((2, e, Format::BinarySi));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        s if s.len() > 1 && s.starts_with(['e', 'E']) => {
            s[1..].parse::<i32>().ok().filter(|e| e.abs() <= 30).map(|e| (10, e, Format::DecimalExponent))
        }
        _ => None,
    }
}

/// Upstream's canonical text (`Quantity.String`).
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let whole = self.nanos % NANO == 0;
        if self.format == Format::BinarySi && whole && self.nanos.abs() >= 1024 * NANO {
            let mut value = self.nanos / NANO;
            let mut power = 0;
            while value % 1024 == 0 && power < 6 {
                value /= 1024;
                power += 1;
            }
            return write!(f, "{value}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power]);
        }
        let (mut mantissa, mut exp) = (self.nanos, -9i32);
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exp += 1;
        }
        while exp.rem_euclid(3) != 0 {
            mantissa *= 10;
            exp -= 1;
        }
        if self.format == Format::DecimalExponent {
            return if exp == 0 { write!(f, "{mantissa}") } else { write!(f, "{mantissa}e{exp}") };
        }
        while exp > 18 {
            mantissa *= 10;
            exp -= 3;
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => "",
        };
        write!(f, "{mantissa}{suffix}")
    }
}

/// Resource names and amounts, sorted by name (upstream `corev1.ResourceList`).
pub type ResourceList = BTreeMap<String, Amount>;

/// Parses a JSON ResourceList (`{"cpu": "1", "pods": "10"}`); the error names the bad entry.
pub fn parse_list(value: Option<&Value>) -> Result<ResourceList, QuantityError> {
    let Some(map) = value.and_then(Value::as_object) else { return Ok(ResourceList::new()) };
    map.iter()
        .map(|(k, v)| Amount::from_json(v).map(|a| (k.clone(), a)).map_err(|e| QuantityError(format!("{k}: {}", e.0))))
        .collect()
}

/// A ResourceList as JSON, each amount in its canonical text.
pub fn list_json(list: &ResourceList) -> Value {
    Value::Object(list.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect())
}

/// Adds `b` to `a` key by key (upstream `quota.Add`).
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut sum = a.clone();
    for (name, amount) in b {
        sum.entry(name.clone()).and_modify(|have| *have = have.plus(*amount)).or_insert(*amount);
    }
    sum
}

/// Subtracts `b` from `a` key by key (upstream `quota.Subtract`).
pub fn subtract(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut difference = a.clone();
    for (name, amount) in b {
        difference
            .entry(name.clone())
            .and_modify(|have| *have = have.minus(*amount))
            .or_insert(Amount { nanos: -amount.nanos, format: amount.format });
    }
    difference
}

/// Only the entries of `list` named in `names` (upstream `quota.Mask`).
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    names.into_iter().filter_map(|n| list.get(n).map(|a| (n.clone(), *a))).collect()
}

/// Upstream's `prettyPrint`: `name=amount` pairs, sorted, joined by commas.
pub fn pretty(list: &ResourceList) -> String {
    list.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The resource names of `usage` that exceed `hard` (upstream `quota.LessThanOrEqual`).
pub fn exceeded(usage: &ResourceList, hard: &ResourceList) -> BTreeSet<String> {
    usage.iter().filter(|(k, v)| hard.get(*k).is_some_and(|h| *v > h)).map(|(k, _)| k.clone()).collect()
}

/// The names of the object-count resource for `plural` in `group`: `count/pods`,
/// `count/deployments.apps`.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") }
}

/// Core resources that also have a legacy object-count name (`configmaps` beside `count/configmaps`).
const LEGACY_COUNTS: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

/// The kind of object (group and plural) a quota resource name counts, when it counts one kind;
/// compute resources (`requests.cpu`, …) count pods.
pub fn counted_resource(name: &str) -> Option<(String, String)> {
    if let Some(rest) = name.strip_prefix("count/") {
        let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
        return Some((group.to_string(), plural.to_string()));
    }
    let core = |plural: &str| Some((String::new(), plural.to_string()));
    if LEGACY_COUNTS.contains(&name) {
        return core(name);
    }
    if name.starts_with("services.") {
        return core("services");
    }
    if name == "requests.storage" || name.contains(".storageclass.storage.k8s.io/") {
        return core("persistentvolumeclaims");
    }
    let compute = ["cpu", "memory", "ephemeral-storage"].contains(&name)
        || name.starts_with("requests.")
        || name.starts_with("limits.")
        || name.starts_with("hugepages-");
    compute.then(|| core("pods")).flatten()
}

/// What one object charges against quota, as upstream's evaluators compute it. `now_unix` (seconds)
/// decides whether a terminating pod is past its grace period.
pub fn usage(group: &str, plural: &str, obj: &Value, now_unix: i64) -> ResourceList {
    let mut used = ResourceList::new();
    used.insert(count_name(group, plural), Amount::count(1));
    if group.is_empty() && LEGACY_COUNTS.contains(&plural) && plural != "pods" {
        used.insert(plural.to_string(), Amount::count(1));
    }
    match (group, plural) {
        ("", "pods") if pod_counts(obj, now_unix) => used = add(&used, &pod_compute_usage(obj)),
        ("", "services") => used = add(&used, &service_usage(obj)),
        ("", "persistentvolumeclaims") => used = add(&used, &claim_usage(obj)),
        _ => {}
    }
    used
}

/// Whether a pod still holds compute quota: not Succeeded or Failed, and not past the grace period
/// of its deletion (upstream `QuotaV1Pod`).
pub fn pod_counts(pod: &Value, now_unix: i64) -> bool {
    if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleted = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
    match (deleted.and_then(|t| t.parse::<jiff::Timestamp>().ok()), grace) {
        (Some(at), Some(grace)) => now_unix <= at.as_second().saturating_add(grace),
        _ => true,
    }
}

fn containers<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).into_iter().flatten()
}

fn container_list(c: &Value, which: &str) -> ResourceList {
    parse_list(c.pointer(&format!("/resources/{which}"))).unwrap_or_default()
}

fn max_each(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (name, amount) in b {
        out.entry(name.clone()).and_modify(|have| *have = (*have).max(*amount)).or_insert(*amount);
    }
    out
}

/// The pod's effective requests or limits (upstream `PodRequests`/`PodLimits`): containers and
/// sidecars summed, at least each regular init container plus the sidecars started before it,
/// plus overhead.
fn pod_resources(pod: &Value, which: &str) -> ResourceList {
    let mut sum = ResourceList::new();
    for c in containers(pod, "containers") {
        sum = add(&sum, &container_list(c, which));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in containers(pod, "initContainers") {
        let own = container_list(c, which);
        if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            sidecars = add(&sidecars, &own);
            init_peak = max_each(&init_peak, &sidecars);
        } else {
            init_peak = max_each(&init_peak, &add(&sidecars, &own));
        }
    }
    let total = max_each(&add(&sum, &sidecars), &init_peak);
    add(&total, &parse_list(pod.pointer("/spec/overhead")).unwrap_or_default())
}

/// Compute usage of one running pod, or of one container when given a container's requests and
/// limits (upstream `podComputeUsageHelper`).
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut used = ResourceList::new();
    used.insert("pods".into(), Amount::count(1));
    for (name, amount) in requests {
        match name.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                used.insert(name.clone(), *amount);
                used.insert(format!("requests.{name}"), *amount);
            }
            n if n.starts_with("hugepages-") || n.contains('/') => {
                used.insert(format!("requests.{name}"), *amount);
            }
            _ => {}
        }
    }
    for (name, amount) in limits {
        if ["cpu", "memory", "ephemeral-storage"].contains(&name.as_str()) || name.starts_with("hugepages-") {
            used.insert(format!("limits.{name}"), *amount);
        }
    }
    used
}

fn pod_compute_usage(pod: &Value) -> ResourceList {
    compute_usage(&pod_resources(pod, "requests"), &pod_resources(pod, "limits"))
}

fn service_usage(svc: &Value) -> ResourceList {
    let mut used = ResourceList::new();
    let ports = svc.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let all = i64::try_from(ports.len()).unwrap_or(i64::MAX);
    match svc.pointer("/spec/type").and_then(Value::as_str) {
        Some("NodePort") => {
            used.insert("services.nodeports".into(), Amount::count(all));
        }
        Some("LoadBalancer") => {
            let allocate = svc.pointer("/spec/allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false);
            let explicit = ports.iter().filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0).count();
            let count = if allocate { all } else { i64::try_from(explicit).unwrap_or(i64::MAX) };
            used.insert("services.nodeports".into(), Amount::count(count));
            used.insert("services.loadbalancers".into(), Amount::count(1));
        }
        _ => {}
    }
    used
}

fn claim_usage(pvc: &Value) -> ResourceList {
    let mut used = ResourceList::new();
    let class = pvc.pointer("/spec/storageClassName").and_then(Value::as_str).unwrap_or_default();
    let per_class = |what: &str| format!("{class}.storageclass.storage.k8s.io/{what}");
    if !class.is_empty() {
        used.insert(per_class("persistentvolumeclaims"), Amount::count(1));
    }
    let requested = pvc.pointer("/spec/resources/requests/storage").and_then(|v| Amount::from_json(v).ok());
    let allocated = pvc.pointer("/status/allocatedResources/storage").and_then(|v| Amount::from_json(v).ok());
    if let Some(storage) = requested.into_iter().chain(allocated).max() {
        used.insert("requests.storage".into(), storage);
        if !class.is_empty() {
            used.insert(per_class("requests.storage"), storage);
        }
    }
    used
}

/// Whether quota `quota` (a ResourceQuota as JSON) covers `obj` of kind `plural` in `group`: a
/// quota without scopes covers everything; scoped quotas cover only pods that match every scope.
pub fn covers(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let scopes = quota_scopes(quota);
    if scopes.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    scopes.iter().all(|s| pod_matches_scope(obj, s))
}

/// One scope of a quota: from `spec.scopes` (operator `Exists`) or `spec.scopeSelector`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeRequirement {
    /// `Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`, `PriorityClass`, …
    pub scope: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values for `In` and `NotIn`.
    pub values: Vec<String>,
}

/// Every scope requirement of a quota.
pub fn quota_scopes(quota: &Value) -> Vec<ScopeRequirement> {
    let plain = quota.pointer("/spec/scopes").and_then(Value::as_array).into_iter().flatten();
    let mut scopes: Vec<ScopeRequirement> = plain
        .filter_map(Value::as_str)
        .map(|s| ScopeRequirement { scope: s.to_string(), operator: "Exists".into(), values: Vec::new() })
        .collect();
    let selected =
        quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten();
    scopes.extend(selected.map(|e| {
        ScopeRequirement {
            scope: e.get("scopeName").and_then(Value::as_str).unwrap_or_default().to_string(),
            operator: e.get("operator").and_then(Value::as_str).unwrap_or_default().to_string(),
            values: e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        }
    }));
    scopes
}

fn is_best_effort(pod: &Value) -> bool {
    let relevant = |m: Option<&Map<String, Value>>| m.is_some_and(|m| m.keys().any(|k| k == "cpu" || k == "memory"));
    !containers(pod, "containers").chain(containers(pod, "initContainers")).any(|c| {
        relevant(c.pointer("/resources/requests").and_then(Value::as_object))
            || relevant(c.pointer("/resources/limits").and_then(Value::as_object))
    })
}

fn pod_matches_scope(pod: &Value, req: &ScopeRequirement) -> bool {
    let terminating = pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|s| s >= 0);
    let holds = match req.scope.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|c| !c.is_empty());
            return match req.operator.as_str() {
                "In" => class.is_some_and(|c| req.values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !req.values.iter().any(|v| v == c)),
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                _ => false,
            };
        }
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        _ => false,
    };
    match req.operator.as_str() {
        "DoesNotExist" | "NotIn" => !holds,
        _ => holds,
    }
}

/// Whether a pod has an affinity or anti-affinity term reaching other namespaces.
fn cross_namespace_affinity(pod: &Value) -> bool {
    let groups =
        ["podAffinity", "podAntiAffinity"].into_iter().filter_map(|a| pod.pointer(&format!("/spec/affinity/{a}")));
    let lists = groups.filter_map(Value::as_object).flat_map(|o| o.values()).filter_map(Value::as_array);
    let mut terms = lists.flatten().map(|t| t.get("podAffinityTerm").unwrap_or(t));
    terms.any(|t| {
        t.get("namespaceSelector").is_some_and(|s| !s.is_null())
            || t.get("namespaces").and_then(Value::as_array).is_some_and(|n| !n.is_empty())
    })
}

/// The compute resources whose quota obliges every container to state them (upstream's
/// `validationSet`).
const MUST_SPECIFY: &[&str] = &["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

/// For a pod under a quota limiting `hard` resources: upstream's "must specify requests.cpu for:
/// c; limits.cpu for: c" when a container leaves out a resource the quota limits.
pub fn pod_constraints(pod: &Value, hard: &ResourceList) -> Result<(), String> {
    let required: BTreeSet<&str> = hard.keys().map(String::as_str).filter(|k| MUST_SPECIFY.contains(k)).collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in containers(pod, "containers").chain(containers(pod, "initContainers")) {
        let has = compute_usage(&container_list(c, "requests"), &container_list(c, "limits"));
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        for resource in required.iter().filter(|r| !has.contains_key(**r)) {
            missing.entry(resource).or_default().insert(name.to_string());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(resource, names)| format!("{resource} for: {}", names.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Amount {
        Amount::parse(s).unwrap()
    }

    #[test]
    fn sums_print_as_upstream_canonical_quantities() {
        assert_eq!(q("500m").plus(q("1")).to_string(), "1500m");
        assert_eq!(q("1").plus(q("1")).to_string(), "2");
        assert_eq!(q("2000").to_string(), "2k");
        assert_eq!(q("0.5").to_string(), "500m");
        assert_eq!(q("512Mi").plus(q("512Mi")).to_string(), "1Gi");
        assert_eq!(q("1Gi").plus(q("512Mi")).to_string(), "1536Mi");
        assert_eq!(q("100M").plus(q("28M")).to_string(), "128M");
        assert_eq!(q("1Ki").minus(q("1Ki")).to_string(), "0");
        assert_eq!(q("0").plus(q("512Mi")).to_string(), "512Mi");
        assert_eq!(q("1e3").to_string(), "1e3");
        assert_eq!(q("100").to_string(), "100");
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1m").milli_value(), 1);
        assert_eq!(q("1.5").value(), 2);
    }

    #[test]
    fn malformed_quantities_are_errors() {
        for bad in ["", "abc", "1..2", "1Qi", "--1", "."] {
            assert!(Amount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pods_charge_requests_limits_and_a_count_until_they_finish() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}});
        let used = usage("", "pods", &pod, 0);
        let text: BTreeMap<_, _> = used.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect();
        assert_eq!(text["pods"], "1");
        assert_eq!(text["count/pods"], "1");
        assert_eq!(text["requests.cpu"], "500m");
        assert_eq!(text["cpu"], "500m");
        assert_eq!(text["requests.memory"], "128Mi");
        assert_eq!(text["limits.cpu"], "500m");
        assert!(!text.contains_key("limits.memory"));
        let mut done = pod.clone();
        done["status"] = json!({"phase": "Succeeded"});
        assert_eq!(usage("", "pods", &done, 0).keys().collect::<Vec<_>>(), ["count/pods"]);
    }

    #[test]
    fn services_charge_node_ports_and_load_balancers() {
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let used = usage("", "services", &lb, 0);
        assert_eq!(used["services"], Amount::count(1));
        assert_eq!(used["services.loadbalancers"], Amount::count(1));
        assert_eq!(used["services.nodeports"], Amount::count(2));
        let plain = usage("", "services", &json!({"spec": {"ports": [{"port": 80}]}}), 0);
        assert!(!plain.contains_key("services.nodeports"));
        assert_eq!(usage("apps", "deployments", &json!({}), 0).keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
    }

    #[test]
    fn scopes_select_pods() {
        let quota = json!({"spec": {"scopes": ["BestEffort"], "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let best_effort_high = json!({"spec": {"priorityClassName": "high", "containers": [{"name": "c"}]}});
        let burstable_high = json!({"spec": {"priorityClassName": "high",
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}});
        assert!(covers(&quota, "", "pods", &best_effort_high));
        assert!(!covers(&quota, "", "pods", &burstable_high));
        assert!(!covers(&quota, "", "configmaps", &json!({})));
        assert!(covers(&json!({"spec": {}}), "", "configmaps", &json!({})));
    }

    #[test]
    fn quotas_on_compute_resources_require_them_of_every_container() {
        let hard: ResourceList = [("requests.cpu".to_string(), q("1")), ("limits.memory".to_string(), q("1Gi"))].into();
        let pod = json!({"spec": {"containers": [{"name": "web"}, {"name": "side", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(
            pod_constraints(&pod, &hard).unwrap_err(),
            "must specify limits.memory for: side,web; requests.cpu for: web"
        );
        let pods_only: ResourceList = [("pods".to_string(), q("1"))].into();
        assert!(pod_constraints(&pod, &pods_only).is_ok());
    }

    #[test]
    fn counted_resources_name_the_kind_they_count() {
        assert_eq!(counted_resource("count/deployments.apps"), Some(("apps".into(), "deployments".into())));
        assert_eq!(counted_resource("requests.cpu"), Some(("".into(), "pods".into())));
        assert_eq!(counted_resource("services.nodeports"), Some(("".into(), "services".into())));
        assert_eq!(counted_resource("requests.storage"), Some(("".into(), "persistentvolumeclaims".into())));
        assert_eq!(counted_resource("bogus"), None);
    }
}
