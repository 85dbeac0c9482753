"""A throwaway fake apiserver that records what kubectl sends (see README.md).

Serves legacy discovery and a few canned objects, answers every write with a minimal JSON object,
and dumps each request body to OUT/NN_METHOD_path.bin, with a line per request in OUT/log.txt.

    python3 capture_server.py PORT OUT CERT KEY
"""
import json, os, ssl, sys, re
from http.server import HTTPServer, BaseHTTPRequestHandler

OUT = sys.argv[2]
os.makedirs(OUT, exist_ok=True)

def res(name, kind, namespaced=True, verbs=("create", "delete", "get", "list", "patch", "update", "watch"), group=None, version=None, short=()):
    r = {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": list(verbs)}
    if group is not None:
        r["group"] = group
        r["version"] = version
    if short:
        r["shortNames"] = list(short)
    return r

GROUPS = {
    "v1": [res("namespaces", "Namespace", False, short=["ns"]), res("configmaps", "ConfigMap", short=["cm"]),
           res("secrets", "Secret"), res("services", "Service", short=["svc"]),
           res("serviceaccounts", "ServiceAccount", short=["sa"]),
           res("serviceaccounts/token", "TokenRequest", verbs=["create"], group="authentication.k8s.io", version="v1"),
           res("resourcequotas", "ResourceQuota", short=["quota"]), res("pods", "Pod", short=["po"]),
           res("pods/eviction", "Eviction", verbs=["create"], group="policy", version="v1"),
           res("pods/binding", "Binding", verbs=["create"]),
           res("replicationcontrollers", "ReplicationController", short=["rc"])],
    "apps/v1": [res("deployments", "Deployment", short=["deploy"]),
                res("deployments/scale", "Scale", verbs=["get", "patch", "update"], group="autoscaling", version="v1"),
                res("replicasets", "ReplicaSet", short=["rs"])],
    "batch/v1": [res("jobs", "Job"), res("cronjobs", "CronJob", short=["cj"])],
    "rbac.authorization.k8s.io/v1": [res("roles", "Role"), res("rolebindings", "RoleBinding"),
                                     res("clusterroles", "ClusterRole", False), res("clusterrolebindings", "ClusterRoleBinding", False)],
    "policy/v1": [res("poddisruptionbudgets", "PodDisruptionBudget", short=["pdb"])],
    "scheduling.k8s.io/v1": [res("priorityclasses", "PriorityClass", False, short=["pc"])],
    "networking.k8s.io/v1": [res("ingresses", "Ingress", short=["ing"])],
    "autoscaling/v2": [res("horizontalpodautoscalers", "HorizontalPodAutoscaler", short=["hpa"])],
    "autoscaling/v1": [res("horizontalpodautoscalers", "HorizontalPodAutoscaler", short=["hpa"])],
}

OBJECTS = {
    "/apis/apps/v1/namespaces/default/deployments/web": {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "5", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                       "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}},
    "/apis/batch/v1/namespaces/default/cronjobs/cj": {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "cj", "namespace": "default", "uid": "u2", "resourceVersion": "6"},
        "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}},
    "/api/v1/namespaces/default/pods/p1": {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "default", "uid": "u3", "resourceVersion": "7"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
}

OBJECTS["/api/v1/nodes/n1"] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "n", "resourceVersion": "8"}, "spec": {}}
GROUPS["v1"].append(res("nodes", "Node", False, short=["no"]))
COUNTER = [0]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        COUNTER[0] += 1
        tag = "%02d_%s_%s" % (COUNTER[0], self.command, re.sub(r"[^A-Za-z0-9]+", "_", self.path)[:80])
        with open(os.path.join(OUT, "log.txt"), "a") as f:
            f.write("%s %s ct=%s accept=%s len=%d -> %s\n" % (self.command, self.path, self.headers.get("Content-Type"),
                                                              self.headers.get("Accept"), len(body), tag))
        if body:
            with open(os.path.join(OUT, tag + ".bin"), "wb") as f:
                f.write(body)
        return body

    def do_GET(self):
        self.record()
        p = self.path.split("?")[0]
        if p == "/version":
            return self.send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        if p == "/api":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if p == "/apis":
            groups = {}
            for gv in GROUPS:
                if "/" in gv:
                    g, v = gv.split("/")
                    groups.setdefault(g, []).append({"groupVersion": gv, "version": v})
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": vs, "preferredVersion": vs[0]} for g, vs in groups.items()]})
        gv = p[len("/api/"):] if p.startswith("/api/") else p[len("/apis/"):]
        if gv in GROUPS:
            return self.send_json(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                                        "resources": GROUPS[gv]})
        if p == "/api/v1/pods":
            return self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": [
                {"metadata": {"name": "p2", "namespace": "default", "uid": "u9"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}]})
        if p in OBJECTS:
            return self.send_json(200, OBJECTS[p])
        return self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                    "code": 404, "message": "not found"})

    def do_POST(self):
        self.record()
        p = self.path.split("?")[0]
        m = re.match(r"^/apis?/(.*?)/(?:namespaces/[^/]+/)?([a-z]+)(?:/([^/]+)/([a-z]+))?$", p)
        kind, gv = "Unknown", "v1"
        if m:
            gv = m.group(1)
            for r in GROUPS.get(gv, []):
                if r["name"] == m.group(2) or r["name"] == "%s/%s" % (m.group(2), m.group(4)):
                    kind = r["kind"]
                    if "group" in r:
                        gv = "%s/%s" % (r["group"], r["version"])
        obj = {"apiVersion": gv, "kind": kind, "metadata": {"name": "x", "namespace": "default"}}
        if kind == "TokenRequest":
            obj["status"] = {"token": "abc", "expirationTimestamp": "2030-01-01T00:00:00Z"}
        return self.send_json(201, obj)

    do_PUT = do_POST

    def do_PATCH(self):
        self.record()
        return self.send_json(200, OBJECTS.get(self.path.split("?")[0], {"kind": "Status"}))

    def do_DELETE(self):
        self.record()
        return self.send_json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


port = int(sys.argv[1])
srv = HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
