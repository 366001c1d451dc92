/**
 * A decoder for PostgreSQL's `pgoutput` logical replication messages (protocol version 1, text
 * tuples), as returned by `pg_logical_slot_peek_binary_changes`. Splits and merges apply changes
 * themselves because built-in subscriptions can only write to tables of the same qualified name,
 * and a split or merge writes to a new shard's schema. Written by hand: no maintained npm package
 * decodes pgoutput from bytes handed over by SQL (the ones that exist drive their own replication
 * connection). Message layout: PostgreSQL docs, "Logical Replication Message Formats".
 */

export interface RelationColumn {
  name: string;
  typeOid: number;
  /** Part of the replica identity (the primary key by default). */
  key: boolean;
}

export interface Relation {
  id: number;
  schema: string;
  name: string;
  columns: RelationColumn[];
}

/** A column value: text, null, or the marker for an unchanged TOASTed value that was not sent. */
export type TupleValue = string | null | typeof UNCHANGED;
export const UNCHANGED: unique symbol = Symbol('unchanged-toast');

export type Change =
  | { kind: 'begin'; xid: number }
  | { kind: 'commit' }
  | { kind: 'relation'; relation: Relation }
  | { kind: 'insert'; relation: number; tuple: TupleValue[] }
  | { kind: 'update'; relation: number; oldKey: TupleValue[] | null; tuple: TupleValue[] }
  | { kind: 'delete'; relation: number; oldKey: TupleValue[] }
  | { kind: 'truncate'; relations: number[] }
  | { kind: 'other'; tag: string };

export class PgOutputError extends Error {}

/** Decodes one pgoutput message. */
export function decodeMessage(buf: Buffer): Change {
  const r = new Reader(buf);
  const tag = String.fromCharCode(r.byte());
  switch (tag) {
    case 'B': {
      r.skip(16); // final LSN, commit timestamp
      return { kind: 'begin', xid: r.int32() };
    }
    case 'C':
      return { kind: 'commit' };
    case 'R': {
      const id = r.int32();
      const schema = r.cstring();
      const name = r.cstring();
      r.byte(); // replica identity setting
      const n = r.int16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < n; i++) {
        const flags = r.byte();
        const colName = r.cstring();
        const typeOid = r.int32();
        r.int32(); // type modifier
        columns.push({ name: colName, typeOid, key: (flags & 1) === 1 });
      }
      return { kind: 'relation', relation: { id, schema, name, columns } };
    }
    case 'I': {
      const relation = r.int32();
      r.expect('N');
      return { kind: 'insert', relation, tuple: r.tuple() };
    }
    case 'U': {
      const relation = r.int32();
      let oldKey: TupleValue[] | null = null;
      let marker = String.fromCharCode(r.byte());
      if (marker === 'K' || marker === 'O') {
        oldKey = r.tuple();
        marker = String.fromCharCode(r.byte());
      }
      if (marker !== 'N') throw new PgOutputError(`pgoutput: update without a new tuple (found ${JSON.stringify(marker)})`);
      return { kind: 'update', relation, oldKey, tuple: r.tuple() };
    }
    case 'D': {
      const relation = r.int32();
      const marker = String.fromCharCode(r.byte());
      if (marker !== 'K' && marker !== 'O') throw new PgOutputError(`pgoutput: delete without a key (found ${JSON.stringify(marker)})`);
      return { kind: 'delete', relation, oldKey: r.tuple() };
    }
    case 'T': {
      const n = r.int32();
      r.byte(); // options (cascade, restart identity)
      const relations: number[] = [];
      for (let i = 0; i < n; i++) relations.push(r.int32());
      return { kind: 'truncate', relations };
    }
    default:
      // Origin ('O'), type ('Y') and logical messages ('M') carry nothing a shard copy needs.
      return { kind: 'other', tag };
  }
}

class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}

  byte(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new PgOutputError('pgoutput: unterminated string');
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
  expect(marker: string): void {
    const found = String.fromCharCode(this.byte());
    if (found !== marker) throw new PgOutputError(`pgoutput: expected ${JSON.stringify(marker)}, found ${JSON.stringify(found)}`);
  }
  tuple(): TupleValue[] {
    const n = this.int16();
    const values: TupleValue[] = [];
    for (let i = 0; i < n; i++) {
      const kind = String.fromCharCode(this.byte());
      if (kind === 'n') values.push(null);
      else if (kind === 'u') values.push(UNCHANGED);
      else if (kind === 't') {
        const len = this.int32();
        this.need(len);
        values.push(this.buf.toString('utf8', this.pos, this.pos + len));
        this.pos += len;
      } else throw new PgOutputError(`pgoutput: column kind ${JSON.stringify(kind)} is not supported (text tuples only)`);
    }
    return values;
  }
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new PgOutputError('pgoutput: message ends early');
  }
}
