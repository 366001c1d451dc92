/**
 * `npm run bench -- NAME [options]`: benchmarks that print their figures, with the baseline measured
 * in the same run. The last line of each is one JSON object.
 */
const benches: Record<string, () => Promise<{ run(args: string[]): Promise<void> }>> = {
  router: () => import('./router.js'),
  move: () => import('./move.js'),
  reverse: () => import('./reverse.js'),
  forecast: () => import('./forecast.js'),
  retrain: () => import('./retrain.js'),
  rebalance: () => import('./rebalance.js'),
  'rebalance-trace': () => import('./rebalance-trace.js'),
  cli: () => import('./cli.js'),
  restore: () => import('./restore.js'),
  interference: () => import('./interference.js'),
  profile: () => import('./profile.js'),
};

const [name, ...args] = process.argv.slice(2);
if (!name || !benches[name]) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [options]`);
  process.exit(2);
}
const bench = await benches[name]!();
try {
  await bench.run(args);
  process.exit(0);
} catch (err) {
  console.error(`bench ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
}
