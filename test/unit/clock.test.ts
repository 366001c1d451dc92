import { afterEach, describe, expect, it } from 'vitest';
import { replanScheduleDefinition, scheduleDefinitions } from '../../client/schedules.js';
import { clockCompression, dayMs, hourMs, setClockCompression, stepMs } from '../../src/clock.js';
import { loadConfig, parseConfig } from '../../src/config.js';
import { backtestPlan } from '../../src/forecasting/backtest.js';
import { cleanSeries } from '../../src/forecasting/series.js';
import { onLoadClock } from '../../src/planning/settings.js';
import { resample } from '../../src/profiling/rates.js';

/** clock.compression: the load clock's step, hour and day N times shorter, everywhere they are used. */

afterEach(() => setClockCompression(1));

const client = { client: undefined as never, taskQueue: 'q' };

describe('clock.compression', () => {
  it('defaults to 1 (production: 5-minute steps, hours and days); loadConfig sets the process clock', () => {
    expect(parseConfig({}).clock.compression).toBe(1);
    loadConfig({ env: { SHARDCAST_CLOCK_COMPRESSION: '60' }, cwd: '/' });
    expect([clockCompression(), stepMs(), hourMs(), dayMs()]).toEqual([60, 5_000, 60_000, 1_440_000]);
    loadConfig({ env: {}, cwd: '/' });
    expect([clockCompression(), stepMs(), hourMs(), dayMs()]).toEqual([1, 300_000, 3_600_000, 86_400_000]);
  });

  it('refuses a value that is not a divisor of 300, naming the key, and leaves the clock as it was', () => {
    expect(() => parseConfig({ clock: { compression: 7 } })).toThrow('clock.compression');
    expect(() => loadConfig({ env: { SHARDCAST_CLOCK_COMPRESSION: '7' }, cwd: '/' })).toThrow(/clock\.compression.*divisor of 300/);
    expect(clockCompression()).toBe(1);
    expect(() => setClockCompression(0)).toThrow('clock.compression: 0 is not one of');
  });

  it('buckets load in steps of 300/N s, and a series of them has a 288-step day', () => {
    setClockCompression(60);
    const day = Array.from({ length: 3 * 288 }, (_, i) => ({ time: i * 5_000, value: 10 + Math.sin((2 * Math.PI * i) / 288) }));
    const series = cleanSeries(day);
    expect(series.stepSeconds).toBe(5);
    expect(series.dailyPeriod).toBe(288);
    // Two 5-second buckets from one interval at 4 rows/s.
    expect(resample([{ start: 0, end: 10_000, rate: 4 }], 0, 10_000)).toEqual([4, 4]);
    // The back-test scores an hour ahead (12 steps) from hourly origins, over the last days.
    const plan = backtestPlan(series, { evaluationDays: 2 });
    expect([plan.horizon, plan.stride, plan.day]).toEqual([12, 12, 288]);
    expect(plan.origins.length).toBeGreaterThan(10);
    setClockCompression(1);
    expect(() => cleanSeries(day)).toThrow('supported steps are 60 s to 3600 s');
  });

  it('the schedules: the forecast every 3600/N s, the retraining every 86400/N s at retrainAt’s offset, the replanning every replanMinutes·60/N s', () => {
    const config = parseConfig({ clock: { compression: 60 }, forecast: { retrainAt: '03:00' }, planning: { mode: 'on', replanMinutes: 5 } });
    const [retrain, forecast] = scheduleDefinitions(client, config);
    expect(retrain!.spec).toEqual({ intervals: [{ every: '1440 seconds', offset: '180 seconds' }] });
    expect(forecast!.spec).toEqual({ intervals: [{ every: '60 seconds' }] });
    const replan = replanScheduleDefinition(client, config)!;
    expect(replan.spec).toEqual({ intervals: [{ every: '5 seconds' }] });
    expect((replan.action as { args: Array<{ startWithinSeconds: number }> }).args[0]!.startWithinSeconds).toBe(5);
    // Production keeps its calendar and hour.
    const [daily, hourly] = scheduleDefinitions(client, parseConfig({}));
    expect(daily!.spec).toEqual({ calendars: [{ hour: 3, minute: 0, comment: 'daily at 03:00 UTC' }] });
    expect(hourly!.spec).toEqual({ intervals: [{ every: '1 hour' }] });
  });

  it('the planner’s step and its windows (hysteresis, activation lead) in real seconds; unchanged at 1', () => {
    expect(onLoadClock({ hysteresisSeconds: 600 })).toEqual({ hysteresisSeconds: 600 });
    setClockCompression(60);
    expect(onLoadClock({ hysteresisSeconds: 600 })).toEqual({ hysteresisSeconds: 10, stepSeconds: 5, activationLeadSeconds: 120 });
  });
});
