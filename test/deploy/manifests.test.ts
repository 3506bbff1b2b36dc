// Checks the Kubernetes manifests (k8s/) and the image (deploy/Dockerfile) without a cluster or a
// Docker engine: renders base and each overlay with scripts/kustomize.sh, validates every object
// against the Kubernetes schemas (kubernetes-models) and asserts what the design relies on:
// hardened containers, gRPC probes, drain-matched grace periods, headless Services + HPA + PDB per
// Deployment, addresses that resolve, and NetworkPolicies that allow exactly the call graph.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { Namespace, ConfigMap, Service } from 'kubernetes-models/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { callsOf, primaryService, serviceCatalog, serviceNames, type ServiceName } from '@elexirion/kit';

const root = join(import.meta.dirname, '..', '..');
const run = promisify(execFile);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;
type Labels = Record<string, string>;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const models: Record<string, new (data: any) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

// The services as the kit's catalog declares them: ports, contract, and who calls whom.
type Name = ServiceName;
const names = [...serviceNames];
const catalog = Object.fromEntries(
  names.map((name) => [name, { grpc: serviceCatalog[name].grpcPort, http: serviceCatalog[name].httpPort, proto: serviceCatalog[name].definition.fullName }]),
) as Record<Name, { grpc: number; http: number; proto: string }>;
// The monitor also reaches every other service's gRPC port for its health checks (grpc.health.v1,
// MONITOR_HEALTH_SERVICES), by their <NAME>_ADDRESS: an edge of the call graph like a call.
const healthChecked: Record<Name, Name[]> = Object.fromEntries(names.map((name) => [name, name === 'monitor' ? names.filter((other) => other !== 'monitor') : []])) as Record<Name, Name[]>;
const calls = Object.fromEntries(names.map((name) => [name, [...callsOf(name), ...healthChecked[name]]])) as Record<Name, Name[]>;

const targets = ['base', 'production', 'single-process'] as const;
const rendered = {} as Record<(typeof targets)[number], Obj[]>;
let secondRunStderr = '';

async function render(target: string): Promise<{ objects: Obj[]; stderr: string }> {
  try {
    const { stdout, stderr } = await run('bash', [join(root, 'scripts/kustomize.sh'), target], { cwd: root, maxBuffer: 64 << 20 });
    const objects = parseAllDocuments(stdout).map((doc) => {
      if (doc.errors.length) throw new Error(`rendered YAML of ${target} does not parse: ${doc.errors[0]}`);
      return doc.toJS() as Obj;
    });
    return { objects: objects.filter(Boolean), stderr };
  } catch (error) {
    const err = error as { stderr?: string; message: string };
    throw new Error(
      `could not render k8s "${target}" with scripts/kustomize.sh (it installs kustomize into .tools/ from the Go module proxy on first use, which needs \`go\` and the proxy):\n${err.stderr || err.message}`,
    );
  }
}

let renderError: Error | undefined;

beforeAll(async () => {
  // One at a time: the first render installs kustomize. A failure is kept and thrown by every
  // test, so a machine that cannot get kustomize fails each check instead of skipping it.
  try {
    for (const target of targets) rendered[target] = (await render(target)).objects;
    secondRunStderr = (await render('base')).stderr;
  } catch (error) {
    renderError = error as Error;
  }
}, 300_000);

function renderedOf(target: (typeof targets)[number]): Obj[] {
  if (renderError) throw renderError;
  return rendered[target];
}

// --- helpers ---------------------------------------------------------------------------------

const all = (objs: Obj[], kind: string) => objs.filter((o) => o.kind === kind);
const named = (objs: Obj[], kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const workloads = (objs: Obj[]) => objs.filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet');
const podLabels = (w: Obj): Labels => w.spec.template.metadata.labels;
const containers = (w: Obj): Obj[] => [...(w.spec.template.spec.initContainers ?? []), ...w.spec.template.spec.containers];

function matches(selector: Obj | undefined, labels: Labels): boolean {
  if (!selector) return true;
  const byLabel = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpr = (selector.matchExpressions ?? []).every((e: Obj) => {
    const has = Object.hasOwn(labels, e.key);
    switch (e.operator) {
      case 'In': return has && e.values.includes(labels[e.key]);
      case 'NotIn': return !has || !e.values.includes(labels[e.key]);
      case 'Exists': return has;
      case 'DoesNotExist': return !has;
      default: throw new Error(`unknown operator ${e.operator}`);
    }
  });
  return byLabel && byExpr;
}

/** Environment of a container as the kubelet builds it: envFrom ConfigMaps, then env. */
function envOf(objs: Obj[], c: Obj): Record<string, string | { fieldRef: string }> {
  const env: Record<string, string | { fieldRef: string }> = {};
  for (const from of c.envFrom ?? []) {
    const cm = named(objs, 'ConfigMap', from.configMapRef?.name);
    expect(cm, `envFrom ConfigMap ${from.configMapRef?.name} exists`).toBeDefined();
    Object.assign(env, cm!.data);
  }
  for (const e of c.env ?? []) {
    // $(VAR) expands only to variables defined before it.
    for (const [, ref] of String(e.value ?? '').matchAll(/\$\(([A-Z0-9_]+)\)/g)) {
      expect(Object.hasOwn(env, ref!), `${e.name} refers to $(${ref}) defined before it`).toBe(true);
    }
    env[e.name] = e.valueFrom?.fieldRef ? { fieldRef: e.valueFrom.fieldRef.fieldPath } : e.value;
  }
  return env;
}

/** The services a Deployment's process hosts, and the outermost one (whose ports it listens on). */
function hosted(objs: Obj[], d: Obj): { services: Name[]; outer: Name } {
  const value = envOf(objs, d.spec.template.spec.containers[0]).ELEXIRION_SERVICES as string;
  const services = value === 'all' ? names : (value.split(',') as Name[]);
  services.forEach((s) => expect(names, `ELEXIRION_SERVICES of ${d.metadata.name}`).toContain(s));
  return { services, outer: primaryService(services) };
}

/** The Service a cluster DNS name like `agent-headless.$(POD_NAMESPACE).svc.cluster.local` names. */
function serviceByHost(objs: Obj[], host: string, namespace: string): Obj | undefined {
  const m = /^([a-z0-9-]+)\.([^.]+)\.svc\.cluster\.local$/.exec(host);
  if (!m || (m[2] !== '$(POD_NAMESPACE)' && m[2] !== namespace)) return undefined;
  return named(objs, 'Service', m[1]!);
}

// --- the tests -------------------------------------------------------------------------------

describe.each(targets)('k8s %s', (target) => {
  const objs = () => renderedOf(target);
  // Non-empty, so a check over every Deployment cannot pass by having none to check.
  const deployments = () => {
    const found = all(objs(), 'Deployment');
    expect(found.length, `${target} renders Deployments`).toBeGreaterThan(0);
    return found;
  };
  const nsOf = (o: Obj) => o.metadata.namespace ?? 'default';

  it('renders only objects that validate against the Kubernetes schemas', () => {
    expect(objs().length).toBeGreaterThan(10);
    for (const o of objs()) {
      const Model = models[`${o.apiVersion}/${o.kind}`];
      expect(Model, `a schema for ${o.apiVersion} ${o.kind} (add it to the test's models)`).toBeDefined();
      expect(() => new Model!(o).validate(), `${o.kind}/${o.metadata?.name}`).not.toThrow();
    }
    expect(all(objs(), 'Secret'), 'provider keys are created by hand, never rendered').toEqual([]);
  });

  it('hardens every container: requests and limits, non-root, read-only root, no capabilities, seccomp', () => {
    for (const w of workloads(objs())) {
      const pod = w.spec.template.spec;
      expect(pod.securityContext?.seccompProfile?.type, w.metadata.name).toBe('RuntimeDefault');
      expect(pod.automountServiceAccountToken, w.metadata.name).toBe(false);
      expect(pod.enableServiceLinks, `${w.metadata.name}: no *_PORT variables shadowing settings`).toBe(false);
      for (const c of containers(w)) {
        const where = `${w.metadata.name}/${c.name}`;
        for (const r of ['cpu', 'memory']) {
          expect(c.resources?.requests?.[r], `${where} requests ${r}`).toBeDefined();
          expect(c.resources?.limits?.[r], `${where} limits ${r}`).toBeDefined();
        }
        expect(c.securityContext?.runAsNonRoot ?? pod.securityContext?.runAsNonRoot, where).toBe(true);
        expect(c.securityContext?.readOnlyRootFilesystem, where).toBe(true);
        expect(c.securityContext?.allowPrivilegeEscalation, where).toBe(false);
        expect(c.securityContext?.capabilities?.drop, where).toEqual(['ALL']);
        expect(c.securityContext?.capabilities?.add, where).toBeUndefined();
      }
    }
  });

  it('gives every Deployment gRPC probes naming its service, /tmp, spreading and a grace period above the drain', () => {
    expect(deployments().length).toBeGreaterThan(0);
    for (const d of deployments()) {
      const { outer } = hosted(objs(), d);
      const c = d.spec.template.spec.containers[0];
      for (const probe of [c.readinessProbe, c.livenessProbe]) {
        expect(probe?.grpc, `${d.metadata.name} probes over gRPC`).toEqual({ port: catalog[outer].grpc, service: catalog[outer].proto });
      }
      expect(c.ports.map((p: Obj) => p.containerPort).sort()).toEqual([catalog[outer].grpc, catalog[outer].http].sort());
      const env = envOf(objs(), c);
      const drainMs = Number(env.DRAIN_DELAY_MS ?? 0) + Number(env.DRAIN_GRACE_MS ?? 20_000);
      expect(Number(env.DRAIN_DELAY_MS), 'a delay lets endpoints drop the pod before draining').toBeGreaterThan(0);
      expect(d.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(drainMs / 1000);
      const tmp = c.volumeMounts.find((m: Obj) => m.mountPath === '/tmp');
      expect(d.spec.template.spec.volumes.find((v: Obj) => v.name === tmp?.name)?.emptyDir, `${d.metadata.name} /tmp`).toBeDefined();
      const spread = d.spec.template.spec.topologySpreadConstraints ?? [];
      expect(spread.some((t: Obj) => matches(t.labelSelector, podLabels(d))) || d.spec.template.spec.affinity?.podAntiAffinity).toBeTruthy();
      const annotations = d.spec.template.metadata.annotations;
      expect(annotations['prometheus.io/scrape']).toBe('true');
      expect(Number(annotations['prometheus.io/port'])).toBe(catalog[outer].http);
      expect(matches(d.spec.selector, podLabels(d)), `${d.metadata.name} selects its own pods`).toBe(true);
    }
  });

  it('gives every Deployment a headless Service, a CPU HPA and a PDB that select its pods', () => {
    for (const d of deployments()) {
      const labels = podLabels(d);
      const selecting = (o: Obj) => o.spec.selector && matches({ matchLabels: o.spec.selector }, labels);
      const headless = all(objs(), 'Service').filter((s) => s.spec.clusterIP === 'None' && selecting(s));
      expect(headless, `${d.metadata.name}: headless Service`).toHaveLength(1);
      // A selector must not pick up other workloads' pods too.
      for (const other of workloads(objs()).filter((w) => w !== d)) {
        expect(matches({ matchLabels: headless[0]!.spec.selector }, podLabels(other))).toBe(false);
      }
      const hpa = all(objs(), 'HorizontalPodAutoscaler').find((h) => h.spec.scaleTargetRef.kind === 'Deployment' && h.spec.scaleTargetRef.name === d.metadata.name);
      expect(hpa, `${d.metadata.name}: HPA`).toBeDefined();
      expect(hpa!.spec.minReplicas).toBeGreaterThanOrEqual(2);
      expect(hpa!.spec.metrics.some((m: Obj) => m.resource?.name === 'cpu')).toBe(true);
      expect(d.spec.replicas, 'replicas agree with the HPA floor').toBe(hpa!.spec.minReplicas);
      const pdbs = all(objs(), 'PodDisruptionBudget').filter((p) => matches(p.spec.selector, labels));
      expect(pdbs, `${d.metadata.name}: PDB`).toHaveLength(1);
      expect(pdbs[0]!.spec.minAvailable).toBe(1);
    }
    const gateway = named(objs(), 'Service', 'gateway');
    expect(gateway?.spec.clusterIP, 'gateway: a regular ClusterIP Service too').not.toBe('None');
    expect(gateway!.spec.ports.map((p: Obj) => p.port).sort()).toEqual([50051, 8080].sort());
  });

  it('points every <NAME>_ADDRESS and NATS_URL at an existing Service and port of a pod that serves it', () => {
    for (const d of deployments()) {
      const { services } = hosted(objs(), d);
      const env = envOf(objs(), d.spec.template.spec.containers[0]);
      expect(env.POD_NAMESPACE).toEqual({ fieldRef: 'metadata.namespace' });
      // Each callee not hosted in this process needs an address; hosted ones must not have one.
      const remote = new Set(services.flatMap((s) => calls[s]).filter((c) => !services.includes(c)));
      for (const name of names) {
        const value = env[`${name.toUpperCase()}_ADDRESS`];
        if (!remote.has(name)) {
          expect(value, `${d.metadata.name} ${name.toUpperCase()}_ADDRESS`).toBeUndefined();
          continue;
        }
        const m = /^dns:\/\/\/([^:]+):(\d+)$/.exec(String(value));
        expect(m, `${d.metadata.name} ${name.toUpperCase()}_ADDRESS=${value}`).not.toBeNull();
        const svc = serviceByHost(objs(), m![1]!, nsOf(d));
        expect(svc?.spec.clusterIP, `${value}: a headless Service (round robin over pods)`).toBe('None');
        expect(svc!.spec.ports.map((p: Obj) => p.port)).toContain(Number(m![2]));
        const servers = deployments().filter((o) => matches({ matchLabels: svc!.spec.selector }, podLabels(o)));
        expect(servers, `${value} selects a Deployment`).toHaveLength(1);
        expect(hosted(objs(), servers[0]!).services).toContain(name);
        expect(catalog[hosted(objs(), servers[0]!).outer].grpc).toBe(Number(m![2]));
      }
      const nats = /^nats:\/\/([^:]+):(\d+)$/.exec(String(env.NATS_URL));
      const natsSvc = nats && serviceByHost(objs(), nats[1]!, nsOf(d));
      expect(natsSvc?.spec.ports.map((p: Obj) => p.port), `NATS_URL=${env.NATS_URL}`).toContain(Number(nats![2]));
      expect(matches({ matchLabels: natsSvc!.spec.selector }, podLabels(named(objs(), 'StatefulSet', 'nats')!))).toBe(true);
    }
  });

  it('mounts the repository pipelines, prompts, the agent\'s routes and provider config from ConfigMaps and the keys from an optional Secret', () => {
    // A file as the container sees it: the deepest mount holding the path, then its ConfigMap key.
    const mountedFile = (d: Obj, path: string): string | undefined => {
      const c = d.spec.template.spec.containers[0];
      const mount = c.volumeMounts
        .filter((m: Obj) => path.startsWith(`${m.mountPath}/`))
        .sort((a: Obj, b: Obj) => b.mountPath.length - a.mountPath.length)[0];
      const volume = d.spec.template.spec.volumes.find((v: Obj) => v.name === mount?.name);
      const cm = volume?.configMap && named(objs(), 'ConfigMap', volume.configMap.name);
      return cm?.data?.[posix.relative(mount.mountPath, path)];
    };
    // Every file the executor may read (pipelines and prompt files), not the editors' schema/.
    const pipelineFiles = (readdirSync(join(root, 'pipelines'), { recursive: true }) as string[])
      .filter((f) => !f.startsWith('schema') && statSync(join(root, 'pipelines', f)).isFile());
    expect(pipelineFiles).toContain('general.yaml');
    const hosting = (service: Name) => deployments().filter((d) => hosted(objs(), d).services.includes(service));
    expect(hosting('executor').length, 'a Deployment hosts the executor').toBeGreaterThan(0);
    expect(hosting('provider').length, 'a Deployment hosts the provider').toBeGreaterThan(0);
    expect(hosting('agent').length, 'a Deployment hosts the agent').toBeGreaterThan(0);
    for (const d of deployments()) {
      const { services } = hosted(objs(), d);
      const env = envOf(objs(), d.spec.template.spec.containers[0]) as Record<string, string>;
      if (services.includes('executor')) {
        for (const file of pipelineFiles) {
          expect(mountedFile(d, `${env.PIPELINES_DIR}/${file}`), `pipelines/${file} deployed to ${d.metadata.name}`).toBe(readFileSync(join(root, 'pipelines', file), 'utf8'));
        }
      }
      if (services.includes('agent')) {
        // The agent's route table, from the same ConfigMap, mounted as a folder: a subPath mount
        // never sees a ConfigMap update, and the agent reloads the file when it changes.
        expect(env.AGENT_ROUTES_FILE, `${d.metadata.name} AGENT_ROUTES_FILE`).toEqual(expect.any(String));
        expect(mountedFile(d, env.AGENT_ROUTES_FILE!), `pipelines/routes.yaml deployed to ${d.metadata.name}`).toBe(readFileSync(join(root, 'pipelines/routes.yaml'), 'utf8'));
        const routesMount = d.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => env.AGENT_ROUTES_FILE!.startsWith(`${m.mountPath}/`));
        expect(routesMount.subPath, `${d.metadata.name}: routes.yaml without subPath`).toBeUndefined();
      }
      if (services.includes('provider')) {
        expect(mountedFile(d, env.PROVIDER_CONFIG!)).toBe(readFileSync(join(root, 'config/providers.yaml'), 'utf8'));
        expect(mountedFile(d, env.PROVIDER_MOCK_RESPONSES!)).toBe(readFileSync(join(root, 'config/mock-responses.yaml'), 'utf8'));
        const mount = d.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => m.mountPath === env.PROVIDER_SECRETS_DIR);
        const secret = d.spec.template.spec.volumes.find((v: Obj) => v.name === mount?.name)?.secret;
        expect(secret).toMatchObject({ secretName: 'elexirion-provider-keys', optional: true });
      }
    }
  });

  it('runs NATS as a 3-server JetStream cluster with a quorum-keeping PDB', () => {
    const nats = named(objs(), 'StatefulSet', 'nats')!;
    expect(nats.spec.replicas).toBe(3);
    const headless = named(objs(), 'Service', nats.spec.serviceName);
    expect(headless?.spec.clusterIP).toBe('None');
    expect(headless!.spec.ports.map((p: Obj) => p.port)).toEqual(expect.arrayContaining([4222, 6222]));
    const configVolume = nats.spec.template.spec.volumes.find((v: Obj) => v.configMap);
    const conf = Object.values(named(objs(), 'ConfigMap', configVolume.configMap.name)!.data).join('\n') as string;
    expect(conf).toMatch(/^jetstream\s*\{[^}]*store_dir:\s*\/data/m);
    expect(conf).toMatch(/^server_name:\s*\$SERVER_NAME/m);
    for (const i of [0, 1, 2]) expect(conf).toContain(`nats://nats-${i}.${nats.spec.serviceName}:6222`);
    expect(nats.spec.volumeClaimTemplates[0].metadata.name).toBe('data');
    // The config parses: the local nats-server (installed by scripts/setup.sh) checks it.
    const dir = mkdtempSync(join(tmpdir(), 'nats-conf-'));
    try {
      writeFileSync(join(dir, 'nats.conf'), conf);
      expect(() => execFileSync('nats-server', ['-t', '-c', join(dir, 'nats.conf')], { env: { ...process.env, SERVER_NAME: 'nats-0' }, stdio: 'pipe' })).not.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(nats.spec.template.spec.containers[0].volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    const pdb = all(objs(), 'PodDisruptionBudget').find((p) => matches(p.spec.selector, podLabels(nats)));
    expect(pdb?.spec.maxUnavailable ?? 3 - pdb?.spec.minAvailable).toBe(1);
  });

  it('allows exactly the call graph through NetworkPolicies', () => {
    const ns = nsOf(deployments()[0]!);
    type Pod = { id: string; namespace: string; labels: Labels; ports?: Obj[]; outside?: boolean };
    const pods: Pod[] = workloads(objs()).map((w) => ({ id: w.metadata.name, namespace: nsOf(w), labels: podLabels(w), ports: containers(w).flatMap((c) => c.ports) }));
    const sources: Pod[] = [
      ...pods,
      { id: 'stranger', namespace: ns, labels: { app: 'other' } },
      { id: 'monitoring', namespace: 'monitoring', labels: { app: 'prometheus' } },
      { id: 'outside', namespace: '', labels: {}, outside: true },
    ];
    const nsLabels = (name: string): Labels => ({ 'kubernetes.io/metadata.name': name });
    const policies = all(objs(), 'NetworkPolicy');
    const allowed = (src: Pod, dst: Pod, port: Obj): boolean => {
      const selecting = policies.filter((p) => nsOf(p) === dst.namespace && p.spec.policyTypes.includes('Ingress') && matches(p.spec.podSelector, dst.labels));
      if (selecting.length === 0) return true;
      return selecting.some((p) =>
        (p.spec.ingress ?? []).some((rule: Obj) => {
          const portOk = !rule.ports?.length || rule.ports.some((rp: Obj) => rp.port === port.containerPort || rp.port === port.name);
          const fromOk = !rule.from?.length || rule.from.some((peer: Obj) => {
            if (src.outside) return Boolean(peer.ipBlock);
            if (peer.ipBlock) return false;
            const nsOk = peer.namespaceSelector ? matches(peer.namespaceSelector, nsLabels(src.namespace)) : src.namespace === nsOf(p);
            return nsOk && (!peer.podSelector || matches(peer.podSelector, src.labels));
          });
          return portOk && fromOk;
        }),
      );
    };
    const servicesOf = (id: string): Name[] => {
      const d = named(objs(), 'Deployment', id);
      return d ? hosted(objs(), d).services : [];
    };
    const expected = (src: Pod, dst: Pod, port: Obj): boolean => {
      const srcServices = servicesOf(src.id);
      if (dst.id === 'nats') {
        if (port.containerPort === 4222) return srcServices.length > 0;
        if (port.containerPort === 6222) return src.id === 'nats';
        return src.id === 'monitoring';
      }
      const { services, outer } = hosted(objs(), named(objs(), 'Deployment', dst.id)!);
      if (outer === 'gateway') return true; // the public entry point, metrics included
      if (port.containerPort === catalog[outer].http) return src.id === 'monitoring';
      return srcServices.some((s) => services.some((callee) => calls[s].includes(callee)));
    };
    const mismatches: string[] = [];
    // Default deny: an Elexirion pod without a policy of its own (a future service) is unreachable.
    const newcomer: Pod = { id: 'newcomer', namespace: ns, labels: { ...pods[0]!.labels, 'app.kubernetes.io/name': 'newcomer' }, ports: [{ containerPort: 9000 }] };
    for (const src of sources) if (allowed(src, newcomer, newcomer.ports![0]!)) mismatches.push(`${src.id} -> newcomer:9000 is allowed`);
    for (const dst of pods) {
      for (const port of dst.ports!) {
        for (const src of sources) {
          const got = allowed(src, dst, port);
          if (got !== expected(src, dst, port)) mismatches.push(`${src.id} -> ${dst.id}:${port.containerPort} is ${got ? 'allowed' : 'denied'}`);
        }
      }
    }
    expect(mismatches).toEqual([]);
  });

  if (target === 'production') {
    it('puts everything in namespace elexirion with a pinned image tag and three replicas', () => {
      for (const o of objs().filter((o) => o.kind !== 'Namespace')) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('elexirion');
      expect(named(objs(), 'Namespace', 'elexirion')?.metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
      for (const d of deployments()) {
        expect(d.spec.template.spec.containers[0].image).toMatch(/^elexirion:(?!latest$)[\w.-]+$/);
        expect(d.spec.replicas).toBe(3);
      }
    });
  }
  if (target === 'single-process') {
    it('runs every service in one Deployment', () => {
      expect(deployments()).toHaveLength(1);
      expect(hosted(objs(), deployments()[0]!).services).toEqual(names);
    });
  }
});

describe('scripts/kustomize.sh', () => {
  it('is quiet once kustomize is installed', () => {
    renderedOf('base');
    expect(secondRunStderr).toBe('');
  });
});

describe('deploy/Dockerfile', () => {
  const text = readFileSync(join(root, 'deploy/Dockerfile'), 'utf8');
  // Instructions with continuation lines joined; comments dropped.
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages: { from: string; lines: string[] }[] = [];
  for (const line of lines) {
    if (/^FROM\s/i.test(line)) stages.push({ from: line, lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  const runtime = stages.at(-1)!;

  it('builds with npm install from the lock and npm run build, and ships only production dependencies', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const build = stages.flatMap((s) => s.lines).join('\n');
    expect(build).toMatch(/npm install --no-save/);
    expect(build).toMatch(/npm run build/);
    expect(build).toMatch(/--omit=dev/);
    expect(stages.every((s) => /node:24|NODE_IMAGE/.test(s.from))).toBe(true);
    expect(text).toMatch(/ARG NODE_IMAGE=node:24/);
  });

  it('runs as a non-root numeric USER, the one the pods run as, with ENTRYPOINT server/dist/main.js', () => {
    const user = runtime.lines.filter((l) => /^USER\s/i.test(l)).at(-1)?.split(/\s+/)[1];
    expect(user, 'the runtime stage sets USER').toBeDefined();
    const uid = user!.split(':')[0]!;
    expect(uid).toMatch(/^\d+$/); // numeric, so the kubelet can check runAsNonRoot
    expect(Number(uid)).toBeGreaterThan(0);
    for (const w of all(renderedOf('base'), 'Deployment')) expect(w.spec.template.spec.securityContext.runAsUser).toBe(Number(uid));
    const entrypoint = runtime.lines.find((l) => /^ENTRYPOINT\s/i.test(l))!;
    expect(JSON.parse(entrypoint.replace(/^ENTRYPOINT\s+/i, ''))).toEqual(['node', 'server/dist/main.js']);
  });

  it('installs and ships every service of the catalog (its package.json in both installs, its dist/)', () => {
    const copied = (stage: { lines: string[] }) => stage.lines.filter((l) => /^COPY\s/i.test(l)).map((l) => l.split(/\s+/).filter((word) => !word.startsWith('--')));
    const build = stages.find((s) => /\bAS build\b/i.test(s.from))!;
    const deps = stages.find((s) => /\bAS deps\b/i.test(s.from))!;
    for (const name of names) {
      expect(copied(build).map((c) => c[1]), `build stage installs services/${name}`).toContain(`services/${name}/package.json`);
      expect(copied(deps).map((c) => c[1]), `deps stage installs services/${name}`).toContain(`/app/services/${name}/package.json`);
      expect(copied(runtime).map((c) => c[1]), `runtime ships services/${name}/dist`).toContain(`/app/services/${name}/dist`);
    }
    // The web pages: built in the build stage, shipped as web/dist where the gateway looks.
    expect(copied(build).map((c) => c[1])).toEqual(expect.arrayContaining(['web/package.json', 'web']));
    expect(copied(runtime).find((c) => c[1] === '/app/web/dist')?.[2]).toBe('web/dist');
  });

  it('copies into the runtime stage only dist/, pipelines/, config/ and production node_modules', () => {
    const copies = runtime.lines.filter((l) => /^COPY\s/i.test(l));
    const fromContext = copies.filter((l) => !/--from=/.test(l)).map((l) => l.split(/\s+/)[1]);
    expect(fromContext.sort()).toEqual(['config', 'pipelines']);
    const fromStages = copies.filter((l) => /--from=build/.test(l)).map((l) => l.split(/\s+/)[2]);
    expect(fromStages.every((src) => /\/dist$/.test(src!))).toBe(true);
    for (const src of fromContext) expect(existsSync(join(root, src!)), `${src} exists`).toBe(true);
  });
});
