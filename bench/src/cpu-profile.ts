// Summarizes a V8 .cpuprofile (node --cpu-prof): self time by package, by function, and charged
// to the nearest project function on the stack.
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

function where(url: string): { pkg: string; file: string } {
  const dependency = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(url);
  if (dependency) return { pkg: dependency[1]!, file: `${dependency[1]}/${dependency[2]}` };
  const project = /\/((?:services|server)\/[^/]+|server)\/dist\/(.*)$/.exec(url);
  if (project) return { pkg: project[1]!, file: `${project[1]}/${project[2]}` };
  if (url.startsWith('node:')) return { pkg: url, file: url };
  return { pkg: url ? url.replace(/^.*\//, '') : '(native)', file: url };
}

/** Self time per package and per function, as percentages of all samples. */
export function summarizeProfile(profile: CpuProfile, top = 30): string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfTime = new Map<number, number>();
  profile.samples.forEach((id, index) => selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const nameOf = (id: number) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    return url ? `${functionName || '(anonymous)'}  ${where(url).file}:${lineNumber + 1}` : `(${functionName})`;
  };
  const isProject = (id: number) => /\/(services|server)\/[^/]+\/dist\/|\/server\/dist\//.test(byId.get(id)!.callFrame.url);
  const byPackage = new Map<string, number>();
  const byFunction = new Map<string, number>();
  // A library's time charged to the project function that called into it: which of our code paths cost.
  const byProjectCaller = new Map<string, number>();
  let total = 0;
  for (const [id, micros] of selfTime) {
    const { pkg } = where(byId.get(id)!.callFrame.url);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + micros);
    byFunction.set(nameOf(id), (byFunction.get(nameOf(id)) ?? 0) + micros);
    let caller: number | undefined = id;
    while (caller !== undefined && !isProject(caller)) caller = parentOf.get(caller);
    const charged = caller === undefined ? '(not under project code)' : nameOf(caller);
    byProjectCaller.set(charged, (byProjectCaller.get(charged) ?? 0) + micros);
    total += micros;
  }
  const table = (counts: Map<string, number>) =>
    [...counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([key, micros]) => `${((micros / total) * 100).toFixed(1).padStart(5)}%  ${key}`)
      .join('\n');
  return `sampled ${(total / 1000).toFixed(0)} ms\n-- self time by package\n${table(byPackage)}\n-- self time by function\n${table(byFunction)}\n-- time charged to the nearest project function on the stack\n${table(byProjectCaller)}`;
}
