import { cpSync, createReadStream, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addBatchDigest } from '../../src/backup/checksum.js';
import { exportBackup, plainTable } from '../../src/backup/export.js';
import type { Manifest } from '../../src/backup/manifest.js';
import { BackupInvalidError, openBackup } from '../../src/backup/reader.js';
import { createTestCatalog, type TestCatalog } from '../helpers/fleet.js';

let catalog: TestCatalog;
let pool: pg.Pool;
let root: string;
/** The backup every case copies and breaks in its own way. */
let pristine: string;
let manifest: Manifest;
let server: Server;
let baseUrl: string;
/** Requests the HTTP server saw, with their Range header. */
const requests: string[] = [];

beforeAll(async () => {
  catalog = await createTestCatalog('bkread');
  pool = new pg.Pool({ connectionString: catalog.nodeUrl(catalog.nodes[0]!.name), max: 2 });
  await pool.query(`create table items (id bigint primary key, name text, price numeric(10,2), at timestamptz, tags jsonb)`);
  await pool.query(`insert into items select i, 'item ' || i, i * 0.01, timestamptz '2024-01-01' + i * interval '1 minute', jsonb_build_object('i', i) from generate_series(1, 150000) i`);
  root = mkdtempSync(path.join(tmpdir(), 'sc-bkread-'));
  pristine = path.join(root, 'pristine');
  manifest = await exportBackup([plainTable(pool, 'items')], pristine);
  expect(manifest.tables[0]!.files[0]!.batches).toBeGreaterThan(2);
  // A static server of `root`, with Range support (as nginx, S3 and the like have).
  server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url} ${req.headers.range ?? ''}`);
    const file = path.join(root, decodeURIComponent(new URL(req.url!, 'http://x').pathname));
    let size: number;
    try {
      size = statSync(file).size;
    } catch {
      res.writeHead(404).end();
      return;
    }
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (range) {
      const [start, end] = [Number(range[1]), Math.min(Number(range[2]), size - 1)];
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}` });
      createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.writeHead(200, { 'content-length': size });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await pool?.end();
  await catalog?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

let copies = 0;
/** A copy of the backup for one case to break. */
function copy(): string {
  const dir = path.join(root, `copy${++copies}`);
  cpSync(pristine, dir, { recursive: true });
  return dir;
}

function editManifest(dir: string, edit: (m: Manifest) => void): void {
  const file = path.join(dir, 'manifest.json');
  const m = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
  edit(m);
  writeFileSync(file, JSON.stringify(m));
}

async function invalid(location: string, validate = true): Promise<string> {
  try {
    const backup = await openBackup(location);
    if (validate) await backup.validate({ digest: true });
  } catch (err) {
    expect(err).toBeInstanceOf(BackupInvalidError);
    return (err as Error).message;
  }
  throw new Error(`${location} was accepted`);
}

describe('backup readers', () => {
  it('reads the batches of a local backup, validated, to the manifest digest', async () => {
    const backup = await openBackup(pristine);
    await backup.validate({ digest: true });
    const t = manifest.tables[0]!;
    expect(await backup.digest('items')).toEqual({ rows: 150000, sum: t.checksum.sum });
    // A range of batches of one file: what one import activity reads.
    let rows = 0;
    for await (const b of backup.batches('items', { file: 0, from: 1, to: 2 })) rows += b.numRows;
    expect(rows).toBeGreaterThan(0);
    expect(rows).toBeLessThan(150000);
  });

  it('reads batches in place: the same rows, each batch in the memory of the one before, locally and over HTTP', async () => {
    const t = manifest.tables[0]!;
    const kinds = t.columns.map((c) => c.arrow);
    for (const location of [pristine, `${baseUrl}/pristine/`]) {
      const backup = await openBackup(location);
      const acc = { rows: 0, sum: 0n };
      const memory = new Set<ArrayBufferLike>();
      let batches = 0;
      // Each batch used up before the next is asked for, as the import does.
      for await (const b of backup.batches('items', { file: 0, from: 0, to: Infinity }, { inPlace: true })) {
        addBatchDigest(acc, b, kinds);
        memory.add(b.data.children[0]!.values.buffer);
        batches++;
      }
      expect(batches).toBe(t.files[0]!.batches);
      expect(acc).toEqual({ rows: 150000, sum: BigInt(t.checksum.sum) });
      // One buffer, grown when a later batch is bigger than those before (at most once or twice).
      expect(memory.size).toBeLessThanOrEqual(2);
      expect(batches).toBeGreaterThan(2);
      // A range: what one import unit reads, the same rows as the ordinary reader's.
      const ids = async (inPlace: boolean) => {
        const out: bigint[] = [];
        for await (const b of backup.batches('items', { file: 0, from: 1, to: 3 }, { inPlace })) out.push(b.getChildAt(0)!.get(0) as bigint, b.getChildAt(0)!.get(b.numRows - 1) as bigint);
        return out;
      };
      expect(await ids(true)).toEqual(await ids(false));
      if (location !== pristine) {
        // Another unit of the same file: its footer is known by now, so one Range request a batch.
        requests.length = 0;
        await ids(true);
        expect(requests).toHaveLength(2);
      }
    }
    // A batch whose bytes are garbage: an error naming the file and the batch.
    const broken = copy();
    const data = readFileSync(path.join(broken, 'items.arrow'));
    data.fill(0xee, 8, 8 + 64); // the first batch's message header
    writeFileSync(path.join(broken, 'items.arrow'), data);
    const read = async () => {
      for await (const _ of (await openBackup(broken)).batches('items', { file: 0, from: 0, to: 1 }, { inPlace: true })) void _;
    };
    await expect(read()).rejects.toThrow(new RegExp(`${broken}/items\\.arrow: record batch 0 cannot be read`));
  });

  it('reads the same backup over HTTP, batches by Range requests', async () => {
    const backup = await openBackup(`${baseUrl}/pristine/`);
    await backup.validate({ digest: true });
    requests.length = 0;
    expect(await backup.digest('items')).toEqual({ rows: 150000, sum: manifest.tables[0]!.checksum.sum });
    expect(requests.every((r) => /^GET \/pristine\/items\.arrow bytes=\d+-\d+$/.test(r))).toBe(true);
    expect(await invalid(`${baseUrl}/nowhere`, false)).toMatch(/nowhere\/manifest\.json: missing/);
  });

  it('refuses a missing or malformed manifest, naming the file and field', async () => {
    const dir = copy();
    unlinkSync(path.join(dir, 'manifest.json'));
    expect(await invalid(dir)).toBe(`${dir}/manifest.json: missing; ${dir} is not a Shardcast backup (or its export did not finish)`);
    writeFileSync(path.join(dir, 'manifest.json'), '{"format": "shardcast-backup", ');
    expect(await invalid(dir)).toMatch(/manifest\.json: not valid JSON/);
    cpSync(path.join(pristine, 'manifest.json'), path.join(dir, 'manifest.json'));
    editManifest(dir, (m) => (m.tables[0]!.files[0]!.sha256 = 'xyz'));
    expect(await invalid(dir)).toMatch(/manifest\.json: tables\[0\]\.files\[0\]\.sha256: /);
    editManifest(dir, (m) => {
      m.tables[0]!.files[0]!.sha256 = manifest.tables[0]!.files[0]!.sha256;
      m.tables[0]!.rows = 5;
    });
    expect(await invalid(dir)).toMatch(/manifest\.json: tables\[0\] \(items\)\.rows: 5, but its files hold 150000/);
    editManifest(dir, (m) => {
      m.tables[0]!.rows = 150000;
      m.tables[0]!.primaryKey = ['nope'];
    });
    expect(await invalid(dir)).toMatch(/tables\[0\] \(items\)\.primaryKey: "nope" is not a column/);
    editManifest(dir, (m) => {
      m.tables[0]!.primaryKey = ['id'];
      m.version = 99;
    });
    expect(await invalid(dir)).toMatch(/format version 99 is newer than this Shardcast reads \(1\)/);
  });

  it('refuses a missing, truncated or corrupted Arrow file, and one that does not match the manifest', async () => {
    const missing = copy();
    unlinkSync(path.join(missing, 'items.arrow'));
    expect(await invalid(missing)).toBe(`${missing}/items.arrow: missing (table items in the manifest)`);

    const truncated = copy();
    const bytes = manifest.tables[0]!.files[0]!.bytes;
    truncateSync(path.join(truncated, 'items.arrow'), bytes - 1000);
    expect(await invalid(truncated)).toBe(`${truncated}/items.arrow: ${bytes - 1000} bytes, the manifest says ${bytes}: truncated`);
    // Truncated, and the manifest edited to match the size: the missing footer shows.
    editManifest(truncated, (m) => (m.tables[0]!.files[0]!.bytes = bytes - 1000));
    expect(await invalid(truncated)).toMatch(/items\.arrow: no ARROW1 magic at the end: truncated or corrupted/);

    const corrupted = copy();
    const data = readFileSync(path.join(corrupted, 'items.arrow'));
    data[Math.floor(data.length / 2)]! ^= 0xff;
    writeFileSync(path.join(corrupted, 'items.arrow'), data);
    expect(await invalid(corrupted)).toMatch(new RegExp(`${corrupted}/items\\.arrow: checksum mismatch: sha256 [0-9a-f]{64}, the manifest says ${manifest.tables[0]!.files[0]!.sha256}`));
    // Over HTTP too.
    expect(await invalid(`${baseUrl}/${path.basename(corrupted)}`)).toMatch(/items\.arrow: checksum mismatch/);

    const garbage = copy();
    writeFileSync(path.join(garbage, 'items.arrow'), Buffer.alloc(bytes, 7));
    expect(await invalid(garbage)).toMatch(/items\.arrow: not an Arrow IPC file \(no ARROW1 magic at the start\)/);

    // A file whose checksum the manifest agrees with, but whose schema it does not.
    const schema = copy();
    editManifest(schema, (m) => (m.tables[0]!.columns[0]!.arrow = 'int32'));
    expect(await invalid(schema)).toMatch(/items\.arrow: column 1 is id Int64 in the file, id Int32 in the manifest \(table items\)/);
    const rows = copy();
    editManifest(rows, (m) => {
      m.tables[0]!.checksum.sum = '12345';
    });
    expect(await invalid(rows)).toMatch(/table items: the rows' checksum is -?\d+, the manifest says 12345/);
  });
});
