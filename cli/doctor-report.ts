import { countByKind, type DoctorReport } from '../src/movement/doctor.js';
import { printTable } from './format.js';

/** `shardcast doctor` for people: what was fixed, what is left (and why), what is in use. */
export function printDoctorReport(report: DoctorReport, fix: boolean): void {
  if (fix) {
    printTable('fixes needed', report.actions.map((a) => ({ ...a, result: a.ok ? 'ok' : `failed: ${a.error}` })), ['kind', 'node', 'name', 'movementId', 'action', 'result']);
    console.log();
  }
  printTable(
    'leftovers',
    report.leftovers.map((l) => ({ ...l, movement: l.movementId ?? '(unknown)', workflow: l.workflow === 'not-found' ? 'closed (gone)' : l.workflow })),
    ['kind', 'node', 'name', 'movement', 'workflowId', 'workflow'],
  );
  for (const u of report.unreachable) console.log(`could not check ${u.node}: ${u.error}`);
  const counts = Object.entries(countByKind(report.leftovers))
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`);
  const inUse = report.inUse.length > 0 ? `; ${report.inUse.length} object(s) in use by running movements` : '';
  console.log(`\n${counts.length ? `left: ${counts.join(', ')}` : 'no leftovers'}${inUse}${!fix && report.leftovers.some((l) => l.workflow !== 'unknown') ? ' (run with --fix to clean those of closed movements)' : ''}`);
}
