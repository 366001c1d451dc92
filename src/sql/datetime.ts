/**
 * PostgreSQL's dates and timestamps in their canonical text (ISO output, UTC: backup/values.ts's
 * CANONICAL_SETTINGS) and as numbers: days or microseconds since 1970-01-01, as Arrow holds them.
 * No dependency: the router's shard keys (catalog/keys.ts) use it as well as the backups.
 */

/** A value the column's type cannot hold (text that is not a valid output of the type). */
export class ValueError extends Error {}

export const MICROS_PER_DAY = 86_400_000_000n;
const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);
/** PostgreSQL's infinite dates and timestamps, as Arrow holds them (the extreme values, as PostgreSQL itself does). */
const DATE_INFINITY = 2 ** 31 - 1;
const DATE_MINUS_INFINITY = -(2 ** 31);

/** Days since 1970-01-01 of a proleptic Gregorian date (astronomical year: 1 BC is 0). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(days: number): [number, number, number] {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (month <= 2 ? 1 : 0), month, day];
}

const DATE = /^(\d{4,})-(\d\d)-(\d\d)/;

function parseDatePart(text: string): { days: number; rest: string } {
  const m = DATE.exec(text);
  if (!m) throw new ValueError(`not an ISO date: ${JSON.stringify(text)}`);
  const bc = text.endsWith(' BC');
  const year = bc ? 1 - Number(m[1]) : Number(m[1]);
  return { days: daysFromCivil(year, Number(m[2]), Number(m[3])), rest: text.slice(m[0].length, bc ? -3 : undefined) };
}

function formatDatePart(days: number): { date: string; bc: boolean } {
  const [y, m, d] = civilFromDays(days);
  const year = y <= 0 ? 1 - y : y;
  return { date: `${String(year).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`, bc: y <= 0 };
}

export function parseDate(text: string): number {
  if (text === 'infinity') return DATE_INFINITY;
  if (text === '-infinity') return DATE_MINUS_INFINITY;
  const { days, rest } = parseDatePart(text);
  if (rest !== '') throw new ValueError(`not a date: ${JSON.stringify(text)}`);
  return days;
}

export function formatDate(days: number): string {
  if (days === DATE_INFINITY) return 'infinity';
  if (days === DATE_MINUS_INFINITY) return '-infinity';
  const { date, bc } = formatDatePart(days);
  return bc ? `${date} BC` : date;
}

const TIME = /^ (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?$/;

/** Microseconds since 1970-01-01 00:00 (UTC for timestamptz: its canonical output is in UTC; another offset, as pg_dump's may be, is converted). */
export function parseTimestamp(text: string, withZone: boolean): bigint {
  if (text === 'infinity') return INT64_MAX;
  if (text === '-infinity') return INT64_MIN;
  const { days, rest } = parseDatePart(text);
  const t = TIME.exec(rest);
  if (!t || (t[5] !== undefined) !== withZone) throw new ValueError(`not a ${withZone ? 'timestamptz' : 'timestamp'}: ${JSON.stringify(text)}`);
  const offset = t[5] ? (t[5] === '-' ? -1 : 1) * ((Number(t[6]) * 60 + Number(t[7] ?? 0)) * 60 + Number(t[8] ?? 0)) : 0;
  const micros = ((Number(t[1]) * 60 + Number(t[2])) * 60 + Number(t[3]) - offset) * 1_000_000 + Number((t[4] ?? '').padEnd(6, '0'));
  const value = BigInt(days) * MICROS_PER_DAY + BigInt(micros);
  if (value >= INT64_MAX || value <= INT64_MIN) throw new ValueError(`timestamp ${text} is beyond what 64-bit microseconds since 1970 hold`);
  return value;
}

export function formatTimestamp(value: bigint, withZone: boolean): string {
  if (value === INT64_MAX) return 'infinity';
  if (value === INT64_MIN) return '-infinity';
  let days = value / MICROS_PER_DAY;
  let micros = value % MICROS_PER_DAY;
  if (micros < 0n) {
    micros += MICROS_PER_DAY;
    days -= 1n;
  }
  const { date, bc } = formatDatePart(Number(days));
  const us = Number(micros);
  const secs = Math.floor(us / 1_000_000);
  const frac = us % 1_000_000;
  const hh = String(Math.floor(secs / 3600)).padStart(2, '0');
  const mm = String(Math.floor(secs / 60) % 60).padStart(2, '0');
  const ss = String(secs % 60).padStart(2, '0');
  const fraction = frac ? `.${String(frac).padStart(6, '0').replace(/0+$/, '')}` : '';
  return `${date} ${hh}:${mm}:${ss}${fraction}${withZone ? '+00' : ''}${bc ? ' BC' : ''}`;
}

