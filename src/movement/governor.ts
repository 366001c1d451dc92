import pg from 'pg';
import { InvalidInputError } from '../errors.js';

/**
 * The copy governor (foreground first): a movement's copy and apply are paced so that the nodes'
 * own latency stays within a ratio of what it was before the movement, as Vitess's tablet throttler
 * does. A probe times a primary-key lookup of a one-row table (a round trip through the node's
 * CPU, scheduler and locks; a write probe would mostly time the copy's own WAL on the target) on
 * the source and the target every probe interval; the baseline is the p90 of the probes before the
 * copy starts, compared with the p90 of the last second's. Between two chunks the copy sleeps for an
 * adaptive pause (doubled when the recent probes are over the limit, shrunk when they are under),
 * and holds entirely while they stay over it. The decision logic here is pure; `Governor` runs it.
 */

export interface GovernorSettings {
  /** Off: copy and apply at full speed (the probe does not run). */
  enabled: boolean;
  /** Hold the copy while the probe's recent p90 exceeds this many times its baseline. */
  latencyRatio: number;
  /** Milliseconds between two probes of a node. */
  probeIntervalMs: number;
  /** The apply of a split or merge is paced only while its lag is at most this (beyond, it runs at full speed). */
  maxLagBytes: number;
  /** Floor of the baseline in ms: below it, a probe's jitter would count as harm. */
  minBaselineMs: number;
  /** Longest pause between two chunks. */
  maxPauseMs: number;
  /** Rows per copy chunk (each chunk is one COPY out of the source and into the target). */
  chunkRows: number;
}

export const DEFAULT_GOVERNOR: GovernorSettings = {
  enabled: true,
  latencyRatio: 1.3,
  probeIntervalMs: 100,
  maxLagBytes: 64 * 1024 * 1024,
  minBaselineMs: 0.5,
  maxPauseMs: 1000,
  chunkRows: 5000,
};

/** Checks per-movement settings over the global ones; a bad value is refused with its name. */
export function resolveGovernor(overrides: Partial<GovernorSettings> | undefined, base: GovernorSettings = DEFAULT_GOVERNOR): GovernorSettings {
  const s = { ...base, ...Object.fromEntries(Object.entries(overrides ?? {}).filter(([, v]) => v !== undefined)) } as GovernorSettings;
  const positive = (name: keyof GovernorSettings, min: number, max: number): void => {
    const v = s[name] as number;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      throw new InvalidInputError(`governor ${name} must be a number from ${min} to ${max}, not ${JSON.stringify(v)}`);
    }
  };
  if (typeof s.enabled !== 'boolean') throw new InvalidInputError(`governor enabled must be true or false, not ${JSON.stringify(s.enabled)}`);
  positive('latencyRatio', 1, 100);
  positive('probeIntervalMs', 10, 10_000);
  positive('maxLagBytes', 0, Number.MAX_SAFE_INTEGER);
  positive('minBaselineMs', 0, 10_000);
  positive('maxPauseMs', 0, 600_000);
  positive('chunkRows', 1, 10_000_000);
  return s;
}

/** The p-th percentile (0–100) of the values, nearest rank; NaN when there are none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The baseline of a node's probe: the p90 of its idle samples (compared with recent p90s), never below the floor. */
export function baselineOf(samples: readonly number[], settings: Pick<GovernorSettings, 'minBaselineMs'>): number {
  const p90 = percentile(samples, 90);
  return Number.isNaN(p90) ? settings.minBaselineMs : Math.max(p90, settings.minBaselineMs);
}

export interface Verdict {
  overloaded: boolean;
  /** The recent p90 of the probe, in ms (NaN when no sample yet). */
  p90: number;
  /** ratio × baseline. */
  limitMs: number;
}

/**
 * Is a node's foreground suffering? Its recent probes' p90 against ratio × baseline; or a probe
 * still waiting past both the limit and one probe interval (a stuck node is a slow one, at once).
 */
export function judge(
  recent: readonly number[],
  baselineMs: number,
  settings: Pick<GovernorSettings, 'latencyRatio' | 'probeIntervalMs'>,
  waitingMs = 0,
): Verdict {
  const p90 = percentile(recent, 90);
  const limitMs = baselineMs * settings.latencyRatio;
  const stuck = waitingMs > Math.max(limitMs, settings.probeIntervalMs);
  return { overloaded: stuck || (!Number.isNaN(p90) && p90 > limitMs), p90, limitMs };
}

/**
 * The next pause between two chunks: doubled (from one probe interval) while overloaded, shrunk by
 * a quarter while not, and zero once under a millisecond: the copy settles at the pace the nodes
 * can take without the foreground noticing.
 */
export function nextPause(pauseMs: number, overloaded: boolean, settings: Pick<GovernorSettings, 'probeIntervalMs' | 'maxPauseMs'>): number {
  if (overloaded) return Math.min(settings.maxPauseMs, Math.max(settings.probeIntervalMs, pauseMs * 2));
  const shrunk = pauseMs * 0.75;
  return shrunk < 1 ? 0 : shrunk;
}

/** Apply is held back only while the foreground suffers and the lag is still small enough to afford it. */
export function paceApply(overloaded: boolean, lagBytes: number | null, settings: Pick<GovernorSettings, 'maxLagBytes'>): boolean {
  return overloaded && lagBytes !== null && lagBytes <= settings.maxLagBytes;
}

/** Probe samples older than this are not "recent". */
const RECENT_MS = 1000;

/** One node's probe: a dedicated connection (so it never queues behind the copy) timing a primary-key lookup. */
class Probe {
  private readonly samples: Array<{ at: number; ms: number }> = [];
  private inFlightSince: number | null = null;
  private client: pg.Client | undefined;
  baselineMs = 0;

  constructor(private readonly dsn: string) {}

  async open(): Promise<void> {
    this.client = new pg.Client({ connectionString: this.dsn, application_name: 'shardcast-governor' });
    this.client.on('error', () => undefined);
    await this.client.connect();
    await ensureProbeTable(this.client);
  }

  async sample(): Promise<void> {
    if (!this.client || this.inFlightSince !== null) return;
    const t0 = performance.now();
    this.inFlightSince = t0;
    try {
      await this.client.query(PROBE);
      const now = performance.now();
      this.samples.push({ at: now, ms: now - t0 });
      while (this.samples.length > 0 && now - this.samples[0]!.at > 10 * RECENT_MS) this.samples.shift();
    } finally {
      this.inFlightSince = null;
    }
  }

  /** Recent samples; a probe still waiting counts with its time so far. */
  recent(): number[] {
    const now = performance.now();
    const found = this.samples.filter((s) => now - s.at <= RECENT_MS).map((s) => s.ms);
    if (this.inFlightSince !== null) found.push(now - this.inFlightSince);
    return found;
  }

  /** How long the probe in flight has been waiting (0: none). */
  waiting(): number {
    return this.inFlightSince === null ? 0 : performance.now() - this.inFlightSince;
  }

  all(): number[] {
    return this.samples.map((s) => s.ms);
  }

  async close(): Promise<void> {
    await this.client?.end().catch(() => undefined);
  }
}

const PROBE = 'select at from sc_movement.governor_probe where id = 1';

async function ensureProbeTable(db: Pick<pg.ClientBase, 'query'>): Promise<void> {
  try {
    await db.query('create schema if not exists sc_movement');
    await db.query('create table if not exists sc_movement.governor_probe (id int primary key, at timestamptz not null)');
    await db.query('insert into sc_movement.governor_probe values (1, now()) on conflict (id) do nothing');
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== '23505' && code !== '42P06' && code !== '42P07') throw err; // created meanwhile
  }
}

export interface GovernorStats {
  /** Time the copy or apply slept because of the governor, in ms. */
  throttledMs: number;
}

/**
 * Runs the probe of every node a movement touches and answers, between two chunks, how long to
 * wait. `wait` also holds while `held()` says so (a paused movement); that time is not throttling.
 */
export class Governor {
  private readonly probes: Probe[];
  private timer: NodeJS.Timeout | undefined;
  private pauseMs = 0;
  readonly stats: GovernorStats = { throttledMs: 0 };

  constructor(
    readonly settings: GovernorSettings,
    dsns: string[],
    private readonly onThrottled: (ms: number) => void = () => undefined,
  ) {
    this.probes = settings.enabled ? [...new Set(dsns)].map((d) => new Probe(d)) : [];
  }

  /**
   * Connects the probes and measures the baseline (twenty probes) before any copying; an apply
   * later in the same movement passes the copy's baselines instead (its nodes are no longer idle).
   */
  async start(baselinesMs?: readonly number[]): Promise<void> {
    if (!this.settings.enabled) return;
    for (const p of this.probes) await p.open();
    if (baselinesMs && baselinesMs.length === this.probes.length) {
      this.probes.forEach((p, i) => (p.baselineMs = Math.max(baselinesMs[i]!, this.settings.minBaselineMs)));
    } else {
      for (let i = 0; i < 20; i++) {
        await Promise.all(this.probes.map((p) => p.sample()));
        await sleep(Math.min(this.settings.probeIntervalMs, 50));
      }
      for (const p of this.probes) p.baselineMs = baselineOf(p.all(), this.settings);
    }
    this.timer = setInterval(() => {
      for (const p of this.probes) void p.sample().catch(() => undefined);
    }, this.settings.probeIntervalMs);
    this.timer.unref();
  }

  /** The worst node's verdict. */
  verdict(): Verdict {
    let worst: Verdict = { overloaded: false, p90: Number.NaN, limitMs: Number.NaN };
    for (const p of this.probes) {
      const v = judge(p.recent(), p.baselineMs, this.settings, p.waiting());
      if (v.overloaded || Number.isNaN(worst.p90) || v.p90 / v.limitMs > worst.p90 / worst.limitMs) worst = v;
      if (v.overloaded) break;
    }
    return worst;
  }

  baselines(): number[] {
    return this.probes.map((p) => p.baselineMs);
  }

  /**
   * Before the next chunk (or apply round): the adaptive pause, then a hold while the foreground
   * still suffers, both together at most maxPauseMs (so the copy always moves on: at worst one chunk
   * per maxPauseMs); then a hold while `held()` (a paused movement, not counted as throttling).
   * With `lag` (an apply), pause and hold only while the lag is small enough to afford them. `beat`
   * is called about once a second while waiting.
   */
  async wait(options: { held?: () => Promise<boolean>; beat?: () => void; cancelled?: () => boolean; lag?: () => Promise<number | null | undefined> } = {}): Promise<void> {
    let lastBeat = Date.now();
    const beat = (): void => {
      if (Date.now() - lastBeat >= 1000) {
        lastBeat = Date.now();
        options.beat?.();
      }
    };
    if (this.settings.enabled) {
      const suffering = async (): Promise<boolean> => {
        const overloaded = this.verdict().overloaded;
        if (!overloaded || !options.lag) return overloaded;
        return paceApply(overloaded, (await options.lag()) ?? null, this.settings);
      };
      const until = Date.now() + this.settings.maxPauseMs;
      this.pauseMs = nextPause(this.pauseMs, await suffering(), this.settings);
      if (this.pauseMs > 0) await this.throttle(this.pauseMs);
      while (Date.now() < until && !options.cancelled?.() && (await suffering())) {
        await this.throttle(Math.min(this.settings.probeIntervalMs, Math.max(1, until - Date.now())));
        beat();
      }
    }
    while (options.held && !options.cancelled?.() && (await options.held())) {
      await sleep(200);
      beat();
    }
  }

  private async throttle(ms: number): Promise<void> {
    await sleep(ms);
    this.stats.throttledMs += ms;
    this.onThrottled(ms);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await Promise.all(this.probes.map((p) => p.close()));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
