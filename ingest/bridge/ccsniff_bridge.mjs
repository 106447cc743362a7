#!/usr/bin/env node
// Streams Claude Code transcripts through ccsniff's library API as lossless NDJSON, one record per
// content block (schema: ingest/records.py). ccsniff does discovery, fs.watch tailing, per-file offsets,
// partial-line buffering and block routing; this subclass only adds the raw line's context (uuid,
// timestamp, message id, agent id) and fixes three lossy spots of 1.1.38 (see _route, _conv, _readBytes).
// It never calls vault(), so nothing is copied to ~/.claude/history-backup.
//
// usage: node ccsniff_bridge.mjs --mode replay|live [--dir DIR] [--files F ...] [--supervised]
//
// --supervised (ingest/stream.py passes it): stdin is a pipe the parent never writes. The bridge exits when
// that pipe ends (the parent closed it to stop us, or the parent died, even by SIGKILL: the kernel closes
// it) or when its parent process changes (a second guard, for a parent whose pipe end leaked into another
// process). Without the flag stdin is left alone, so a standalone run works with any stdin.
import fs from 'fs';
import path from 'path';
import { JsonlWatcher, DEFAULT_DIR } from 'ccsniff';

// Blocking writes: a slow reader then stalls this process (back-pressure) instead of Node buffering
// the whole history in memory, and nothing written is lost when the process exits.
if (process.stdout._handle && typeof process.stdout._handle.setBlocking === 'function') process.stdout._handle.setBlocking(true);
const out = (rec) => { process.stdout.write(JSON.stringify(rec) + '\n'); };

class LosslessWatcher extends JsonlWatcher {
  constructor(dir) {
    super(dir);
    this._line_ctx = null;
    this.on('streaming_progress', (ev) => this._onBlock(ev));
    this.on('streaming_error', (ev) => this._onError(ev));
    this.on('error', (e) => process.stderr.write(`ccsniff error: ${e && e.message}\n`));
  }

  // ccsniff's _line swallows JSON errors; this copy counts them and records the file for every line.
  _line(line, fallbackSid, fp) {
    const raw = line.trim();
    if (!raw) return;
    let e;
    try { e = JSON.parse(raw); } catch (_) { out({ k: 'bad', why: 'json', file: fp, bytes: Buffer.byteLength(raw) }); return; }
    if (raw.includes('\ufffd')) out({ k: 'bad', why: 'utf8', file: fp });
    if (!e || typeof e !== 'object' || Array.isArray(e)) { out({ k: 'bad', why: 'shape', file: fp }); return; }
    const sid = (typeof e.sessionId === 'string' && e.sessionId) || fallbackSid;
    const ctx = { e, fp, n: 0 };
    this._line_ctx = ctx;
    try {
      const conv = this._conv(sid, e, fp);
      if (conv) this._route(conv, sid, e);
    } catch (err) {
      // A malformed field (e.g. non-array content) throws inside ccsniff; keep the rest of the chunk.
      out({ k: 'bad', why: 'route', file: fp });
      ctx.n = -1;
    }
    this._line_ctx = null;
    if (ctx.n === 0) out({ k: 'skip', type: String(e.type ?? e._type ?? '?'), file: fp });
  }

  // 1.1.38 returns no conversation for a leading isMeta user line, which silently drops it.
  _conv(sid, e, fp) {
    if (e && e.type === 'user' && e.isMeta && !this._convs.has(sid)) return super._conv(sid, { ...e, isMeta: false }, fp);
    return super._conv(sid, e, fp);
  }

  // 1.1.38 emits content.slice(seen) per message.id, which assumes cumulative content. Claude Code
  // writes one block per line under a shared message.id (and hive-mind exports drop the id), so every
  // block after the first would be lost. Forget the count per line; duplicates are removed downstream.
  _route(conv, sid, e) {
    const key = e && e.type === 'assistant' && e.message ? `${sid}:${e.message.id}` : null;
    if (key) this._emitted.delete(key);
    super._route(conv, sid, e);
    if (key) this._emitted.delete(key);  // and keep the map from growing with every message in live mode
  }

  _context(ctx) {
    const e = ctx.e;
    // Task results in the parent transcript also carry agentId; only sidechain lines belong to the subagent.
    const agent = e.isSidechain === true && typeof e.agentId === 'string' && e.agentId ? e.agentId : null;
    const sid = (typeof e.sessionId === 'string' && e.sessionId) || path.basename(ctx.fp, '.jsonl');
    return {
      sid: agent ? `agent-${agent}` : sid,
      parent: agent ? sid : null,
      file: ctx.fp,
      uuid: typeof e.uuid === 'string' ? e.uuid : null,
      ts: typeof e.timestamp === 'string' ? e.timestamp : null,
      cwd: typeof e.cwd === 'string' ? e.cwd : '',
      msg: e.message && typeof e.message.id === 'string' ? e.message.id : null,
      type: String(e.type ?? ''),
      meta: e.isMeta === true,
    };
  }

  _onBlock(ev) {
    const ctx = this._line_ctx;
    if (!ctx) return;
    const e = ctx.e;
    let block = ev.block;
    if (ev.role === 'assistant') {
      // ccsniff decorates assistant blocks; strip its additions so the block is the transcript's own.
      const { model, msgId, stopReason, ...own } = block;
      block = own;
    } else if (ev.role === 'system') {
      block = { type: 'system', subtype: e.subtype ?? null, level: e.level ?? null, content: e.content ?? null };
    }
    out({ k: 'block', ...this._context(ctx), role: ev.role, bi: ctx.n, block });
    ctx.n += 1;
  }

  _onError(ev) {
    const ctx = this._line_ctx;
    if (!ctx) return;
    const e = ctx.e;
    const text = typeof e.message?.content?.[0]?.text === 'string' ? e.message.content[0].text : String(ev.error);
    out({ k: 'block', ...this._context(ctx), role: 'system', bi: ctx.n, block: { type: 'system', subtype: 'api_error', level: 'error', content: text } });
    ctx.n += 1;
  }

  // Files deleted while tailing: report once and forget the tail so the watcher holds no dead fd.
  _read(fp) {
    if (!fs.existsSync(fp)) {
      const s = this._tails.get(fp);
      if (s) {
        if (s.fd !== null) try { fs.closeSync(s.fd); } catch (_) {}
        this._tails.delete(fp);
        out({ k: 'gone', file: fp });
      }
      return;
    }
    this._readBytes(fp);
  }

  // Same tailing as ccsniff's _read (offset per file, whole delta per wake-up), but the unterminated tail
  // is kept as bytes: ccsniff decodes each delta on its own, so a character whose UTF-8 bytes straddle two
  // appends would turn into U+FFFD. Splitting on 0x0A is safe (it never occurs inside a UTF-8 sequence).
  _readBytes(fp) {
    let s = this._tails.get(fp);
    if (!s) { s = { fd: null, offset: 0, partial: '', rest: Buffer.alloc(0) }; this._tails.set(fp, s); }
    try {
      if (s.fd === null) s.fd = fs.openSync(fp, 'r');
      const size = fs.fstatSync(s.fd).size;
      if (size <= s.offset) return;
      const buf = Buffer.allocUnsafe(size - s.offset);
      const n = fs.readSync(s.fd, buf, 0, buf.length, s.offset);
      s.offset += n;
      const data = s.rest.length ? Buffer.concat([s.rest, buf.subarray(0, n)]) : buf.subarray(0, n);
      const last = data.lastIndexOf(0x0a);
      s.rest = Buffer.from(data.subarray(last + 1));
      s.partial = s.rest.toString('utf8');
      if (last < 0) return;
      const fallbackSid = path.basename(fp, '.jsonl');
      for (const l of data.toString('utf8', 0, last).split('\n')) this._line(l, fallbackSid, fp);
    } catch (e) {
      if (e.code !== 'ENOENT') this.emit('error', e);
      if (s.fd !== null) { try { fs.closeSync(s.fd); } catch (_) {} s.fd = null; }
    }
  }

  idle() { return this._timers.size === 0; }

  partials() {
    const res = [];
    for (const [fp, s] of this._tails) if (s.partial && s.partial.trim()) res.push({ file: fp, bytes: Buffer.byteLength(s.partial) });
    return res;
  }
}

function parseArgs(argv) {
  const a = { mode: 'replay', dir: DEFAULT_DIR, files: [], supervised: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--mode') a.mode = argv[++i];
    else if (k === '--dir') a.dir = argv[++i];
    else if (k === '--files') { while (i + 1 < argv.length && !argv[i + 1].startsWith('--')) a.files.push(argv[++i]); }
    else if (k === '--supervised') a.supervised = true;
    else { process.stderr.write(`ccsniff_bridge: unknown argument ${k}\n`); process.exit(2); }
  }
  if (a.mode !== 'replay' && a.mode !== 'live') { process.stderr.write(`ccsniff_bridge: --mode must be replay or live, got ${a.mode}\n`); process.exit(2); }
  return a;
}

function whenIdle(w, cb) {
  const tick = () => (w.idle() ? cb() : setTimeout(tick, 5));
  setTimeout(tick, 5);
}

const args = parseArgs(process.argv.slice(2));
const w = new LosslessWatcher(args.dir);
const quit = (code) => { w.stop(); process.exit(code); };

// The parent's lifeline (see --supervised above). Both checks start before any file is read, so a parent
// that dies during a long history replay takes the bridge with it too.
let lifeline = null;
if (args.supervised) {
  const parent = process.ppid;
  const orphaned = setInterval(() => { if (process.ppid !== parent) quit(0); }, 500);
  orphaned.unref();  // never what keeps a finished replay alive
  const ended = () => quit(0);
  process.stdin.on('end', ended);
  process.stdin.on('close', ended);
  process.stdin.on('error', ended);
  process.stdin.resume();  // read (and drop) so that 'end' fires
  lifeline = () => {  // a finished replay lets go of stdin so Node can exit once stdout is flushed
    for (const ev of ['end', 'close', 'error']) process.stdin.removeListener(ev, ended);
    process.stdin.on('error', () => {});
    process.stdin.destroy();
  };
}
if (args.files.length) {
  for (const f of args.files.map((x) => path.resolve(x))) {
    w._debounce(f);
    if (args.mode === 'live') fs.watch(f, () => w._debounce(f)).on('error', (e) => process.stderr.write(`watch ${f}: ${e.message}\n`));
  }
} else if (!fs.existsSync(args.dir)) {
  process.stderr.write(`ccsniff_bridge: projects folder ${args.dir} does not exist (set CLAUDE_PROJECTS_DIR or --dir)\n`);
  process.exit(3);
} else if (args.mode === 'live') {
  w.start();
} else {
  w._scan(args.dir, 0, 0);
}
whenIdle(w, () => {
  for (const p of w.partials()) out({ k: 'partial', ...p });
  out({ k: 'caught_up' });
  if (args.mode === 'replay') {
    w.stop();  // nothing left to wait on: Node exits once stdout is flushed
    if (lifeline) lifeline();
  }
});
// 128 + signal number, as a shell reports it: the supervisor tells "stopped on purpose" from a crash by it.
process.on('SIGINT', () => quit(130));
process.on('SIGTERM', () => quit(143));
