//! Completion indexes of Indexed Jobs and their compressed text form (`1,3,5-7`), as
//! `status.completedIndexes` shows them.

use std::collections::BTreeSet;

/// The annotation and label carrying a pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// Parses `status.completedIndexes`; entries that are not numbers or ranges are skipped, and
/// indexes at or above `completions` are dropped.
pub fn parse(text: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else { continue };
        set.extend((first.max(0)..=last.min(completions - 1)).filter(|i| *i < completions));
    }
    set
}

/// Formats indexes in the compressed form: ascending, consecutive runs as `a-b`.
pub fn format(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        out.push(if first == last { first.to_string() } else { format!("{first}-{last}") });
    }
    out.join(",")
}

/// The completion index a pod carries in its annotation (or label), if valid for `completions`.
pub fn of_pod(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, completions: i32) -> Option<i32> {
    let from = |m: &Option<std::collections::BTreeMap<String, String>>| m.as_ref()?.get(INDEX_KEY)?.parse().ok();
    let index: i32 = from(&meta.annotations).or_else(|| from(&meta.labels))?;
    (0..completions).contains(&index).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_compressed_form() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format(&set), "0-2,4,6-7");
        assert_eq!(parse("0-2,4,6-7", 10), set);
        assert_eq!(format(&BTreeSet::new()), "");
    }

    #[test]
    fn parse_drops_out_of_range_and_garbage() {
        assert_eq!(parse("1,x,3-9", 5), [1, 3, 4].into_iter().collect());
    }
}
