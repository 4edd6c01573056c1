#!/usr/bin/env python3
"""Checks a rendered overlay (`kubectl kustomize` output, a file of YAML documents) for what
kubernetes-validate cannot: the Prometheus Operator's ServiceMonitor and PrometheusRule carry the
fields the operator's CRDs require, and the resources point at one another (a Service's selector
matches the pods, its target port is a container port, the Ingress names a Service port, the
ServiceMonitor selects the admin Service's port).

    check-custom-resources.py RENDERED.yaml RULES_OUT.yaml

writes the PrometheusRule's `spec` to RULES_OUT.yaml, a rules file for `promtool check rules`.

    check-custom-resources.py --gate PROBE_RENDERED.yaml ROLLOUTS.yaml...

checks the deploy gate instead: the rendered deploy/kubernetes/probe (its Job runs `sessionwatch
probe` on the ConfigMap it mounts, with every credential its sign-in names from a Secret, never
in the arguments) and the Argo Rollouts AnalysisTemplates and Flagger Canaries of
deploy/kubernetes/rollouts (the fields their CRDs require; a `job` metric runs the Job's very
pod; a `web` metric or webhook POSTs to the admin listener's /probe).

Exits 1 and names every problem found.
"""

import re
import sys
import tomllib

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


# --- the deploy gate ----------------------------------------------------------------------------

# Flagger's webhook types (flagger.app/v1beta1 Canary CRD) and the ones that can gate a rollout
# on the answer's status.
FLAGGER_WEBHOOK_TYPES = {"", "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion",
                         "post-rollout", "event", "rollback", "confirm-traffic-increase"}
FLAGGER_GATING = {"confirm-rollout", "pre-rollout", "rollout", "confirm-promotion",
                  "confirm-traffic-increase"}
FLAGGER_DURATION = re.compile(r"^[0-9]+(m|s)")
PROBE_PATH = "/probe"
# The probe's own time limit unless [probe] timeout says: a caller must wait longer.
PROBE_TIMEOUT_SECONDS = 30


def probe_job(problems, docs):
    """The rendered Job, checked against the ConfigMap it mounts; its pod spec, or None."""
    jobs = by_kind(docs, "Job")
    if len(jobs) != 1:
        problems.add("Job", f"{len(jobs)} in the rendering, not 1")
        return None
    job = jobs[0]
    where = f"Job/{job['metadata']['name']}"
    pod = job["spec"]["template"]["spec"]
    if pod.get("restartPolicy") != "Never":
        problems.add(where, "restartPolicy must be Never: a lost session is an answer, not a crash")
    if job["spec"].get("backoffLimit") != 0:
        problems.add(where, "backoffLimit must be 0: exit 1 (lost) must not be retried away")
    containers = pod.get("containers", [])
    if len(containers) != 1:
        problems.add(where, f"{len(containers)} containers, not 1")
        return pod
    c = containers[0]
    args = c.get("args", [])
    if not args or args[0] != "probe" or "--config" not in args:
        problems.add(where, f"does not run `sessionwatch probe --config FILE`: {args}")
        return pod
    config_path = args[args.index("--config") + 1] if args.index("--config") + 1 < len(args) else ""
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    maps = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    mounted = [(maps[n], p) for n, p in mounts.items() if n in maps
               and config_path.startswith(p.rstrip("/") + "/")]
    if len(mounted) != 1:
        problems.add(where, f"--config {config_path} is in no mounted ConfigMap")
        return pod
    map_name, mount = mounted[0]
    key = config_path[len(mount.rstrip("/")) + 1:]
    cms = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == map_name]
    if len(cms) != 1 or key not in cms[0].get("data", {}):
        problems.add(where, f"ConfigMap {map_name!r} with {key!r} is not in the rendering")
        return pod
    try:
        config = tomllib.loads(cms[0]["data"][key])
    except tomllib.TOMLDecodeError as e:
        problems.add(f"ConfigMap/{map_name}", f"{key} is not TOML: {e}")
        return pod
    probe = config.get("probe")
    if not isinstance(probe, dict) or not probe.get("check"):
        problems.add(f"ConfigMap/{map_name}", f"{key} has no [probe] check")
        return pod
    env = {e["name"]: e for e in c.get("env", [])}
    wanted = set()
    for step in probe.get("sign_in", []):
        wanted |= set(step.get("form_env", {}).values()) | set(step.get("header_env", {}).values())
    session = config.get("session", {})
    if "fingerprint_key_env" in session:
        wanted.add(session["fingerprint_key_env"])
    for var in sorted(wanted):
        e = env.get(var)
        if e is None:
            problems.add(where, f"the configuration names {var} but the container does not set it")
        elif "secretKeyRef" not in (e.get("valueFrom") or {}):
            problems.add(where, f"{var} must come from a Secret (valueFrom.secretKeyRef)")
    if any(a.startswith("--password") or a.startswith("--user") for a in args):
        problems.add(where, "credentials on the command line")
    return pod


def without_labels(pod):
    return {k: v for k, v in pod.items() if k != "metadata"}


def check_analysis_template(problems, at, job_pod):
    where = f"AnalysisTemplate/{at.get('metadata', {}).get('name')}"
    if at.get("apiVersion") != "argoproj.io/v1alpha1":
        problems.add(where, f"apiVersion {at.get('apiVersion')!r}, not argoproj.io/v1alpha1")
    metrics = (at.get("spec") or {}).get("metrics")
    if not isinstance(metrics, list) or not metrics:
        problems.add(where, "spec.metrics missing or empty (required)")
        return
    for i, m in enumerate(metrics):
        at_m = f"{where}: spec.metrics[{i}]"
        if not isinstance(m.get("name"), str) or not m["name"]:
            problems.add(at_m, "name missing (required)")
        provider = m.get("provider")
        if not isinstance(provider, dict) or len(provider) != 1:
            problems.add(at_m, "provider must name exactly one provider (required)")
            continue
        kind, spec = next(iter(provider.items()))
        if kind == "job":
            template = ((spec or {}).get("spec") or {}).get("template") or {}
            pod = template.get("spec") or {}
            if not pod.get("containers"):
                problems.add(at_m, "provider.job.spec.template.spec.containers missing (a JobSpec)")
            if pod.get("restartPolicy") not in ("Never", "OnFailure"):
                problems.add(at_m, "a Job's pod needs restartPolicy Never or OnFailure")
            if job_pod is not None and without_labels(pod) != without_labels(job_pod):
                problems.add(at_m, "the job's pod differs from deploy/kubernetes/probe/job.yaml's")
        elif kind == "web":
            url = (spec or {}).get("url")
            if not isinstance(url, str) or not url:
                problems.add(at_m, "provider.web.url missing (required)")
                continue
            if url.rstrip("/").endswith(PROBE_PATH) and spec.get("method") != "POST":
                problems.add(at_m, f"{PROBE_PATH} runs only on POST (method: POST)")
            if spec.get("method", "GET") not in ("GET", "POST", "PUT"):
                problems.add(at_m, f"method {spec['method']!r}: Argo Rollouts takes GET, POST, PUT")
            if spec.get("timeoutSeconds", 10) <= PROBE_TIMEOUT_SECONDS:
                problems.add(at_m, f"timeoutSeconds must exceed the probe's {PROBE_TIMEOUT_SECONDS} s")
            json_path = spec.get("jsonPath", "")
            if json_path and not (json_path.startswith("{") and json_path.endswith("}")):
                problems.add(at_m, f"jsonPath {json_path!r} must be a {{...}} expression")
            if not m.get("successCondition"):
                problems.add(at_m, "successCondition missing: every 2xx answer would pass")
        else:
            problems.add(at_m, f"provider {kind!r}: the gate's templates use job or web")


def check_canary(problems, canary):
    where = f"Canary/{canary.get('metadata', {}).get('name')}"
    if canary.get("apiVersion") != "flagger.app/v1beta1":
        problems.add(where, f"apiVersion {canary.get('apiVersion')!r}, not flagger.app/v1beta1")
    spec = canary.get("spec") or {}
    ref = spec.get("targetRef")
    if not isinstance(ref, dict) or any(not ref.get(k) for k in ("apiVersion", "kind", "name")):
        problems.add(where, "spec.targetRef needs apiVersion, kind and name (required)")
    elif ref["kind"] not in ("Deployment", "DaemonSet", "Service"):
        problems.add(where, f"spec.targetRef.kind {ref['kind']!r} is not one Flagger takes")
    if "service" in spec and not isinstance((spec["service"] or {}).get("port"), int):
        problems.add(where, "spec.service.port missing (required)")
    analysis = spec.get("analysis")
    if not isinstance(analysis, dict):
        problems.add(where, "spec.analysis missing (required)")
        return
    if not FLAGGER_DURATION.match(str(analysis.get("interval", ""))):
        problems.add(where, "spec.analysis.interval missing or not like 1m (required)")
    if not isinstance(analysis.get("threshold"), int):
        problems.add(where, "spec.analysis.threshold missing (required)")
    if not any(k in analysis for k in ("iterations", "stepWeight", "stepWeights")):
        problems.add(where, "spec.analysis needs one of iterations, stepWeight, stepWeights")
    gates = 0
    for i, hook in enumerate(analysis.get("webhooks") or []):
        at_h = f"{where}: spec.analysis.webhooks[{i}]"
        if not hook.get("name") or not hook.get("url"):
            problems.add(at_h, "name and url are required")
            continue
        kind = hook.get("type", "")
        if kind not in FLAGGER_WEBHOOK_TYPES:
            problems.add(at_h, f"type {kind!r} is not a Flagger webhook type")
        if "timeout" in hook and not FLAGGER_DURATION.match(str(hook["timeout"])):
            problems.add(at_h, f"timeout {hook['timeout']!r} is not like 30s")
        if hook["url"].rstrip("/").endswith(PROBE_PATH):
            gates += 1
            if kind not in FLAGGER_GATING:
                problems.add(at_h, f"type {kind!r} does not gate on the answer")
            seconds = int(re.match(r"^[0-9]+", str(hook.get("timeout", "10s"))).group())
            if str(hook.get("timeout", "10s")).rstrip("s").endswith("m"):
                seconds *= 60
            if seconds <= PROBE_TIMEOUT_SECONDS:
                problems.add(at_h, f"timeout must exceed the probe's {PROBE_TIMEOUT_SECONDS} s")
    if gates == 0:
        problems.add(where, f"no webhook calls {PROBE_PATH}")


def gate_main(probe_rendered, rollouts):
    with open(probe_rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = Problems(probe_rendered)
    job_pod = probe_job(problems, docs)
    counts = {"AnalysisTemplate": 0, "Canary": 0}
    for path in rollouts:
        with open(path, encoding="utf-8") as f:
            resources = [d for d in yaml.safe_load_all(f) if d]
        file_problems = Problems(path)
        for r in resources:
            kind = r.get("kind")
            if kind == "AnalysisTemplate":
                check_analysis_template(file_problems, r, job_pod)
            elif kind == "Canary":
                check_canary(file_problems, r)
            else:
                file_problems.add(str(kind), "not an AnalysisTemplate or a Canary")
                continue
            counts[kind] += 1
        problems.found.extend(file_problems.found)
    for kind, n in counts.items():
        if n == 0:
            problems.add(kind, "none in the rollouts' files")
    for p in problems.found:
        print(p, file=sys.stderr)
    if problems.found:
        return 1
    print(f"{probe_rendered}: the probe Job and its configuration agree; "
          f"{counts['AnalysisTemplate']} AnalysisTemplates and {counts['Canary']} Canary complete")
    return 0


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--gate":
        return gate_main(sys.argv[2], sys.argv[3:])
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
