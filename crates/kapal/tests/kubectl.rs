//! End-to-end: the built `kapal server` driven by real kubectl 1.27 and 1.33.

mod common;

use common::{Cluster, eventually, kubectls};

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ap\ndata:\n  a: \"1\"\n";

#[test]
fn discovery_version_and_resources() {
    let c = Cluster::start();
    for k in kubectls() {
        let v = c.ok(&k, &["version", "-o", "json"]);
        assert!(v.contains("\"gitVersion\": \"v1.33.0+kapal\""), "{v}");
        let res = c.ok(&k, &["api-resources"]);
        for r in [
            "pods",
            "deployments",
            "services",
            "configmaps",
            "namespaces",
            "endpointslices",
            "customresourcedefinitions",
        ] {
            assert!(res.contains(r), "{r} missing from api-resources:\n{res}");
        }
        assert!(
            res.lines().any(|l| l.starts_with("deployments") && l.contains("deploy") && l.contains("apps/v1")),
            "{res}"
        );
        let wide = c.ok(&k, &["api-resources", "-o", "wide"]);
        assert!(wide.contains("VERBS"));
        let ns = c.ok(&k, &["get", "namespaces"]);
        for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(ns.contains(n), "{ns}");
        }
        assert!(ns.starts_with("NAME") && ns.contains("STATUS") && ns.contains("Active"), "{ns}");
    }
}

#[test]
fn crud_patch_label_and_selectors() {
    let c = Cluster::start();
    for (i, k) in kubectls().iter().enumerate() {
        let ns = format!("crud{i}");
        c.ok(k, &["create", "namespace", &ns]);
        let out = c.ok(k, &["create", "configmap", "c1", "-n", &ns, "--from-literal=a=1"]);
        assert!(out.contains("configmap/c1 created"), "{out}");
        c.ok(k, &["patch", "cm", "c1", "-n", &ns, "--type=merge", "-p", r#"{"data":{"b":"2"}}"#]);
        c.ok(
            k,
            &[
                "patch",
                "cm",
                "c1",
                "-n",
                &ns,
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/data/a","value":"9"}]"#,
            ],
        );
        c.ok(k, &["patch", "cm", "c1", "-n", &ns, "-p", r#"{"data":{"c":"3"}}"#]);
        assert_eq!(c.ok(k, &["get", "cm", "c1", "-n", &ns, "-o", "jsonpath={.data.a}{.data.b}{.data.c}"]), "923");
        c.ok(k, &["label", "cm", "c1", "-n", &ns, "tier=web"]);
        c.ok(k, &["annotate", "cm", "c1", "-n", &ns, "note=hi"]);
        assert_eq!(c.ok(k, &["get", "cm", "-n", &ns, "-l", "tier=web", "-o", "name"]).trim(), "configmap/c1");
        assert_eq!(c.ok(k, &["get", "cm", "-n", &ns, "-l", "tier in (db)", "-o", "name"]).trim(), "");
        assert_eq!(
            c.ok(k, &["get", "cm", "-n", &ns, "--field-selector", "metadata.name=c1", "-o", "name"]).trim(),
            "configmap/c1"
        );
        let all = c.ok(k, &["get", "cm", "-A", "-l", "tier=web"]);
        assert!(all.contains("NAMESPACE") && all.contains(&ns), "{all}");
        let out = c.ok(k, &["delete", "cm", "c1", "-n", &ns]);
        assert!(out.contains("deleted"), "{out}");
        let err = c.fails(k, &["get", "cm", "c1", "-n", &ns], None);
        assert!(err.contains("NotFound") && err.contains("configmaps \"c1\" not found"), "{err}");
    }
}

#[test]
fn errors_read_like_kubernetes() {
    let c = Cluster::start();
    for k in kubectls() {
        c.ok(&k, &["create", "cm", "dup", "--from-literal=a=1"]);
        let out = c.fails(&k, &["create", "cm", "dup", "--from-literal=a=1"], None);
        assert!(out.contains("configmaps \"dup\" already exists"), "{out}");
        let out =
            c.fails(&k, &["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n"));
        assert!(out.contains("AlreadyExists"), "{out}");
        let out = c.fails(&k, &["create", "cm", "Bad_Name", "--from-literal=a=1"], None);
        assert!(out.contains("Invalid value") && out.contains("metadata.name"), "{out}");
        let strict = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\nfoo: bar\n";
        let out = c.fails(&k, &["apply", "--validate=strict", "-f", "-"], Some(strict));
        assert!(out.contains("unknown field"), "{out}");
        c.fails(&k, &["get", "cm", "strict"], None);
        let out = c.fails(&k, &["apply", "-f", "-"], Some("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","));
        assert!(out.contains("error"), "{out}");
        c.ok(&k, &["delete", "cm", "dup"]);
    }
}

#[test]
fn client_side_apply_and_diff() {
    let c = Cluster::start();
    for k in kubectls() {
        let out = c.ok_stdin(&k, &["apply", "-f", "-"], Some(CM));
        assert!(out.contains("configmap/ap created"), "{out}");
        let out = c.ok_stdin(&k, &["apply", "-f", "-"], Some(CM));
        assert!(out.contains("configmap/ap unchanged"), "{out}");
        let out = c.ok_stdin(&k, &["apply", "-f", "-"], Some(&CM.replace("\"1\"", "\"2\"")));
        assert!(out.contains("configmap/ap configured"), "{out}");
        assert!(
            c.ok(&k, &["get", "cm", "ap", "-o", "yaml"]).contains("kubectl.kubernetes.io/last-applied-configuration")
        );
        let out = c.kubectl_stdin(&k, &["diff", "-f", "-"], Some(&CM.replace("\"1\"", "\"3\"")));
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"3\""), "{out:?}");
        c.ok(&k, &["delete", "cm", "ap"]);
    }
}

#[test]
fn server_side_apply_conflicts_and_force() {
    let c = Cluster::start();
    for k in kubectls() {
        let m = CM.replace("name: ap", "name: ssa");
        let out = c.ok_stdin(&k, &["apply", "--server-side", "-f", "-"], Some(&m));
        assert!(out.contains("serverside-applied"), "{out}");
        assert!(
            c.ok(&k, &["get", "cm", "ssa", "-o", "json", "--show-managed-fields"]).contains("\"manager\": \"kubectl\"")
        );
        let changed = m.replace("\"1\"", "\"2\"");
        let out = c.fails(&k, &["apply", "--server-side", "--field-manager=other", "-f", "-"], Some(&changed));
        assert!(out.contains("conflict"), "{out}");
        c.ok_stdin(
            &k,
            &["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-"],
            Some(&changed),
        );
        assert_eq!(c.ok(&k, &["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]), "2");
        c.ok(&k, &["delete", "cm", "ssa"]);
    }
}

#[test]
fn dry_run_and_stale_replace() {
    let c = Cluster::start();
    for k in kubectls() {
        let out = c.ok(&k, &["create", "cm", "dry", "--from-literal=a=1", "--dry-run=server"]);
        assert!(out.contains("server dry run"), "{out}");
        c.fails(&k, &["get", "cm", "dry"], None);
        c.ok(&k, &["create", "cm", "rv", "--from-literal=a=1"]);
        let old = c.ok(&k, &["get", "cm", "rv", "-o", "json"]);
        c.ok(&k, &["patch", "cm", "rv", "--type=merge", "-p", r#"{"data":{"a":"2"}}"#]);
        let out = c.fails(&k, &["replace", "-f", "-"], Some(&old));
        assert!(out.contains("Conflict"), "{out}");
        c.ok(&k, &["delete", "cm", "rv"]);
    }
}

#[test]
fn tables_and_output_formats() {
    let c = Cluster::start();
    let k = &kubectls()[kubectls().len() - 1];
    c.ok(k, &["create", "cm", "fmt", "--from-literal=a=1"]);
    assert!(c.ok(k, &["get", "cm", "fmt", "-o", "yaml"]).contains("kind: ConfigMap"));
    assert!(c.ok(k, &["get", "cm", "fmt", "-o", "json"]).contains("\"resourceVersion\""));
    assert_eq!(c.ok(k, &["get", "cm", "fmt", "-o", "name"]).trim(), "configmap/fmt");
    let out = c.ok(k, &["get", "cm", "fmt", "-o", "custom-columns=N:.metadata.name,A:.data.a", "--no-headers"]);
    assert!(out.contains("fmt") && out.contains('1'), "{out}");
    let out = c.ok(k, &["get", "cm"]);
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"]);
    let out = c.ok(k, &["get", "svc", "kubernetes"]);
    assert!(out.contains("CLUSTER-IP") && out.contains("10.43.0.1") && out.contains("443/TCP"), "{out}");
    c.ok(k, &["create", "deployment", "web", "--image=busybox", "--replicas=2"]);
    let out = c.ok(k, &["get", "deploy", "web"]);
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(out.contains("0/2"), "{out}");
    let wide = c.ok(k, &["get", "deploy", "web", "-o", "wide"]);
    assert!(wide.contains("CONTAINERS") && wide.contains("SELECTOR") && wide.contains("app=web"), "{wide}");
    let pod =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    c.ok_stdin(k, &["apply", "-f", "-"], Some(pod));
    let out = c.ok(k, &["get", "pods", "-o", "wide"]);
    for col in ["READY", "STATUS", "RESTARTS", "IP", "NODE"] {
        assert!(out.contains(col), "{col}: {out}");
    }
    assert!(out.contains("Pending") && out.contains("0/1"), "{out}");
    assert!(c.ok(k, &["describe", "cm", "fmt"]).contains("Name:"));
    assert!(c.ok(k, &["describe", "deploy", "web"]).contains("Replicas:"));
}

#[test]
fn watch_and_pagination() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let watcher = {
            let kubeconfig = c.kubeconfig.clone();
            let k = k.clone();
            std::thread::spawn(move || {
                std::process::Command::new("timeout")
                    .arg("8")
                    .arg(&k)
                    .env("KUBECONFIG", kubeconfig)
                    .args(["get", "cm", "-w", "-o", "name"])
                    .output()
            })
        };
        std::thread::sleep(std::time::Duration::from_secs(2));
        let name = format!("w{i}");
        c.ok(&k, &["create", "cm", &name, "--from-literal=a=1"]);
        let out = watcher.join().expect("watcher").expect("kubectl -w");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("configmap/{name}")), "{out:?}");
    }
    let k = &kubectls()[0];
    c.ok(k, &["create", "ns", "pages"]);
    let many: String =
        (1..=30).map(|i| format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p{i}\n")).collect();
    c.ok_stdin(k, &["apply", "-n", "pages", "-f", "-"], Some(&many));
    for k in kubectls() {
        let out = c.ok(&k, &["get", "cm", "-n", "pages", "--chunk-size=7", "-o", "name"]);
        assert_eq!(out.lines().filter(|l| l.starts_with("configmap/p")).count(), 30, "{out}");
        let out = c.ok(&k, &["get", "cm", "-n", "pages", "--chunk-size=7"]);
        assert_eq!(out.lines().filter(|l| l.starts_with("NAME")).count(), 1, "one header across pages: {out}");
        let raw = c.ok(&k, &["get", "--raw", "/api/v1/namespaces/pages/configmaps?limit=5"]);
        assert!(raw.contains("\"continue\""), "{raw}");
    }
}

#[test]
fn explain_uses_openapi() {
    let c = Cluster::start();
    for k in kubectls() {
        let out = c.ok(&k, &["explain", "pod.spec.containers"]);
        assert!(out.contains("FIELD") && out.contains("image"), "{out}");
        let out = c.ok(&k, &["explain", "deployment.spec.replicas"]);
        assert!(out.contains("replicas"), "{out}");
    }
}

#[test]
fn deployment_scale_and_secret() {
    let c = Cluster::start();
    for (i, k) in kubectls().iter().enumerate() {
        let name = format!("web{i}");
        c.ok(k, &["create", "deployment", &name, "--image=busybox", "--replicas=1", "--", "sleep", "3600"]);
        c.ok(k, &["scale", "deployment", &name, "--replicas=3"]);
        assert_eq!(c.ok(k, &["get", "deploy", &name, "-o", "jsonpath={.spec.replicas}"]), "3");
        let scale = c.ok(k, &["get", "--raw", &format!("/apis/apps/v1/namespaces/default/deployments/{name}/scale")]);
        assert!(scale.contains("\"replicas\":3"), "{scale}");
        let out = c.ok(k, &["autoscale", "deployment", &name, "--max=5", "--cpu-percent=50"]);
        assert!(out.contains("autoscaled"), "{out}");
        let hpa = c.ok(k, &["get", "hpa", &name]);
        assert!(hpa.contains("TARGETS") && hpa.contains("50%") && hpa.contains(&format!("Deployment/{name}")), "{hpa}");
        let secret = format!("s{i}");
        c.ok(k, &["create", "secret", "generic", &secret, "--from-literal=password=hunter2"]);
        let data = c.ok(k, &["get", "secret", &secret, "-o", "jsonpath={.data.password}"]);
        assert_eq!(data, "aHVudGVyMg==");
    }
}

#[test]
fn namespace_deletion_removes_content() {
    let c = Cluster::start();
    for (i, k) in kubectls().iter().enumerate() {
        let ns = format!("gone{i}");
        c.ok(k, &["create", "ns", &ns]);
        c.ok(k, &["create", "cm", "inside", "-n", &ns, "--from-literal=a=1"]);
        c.ok(k, &["create", "deployment", "d", "-n", &ns, "--image=busybox"]);
        c.ok(k, &["delete", "ns", &ns, "--timeout=60s"]);
        c.fails(k, &["get", "ns", &ns], None);
        let out = c.fails(k, &["create", "cm", "late", "-n", &ns, "--from-literal=a=1"], None);
        assert!(out.contains("not found"), "{out}");
    }
}

#[test]
fn custom_resources() {
    let c = Cluster::start();
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.example.com}
spec:
  group: e2e.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer, minimum: 1}}}
          status: {type: object, properties: {ready: {type: boolean}}}
"#;
    for k in kubectls() {
        c.ok_stdin(&k, &["apply", "-f", "-"], Some(crd));
        c.ok(&k, &["wait", "--for=condition=established", "crd/widgets.e2e.example.com", "--timeout=30s"]);
        assert!(eventually(30, || c.kubectl(&k, &["get", "widgets"]).status.success()));
        c.ok_stdin(
            &k,
            &["apply", "-f", "-"],
            Some("apiVersion: e2e.example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n"),
        );
        assert_eq!(c.ok(&k, &["get", "wd", "w", "-o", "jsonpath={.spec.size}"]), "3");
        let table = c.ok(&k, &["get", "widgets"]);
        assert!(table.contains("SIZE") && table.contains('3'), "{table}");
        let out = c.fails(
            &k,
            &["apply", "-f", "-"],
            Some("apiVersion: e2e.example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 0}\n"),
        );
        assert!(out.contains("Invalid") && out.contains("spec.size"), "{out}");
        c.ok(&k, &["patch", "widget", "w", "--type=merge", "-p", r#"{"spec":{"size":5}}"#]);
        assert_eq!(c.ok(&k, &["get", "wd", "w", "-o", "jsonpath={.spec.size}"]), "5");
        let out = c.ok(&k, &["explain", "widget.spec"]);
        assert!(out.contains("size"), "{out}");
        c.ok(&k, &["delete", "crd", "widgets.e2e.example.com"]);
        assert!(eventually(30, || !c.kubectl(&k, &["get", "widgets"]).status.success()));
        // The custom objects went with their CRD: a new CRD of the same name starts empty.
        c.ok_stdin(&k, &["apply", "-f", "-"], Some(crd));
        assert!(eventually(30, || c.kubectl(&k, &["get", "widgets"]).status.success()));
        assert_eq!(c.ok(&k, &["get", "widgets", "-o", "name"]).trim(), "");
        c.ok(&k, &["delete", "crd", "widgets.e2e.example.com"]);
    }
}

#[test]
fn restart_keeps_state() {
    let mut c = Cluster::start();
    let k = &kubectls()[0];
    c.ok(k, &["create", "cm", "persist", "--from-literal=a=1"]);
    let ca = c.dir.path().join("data/tls/ca.crt");
    let ca_before = std::fs::read_to_string(&ca).unwrap();
    c.kill_and_restart();
    assert_eq!(c.ok(k, &["get", "cm", "persist", "-o", "jsonpath={.data.a}"]), "1");
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), ca_before, "the CA is kept across restarts");
}
