//! Field paths as kube-apiserver prints them: `spec.containers[0].name`, `data[key]`.

use std::fmt;

/// A field path under construction. Cheap to clone; every step returns a new path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Path(String);

impl Path {
    /// A path starting at `root` (`metadata`, `spec`, …). An empty root is the whole object.
    pub(crate) fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    /// `parent.name`.
    pub(crate) fn child(&self, name: &str) -> Path {
        if self.0.is_empty() { Path(name.to_string()) } else { Path(format!("{}.{name}", self.0)) }
    }

    /// `parent[i]`.
    pub(crate) fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    /// `parent[key]`, as upstream prints map keys (unquoted).
    pub(crate) fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key}]", self.0))
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> String {
        p.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_upstream() {
        let p = Path::new("spec").child("containers").index(1).child("name");
        assert_eq!(p.as_str(), "spec.containers[1].name");
        assert_eq!(Path::new("data").key("a.b").as_str(), "data[a.b]");
        assert_eq!(Path::new("").child("x").as_str(), "x");
    }
}
