"""The official Python Kubernetes client against a Kapal server.

Lists namespaces; creates, watches, updates and deletes a ConfigMap. Exits non-zero on failure.
"""
import sys
import threading

from kubernetes import client, config, watch


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    names = [n.metadata.name for n in v1.list_namespace().items]
    assert "default" in names and "kube-system" in names, names

    start = v1.list_namespaced_config_map("default").metadata.resource_version
    seen = []
    w = watch.Watch()

    def follow():
        for ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=20):
            if ev["object"].metadata.name == "py":
                seen.append((ev["type"], (ev["object"].data or {}).get("k")))
            if len(seen) == 3:
                w.stop()

    t = threading.Thread(target=follow)
    t.start()
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py"), data={"k": "1"})
    created = v1.create_namespaced_config_map("default", body)
    assert created.metadata.uid, created
    v1.patch_namespaced_config_map("py", "default", {"data": {"k": "2"}})
    v1.delete_namespaced_config_map("py", "default")
    t.join(30)
    assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")], seen
    try:
        v1.read_namespaced_config_map("py", "default")
        raise AssertionError("the ConfigMap should be gone")
    except client.exceptions.ApiException as e:
        assert e.status == 404, e
    print("python client ok")


if __name__ == "__main__":
    main(sys.argv[1])
