import { beforeAll, describe, expect, it } from 'vitest';
import { WorkloadProfile } from '../../../src/profiling/workload.js';

beforeAll(async () => {
  await WorkloadProfile.load();
});

describe('the workload profile', () => {
  it('groups statements by template: the same for other constants, another for IN than for =; a repeated text is parsed once', () => {
    const p = new WorkloadProfile();
    const eq1 = p.templateFor('select * from items where id = 1');
    const eq2 = p.templateFor('select * from items where id = 42');
    const param = p.templateFor('select * from items where id = $1');
    const inList = p.templateFor('select * from items where id in (1, 2, 3)');
    const any = p.templateFor('select * from items where id = any($1)');
    expect(eq1!.id).toBe(eq2!.id);
    expect(eq1!.id).toBe(param!.id);
    expect(inList!.id).not.toBe(eq1!.id);
    expect(any!.id).not.toBe(eq1!.id);
    expect(eq1!.query).toBe('select * from items where id = $1');
    // Cached by text: the same object, no parse.
    expect(p.templateFor('select * from items where id = 1')).toBe(eq1);
    expect(p.templateFor('not sql at all')).toBeNull();
  });

  it('stores no constant of a statement: its text has $n, its features no values', () => {
    const p = new WorkloadProfile();
    const t = p.templateFor("insert into items (id, owner) values (7, 'secret-owner')")!;
    const w = p.templateFor("select * from items where owner = 'secret-owner' and id between 5 and 9")!;
    for (const x of [t, w]) {
      expect(JSON.stringify({ q: x.query, f: x.features })).not.toMatch(/secret|\b7\b|\b9\b/);
    }
    expect(t.features.inserted.map((c) => c.column)).toEqual(['id', 'owner']);
    expect(w.features.predicates.map((c) => [c.column, c.op])).toEqual([['owner', 'equality'], ['id', 'range']]);
    expect(t.vector).toHaveLength(256);
  });

  it('counts calls, rows, latency and single-shard vs scatter per template', () => {
    const p = new WorkloadProfile();
    p.statement('select * from items where id = 1', 1, 2, false);
    p.statement('select * from items where id = 2', 0, 4, false);
    p.statement('select count(*) from items', 1, 10, true);
    p.statement('this does not parse', 0, 1, false);
    const [point, scan] = [...p.current.templates.values()];
    expect(point).toMatchObject({ calls: 2, rows: 1, totalMs: 6, maxMs: 4, singleShard: 2, scatter: 0 });
    expect(scan).toMatchObject({ calls: 1, rows: 1, totalMs: 10, maxMs: 10, singleShard: 0, scatter: 1 });
    expect(p.current.unparsed).toBe(1);
  });

  it('memory stays bounded: 1,000,000 distinct keys keep the sketch at its size with the planted key on top; distinct texts and templates are capped', () => {
    const p = new WorkloadProfile({ maxStatements: 100, maxTemplates: 50 });
    p.keyAccess('items', 'warm-up', 0);
    const bytes = p.sketchBytes();
    expect(bytes).toBeLessThanOrEqual(1024 * 1024);
    for (let i = 0; i < 1_000_000; i++) {
      p.keyAccess('items', i, i % 8);
      if (i % 50 === 0) p.keyAccess('items', 'tenant-hot', 3);
    }
    expect(p.sketchBytes()).toBe(bytes);
    const counts = p.current.table('items');
    expect(counts.keys.listed).toBeLessThanOrEqual(256);
    expect(counts.shards.size).toBe(8);
    const top = counts.keys.top(1)[0]!;
    expect(top.key).toBe('tenant-hot');
    // The true count is 20,000; the sketch overestimates by at most ε·N (e/4096 · 1.02M ≈ 677).
    expect(top.count).toBeGreaterThanOrEqual(20_000);
    expect(top.count).toBeLessThanOrEqual(20_000 + counts.keys.errorBound);
    // (libpg_query's fingerprint ignores digits at the end of table names, for partitions: letters tell templates apart.)
    const name = (i: number): string => (i < 26 ? '' : name(Math.floor(i / 26) - 1)) + String.fromCharCode(97 + (i % 26));
    for (let i = 0; i < 2000; i++) p.statement(`select * from t_${name(i)} where id = $1`, 1, 1, false);
    expect(p.cachedStatements).toBe(100);
    expect(p.current.templates.size).toBe(50);
    expect(p.current.dropped).toBe(1950);
  });

  it('refuses bad options', () => {
    expect(() => new WorkloadProfile({ flushIntervalMs: 0 })).toThrow('profile.flushIntervalMs: expected a whole number ≥ 1, got 0');
    expect(() => new WorkloadProfile({ sketch: { width: -1 } })).toThrow('sketch width');
  });
});
