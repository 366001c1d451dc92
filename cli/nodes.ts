/** `shardcast nodes …`: the PostgreSQL servers that hold shards, and their life cycle (DESIGN §5). */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { NODE_STATES, type NodeState } from '../src/catalog/node-states.js';
import { InvalidInputError } from '../src/errors.js';
import { capacityUnits } from './args.js';
import { startRebalance } from './plan.js';
import { configOf, withCatalog } from './program-config.js';

function capacityArg(value: string): number | null {
  if (value === 'auto') return null;
  try {
    return capacityUnits(value);
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}, or "auto"`);
  }
}

export function registerNodeCommands(program: Command): void {
  const nodes = program.command('nodes').description('PostgreSQL servers that hold shards');
  nodes
    .command('add')
    .description('register a node (its connection is checked first; a second name for a registered database is refused)')
    .argument('<name>', 'node name: lower-case letters, digits, - and _')
    .requiredOption('--dsn <url>', 'postgres:// URL of the node database')
    .option('--region <region>')
    .option('--zone <zone>')
    .option('--capacity <units>', 'capacity in load units, a decimal number (default: calibrated from the node\'s own history)', capacityUnits)
    .addOption(new Option('--state <state>', 'initial state').choices([...NODE_STATES]).default('active'))
    .option('--no-check', 'skip the capability checks, and register the node even if it does not answer now')
    .action(async (name: string, opts: { dsn: string; region?: string; zone?: string; capacity?: number; state: NodeState; check: boolean }) => {
      const [{ addNode, checkNodeReachable }, { appLogin, provisionAppRoleOnce }] = await Promise.all([import('../src/catalog/nodes.js'), import('../src/catalog/app-role.js')]);
      const cfg = await configOf(program);
      await withCatalog(cfg, async (pool) => {
        const spec = { name, dsn: opts.dsn, region: opts.region, zone: opts.zone, capacity: opts.capacity, state: opts.state };
        if (opts.check) for (const warning of await checkNodeReachable(spec)) console.error(`warning: node "${name}": ${warning}`);
        const node = await addNode(pool, spec, { unreachableOk: !opts.check });
        console.log(`added node ${node.name} (#${node.id}, ${node.state})`);
        if (!cfg.app.provision) return;
        const login = appLogin(cfg);
        const { failed } = await provisionAppRoleOnce(pool, login, [node], { applicationName: 'shardcast-cli' });
        for (const f of failed) console.error(`warning: node "${name}": application role ${login.user} not created now (${f.error}): it is at the next start of \`up\` or \`worker\``);
        if (failed.length === 0) console.log(`application role ${login.user} ready on ${node.name}`);
      });
    });
  nodes
    .command('list')
    .description('list nodes')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const [{ listNodes, redactDsn }, { printTable }] = await Promise.all([import('../src/catalog/nodes.js'), import('./format.js')]);
      await withCatalog(await configOf(program), async (pool) => {
        const rows = (await listNodes(pool)).map((n) => ({ ...n, capacity: n.capacity ?? 'auto', dsn: redactDsn(n.dsn) }));
        if (opts.json) console.log(JSON.stringify(rows, null, 2));
        else printTable('nodes', rows, ['name', 'state', 'region', 'zone', 'capacity', 'dsn']);
      });
    });
  nodes
    .command('drain')
    .description('move every shard off a node (the planner places them), then leave it empty and taking none')
    .argument('<name>', 'node name')
    .option('--dry-run', 'plan the drain and store the plan, change nothing')
    .option('--no-wait', 'start it and return')
    .action(async (name: string, opts: { dryRun?: boolean; wait: boolean }) => {
      const cfg = await configOf(program);
      const { getNodeByName } = await import('../src/catalog/nodes.js');
      await withCatalog(cfg, (pool) => getNodeByName(pool, name)); // an unknown node is refused before anything starts
      await startRebalance(cfg, (prefix) => `${prefix}shardcast-drain-${name}`, { dryRun: opts.dryRun ?? false, trigger: 'drain', drainNode: name }, opts.wait);
    });
  nodes
    .command('remove')
    .description('retire an empty node: it takes no shard and is no longer planned for (kept in the catalog for its movement history)')
    .argument('<name>', 'node name')
    .action(async (name: string) => {
      const { getNodeByName, runningMovementOn, setNodeState, shardsOnNode } = await import('../src/catalog/nodes.js');
      await withCatalog(await configOf(program), async (pool) => {
        const node = await getNodeByName(pool, name);
        const held = await shardsOnNode(pool, node.id);
        if (held > 0) throw new InvalidInputError(`node "${name}" still holds ${held} shard(s): drain it first (\`shardcast nodes drain ${name}\`)`);
        const busy = await runningMovementOn(pool, node.id);
        if (busy) throw new InvalidInputError(`node "${name}" takes part in running movement ${busy}: wait for it`);
        await setNodeState(pool, node.id, 'retired', ['active', 'standby', 'draining']);
        console.log(`node ${name} retired`);
      });
    });
  nodes
    .command('activate')
    .description('make a standby or draining node active: the planner may place shards on it')
    .argument('<name>', 'node name')
    .action(async (name: string) => {
      const { getNodeByName, setNodeState } = await import('../src/catalog/nodes.js');
      await withCatalog(await configOf(program), async (pool) => {
        const node = await getNodeByName(pool, name);
        await setNodeState(pool, node.id, 'active', ['standby', 'draining']);
        console.log(`node ${name} active`);
      });
    });
  nodes
    .command('set-capacity')
    .description('set a node\'s capacity in load units, or "auto" to calibrate it from its load and CPU history')
    .argument('<name>', 'node name')
    .argument('<units>', 'a positive number, or auto', capacityArg)
    .action(async (name: string, units: number | null) => {
      const { setNodeCapacity } = await import('../src/catalog/nodes.js');
      await withCatalog(await configOf(program), async (pool) => {
        await setNodeCapacity(pool, name, units);
        console.log(units === null ? `node ${name}: capacity calibrated from its history` : `node ${name}: capacity ${units}`);
      });
    });
  nodes
    .command('set-region')
    .description('set where a node is (its region, and its zone with --zone), or "none": a shard reached mostly from one region prefers a node there')
    .argument('<name>', 'node name')
    .argument('<region>', 'region name as the routers\' `region` option gives it, or none')
    .option('--zone <zone>', 'also set its zone')
    .action(async (name: string, region: string, opts: { zone?: string }) => {
      const { setNodeRegion } = await import('../src/catalog/nodes.js');
      await withCatalog(await configOf(program), async (pool) => {
        const node = await setNodeRegion(pool, name, region === 'none' ? null : region, opts.zone);
        console.log(`node ${name}: region ${node.region ?? 'none'}${node.zone ? `, zone ${node.zone}` : ''}`);
      });
    });
}
