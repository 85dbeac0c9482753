//! The official Python client (PyPI `kubernetes`) drives a Kapal server.

mod common;

use common::Cluster;

#[test]
fn official_python_client_lists_creates_watches_and_deletes() {
    let has_client =
        std::process::Command::new("python3").args(["-c", "import kubernetes"]).status().is_ok_and(|s| s.success());
    if !has_client {
        eprintln!("SKIPPED: python3 with the `kubernetes` package is not installed (scripts/test.sh installs it)");
        return;
    }
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let out = std::process::Command::new("python3").arg(script).arg(&c.kubeconfig).output().expect("python3");
    assert!(
        out.status.success(),
        "python client failed:\nstdout: {}\nstderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
}
