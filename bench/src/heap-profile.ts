// Summarizes two V8 heap snapshots (.heapsnapshot) taken before and while `runs` runs were held
// in flight: live bytes and objects per run by kind (constructor, closure, array, ...), and the
// suspended async functions per run by function name. This is how the memory per in-flight run
// was traced to its parts.
import { readFileSync } from 'node:fs';

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

interface Tally {
  bytes: Map<string, number>;
  count: Map<string, number>;
  total: number;
}

function add(tally: Tally, key: string, bytes: number): void {
  tally.bytes.set(key, (tally.bytes.get(key) ?? 0) + bytes);
  tally.count.set(key, (tally.count.get(key) ?? 0) + 1);
}

/** Live objects by kind, and suspended async functions (generator objects) by function name. */
export function tallyHeap(snapshot: HeapSnapshot): { kinds: Tally; suspended: Tally } {
  const { meta } = snapshot.snapshot;
  const nodeFields = meta.node_fields.length;
  const edgeFields = meta.edge_fields.length;
  const typeAt = meta.node_fields.indexOf('type');
  const nameAt = meta.node_fields.indexOf('name');
  const sizeAt = meta.node_fields.indexOf('self_size');
  const edgeCountAt = meta.node_fields.indexOf('edge_count');
  const edgeTypeAt = meta.edge_fields.indexOf('type');
  const edgeNameAt = meta.edge_fields.indexOf('name_or_index');
  const edgeToAt = meta.edge_fields.indexOf('to_node');
  const nodeTypes = meta.node_types[0];
  const edgeTypes = meta.edge_types[0];
  const { nodes, edges, strings } = snapshot;
  const kinds: Tally = { bytes: new Map(), count: new Map(), total: 0 };
  const suspended: Tally = { bytes: new Map(), count: new Map(), total: 0 };
  let edge = 0;
  for (let node = 0; node < nodes.length; node += nodeFields) {
    const type = nodeTypes[nodes[node + typeAt]!]!;
    const name = strings[nodes[node + nameAt]!]!;
    const size = nodes[node + sizeAt]!;
    const edgeCount = nodes[node + edgeCountAt]!;
    kinds.total += size;
    // Strings and code are grouped by type; objects and closures by their constructor or name.
    const kind = type === 'object' || type === 'closure' || type === 'native' ? `${type} ${name.slice(0, 60) || '(anonymous)'}` : type;
    add(kinds, kind, size);
    if (type === 'object' && name === 'Generator') {
      let fn = '(unknown)';
      let registers = 0;
      for (let index = 0; index < edgeCount; index++) {
        const at = edge + index * edgeFields;
        const edgeType = edgeTypes[edges[at + edgeTypeAt]!];
        if (edgeType === 'element' || edgeType === 'hidden') continue;
        const edgeName = strings[edges[at + edgeNameAt]!];
        const to = edges[at + edgeToAt]!;
        if (edgeName === 'function') fn = strings[nodes[to + nameAt]!]! || '(anonymous)';
        else if (edgeName === 'parameters_and_registers') registers = nodes[to + sizeAt]!;
      }
      add(suspended, fn, size + registers);
      suspended.total += size + registers;
    }
    edge += edgeCount * edgeFields;
  }
  return { kinds, suspended };
}

function perRun(before: Tally, after: Tally, runs: number, top: number, label: string): string[] {
  const rows = [...after.bytes.keys()].map((key) => ({
    key,
    bytes: ((after.bytes.get(key) ?? 0) - (before.bytes.get(key) ?? 0)) / runs,
    count: ((after.count.get(key) ?? 0) - (before.count.get(key) ?? 0)) / runs,
  }));
  rows.sort((a, b) => b.bytes - a.bytes);
  return [
    `-- ${label}`,
    ...rows
      .filter((row) => row.count >= 0.5 || row.bytes >= 100)
      .slice(0, top)
      .map((row) => `${row.bytes.toFixed(0).padStart(7)} B ${row.count.toFixed(1).padStart(6)}  ${row.key}`),
  ];
}

/** What each held run keeps alive: the difference between the snapshots, divided by `runs`. */
export function summarizeHeapGrowth(before: HeapSnapshot, after: HeapSnapshot, runs: number, top = 30): string {
  const a = tallyHeap(before);
  const b = tallyHeap(after);
  return [
    `live heap per run: ${((b.kinds.total - a.kinds.total) / runs / 1000).toFixed(1)} KB (${runs} runs held; bytes and objects per run)`,
    ...perRun(a.kinds, b.kinds, runs, top, 'by kind'),
    ...perRun(a.suspended, b.suspended, runs, top, 'suspended async functions (frame and registers) by function'),
  ].join('\n');
}

export function readHeapSnapshot(path: string): HeapSnapshot {
  return JSON.parse(readFileSync(path, 'utf8')) as HeapSnapshot;
}
