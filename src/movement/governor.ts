import pg from 'pg';
import { InvalidInputError } from '../errors.js';
import { resolveDsn } from '../catalog/dsn-password.js';
import { newPgClient } from '../catalog/pg-tls.js';
import { DEFAULT_GOVERNOR, type GovernorSettings } from './governor-settings.js';

export { DEFAULT_GOVERNOR, type GovernorSettings };

/**
 * The copy governor (foreground first): a movement's copy and apply are paced so that the nodes'
 * own latency stays within a ratio of what it was before the movement, as Vitess's tablet throttler
 * does. A probe times a committed transaction (a round trip through the node's CPU, scheduler,
 * locks and WAL flush, as the foreground's own writes go: a read-only probe missed the disk, which
 * the copy's WAL and the foreground's commits share) on the source and the target every probe
 * interval; the baseline is the p90 of the probes before the copy starts, compared with the p90 of
 * the last half second's. The copy runs a duty cycle: chunks, each followed by a pause in proportion
 * to it, so that the copy takes `duty` of the time. The duty grows steadily while the probes are
 * within the limit and is cut (at most once per probe window) when they are over it: short steady
 * pauses rather than long holds. The decision logic here is pure; `Governor` runs it.
 */

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

/** The share of time the copy starts at, the least it is cut to, and how fast it grows back (per second within the limit). */
export const DUTY = { start: 0.5, min: 0.02, growthPerSecond: 0.5, cut: 0.7 } as const;

/**
 * The next duty cycle: cut by half when overloaded (unless cut less than a probe window ago: the
 * probes since have not seen the cut yet), grown steadily with the time within the limit.
 */
export function nextDuty(duty: number, overloaded: boolean, elapsedMs: number, sinceCutMs: number, windowMs: number): number {
  if (overloaded) return sinceCutMs < windowMs ? duty : Math.max(DUTY.min, duty * DUTY.cut);
  return Math.min(1, duty + (DUTY.growthPerSecond * elapsedMs) / 1000);
}

/** The pause after a chunk that took `chunkMs`, so that copying takes `duty` of the time; never over maxPauseMs. */
export function pauseAfter(chunkMs: number, duty: number, settings: Pick<GovernorSettings, 'maxPauseMs'>): number {
  if (duty >= 1) return 0;
  return Math.min(settings.maxPauseMs, (chunkMs * (1 - duty)) / duty);
}

/** Apply is held back only while the foreground suffers and the lag is still small enough to afford it. */
export function paceApply(overloaded: boolean, lagBytes: number | null, settings: Pick<GovernorSettings, 'maxLagBytes'>): boolean {
  return overloaded && lagBytes !== null && lagBytes <= settings.maxLagBytes;
}

/** The baseline is the p90 of at least this many probes of each node … */
export const BASELINE_SAMPLES = 20;
/** … unless that takes longer than this. */
export const BASELINE_MAX_MS = 3000;

/** Probe samples older than this are not "recent". */
export const RECENT_MS = 500;

/** One node's probe: a dedicated connection (so it never queues behind the copy) timing a committed one-row update. */
class Probe {
  private readonly samples: Array<{ at: number; ms: number }> = [];
  private inFlightSince: number | null = null;
  private client: pg.Client | undefined;
  baselineMs = 0;

  constructor(private readonly dsn: string) {}

  async open(): Promise<void> {
    this.client = newPgClient(resolveDsn(this.dsn), { application_name: 'shardcast-governor' });
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

/**
 * A transaction that commits an xid (its commit record waits for the WAL flush, as the foreground's
 * commits do) and reads the probe's one row (so a lock on it stalls the probe: a node that does not
 * answer). No row is updated: an update of one row every probe interval, under the copy's long-held
 * snapshot, piled up dead versions that could not be pruned, and the probe measured its own bloat —
 * slower the longer the copy ran, so the governor held the copy back further.
 */
const PROBE = 'select pg_current_xact_id() from sc_movement.governor_probe where id = 1';

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
  private duty: number = DUTY.start;
  private resumedAt: number | undefined;
  private decidedAt: number | undefined;
  private cutAt = Number.NEGATIVE_INFINITY;
  readonly stats: GovernorStats = { throttledMs: 0 };

  constructor(
    readonly settings: GovernorSettings,
    dsns: string[],
    private readonly onThrottled: (ms: number) => void = () => undefined,
  ) {
    this.probes = settings.enabled ? [...new Set(dsns)].map((d) => new Probe(d)) : [];
  }

  /**
   * Connects the probes and measures the baseline (one second of probes) before any copying; an apply
   * later in the same movement passes the copy's baselines instead (its nodes are no longer idle).
   */
  async start(baselinesMs?: readonly number[]): Promise<void> {
    if (!this.settings.enabled) return;
    for (const p of this.probes) await p.open();
    if (baselinesMs && baselinesMs.length === this.probes.length) {
      this.probes.forEach((p, i) => (p.baselineMs = Math.max(baselinesMs[i]!, this.settings.minBaselineMs)));
    } else {
      // Half a second of probes and at least BASELINE_SAMPLES of each (within BASELINE_MAX_MS): with only a few
      // samples, the p90 is their maximum, and one slow commit on a busy machine would set a baseline that
      // hides a node in trouble for seconds.
      const t0 = performance.now();
      while (performance.now() - t0 < BASELINE_MAX_MS && (performance.now() - t0 < 500 || this.probes.some((p) => p.all().length < BASELINE_SAMPLES))) {
        await Promise.all(this.probes.map((p) => p.sample()));
        await sleep(this.settings.probeIntervalMs);
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
   * Before the next chunk (or apply round): the duty cycle's pause after the work since the last
   * call, at most maxPauseMs (so the copy always moves on); then a hold while `held()` (a paused
   * movement, not counted as throttling). With `lag` (an apply), the pause only while the lag is
   * small enough to afford it. `beat` is called about once a second while waiting.
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
      const workedMs = this.resumedAt === undefined ? 0 : performance.now() - this.resumedAt;
      const affordable = options.lag && this.verdict().overloaded ? paceApply(true, (await options.lag()) ?? null, this.settings) : true;
      const pause = this.decide(workedMs, affordable);
      if (pause >= 1 && !options.cancelled?.()) await this.throttle(pause);
      // A node whose probe does not answer at all gets no more work until it does (at most maxPauseMs, so the copy still moves).
      const until = Date.now() + this.settings.maxPauseMs - pause;
      while (affordable && Date.now() < until && !options.cancelled?.() && this.stuck()) {
        await this.throttle(Math.min(this.settings.probeIntervalMs, Math.max(1, until - Date.now())));
      }
      beat();
    }
    while (options.held && !options.cancelled?.() && (await options.held())) {
      await sleep(200);
      beat();
    }
    this.resumedAt = performance.now();
  }

  /**
   * Within a chunk, after a small piece of it: the duty cycle's pause after the work since the last
   * pause (so the copy's share of the time holds at every moment, not only from chunk to chunk).
   */
  async piece(): Promise<void> {
    if (!this.settings.enabled) return;
    const now = performance.now();
    const workedMs = this.resumedAt === undefined ? 0 : now - this.resumedAt;
    const pause = this.decide(workedMs);
    if (pause >= 0.5) await this.throttle(pause);
    this.resumedAt = performance.now();
  }

  /**
   * After `workedMs` of work: the duty cycle updated from the probes' verdict, and the pause that
   * keeps the work to its share (0 when the pause is not `affordable`: an apply whose lag is too large).
   */
  decide(workedMs: number, affordable = true): number {
    const now = performance.now();
    const overloaded = affordable && this.verdict().overloaded;
    const elapsed = this.decidedAt === undefined ? 0 : now - this.decidedAt;
    const before = this.duty;
    this.duty = nextDuty(this.duty, overloaded, elapsed, now - this.cutAt, RECENT_MS);
    if (this.duty < before) this.cutAt = now;
    this.decidedAt = now;
    return affordable ? pauseAfter(workedMs, this.duty, this.settings) : 0;
  }

  /** Counts time held back outside `wait` (a move's apply, held by disabling its subscription). */
  count(ms: number): void {
    this.stats.throttledMs += ms;
    this.onThrottled(ms);
  }

  /** Is a probe waiting past the limit and four probe intervals (one slow commit is not yet a node that does not answer)? */
  private stuck(): boolean {
    return this.probes.some((p) => p.waiting() > Math.max(p.baselineMs * this.settings.latencyRatio, 4 * this.settings.probeIntervalMs));
  }

  /** The share of time the copy currently takes (1: full speed). */
  dutyCycle(): number {
    return this.duty;
  }

  private async throttle(ms: number): Promise<void> {
    const t0 = performance.now();
    await sleep(ms);
    const slept = performance.now() - t0; // timers are late by up to a millisecond: what was held is what counts
    this.stats.throttledMs += slept;
    this.onThrottled(slept);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await Promise.all(this.probes.map((p) => p.close()));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
