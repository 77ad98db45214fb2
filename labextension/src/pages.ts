/**
 * Reading a job's log lines or metric records page by page without skipping
 * or repeating any, the way the Python client's follow cursor does: one
 * learner by line number (`pos`), several by time (`since`, inclusive, with
 * the records already seen at that millisecond dropped), since line numbers
 * restart per learner.
 */
import { PageQuery } from './api';

/** Records per request. */
const PAGE_SIZE = 1000;

/** What paging needs of a record (LogLine and MetricRecord both have it). */
export interface IPaged {
  subid: string;
  rindex: number;
  time: number;
}

export class Pager<R extends IPaged> {
  constructor(
    private readonly _fetch: (query: PageQuery) => Promise<R[]>,
    private readonly _byTime: boolean
  ) {}

  /** The records not yet delivered, up to the end of what is stored now. */
  async more(): Promise<R[]> {
    const found: R[] = [];
    for (;;) {
      const query: PageQuery = this._byTime
        ? { pos: 0, since: this._lastTime ?? 0, pagesize: PAGE_SIZE }
        : { pos: this._next, pagesize: PAGE_SIZE };
      const page = await this._fetch(query);
      const fresh = this.accept(page);
      found.push(...fresh);
      if (page.length < PAGE_SIZE || fresh.length === 0) {
        return found;
      }
    }
  }

  /** Advance past `records` (read elsewhere, e.g. the last page); returns those not seen before. */
  accept(records: readonly R[]): R[] {
    return records.filter(record => {
      if (!this._byTime) {
        if (record.rindex < this._next) {
          return false;
        }
        this._next = record.rindex + 1;
        return true;
      }
      const key = `${record.subid}\n${record.rindex}`;
      if (
        this._lastTime !== null &&
        (record.time < this._lastTime || (record.time === this._lastTime && this._seen.has(key)))
      ) {
        return false;
      }
      if (record.time !== this._lastTime) {
        this._lastTime = record.time;
        this._seen.clear();
      }
      this._seen.add(key);
      return true;
    });
  }

  private _next = 1;
  private _lastTime: number | null = null;
  private _seen = new Set<string>();
}

/** Every stored record, in order. */
export function readAll<R extends IPaged>(
  fetch: (query: PageQuery) => Promise<R[]>,
  byTime: boolean
): Promise<R[]> {
  return new Pager(fetch, byTime).more();
}
