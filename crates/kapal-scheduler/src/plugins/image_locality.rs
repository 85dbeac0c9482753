//! ImageLocality (score, weight 1): prefer nodes that already hold the pod's images, scaled by
//! how widely each image is spread, between 23 MB and 1000 MB per container.

use std::collections::HashMap;

use crate::cache::{NodeInfo, normalized_image};
use crate::plugins::MAX_NODE_SCORE;
use crate::podinfo::PodInfo;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The pod's images, normalized as nodes report them.
pub fn pod_images(pod: &PodInfo) -> Vec<String> {
    let Some(spec) = pod.pod.spec.as_ref() else { return Vec::new() };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| c.image.as_deref())
        .map(normalized_image)
        .collect()
}

/// For each of the pod's images, on how many nodes it is present.
pub fn spread<'a>(images: &[String], nodes: impl Iterator<Item = &'a NodeInfo>) -> HashMap<String, i64> {
    let mut counts: HashMap<String, i64> = images.iter().map(|i| (i.clone(), 0)).collect();
    for node in nodes {
        for (image, n) in counts.iter_mut() {
            if node.images.contains_key(image) {
                *n += 1;
            }
        }
    }
    counts
}

/// The score, 0–100.
pub fn score(images: &[String], spread: &HashMap<String, i64>, total_nodes: i64, node: &NodeInfo) -> i64 {
    if images.is_empty() || total_nodes == 0 {
        return 0;
    }
    let sum: i64 = images
        .iter()
        .filter_map(|i| {
            node.images
                .get(i)
                .map(|size| (*size as f64 * spread.get(i).copied().unwrap_or(0) as f64 / total_nodes as f64) as i64)
        })
        .sum();
    let max = MAX_CONTAINER_THRESHOLD * images.len() as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn nodes_holding_large_images_score_higher() {
        let p = pod(json!({"containers": [{"name": "c", "image": "app:1"}]}));
        let images = pod_images(&p);
        assert_eq!(images, ["docker.io/library/app:1"]);
        let with = node("a", json!({}), json!({}))
            .with_status(json!({"images": [{"names": ["docker.io/library/app:1"], "sizeBytes": 500 * MB}]}));
        let without = node("b", json!({}), json!({}));
        let s = spread(&images, [&with, &without].into_iter());
        assert_eq!(s["docker.io/library/app:1"], 1);
        // 500 MB × 1/2 of nodes = 250 MB → (250 − 23) / (1000 − 23) × 100.
        assert_eq!(score(&images, &s, 2, &with), 23);
        assert_eq!(score(&images, &s, 2, &without), 0);
    }
}
