#!/usr/bin/env python3
"""Checks a rendered overlay (`kubectl kustomize` output, a file of YAML documents) for what
kubernetes-validate cannot: the Prometheus Operator's ServiceMonitor and PrometheusRule carry the
fields the operator's CRDs require, and the resources point at one another (a Service's selector
matches the pods, its target port is a container port, the Ingress names a Service port, the
ServiceMonitor selects the admin Service's port).

    check-custom-resources.py RENDERED.yaml RULES_OUT.yaml

writes the PrometheusRule's `spec` to RULES_OUT.yaml, a rules file for `promtool check rules`.
Exits 1 and names every problem found.
"""

import re
import sys

import yaml

# The Prometheus Operator's duration pattern (monitoring.coreos.com/v1 `Duration`).
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                      r"(([0-9]+)s)?(([0-9]+)ms)?)$")
# The admin port's metrics path, as the proxy serves it.
METRICS_PATH = "/metrics"


class Problems:
    def __init__(self, source):
        self.source = source
        self.found = []

    def add(self, where, message):
        self.found.append(f"{self.source}: {where}: {message}")


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_template(docs):
    deployments = by_kind(docs, "Deployment")
    if len(deployments) != 1:
        return None
    return deployments[0]["spec"]["template"]


def container_ports(template):
    return {
        p.get("name"): p.get("containerPort")
        for c in template["spec"]["containers"]
        for p in c.get("ports", [])
    }


def check_service_monitor(problems, sm, services):
    where = f"ServiceMonitor/{sm.get('metadata', {}).get('name')}"
    if sm.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.add(where, f"apiVersion {sm.get('apiVersion')!r}, not monitoring.coreos.com/v1")
    spec = sm.get("spec") or {}
    # `selector` is the CRD's one required field of spec; `endpoints` is what makes it scrape.
    selector = (spec.get("selector") or {}).get("matchLabels")
    if not isinstance(selector, dict) or not selector:
        problems.add(where, "spec.selector.matchLabels missing: it selects no Service")
        return
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.add(where, "spec.endpoints missing or empty: nothing is scraped")
        return
    selected = [s for s in services if matches(selector, s["metadata"].get("labels", {}))]
    if len(selected) != 1:
        names = [s["metadata"]["name"] for s in selected]
        problems.add(where, f"selects {len(selected)} Services {names}, not exactly the admin one")
        return
    port_names = {p.get("name") for p in selected[0]["spec"].get("ports", [])}
    for i, ep in enumerate(endpoints):
        at = f"{where}: spec.endpoints[{i}]"
        if not isinstance(ep.get("port"), str) or not ep["port"]:
            problems.add(at, "port (the Service port's name) missing")
        elif ep["port"] not in port_names:
            problems.add(at, f"port {ep['port']!r} is none of {sorted(port_names)}")
        if ep.get("path", METRICS_PATH) != METRICS_PATH:
            problems.add(at, f"path {ep['path']!r}: the metrics are at {METRICS_PATH}")
        auth = ep.get("authorization")
        if auth is not None:
            creds = (auth or {}).get("credentials") or {}
            if auth.get("type", "Bearer") != "Bearer" or not creds.get("name") or not creds.get("key"):
                problems.add(at, "authorization needs type Bearer and credentials.name/key (a Secret's key)")
        for field in ("interval", "scrapeTimeout"):
            if field in ep and not (isinstance(ep[field], str) and DURATION.match(ep[field])):
                problems.add(at, f"{field} {ep[field]!r} is not a duration such as 15s")


def check_prometheus_rule(problems, pr):
    where = f"PrometheusRule/{pr.get('metadata', {}).get('name')}"
    if pr.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.add(where, f"apiVersion {pr.get('apiVersion')!r}, not monitoring.coreos.com/v1")
    groups = (pr.get("spec") or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        problems.add(where, "spec.groups missing or empty")
        return None
    seen = set()
    for g, group in enumerate(groups):
        at = f"{where}: spec.groups[{g}]"
        name = group.get("name")
        if not isinstance(name, str) or not name:
            problems.add(at, "name missing (required)")
        elif name in seen:
            problems.add(at, f"name {name!r} repeated (the operator refuses it)")
        seen.add(name)
        rules = group.get("rules")
        if not isinstance(rules, list) or not rules:
            problems.add(at, "rules missing or empty")
            continue
        for r, rule in enumerate(rules):
            rat = f"{at}.rules[{r}]"
            if ("alert" in rule) == ("record" in rule):
                problems.add(rat, "needs exactly one of alert and record")
            if not isinstance(rule.get("expr"), (str, int)) or rule.get("expr") == "":
                problems.add(rat, "expr missing (required)")
            if "for" in rule and not DURATION.match(str(rule["for"])):
                problems.add(rat, f"for {rule['for']!r} is not a duration such as 1m")
            for field in ("labels", "annotations"):
                values = rule.get(field, {})
                if not isinstance(values, dict) or not all(
                        isinstance(v, str) for v in values.values()):
                    problems.add(rat, f"{field} must map names to strings")
    return pr["spec"]


def check_references(problems, docs):
    template = pod_template(docs)
    if template is None:
        problems.add("Deployment", "not exactly one Deployment")
        return
    pod_labels = template["metadata"].get("labels", {})
    ports = container_ports(template)
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    for name, svc in services.items():
        if not matches(svc["spec"].get("selector"), pod_labels):
            problems.add(f"Service/{name}", "selector does not match the pods")
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort")
            if isinstance(target, str) and target not in ports:
                problems.add(f"Service/{name}", f"targetPort {target!r} is no container port")
    for kind in ("PodDisruptionBudget",):
        for d in by_kind(docs, kind):
            if not matches(d["spec"].get("selector", {}).get("matchLabels"), pod_labels):
                problems.add(f"{kind}/{d['metadata']['name']}", "selector does not match the pods")
    for np in by_kind(docs, "NetworkPolicy"):
        if not matches(np["spec"].get("podSelector", {}).get("matchLabels"), pod_labels):
            problems.add(f"NetworkPolicy/{np['metadata']['name']}", "podSelector matches no pod")
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if isinstance(p.get("port"), str) and p["port"] not in ports:
                    problems.add(f"NetworkPolicy/{np['metadata']['name']}",
                                 f"port {p['port']!r} is no container port")
    for ing in by_kind(docs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                if svc is None:
                    problems.add(f"Ingress/{ing['metadata']['name']}",
                                 f"Service {backend['name']!r} is not in the rendering")
                    continue
                wanted = backend["port"].get("name")
                if wanted and wanted not in {p.get("name") for p in svc["spec"]["ports"]}:
                    problems.add(f"Ingress/{ing['metadata']['name']}",
                                 f"Service {backend['name']!r} has no port {wanted!r}")
                if any(p.get("targetPort") == "admin" for p in svc["spec"]["ports"]):
                    problems.add(f"Ingress/{ing['metadata']['name']}",
                                 "routes to the admin port, which has no authentication")
    deployment = by_kind(docs, "Deployment")[0]["metadata"]["name"]
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref.get("kind"), ref.get("name")) != ("Deployment", deployment):
            problems.add(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}",
                         f"scales {ref.get('kind')}/{ref.get('name')}, not the Deployment")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    rendered, rules_out = sys.argv[1], sys.argv[2]
    with open(rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = Problems(rendered)
    monitors = by_kind(docs, "ServiceMonitor")
    rules = by_kind(docs, "PrometheusRule")
    if len(monitors) != 1:
        problems.add("ServiceMonitor", f"{len(monitors)} in the rendering, not 1")
    if len(rules) != 1:
        problems.add("PrometheusRule", f"{len(rules)} in the rendering, not 1")
    for sm in monitors:
        check_service_monitor(problems, sm, by_kind(docs, "Service"))
    spec = None
    for pr in rules:
        spec = check_prometheus_rule(problems, pr)
    check_references(problems, docs)
    if spec is not None:
        with open(rules_out, "w", encoding="utf-8") as f:
            yaml.safe_dump(spec, f, sort_keys=False)
    for p in problems.found:
        print(p, file=sys.stderr)
    if problems.found:
        return 1
    print(f"{rendered}: ServiceMonitor and PrometheusRule complete, references resolve "
          f"({len(docs)} resources)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
