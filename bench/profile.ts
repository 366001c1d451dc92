import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { adviseShardKey, profileQueryLog } from '../src/profiling/advisor.js';
import { rowsPerCall } from '../src/profiling/projection.js';
import { KeyCounter } from '../src/profiling/sketch.js';
import { cardinalityWorkload, createCardinalityTable, percentile, runCardinalityExperiment, type CardinalityResult } from '../test/helpers/cardinality-workload.js';
import { WORKLOADS } from '../test/helpers/workloads.js';
import { round, startBenchFleet } from './fleet.js';

/**
 * Workload profiling, offline parts, in one run:
 * (a) the cardinality model on the held-out statements of a generated workload over a generated
 *     table with skewed and correlated columns (one embedded PostgreSQL node), beside PostgreSQL's
 *     own EXPLAIN estimate of the same statements, as q-error;
 * (b) the shard-key advisor on three generated workloads with known answers;
 * (c) the key sketch's memory after 1,000,000 distinct keys, measured at 10k, 100k and 1M.
 * The router's interception overhead is another bench's (null here).
 */
export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      rows: { type: 'string', default: '100000' },
      'per-template': { type: 'string', default: '90' },
      keys: { type: 'string', default: '1000000' },
    },
  });
  const rows = Number(values.rows);
  const perTemplate = Number(values['per-template']);
  const keys = Number(values.keys);
  const loadBefore = os.loadavg().map((l) => round(l, 2));

  // (a) Cardinality.
  const fleet = await startBenchFleet(1);
  let card: CardinalityResult;
  try {
    const db = new pg.Client({ connectionString: fleet.nodes[0]!.url('shardcast') });
    await db.connect();
    try {
      await createCardinalityTable(db, 'bench_card', rows);
      card = await runCardinalityExperiment(db, 'bench_card', cardinalityWorkload('bench_card', perTemplate));
    } finally {
      await db.end();
    }
  } finally {
    await fleet.stop();
  }
  const q = <T>(pick: (r: T) => number, p: number, of: readonly T[]) => round(percentile(of.map(pick), p), 2);
  console.log(`cardinality: ${rows} rows, ${card.trained} statements trained on, ${card.heldOut} held out (every third of each template)`);
  console.log('q-error on the held-out statements; "unseen": by a model trained without any statement of that template');
  console.log(`${'template'.padEnd(32)} ${'model p50'.padStart(9)} ${'p90'.padStart(6)}  ${'postgres p50'.padStart(12)} ${'p90'.padStart(6)}  ${'unseen p50'.padStart(10)} ${'p90'.padStart(6)}`);
  const templates = [...new Set(card.rows.map((r) => r.template))];
  const correlated = (t: string) => t.includes('correlated');
  const groups: Array<[string, (t: string) => boolean]> = [...templates.map((t): [string, (x: string) => boolean] => [t, (x) => x === t]), ['all', () => true], ['all but the correlated pair', (t) => !correlated(t)]];
  for (const [label, keep] of groups) {
    const of = card.rows.filter((r) => keep(r.template));
    const unseen = card.unseenTemplate.filter((r) => keep(r.template));
    const cells = [q((r) => r.modelQ, 50, of), q((r) => r.modelQ, 90, of), q((r) => r.postgresQ, 50, of), q((r) => r.postgresQ, 90, of), q((r) => r.modelQ, 50, unseen), q((r) => r.modelQ, 90, unseen)];
    console.log(
      `${label.padEnd(32)} ${String(cells[0]).padStart(9)} ${String(cells[1]).padStart(6)}  ${String(cells[2]).padStart(12)} ${String(cells[3]).padStart(6)}  ${String(cells[4]).padStart(10)} ${String(cells[5]).padStart(6)}`,
    );
  }
  const plain = card.rows.filter((r) => !correlated(r.template));

  // (b) Advisor.
  console.log('\nadvisor:');
  let correct = 0;
  for (const make of WORKLOADS) {
    const w = make();
    const profile = await profileQueryLog(w.queries, w.table, w.columns.map((c) => c.name));
    // As `shardcast advise` ranks: calls, and work from the cardinality model's rows per call.
    const advice = adviseShardKey(profile, w.columns, w.statistics, { shardCount: 8, otherKeys: { customers: 'id' }, rowsPerCall: rowsPerCall(profile, w.statistics, null) });
    const best = advice.candidates[0]!;
    const ok = best.method === w.expected.method && best.key.join() === w.expected.key.join();
    if (ok) correct++;
    console.log(
      `${w.name.padEnd(18)} expected ${w.expected.method} (${w.expected.key.join(', ')}), advised ${best.method} (${best.key.join(', ')}) score ${best.score} ${ok ? 'ok' : 'WRONG'}`,
    );
  }

  // (c) Sketch: the counters' array and the heavy-hitter list's entries (keys of one length), at checkpoints.
  const counter = new KeyCounter();
  const measured = (): number => {
    const heap = counter['heap'];
    return counter['counters'].byteLength + heap.reduce((a, e) => a + 2 * e.key.length + 3 * 8, 0);
  };
  const checkpoints = new Map<number, { measured: number; arrays: number; listed: number }>();
  const marks = new Set([10_000, 100_000, keys]);
  const width = String(keys).length;
  for (let i = 1; i <= keys; i++) {
    counter.add(`key-${String(i).padStart(width, '0')}`);
    if (marks.has(i)) checkpoints.set(i, { measured: measured(), arrays: counter['counters'].byteLength, listed: counter.listed });
  }
  const sizes = [...checkpoints.values()];
  const constant = sizes.every((s) => s.measured === sizes[0]!.measured && s.arrays === sizes[0]!.arrays);
  console.log(`\nsketch (${counter.width}×${counter.depth} counters, ${counter.capacity} heavy hitters; bound ${counter.bytes()} bytes):`);
  for (const [n, s] of checkpoints) console.log(`${String(n).padStart(9)} keys: ${s.measured} bytes (counters ${s.arrays}, ${s.listed} keys listed)`);
  console.log(constant ? 'constant from 10k to 1M keys' : 'NOT constant');

  const summary = {
    bench: 'profile',
    interception_overhead_p50: null,
    advisor_correct: correct,
    advisor_cases: WORKLOADS.length,
    qerror_median: q((r) => r.modelQ, 50, card.rows),
    qerror_p90: q((r) => r.modelQ, 90, card.rows),
    postgres_qerror_median: q((r) => r.postgresQ, 50, card.rows),
    postgres_qerror_p90: q((r) => r.postgresQ, 90, card.rows),
    // Without the correlated template (where PostgreSQL's p90 comes from), and on templates never trained on.
    qerror_p90_uncorrelated: q((r) => r.modelQ, 90, plain),
    postgres_qerror_p90_uncorrelated: q((r) => r.postgresQ, 90, plain),
    unseen_template_qerror_median: q((r) => r.modelQ, 50, card.unseenTemplate),
    unseen_template_qerror_p90: q((r) => r.modelQ, 90, card.unseenTemplate),
    sketch_bytes_1m_keys: constant ? checkpoints.get(keys)!.measured : null,
    sketch_bound_bytes: counter.bytes(),
    cardinality_held_out: card.heldOut,
    load_before: loadBefore,
    load_after: os.loadavg().map((l) => round(l, 2)),
  };
  console.log(JSON.stringify(summary));
}
