import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { InvalidInputError, errorMessage } from '../errors.js';
import { appPasswordFile, ensureAppPassword } from '../fleet/embedded-password.js';
import { quoteIdent, quoteLiteral } from '../sql/ident.js';
import { NodePools, type SessionLimits } from './node-pools.js';
import type { NodeRecord, Queryable } from './nodes.js';

/**
 * Least privilege for applications. The router connects as an ordinary login role (the application
 * role, `app.user`) that may, on each node, read and write the rows of shard schemas and nothing
 * else, and on the catalog read the shard map (the view shardcast.node_endpoints, not the nodes'
 * DSNs). On a node the rights go to a NOLOGIN group role of that database, `shardcast_dml_<database>`,
 * which the DDL code (tables created, targets of moves, splits and merges) grants each shard schema
 * to as it creates it: a schema made later is covered without knowing the login role's name.
 */

export interface AppLogin {
  user: string;
  password: string;
}

/** The group role of the node database a client is connected to (one per database: deployments sharing a server stay apart). */
const DML_ROLE_SQL = `case when octet_length(current_database()) <= 49 then 'shardcast_dml_' || current_database()
                           else 'shardcast_dml_' || left(md5(current_database()), 16) end`;

/** The catalog tables (and view) the router reads: nothing else of the catalog is granted. */
export const CATALOG_MAP_RELATIONS = ['map_version', 'distributed_tables', 'colocation_groups', 'shards', 'placements', 'node_endpoints'] as const;

/**
 * What a router writes to the catalog when asked to (its region counts, its workload profile): the
 * application role may add to these shardcast_stats tables, and read them (an upsert reads the row it
 * adds to), and nothing else there.
 */
export const CATALOG_ROUTER_STATS_RELATIONS = ['shard_region_accesses', 'query_templates', 'template_calls', 'shard_accesses', 'key_accesses', 'hot_keys', 'profile_flushes'] as const;

/**
 * Grants the database's DML group the use of these shard schemas: usage, select/insert/update/delete
 * on their tables, usage of their sequences. Nothing when the group does not exist (no application
 * role was provisioned). Run by the DDL that creates shard tables, in its transaction.
 */
export async function grantShardSchemas(db: Queryable, schemas: readonly string[]): Promise<void> {
  if (schemas.length === 0) return;
  const { rows } = await db.query<{ role: string }>(`select rolname as role from pg_roles where rolname = (${DML_ROLE_SQL})`);
  const role = rows[0]?.role;
  if (!role) return;
  const r = quoteIdent(role);
  for (const schema of schemas) {
    const s = quoteIdent(schema);
    await db.query(`grant usage on schema ${s} to ${r}`);
    await db.query(`grant select, insert, update, delete on all tables in schema ${s} to ${r}`);
    await db.query(`grant usage, select on all sequences in schema ${s} to ${r}`);
  }
}

/** PostgreSQL's SCRAM-SHA-256 verifier of a password: the role is created with it, so the password itself never reaches the server (nor its log). */
export function scramVerifier(password: string, salt = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

const DUPLICATE_OBJECT = '42710';

/**
 * The login role, created or given this password; refused when a role of that name exists with
 * rights an application must not have (superuser, replication, createrole, createdb, bypassrls).
 */
async function ensureLoginRole(db: Queryable, login: AppLogin, where: string): Promise<void> {
  const role = quoteIdent(login.user);
  const password = quoteLiteral(scramVerifier(login.password));
  const found = await db.query<{ privileged: boolean }>(
    'select rolsuper or rolreplication or rolcreaterole or rolcreatedb or rolbypassrls as privileged from pg_roles where rolname = $1',
    [login.user],
  );
  if (found.rows[0]?.privileged) {
    throw new InvalidInputError(
      `${where}: role ${login.user} exists with administrative rights (superuser, replication, createrole, createdb or bypassrls): the application role must be an ordinary one; set app.user to another name`,
    );
  }
  if (found.rows.length === 0) {
    try {
      await db.query(`create role ${role} login password ${password} nosuperuser nocreatedb nocreaterole noreplication nobypassrls`);
      return;
    } catch (err) {
      // Created meanwhile by a provisioning of another database of the same server.
      if ((err as { code?: string }).code !== DUPLICATE_OBJECT) throw err;
    }
  }
  await db.query(`alter role ${role} login password ${password}`);
}

/**
 * On one node database: the DML group (created when missing), the login role as its member, and
 * the grants on every shard schema of `schemas` that exists there (shards created before the group).
 */
export async function ensureNodeAppRole(db: Queryable, login: AppLogin, schemas: readonly string[], where: string): Promise<void> {
  const { rows } = await db.query<{ role: string; exists: boolean }>(
    `select r.name as role, exists (select 1 from pg_roles where rolname = r.name) as exists from (select ${DML_ROLE_SQL} as name) r`,
  );
  const group = rows[0]!.role;
  if (group === login.user) throw new InvalidInputError(`${where}: app.user ${login.user} is the name of the shard schemas' group role; choose another`);
  if (!rows[0]!.exists) {
    await db.query(`create role ${quoteIdent(group)} nologin`).catch((err: unknown) => {
      if ((err as { code?: string }).code !== DUPLICATE_OBJECT) throw err;
    });
  }
  await ensureLoginRole(db, login, where);
  await db.query(`grant ${quoteIdent(group)} to ${quoteIdent(login.user)}`);
  const present = await db.query<{ schema: string }>('select nspname as schema from pg_namespace where nspname = any($1::text[]) order by nspname', [schemas]);
  await grantShardSchemas(
    db,
    present.rows.map((r) => r.schema),
  );
}

/** On the catalog: the login role, with read access to the shard map only (CATALOG_MAP_RELATIONS). */
export async function ensureCatalogAppRole(db: Queryable, login: AppLogin): Promise<void> {
  await ensureLoginRole(db, login, 'catalog');
  const role = quoteIdent(login.user);
  await db.query(`grant usage on schema shardcast to ${role}`);
  await db.query(`grant select on ${CATALOG_MAP_RELATIONS.map((t) => `shardcast.${quoteIdent(t)}`).join(', ')} to ${role}`);
  await db.query(`grant usage on schema shardcast_stats to ${role}`);
  await db.query(`grant select, insert, update on ${CATALOG_ROUTER_STATS_RELATIONS.map((t) => `shardcast_stats.${quoteIdent(t)}`).join(', ')} to ${role}`);
}

/** Every shard schema name the catalog knows (placed, or being created by a movement). */
async function shardSchemas(catalog: Queryable): Promise<string[]> {
  const { rows } = await catalog.query<{ schema: string }>('select schema_name as schema from shardcast.shards order by id');
  return rows.map((r) => r.schema);
}

export interface ProvisionResult {
  /** Nodes that could not be provisioned now (down, or refused), with why. */
  failed: Array<{ node: string; error: string }>;
}

/**
 * The application role on the catalog and on each of these nodes. Nodes that cannot be reached are
 * reported, not fatal: provisioning runs again at the next `up` (and `nodes add`).
 */
export async function provisionAppRole(catalog: Queryable, pools: NodePools, nodes: readonly NodeRecord[], login: AppLogin): Promise<ProvisionResult> {
  await ensureCatalogAppRole(catalog, login);
  const schemas = await shardSchemas(catalog);
  const failed: ProvisionResult['failed'] = [];
  // One at a time: nodes may share a server, where the login role is one.
  for (const node of nodes) {
    try {
      await ensureNodeAppRole(pools.get(node.dsn), login, schemas, `node ${node.name}`);
    } catch (err) {
      if (err instanceof InvalidInputError) throw err;
      failed.push({ node: node.name, error: errorMessage(err) });
    }
  }
  return { failed };
}

/** The application role's name and password from the configuration: app.password, else the one kept (or now generated) in the data directory. */
export function appLogin(config: Pick<Config, 'app' | 'dataDir'>): AppLogin & { passwordFile?: string } {
  if (config.app.password !== undefined) return { user: config.app.user, password: config.app.password };
  return { user: config.app.user, password: ensureAppPassword(config.dataDir).password, passwordFile: appPasswordFile(config.dataDir) };
}

/**
 * The application role on the catalog and these nodes through one-connection node pools, closed
 * afterwards: what `up`, `worker` and `nodes add` run (with appLogin's login). A role of that name
 * with administrative rights throws (InvalidInputError); nodes not provisioned now are returned.
 */
export async function provisionAppRoleOnce(
  catalog: Queryable,
  login: AppLogin,
  nodes: readonly NodeRecord[],
  connection: { applicationName: string; limits?: SessionLimits },
): Promise<ProvisionResult> {
  const pools = new NodePools({ max: 1, ...connection });
  try {
    return await provisionAppRole(catalog, pools, nodes, login);
  } finally {
    await pools.end();
  }
}

/** The catalog URL with the application role's user and password, for routers. */
export function appCatalogUrl(catalogUrl: string, login: AppLogin): string {
  const url = new URL(catalogUrl);
  url.username = encodeURIComponent(login.user);
  url.password = encodeURIComponent(login.password);
  for (const p of ['passfile', 'passwordenv']) url.searchParams.delete(p);
  return url.toString();
}
